"""What if: after a rewind the original timeline is kept, and a re-run with a change (a hook)
is compared with it step by step (`Session.compare_timelines`)."""

from __future__ import annotations

import pytest
import torch
from test_rewind import POWLOG, assert_same, run, shuffled_session, state_of

from modscope.core.contract.hook_spec import HookSpec
from modscope.core.rewind.checkpoints import RewindError
from modscope.core.session import Session, SessionOptions

# The article's Hook Code 2: logModel's output doubled.
DOUBLE_LOG = HookSpec.parse("logModel:forward:scale=2")


def value(session: Session, key: str) -> float:
    return session.model.state_dict()[key].item()


def test_a_rerun_with_a_hook_is_compared_with_the_original_step_by_step() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True))
    original = run(session, 10)
    session.rewind(5)
    o = session.original
    assert o is not None and (o.fork, o.end) == (5, 10)
    assert o.losses() == tuple(original)
    session.attach(DOUBLE_LOG)
    changed = run(session, 5)
    assert changed[0] != original[5]
    c = session.compare_timelines()
    assert (c.step, c.fork, c.end) == (10, 5, 10)
    assert c.diff is not None and c.note is None
    assert set(c.diff.changed) == {"powModel.powParam", "logModel.logParam"}
    # The original's values after step 10: the article's 1.2430 and 1.9815.
    assert c.theirs["powModel.powParam"].values[0] == pytest.approx(1.2430, abs=5e-5)
    assert c.theirs["logModel.logParam"].values[0] == pytest.approx(1.9815, abs=5e-5)
    assert (c.loss, c.original_loss) == (changed[-1], original[-1])
    ours = value(session, "logModel.logParam")
    theirs = c.theirs["logModel.logParam"].values[0]
    assert c.diff.max_abs_delta["logModel.logParam"] == pytest.approx(abs(ours - theirs))
    assert c.diff.rel_change["logModel.logParam"] == pytest.approx(abs(ours - theirs) / theirs)
    # An earlier step of this timeline: from its checkpoint.
    c7 = session.compare_timelines(7)
    assert c7.diff is not None and c7.diff.changed and c7.loss == changed[1]
    assert "before the timelines part" in (session.compare_timelines(5).note or "")
    session.close()


def test_a_rerun_without_a_change_matches_the_original_bit_for_bit() -> None:
    session = shuffled_session()  # every hook kind, dropout, a shuffling DataLoader, Adam
    run(session, 8)
    final = state_of(session)
    for _ in range(4):  # `u` four times: the original keeps every step it went back over
        session.rewind(session.step - 1)
    assert session.original is not None and session.original.fork == 4
    run(session, 4)
    assert_same(state_of(session), final)
    for step in range(5, 9):
        c = session.compare_timelines(step)
        assert c.diff is not None, c.note
        assert c.diff.changed == () and c.diff.unchanged


def test_later_rewinds_keep_the_first_original_and_move_its_fork() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True))
    run(session, 10)
    session.rewind(6)
    session.attach(DOUBLE_LOG)
    run(session, 2)
    session.rewind(3)  # back past the fork: the original stays the first run
    o = session.original
    assert o is not None and (o.fork, o.end) == (3, 10)
    run(session, 7)
    c = session.compare_timelines()
    assert c.theirs["powModel.powParam"].values[0] == pytest.approx(1.2430, abs=5e-5)
    assert c.diff is not None and "powModel.powParam" in c.diff.changed
    run(session, 1)
    assert session.compare_timelines().note == "the original timeline ends at step 10"


def test_the_original_counts_in_the_rewind_budget_and_says_what_was_thinned() -> None:
    session = shuffled_session(hooks=False)
    run(session, 1)
    one = session._checkpoints.nbytes
    session.rewind(0)
    session = shuffled_session(budget=6 * one, hooks=False)
    run(session, 20)
    session.rewind(10)
    run(session, 10)
    assert session._checkpoints.nbytes <= 6 * one
    kept = session._checkpoints.other_steps()
    assert 20 in kept and len(kept) < 10  # the original's last step is kept, others thinned
    for step in range(11, 21):
        c = session.compare_timelines(step)
        if step in kept and step in session.reachable_steps():
            assert c.diff is not None and c.diff.changed == ()  # no change: bit-identical
        elif step not in kept:
            assert "thinned away to keep the rewind budget" in (c.note or "")


def test_no_original_before_a_rewind() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True))
    run(session, 2)
    assert session.original is None
    with pytest.raises(RewindError, match="rewind to an earlier step"):
        session.compare_timelines()
    session.rewind(2)  # a rewind to where it stands leaves nothing behind
    assert session.original is None
    session.rewind(0)
    with pytest.raises(ValueError):
        session.compare_timelines(1)  # step 1 is ahead of this timeline


def test_comparing_reads_no_rng_and_changes_nothing() -> None:
    session = Session.load(POWLOG, options=SessionOptions(rewind=True))
    run(session, 4)
    session.rewind(2)
    run(session, 2)
    before = torch.get_rng_state()
    state = state_of(session)
    session.compare_timelines()
    assert torch.equal(torch.get_rng_state(), before)
    assert_same(state_of(session), state)
