"""The block-matched line diff: valid opcodes on large files, difflib's own output on small ones."""

from __future__ import annotations

import difflib

from reconciler.gitops import linediff


def rendered_like(numbers: range, renamed: int | None = None) -> list[str]:
    lines = ["; header", "; revision: 1", ""]
    for n in numbers:
        name = "Renamed" if n == renamed else f"Phone {n}"
        lines += [f"[{n}]", "type = endpoint", "context = internal", f'callerid = "{name}" <{n}>', ""]
        lines += [f"[{n}-auth]", "type = auth", f"username = {n}", ""]
    return lines


def apply(a: list[str], b: list[str], codes: list[linediff.Opcode]) -> list[str]:
    out: list[str] = []
    for tag, i1, i2, j1, j2 in codes:
        out += a[i1:i2] if tag == "equal" else b[j1:j2]
    return out


def test_the_opcodes_turn_the_old_lines_into_the_new_ones_for_adds_removes_and_renames() -> None:
    a = rendered_like(range(1000, 1600))
    b = rendered_like(range(1003, 1650), renamed=1300)
    b[1] = "; revision: 2"
    codes = linediff.opcodes(a, b)
    assert apply(a, b, codes) == b
    changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in codes if tag != "equal")
    assert changed < 500  # three removed and fifty added extensions, one rename, one header line


def test_a_one_line_change_gives_exactly_difflibs_hunks() -> None:
    a = rendered_like(range(1000, 1100))
    b = rendered_like(range(1000, 1100), renamed=1050)
    expected = list(difflib.SequenceMatcher(None, a, b).get_grouped_opcodes(3))
    assert linediff.grouped_opcodes(a, b, 3) == expected


def test_identical_and_empty_inputs_have_no_hunks() -> None:
    a = rendered_like(range(10))
    assert linediff.grouped_opcodes(a, list(a)) == []
    assert linediff.grouped_opcodes([], []) == []
    assert linediff.grouped_opcodes([], a) == [[("insert", 0, 0, 0, len(a))]]
