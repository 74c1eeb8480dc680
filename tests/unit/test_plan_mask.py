"""Masking secrets in plans: every occurrence, whatever the number of secrets."""

from __future__ import annotations

from reconciler.plan import MASK, mask


def test_mask_hides_a_secret_and_a_longer_secret_that_starts_with_it() -> None:
    text = "a abcdefgh b abcdefghij c\nabcdefgh\n"
    assert mask(text, ["abcdefgh", "abcdefghij"]) == f"a {MASK} b {MASK} c\n{MASK}\n"


def test_mask_hides_every_one_of_thousands_of_secrets() -> None:
    secrets = [f"S3cret-{i:05d}-xyz" for i in range(3000)]
    text = "".join(f"contact = sip:{s}@host ; {s}\n" for s in secrets)
    masked = mask(text, secrets)
    assert not any(s in masked for s in secrets)
    assert masked.count(MASK) == 6000


def test_mask_treats_regex_characters_in_secrets_literally() -> None:
    assert mask("x a.b*c+d y axbbbcd", ["a.b*c+d"]) == f"x {MASK} y axbbbcd"
