"""The tensor that stands for a model's output in a step's record (`losses.main_output`)."""

from __future__ import annotations

from collections import OrderedDict

import torch

from modscope.core.script.losses import main_output


def test_a_mapping_with_a_loss_gives_the_tensor_after_it() -> None:
    loss, logits = torch.tensor(2.5), torch.zeros(2, 3, 10)
    # A Hugging Face ModelOutput computed with labels is an OrderedDict: loss first, logits next.
    assert main_output(OrderedDict(loss=loss, logits=logits)) is logits
    assert main_output({"logits": logits, "loss": loss}) is logits


def test_otherwise_the_first_tensor() -> None:
    loss, hidden = torch.tensor(2.5), torch.ones(4)
    assert main_output({"loss": loss}) is loss  # nothing else to show
    assert main_output({"loss": None, "logits": hidden}) is hidden
    assert main_output((hidden, loss)) is hidden
    assert main_output([{"loss": loss}, hidden]) is loss  # only a top-level mapping is read so
    assert main_output("no tensor") is None
