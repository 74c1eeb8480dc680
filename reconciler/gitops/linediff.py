"""Line diffs of large, mostly equal config files in about linear time, in difflib's opcodes.

`difflib.SequenceMatcher` on whole rendered files is quadratic in practice: its "autojunk" rule drops
every line that occurs in more than 1% of the file (`type = endpoint`, `context = internal`, ...), so
its longest matches stay short and it recurses a great deal (56.8 s for 2,000 renames among 50,000
extensions). Here lines are first grouped into blocks (a block starts at a `[section]`, a `;`
comment, or an `exten =>`/`N =>` line), blocks are matched (each extension's block is unique), and
only the lines of blocks that differ go through SequenceMatcher. Blocks are matched in one forward
pass (no longest-match search: with many changes SequenceMatcher's own recursion is quadratic too).
On small inputs (one block) this is SequenceMatcher itself, so the output is difflib's.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence

Opcode = tuple[str, int, int, int, int]


# A line that starts a block: `[`/`;` first (after blanks), or holding `=>` and not a `same =>`.
_BLOCK_START = re.compile(r"^(?:[^\S\n]*[\[;]|(?![^\S\n]*same)[^\n]*=>)", re.MULTILINE)


def matching_lines(lines: Sequence[str], pattern: re.Pattern[str]) -> list[tuple[int, re.Match[str]]]:
    """(index, match) of the lines where the MULTILINE `pattern` matches at the line's start,
    found by the regex engine over the joined text instead of a Python loop over every line."""
    text = "\n".join(lines)
    matches = list(pattern.finditer(text))
    offsets = [0, *(m.start() for m in matches)]
    numbers = itertools.accumulate(text.count("\n", a, b) for a, b in itertools.pairwise(offsets))
    return list(zip(numbers, matches, strict=True))


def _blocks(lines: Sequence[str]) -> tuple[list[tuple[str, ...]], list[int]]:
    """(blocks as tuples of lines, start index of each block)."""
    starts = [i for i, _ in matching_lines(lines, _BLOCK_START) if i > 0]
    starts = [0, *starts] if lines else []
    ends = [*starts[1:], len(lines)] if starts else []
    return [tuple(lines[s:e]) for s, e in zip(starts, ends, strict=True)], starts


def _line_opcodes(a: Sequence[str], b: Sequence[str], i0: int, j0: int) -> list[Opcode]:
    if not a or not b:
        if not a and not b:
            return []
        return [("insert" if not a else "delete", i0, i0 + len(a), j0, j0 + len(b))]
    matcher = difflib.SequenceMatcher(None, a, b)
    return [(tag, i1 + i0, i2 + i0, j1 + j0, j2 + j0) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]


def _unique_positions(blocks: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    """block → its index, for the blocks that occur once."""
    seen: dict[tuple[str, ...], int] = {}
    for i, block in enumerate(blocks):
        seen[block] = -1 if block in seen else i
    return {block: i for block, i in seen.items() if i >= 0}


def _block_regions(
    blocks_a: Sequence[tuple[str, ...]], blocks_b: Sequence[tuple[str, ...]]
) -> list[tuple[bool, int, int, int, int]]:
    """(equal?, a1, a2, b1, b2) block ranges, in one forward pass: equal blocks are walked in step;
    after a difference both sides are scanned ahead, alternately, for the nearest block that occurs
    once in each, which is where they meet again (rendered files are sorted, so blocks do not move)."""
    in_a, in_b = _unique_positions(blocks_a), _unique_positions(blocks_b)
    na, nb = len(blocks_a), len(blocks_b)
    regions: list[tuple[bool, int, int, int, int]] = []
    i = j = 0
    while i < na and j < nb:
        start_i, start_j = i, j
        while i < na and j < nb and blocks_a[i] == blocks_b[j]:
            i, j = i + 1, j + 1
        if i > start_i:
            regions.append((True, start_i, i, start_j, j))
        if i >= na or j >= nb:
            break
        meet: tuple[int, int] = (na, nb)
        for k in range(max(na - i, nb - j)):
            if i + k < na:
                jj = in_b.get(blocks_a[i + k], -1) if blocks_a[i + k] in in_a else -1
                if jj >= j:
                    meet = (i + k, jj)
                    break
            if j + k < nb:
                ii = in_a.get(blocks_b[j + k], -1) if blocks_b[j + k] in in_b else -1
                if ii >= i:
                    meet = (ii, j + k)
                    break
        regions.append((False, i, meet[0], j, meet[1]))
        i, j = meet
    if i < na or j < nb:
        regions.append((False, i, na, j, nb))
    return regions


def opcodes(a: Sequence[str], b: Sequence[str]) -> list[Opcode]:
    """difflib-style opcodes turning line list `a` into `b`."""
    blocks_a, starts_a = _blocks(a)
    blocks_b, starts_b = _blocks(b)
    if len(blocks_a) <= 1 or len(blocks_b) <= 1:
        return _line_opcodes(a, b, 0, 0)
    bounds_a, bounds_b = [*starts_a, len(a)], [*starts_b, len(b)]
    out: list[Opcode] = []
    for equal, i1, i2, j1, j2 in _block_regions(blocks_a, blocks_b):
        la1, la2, lb1, lb2 = bounds_a[i1], bounds_a[i2], bounds_b[j1], bounds_b[j2]
        if equal:
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
    codes = opcodes(a, b) or [("equal", 0, 1, 0, 1)]  # as difflib does for two empty inputs
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
