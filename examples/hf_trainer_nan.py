"""A NaN that starts in one module at a known step, under a Hugging Face Trainer: the forward case.

A tiny GPT-2 built from a config (random weights, nothing downloaded) whose second block's MLP
activation is a `LogGELU`: log(gelu(x) + offset), finite only while gelu(x) + offset > 0, and
gelu(x) goes down to about -0.17. Its offset trains in an AdamW parameter group of its own with
lr=0.5 ("offsets learn slowly"): AdamW moves each entry by about lr per step, so after the
update of step 2 some entries are near zero, and in step 3's forward log() of a negative value
gives NaN. `ModscopeCallback(breaks=["nan"])` watches the training: it breaks at step 3, in the
forward phase, at transformer.h.1.mlp.act (LogGELU). In a terminal the modscope app opens at the
break (q returns); elsewhere `modscope.BreakError` leaves `trainer.train()`, and this script
prints it.
In modscope: the file is also a model script (`model`, `inputs`, `compute_loss`, `optimizer`):
`modscope run examples/hf_trainer_nan.py --steps 5 --break nan` stops at the same module and
step. The fix: `torch.log((gelu(x) + self.offset).clamp_min(1e-3))`, or a sane lr for it.
Prints: the loss of steps 1 and 2, then the break (step 3, forward phase, transformer.h.1.mlp.act).
"""

import tempfile

import torch
import transformers
from torch import nn

import modscope
from modscope.integrations.transformers import ModscopeCallback

torch.manual_seed(0)

WIDTH, VOCAB, SEQ_LEN = 32, 100, 16


class LogGELU(nn.Module):
    """log(gelu(x) + offset) per feature: finite only while gelu(x) + offset > 0."""

    def __init__(self, width):
        super().__init__()
        self.offset = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return torch.log(nn.functional.gelu(x) + self.offset)


config = transformers.GPT2Config(
    n_layer=2,
    n_head=2,
    n_embd=WIDTH,
    vocab_size=VOCAB,
    n_positions=2 * SEQ_LEN,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    bos_token_id=None,
    eos_token_id=None,
)
model = transformers.GPT2LMHeadModel(config)
model.transformer.h[1].mlp.act = LogGELU(4 * WIDTH)

generator = torch.Generator().manual_seed(0)
rows = [torch.randint(0, VOCAB, (SEQ_LEN,), generator=generator) for _ in range(16)]
dataset = [{"input_ids": ids, "labels": ids.clone()} for ids in rows]
inputs = {
    "input_ids": torch.stack(rows[:2]),
    "labels": torch.stack(rows[:2]).clone(),
}


def compute_loss(model, batch):
    return model(**batch).loss


gate = list(model.transformer.h[1].mlp.act.parameters())
rest = [p for name, p in model.named_parameters() if ".mlp.act." not in name]
optimizer = torch.optim.AdamW([{"params": rest}, {"params": gate, "lr": 0.5}], lr=1e-3)

if __name__ == "__main__":
    watching = ModscopeCallback(breaks=["nan"])
    scratch = tempfile.TemporaryDirectory()  # the Trainer makes its output_dir; nothing is saved
    args = transformers.TrainingArguments(
        output_dir=scratch.name,
        max_steps=5,
        per_device_train_batch_size=2,
        lr_scheduler_type="constant",
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        optimizers=(optimizer, None),
        callbacks=[watching],
    )
    try:
        trainer.train()
    except modscope.BreakError as exc:
        for record in watching.watch.records:
            print("step", record.step, "loss", f"{record.loss:.4f}")
        print(exc)
    finally:
        scratch.cleanup()
