"""The pure parts of the Asterisk client: splitting a batched exec's output back into steps."""

from __future__ import annotations

from reconciler.asterisk.client import split_outputs

SEP = "--8<-- gitops-0123 --8<--"


def test_outputs_are_split_exactly_at_the_separator_lines() -> None:
    text = f"first\n\n{SEP}\n\n{SEP}\nthird line 1\nthird line 2\n\n{SEP}\n"
    assert split_outputs(text, SEP) == ["first\n", "", "third line 1\nthird line 2\n"]


def test_output_without_trailing_newline_is_kept_byte_for_byte() -> None:
    assert split_outputs(f"no newline\n{SEP}\n", SEP) == ["no newline"]


def test_separator_text_inside_a_line_does_not_split() -> None:
    text = f"echo {SEP} inline\n{SEP}\n"
    assert split_outputs(text, SEP) == [f"echo {SEP} inline"]
