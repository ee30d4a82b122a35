"""The state_dict diff: per-key changes, deltas, NaN and integer buffers, and a reused copy."""

from __future__ import annotations

import json
import math

import pytest
import torch

from modscope.core.stats.statediff import StateTracker


def test_changed_unchanged_added_removed_with_deltas():
    tracker = StateTracker()
    tracker.reset({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5]), "gone": torch.zeros(1)})
    diff = tracker.diff(
        {"w": torch.tensor([1.0, 2.5]), "b": torch.tensor([0.5]), "new": torch.ones(3)}
    )
    assert diff.changed == ("w",) and diff.unchanged == ("b",)
    assert diff.added == ("new",) and diff.removed == ("gone",)
    assert diff.max_abs_delta == {"w": pytest.approx(0.5)}
    assert diff.rel_change["w"] == pytest.approx(0.5 / math.sqrt(5.0))


def test_nan_in_both_is_unchanged_and_new_nan_is_a_change():
    tracker = StateTracker()
    tracker.reset({"a": torch.tensor([float("nan"), 1.0]), "b": torch.tensor([1.0])})
    diff = tracker.diff({"a": torch.tensor([float("nan"), 1.0]), "b": torch.tensor([float("nan")])})
    assert diff.unchanged == ("a",) and diff.changed == ("b",)
    assert math.isnan(diff.max_abs_delta["b"])
    assert diff.to_json()["max_abs_delta"]["b"] is None  # strict JSON


def test_integer_and_bool_buffers_and_a_reshaped_key():
    tracker = StateTracker()
    tracker.reset(
        {"n": torch.tensor(3), "mask": torch.tensor([True, False]), "grow": torch.zeros(2)}
    )
    diff = tracker.diff(
        {"n": torch.tensor(4), "mask": torch.tensor([True, False]), "grow": torch.zeros(3)}
    )
    assert diff.changed == ("n", "grow") and diff.unchanged == ("mask",)
    assert diff.max_abs_delta["n"] == 1.0 and diff.max_abs_delta["grow"] is None


def test_the_previous_copy_is_reused_not_reallocated():
    weight = torch.nn.Parameter(torch.randn(64, 64))
    tracker = StateTracker()
    tracker.reset({"w": weight})
    pointer = tracker.previous_of("w").data_ptr()
    assert pointer != weight.data_ptr()  # a copy, not the live tensor
    for _ in range(3):
        with torch.no_grad():
            weight.add_(0.1)
        diff = tracker.diff({"w": weight})
        assert diff.changed == ("w",) and diff.max_abs_delta["w"] == pytest.approx(0.1, rel=1e-5)
        assert tracker.previous_of("w").data_ptr() == pointer
    assert tracker.diff({"w": weight}).changed == ()


def test_large_tensors_with_infinities_take_the_careful_path():
    base = torch.arange(10_000, dtype=torch.float32)
    base[5] = float("inf")
    tracker = StateTracker()
    tracker.reset({"same_inf": base.clone(), "new_inf": base.clone(), "moved": base.clone()})
    new_inf, moved = base.clone(), base.clone()
    new_inf[7] = float("-inf")
    moved[9] += 0.5
    diff = tracker.diff({"same_inf": base.clone(), "new_inf": new_inf, "moved": moved})
    assert diff.unchanged == ("same_inf",) and diff.changed == ("new_inf", "moved")
    assert diff.max_abs_delta["new_inf"] == float("inf")
    assert diff.max_abs_delta["moved"] == pytest.approx(0.5)


