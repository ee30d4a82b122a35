"""Copy into your own tests/: modscope guards a model's structure, its health and its
checkpoints in pytest (docs/testing.md). Here the model is examples/tiny_lm.py's TinyLM.

    pytest examples/test_model_health.py                     # checks
    pytest examples/test_model_health.py --snapshot-update   # accepts a structure change

The first test compares the model with its stored structure in
`__snapshots__/test_model_health/test_model_structure.txt` (made by `--snapshot-update`,
committed with the tests): a refactor that moves a layer into a plain list, renames a
parameter, unties the head or changes a shape fails with what changed, in words.
"""

import torch
from tiny_lm import BATCH, SEQ_LEN, VOCAB, TinyLM, compute_loss

from modscope.testing import assert_healthy, assert_loads


def make_model() -> TinyLM:
    torch.manual_seed(0)
    return TinyLM()


def test_model_structure(model_snapshot):
    # Every module path and class, every parameter and buffer (shape, dtype, frozen or not,
    # persistent or not, tied), the state_dict keys and what is held but unregistered.
    assert model_snapshot == make_model()


def test_model_is_healthy():
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    # The doctor's static rules, then 2 real steps on a copy: model and optimizer are unchanged.
    assert_healthy(model, inputs=tokens, compute_loss=compute_loss, optimizer=optimizer)


def test_checkpoints_still_load(tmp_path):
    # In a real project: a checkpoint kept from the last release, e.g. tests/data/v1.pt.
    path = tmp_path / "release.pt"
    torch.save(make_model().state_dict(), path)
    assert_loads(make_model(), path)
