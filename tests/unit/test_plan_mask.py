"""Masking secrets in plans: every occurrence, whatever the number of secrets."""

from __future__ import annotations

from reconciler.gitops.plan import MASK, make_plan, mask


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


def test_a_changed_username_secret_shows_neither_its_old_nor_its_new_value() -> None:
    old = (
        "[trunk-auth]\ntype = auth\nusername = old-user-value\npassword = Old-Secret-Value-1\n"
        "[trunk]\ntype = endpoint\nfrom_user = old-user-value\n"
        "[trunk-reg]\ntype = registration\nclient_uri = sip:old-user-value@sip.example.com:5070\n"
        "contact_user = old-user-value\n"
    )
    new = old.replace("old-user-value", "new-user-value")
    # Only the new value is among the current secrets: the old one must be masked by position.
    plan = make_plan({"pjsip.conf": new}, {"pjsip.conf": old}, ["new-user-value"])
    assert "old-user-value" not in plan.diff and "new-user-value" not in plan.diff
    assert f"-username = {MASK}\n" in plan.diff and f"+contact_user = {MASK}\n" in plan.diff
    assert f"+client_uri = sip:{MASK}@sip.example.com:5070\n" in plan.diff
    assert "old-user-value" not in mask(old)


def test_an_extensions_own_username_its_number_stays_visible() -> None:
    text = "[4001-auth]\ntype = auth\nusername = 4001\n[trunk-auth]\nusername = someone\n"
    assert mask(text) == f"[4001-auth]\ntype = auth\nusername = 4001\n[trunk-auth]\nusername = {MASK}\n"


def test_the_plan_diff_has_exactly_difflibs_unified_format() -> None:
    import difflib

    old = "".join(f"line {i}\n" for i in range(60))
    new = old.replace("line 5\n", "line five\n").replace("line 40\n", "").replace("line 59\n", "end\n")
    plan = make_plan({"extensions.conf": new}, {"extensions.conf": old})
    expected = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            "live/extensions.conf",
            "new/extensions.conf",
        )
    )
    assert plan.diff == expected
