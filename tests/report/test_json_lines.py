"""`report.common.dumps`: the strict JSON line every headless command writes."""

from __future__ import annotations

import json

from modscope.report.common import dumps


def test_plain_ascii_is_written_as_json_dumps_writes_it() -> None:
    obj = {"state": {"0.weight": {"norm": 1.5, "min": None, "values": [1, 2]}}, "ok": True}
    assert dumps(obj) == json.dumps(obj, ensure_ascii=False)


def test_del_is_escaped_even_in_otherwise_ascii_text() -> None:
    assert dumps({"key\x7f": 1}) == '{"key\\u007f": 1}'


def test_c1_controls_and_bidi_overrides_are_escaped_and_other_text_kept() -> None:
    text = dumps(["caf\u00e9", "\x9b31m", "a\u202eb"])
    assert text == '["caf\u00e9", "\\u009b31m", "a\\u202eb"]'
    assert json.loads(text) == ["caf\u00e9", "\x9b31m", "a\u202eb"]
