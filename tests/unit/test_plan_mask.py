"""Masking secrets in plans: every occurrence, whatever the number of secrets."""

from __future__ import annotations

from reconciler.plan import MASK, make_plan, mask


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


def test_a_rotated_password_shows_where_it_changed_without_either_value() -> None:
    old = "[trunk-auth]\ntype = auth\npassword = Old-Secret-Value-1\n"
    new = "[trunk-auth]\ntype = auth\npassword = New-Secret-Value-2\n"
    plan = make_plan({"pjsip.conf": new}, {"pjsip.conf": old}, ["New-Secret-Value-2"])
    assert f"-password = {MASK}\n" in plan.diff and f"+password = {MASK}\n" in plan.diff
    assert "Old-Secret-Value-1" not in plan.diff and "New-Secret-Value-2" not in plan.diff
