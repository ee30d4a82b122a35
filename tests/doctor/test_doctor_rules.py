"""The doctor's findings as values: kinds are enums, written as strings, deduplicated by fields."""

from __future__ import annotations

from modscope.core.contract.findings import SEVERITIES, FindingKind, Severity
from modscope.core.contract.fmt import plural
from modscope.core.doctor import rules


def test_a_finding_carries_its_kind_as_the_enum_and_writes_its_value() -> None:
    f = rules.nonfinite("parameters", ["body.0.weight"], 3)
    assert f.kind is FindingKind.NONFINITE and f.severity is Severity.ERROR
    out = f.to_json()
    assert out["kind"] == "nonfinite" and type(out["kind"]) is str
    assert "subject" not in out
    assert set(SEVERITIES) == set(FindingKind)


def test_nonfinite_findings_are_the_same_one_again_by_what_went_nonfinite() -> None:
    at_step_1 = rules.nonfinite("parameters", ["a.weight"], 1, "a", "Linear")
    at_step_2 = rules.nonfinite("parameters", ["b.weight", "b.bias"], 2, "b", "Linear")
    assert rules.dedup_key(at_step_1) == rules.dedup_key(at_step_2)
    loss = rules.nonfinite("loss", (), 1, "a", "Linear", float("nan"))
    output = rules.nonfinite("output", (), 1, "a", "Linear", float("inf"))
    buffers = rules.nonfinite("buffers", ["a.mask"], 1)
    keys = {rules.dedup_key(f) for f in (at_step_1, loss, output, buffers)}
    assert len(keys) == 4
    # However many there are: the key never depends on the message's wording.
    many = rules.nonfinite("parameters", [f"p{i}" for i in range(1200)], 1)
    assert rules.dedup_key(many) == rules.dedup_key(at_step_1)


def test_other_findings_are_the_same_one_again_by_kind_and_path() -> None:
    a = rules.mode_mismatch("body.1", "Dropout", False, True, 1)
    b = rules.mode_mismatch("body.1", "Dropout", False, True, 5)
    c = rules.mode_mismatch("body.2", "Dropout", False, True, 1)
    assert rules.dedup_key(a) == rules.dedup_key(b) != rules.dedup_key(c)


def test_plural_is_the_one_for_reports_and_findings() -> None:
    assert [plural(n, "param") for n in (0, 1, 2, 1024)] == [
        "0 params",
        "1 param",
        "2 params",
        "1,024 params",
    ]
