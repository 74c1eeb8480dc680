"""Line diffs of large, mostly equal config files in about linear time, in difflib's opcodes.

`difflib.SequenceMatcher` on whole rendered files is quadratic in practice: its "autojunk" rule drops
every line that occurs in more than 1% of the file (`type = endpoint`, `context = internal`, ...), so
its longest matches stay short and it recurses a great deal (56.8 s for 2,000 renames among 50,000
extensions). Here lines are first grouped into blocks (a block starts at a `[section]`, a `;`
comment, or an `exten =>`/`N =>` line), blocks are matched (each extension's block is unique), and
only the lines of blocks that differ go through SequenceMatcher. On small inputs (one block) this is
SequenceMatcher itself, so the output is difflib's.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

Opcode = tuple[str, int, int, int, int]


def _starts_block(line: str) -> bool:
    stripped = line.lstrip()
    first = stripped[:1]
    if first == "[" or first == ";":
        return True
    return "=>" in line and not stripped.startswith("same")


def _blocks(lines: Sequence[str]) -> tuple[list[tuple[str, ...]], list[int]]:
    """(blocks as tuples of lines, start index of each block)."""
    starts = [i for i, line in enumerate(lines) if i == 0 or _starts_block(line)]
    ends = [*starts[1:], len(lines)] if starts else []
    return [tuple(lines[s:e]) for s, e in zip(starts, ends, strict=True)], starts


def _line_opcodes(a: Sequence[str], b: Sequence[str], i0: int, j0: int) -> list[Opcode]:
    if not a or not b:
        if not a and not b:
            return []
        return [("insert" if not a else "delete", i0, i0 + len(a), j0, j0 + len(b))]
    matcher = difflib.SequenceMatcher(None, a, b)
    return [(tag, i1 + i0, i2 + i0, j1 + j0, j2 + j0) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]


def opcodes(a: Sequence[str], b: Sequence[str]) -> list[Opcode]:
    """difflib-style opcodes turning line list `a` into `b`."""
    blocks_a, starts_a = _blocks(a)
    blocks_b, starts_b = _blocks(b)
    if len(blocks_a) <= 1 or len(blocks_b) <= 1:
        return _line_opcodes(a, b, 0, 0)
    bounds_a, bounds_b = [*starts_a, len(a)], [*starts_b, len(b)]
    out: list[Opcode] = []
    matcher = difflib.SequenceMatcher(None, blocks_a, blocks_b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        la1, la2, lb1, lb2 = bounds_a[i1], bounds_a[i2], bounds_b[j1], bounds_b[j2]
        if tag == "equal":
            out.append(("equal", la1, la2, lb1, lb2))
        else:
            out.extend(_line_opcodes(a[la1:la2], b[lb1:lb2], la1, lb1))
    return _merged(out)


def _merged(codes: list[Opcode]) -> list[Opcode]:
    """Adjacent opcodes of the same tag joined (as SequenceMatcher never leaves them apart)."""
    out: list[Opcode] = []
    for code in codes:
        if code[1] == code[2] and code[3] == code[4]:
            continue
        if out and out[-1][0] == code[0] == "equal":
            last = out[-1]
            out[-1] = ("equal", last[1], code[2], last[3], code[4])
        else:
            out.append(code)
    return out or [("equal", 0, 0, 0, 0)]


def grouped_opcodes(a: Sequence[str], b: Sequence[str], n: int = 3) -> list[list[Opcode]]:
    """The hunks of a unified diff with `n` lines of context (`SequenceMatcher.get_grouped_opcodes`)."""
    codes = opcodes(a, b)
    # What follows is difflib's get_grouped_opcodes, applied to these opcodes.
    if codes[0][0] == "equal":
        tag, i1, i2, j1, j2 = codes[0]
        codes[0] = tag, max(i1, i2 - n), i2, max(j1, j2 - n), j2
    if codes[-1][0] == "equal":
        tag, i1, i2, j1, j2 = codes[-1]
        codes[-1] = tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)
    nn = n + n
    groups: list[list[Opcode]] = []
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal" and i2 - i1 > nn:
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            groups.append(group)
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    return groups
