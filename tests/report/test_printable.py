"""Names are data, never terminal control: `printable` on any text, and `modscope tree` on a model
whose names hold escapes, a newline and a bidi override (issue 9)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st
from rich.cells import cell_len

from modscope.cli import main
from modscope.core.contract.fmt import ELLIPSIS, cell_width, printable, printable_lines

HIDDEN = ("Cc", "Cf", "Zl", "Zp", "Cs")
SCRIPT = Path(__file__).resolve().parents[1] / "tui" / "scripts" / "evil_names.py"

CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
FORMATS = ["\u200b", "\u200d", "\u2028", "\u2029", "\ufeff", "\U000e0001", "\ud800", "\udfff"]
FORMATS += [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]

# Every code point, surrogates included (hypothesis leaves them out unless told), mixed with
# a dense helping of the characters that matter here.
any_text = st.text(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from(CONTROLS + FORMATS))
)
shown_text = st.text(st.characters(exclude_categories=HIDDEN))


def hidden(ch: str) -> bool:
    return unicodedata.category(ch) in HIDDEN


@given(any_text)
@example("evil\x1b[2J\nname")
@example("a\r\nb\u2028c\x85d")
def test_nothing_that_controls_a_terminal_survives(text):
    out = printable(text)
    assert not any(hidden(ch) for ch in out)
    assert len(out.splitlines()) <= 1
    assert out == "".join(repr(ch)[1:-1] if hidden(ch) else ch for ch in text)


@given(st.sampled_from(CONTROLS + FORMATS))
def test_each_hidden_character_shows_as_python_writes_it(ch):
    assert printable(ch) == repr(ch)[1:-1]
    assert printable(ch).startswith("\\")


@given(shown_text)
@example("日本語 🙂 한국어 e\u0301 blocks[attn] x\\y")
def test_printable_text_is_unchanged(text):
    assert printable(text) == text
    assert printable_lines(text) == text


@given(any_text, st.integers(min_value=1, max_value=80))
@example("evil\x1b[2J\nname", 8)
@example("日本語" * 30, 10)
def test_limit_bounds_the_width_and_ends_with_an_ellipsis(text, limit):
    whole = printable(text)
    out = printable(text, limit=limit)
    assert not any(hidden(ch) for ch in out)
    assert cell_width(out) <= limit
    if cell_width(whole) <= limit:
        assert out == whole
    else:
        assert out.endswith(ELLIPSIS)
        assert whole.startswith(out[: -len(ELLIPSIS)])


def test_plain_ascii_is_returned_as_it_is():
    name = "layers.0.self_attn"
    assert printable(name) is name
    assert printable(name, limit=60) is name
    assert printable("x" * 100, limit=10) == "x" * 9 + ELLIPSIS


def test_widths_agree_with_rich_for_wide_and_combining_text():
    for text in ("日本語" * 30, "🙂" * 40, "e\u0301" * 50, "한국어 이름" * 10):
        out = printable(text, limit=21)
        assert cell_width(out) == cell_len(out) <= 21
        assert out.endswith(ELLIPSIS)


def test_an_escape_is_never_cut_in_half():
    assert printable("ab\x1bc", limit=5) == "ab" + ELLIPSIS
    assert printable("ab\x1bcd", limit=7) == "ab\\x1b" + ELLIPSIS


def test_lines_keep_their_breaks_and_lose_their_controls():
    assert printable_lines("first\x1b[2J\r\nsecond\rthird") == "first\\x1b[2J\nsecond\\rthird"


def test_tree_shows_escapes_and_never_splits_a_name(capsys):
    assert main(["tree", str(SCRIPT)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    lines = out.splitlines()
    assert any("evil\\x1b[2J\\nname Linear" in line for line in lines)
    assert any("buf\\x1b[31m [2]" in line for line in lines)
    assert any("\\u202eright Odd\\x1b[7mClass\\n" in line for line in lines)
    long = next(line for line in lines if "longxxx" in line)
    assert "long" + "x" * 55 + ELLIPSIS + " Identity" in long
    assert not any(line.lstrip("│├└─ ").startswith("name") for line in lines)


def test_tree_json_keeps_names_whole(capsys):
    assert main(["tree", str(SCRIPT), "--json"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out  # JSON writes it as \u001b
    assert "evil\\u001b[2J\\nname" in out


def test_wrap_path_breaks_after_dots_and_only_inside_a_part_too_long_for_a_line():
    from modscope.core.contract.fmt import wrap_path

    assert wrap_path("encoder.layers.0.weight", 40) == "encoder.layers.0.weight"
    assert wrap_path("encoder.layers.0.weight", 16) == "encoder.layers.\n0.weight"
    assert wrap_path("a_very_long_part.bias", 8) == "a_very_l\nong_part\n.bias"
    assert wrap_path("", 5) == ""