def test_integer_counters_never_win_the_largest_change():
    bn = torch.nn.BatchNorm1d(3)
    tracker = StateTracker()
    tracker.reset({k: v for k, v in bn.state_dict(keep_vars=True).items()})
    bn(torch.randn(8, 3))  # running statistics move a little, num_batches_tracked by 1
    diff = tracker.diff(bn.state_dict(keep_vars=True))
    assert diff.counters == ("num_batches_tracked",)
    assert diff.max_abs_delta["num_batches_tracked"] == 1.0
    key, value = diff.largest_change()
    assert key in ("running_mean", "running_var") and value == max(
        diff.max_abs_delta["running_mean"], diff.max_abs_delta["running_var"]
    )
    only_counters = tracker.diff({**bn.state_dict(), "num_batches_tracked": torch.tensor(9)})
    assert only_counters.changed == ("num_batches_tracked",)
    assert only_counters.largest_change() is None


@pytest.mark.parametrize("size", [3, 100_000])  # the joined path and the per-key path
def test_a_change_from_zero_has_no_ratio_and_writes_null(size):
    many = {f"w{i}": torch.ones(size) for i in range(8)}  # enough small keys to join
    tracker = StateTracker()
    tracker.reset({"zero": torch.zeros(size), "same_zero": torch.zeros(size), **many})
    moved = {"zero": torch.full((size,), 0.5), "same_zero": torch.zeros(size)}
    diff = tracker.diff({**moved, **{k: v * 2 for k, v in many.items()}})
    assert diff.changed[0] == "zero" and "same_zero" in diff.unchanged
    assert diff.rel_change["zero"] is None and diff.max_abs_delta["zero"] == 0.5
    assert diff.rel_change["w0"] == pytest.approx(1.0)
    out = json.dumps(diff.to_json(), allow_nan=False)
    assert json.loads(out)["rel_change"]["zero"] is None


def test_the_diff_view_keeps_its_columns_on_screen():
    from modscope.tui.diff_screen import cell_widths
    from modscope.tui.table_screen import cell

    for width in (80, 120, 200):
        key, summary = cell_widths(width, longest_key=90, longest_summary=90)
        # key, before, after, two number columns of 11, a cell of padding each side, border
        assert key + 2 * summary + 2 * 11 + 5 * 2 + 2 <= int(width * 0.96)
        long = "tensor[4096, 4096] n=16,777,216 x∈[-0.0625, 0.0625] μ=1.2e-05 σ=0.036 NaN!"
        text = cell(long, summary, "bold")
        assert text.cell_len <= summary and text.plain.endswith("…")
    assert cell("short", 20, "").plain == "short"


def test_a_long_key_takes_the_room_short_values_leave():
    from modscope.tui.diff_screen import cell_widths

    key = "transformer.h.0.attn.c_attn.weight"  # 34 cells
    # Scalar summaries (about 20 cells) leave the key its whole length at 120 columns ...
    assert cell_widths(120, longest_key=len(key), longest_summary=20) == (len(key), 20)
    # ... while long summaries still get their share, and the key is cut.
    k, summary = cell_widths(100, longest_key=len(key), longest_summary=80)
    assert k < len(key) and summary > 20


async def test_the_diff_view_of_long_summaries_fits_an_80_column_terminal():
    from textual.app import App
    from textual.widgets import DataTable

    from modscope.control.updates import SessionStatus
    from modscope.core.contract.steps import StepRecord
    from modscope.core.stats.summary import summarize
    from modscope.tui.diff_screen import DiffScreen

    big = {f"encoder.layers.{i}.self_attn.in_proj_weight": torch.randn(64, 64) for i in range(3)}
    tracker = StateTracker()
    tracker.reset(big)
    after = {k: v + 1 for k, v in big.items()}
    summaries = {k: summarize(v) for k, v in after.items()}
    record = StepRecord(1, "train", 1.0, None, summaries, {}, tracker.diff(after))

    class View:
        last_record = record
        status = SessionStatus("script.py")

        def before(self, key):
            return summarize(big[key])

    class Host(App):
        def on_mount(self):
            self.push_screen(DiffScreen(View()))

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 3
        widths = [c.get_render_width(table) for c in table.columns.values()]
        assert len(widths) == 5 and sum(widths) <= int(80 * 0.96) - 2
