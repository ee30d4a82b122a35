"""A tiny causal transformer language model with tied embeddings.

Embedding (vocab 64, d_model 32) plus learned positions, a 2-layer pre-norm
nn.TransformerEncoder (batch_first, causal mask kept as a non-persistent buffer), and an output
head whose weight IS the embedding weight. `inputs` returns a fresh batch of counting sequences
each step, from a seeded generator; `compute_loss` is next-token cross-entropy; AdamW.
In modscope: `modscope check examples/tiny_lm.py` reports shared-parameter (info) for
`embed.weight` / `head.weight`. Prints: the loss of 10 steps (from about ln 64 = 4.16 down).
"""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

VOCAB, D_MODEL, MAX_LEN = 64, 32, 32
BATCH, SEQ_LEN = 8, 17  # 17 tokens: the model reads 16 and predicts the next 16


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.pos = nn.Embedding(MAX_LEN, D_MODEL)
        layer = nn.TransformerEncoderLayer(
            D_MODEL, nhead=4, dim_feedforward=64, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, VOCAB, bias=False)
        self.head.weight = self.embed.weight  # tied: one Parameter under two names
        mask = nn.Transformer.generate_square_subsequent_mask(MAX_LEN)
        self.register_buffer("causal_mask", mask, persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)  # GPT-2's init: N(0, 1) makes huge logits
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, tokens):
        t = tokens.shape[1]
        h = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device))
        h = self.encoder(h, mask=self.causal_mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


model = TinyLM()
generator = torch.Generator().manual_seed(0)


def inputs():
    """A fresh batch of sequences counting up (mod VOCAB) from random starts: learnable."""
    starts = torch.randint(0, VOCAB, (BATCH, 1), generator=generator)
    return (starts + torch.arange(SEQ_LEN)) % VOCAB


def compute_loss(model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

if __name__ == "__main__":
    for step in range(1, 11):
        optimizer.zero_grad()
        loss = compute_loss(model, inputs())
        loss.backward()
        optimizer.step()
        print(step, "loss", f"{loss.item():.4f}")
