"""A real architecture on CUDA for the device check, chosen by `DEVICE_MODEL`: `gpt2` (a tiny
GPT-2 from `transformers`), `resnet` or `vit` (tiny `timm` models), random weights, nothing
downloaded. `python cuda_real.py STEPS PATH` is the plain loop (modscope's default iteration)
and saves the `state_dict` to PATH."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("DEVICE_DETERMINISTIC"):
    # cuDNN's convolution backward otherwise picks algorithms that add in a varying order.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
kind = os.environ.get("DEVICE_MODEL", "gpt2")
data = torch.Generator().manual_seed(1)

if kind == "gpt2":
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(
        GPT2Config(
            n_layer=2,
            n_head=2,
            n_embd=64,
            vocab_size=256,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).to(device)
    ids = torch.randint(1, 256, (4, 32), generator=data).to(device)
    inputs = {"input_ids": ids, "labels": ids}

    def loss_fn(out):
        return out.loss
else:
    import timm

    if kind == "resnet":
        model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    else:
        model = timm.create_model(
            "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=10
        )
    model = model.to(device)
    images = torch.randn(8, 3, 32, 32, generator=data).to(device)
    labels = torch.randint(0, 10, (8,), generator=data).to(device)
    inputs = images

    def loss_fn(out):
        return torch.nn.functional.cross_entropy(out, labels)


optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

if __name__ == "__main__":
    import sys

    for _ in range(int(sys.argv[1])):
        optimizer.zero_grad()
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        loss_fn(out).backward()
        optimizer.step()
    torch.save(model.state_dict(), sys.argv[2])
