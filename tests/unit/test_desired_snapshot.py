"""The object snapshot: what the plan compares and the PBX keeps as last applied."""

from reconciler.desired.model import DesiredState
from reconciler.desired.snapshot import Snapshot, changes, snapshot_of

KEY = b"k" * 32


def _state(*numbers: str, name: str = "Phone") -> DesiredState:
    return DesiredState.model_validate(
        {"extensions": [{"number": n, "name": name, "password": f"${{EXT_{n}_PASSWORD}}"} for n in numbers]}
    )


def _secrets(*numbers: str, value: str = "s3cret-Value-1") -> dict[str, str]:
    return {f"EXT_{n}_PASSWORD": value for n in numbers}


def test_a_password_change_is_a_change_of_the_password_field_and_no_value_is_written_down() -> None:
    before = snapshot_of(_state("4001"), _secrets("4001"), KEY)
    after = snapshot_of(_state("4001"), _secrets("4001", value="another-Value-2"), KEY)
    [change] = changes(before, after)
    assert (change.key, change.action, change.fields) == ("extension:4001", "change", ("password",))
    assert "s3cret" not in before.to_json() and "another" not in after.to_json()


def test_adds_removes_and_unchanged_objects_are_told_apart() -> None:
    before = snapshot_of(_state("4001", "4002"), _secrets("4001", "4002"), KEY)
    after = snapshot_of(_state("4002", "4003"), _secrets("4002", "4003"), KEY)
    assert [(c.key, c.action) for c in changes(before, after)] == [
        ("extension:4003", "add"),
        ("extension:4001", "remove"),
    ]


def test_a_snapshot_survives_json_and_another_version_is_not_trusted() -> None:
    snap = snapshot_of(_state("4001"), _secrets("4001"), KEY)
    assert Snapshot.from_json(snap.to_json()) == snap
    assert Snapshot.from_json('{"version": 99, "objects": {}}') is None
    assert Snapshot.from_json("not json") is None


def test_nothing_applied_yet_makes_every_object_an_add() -> None:
    snap = snapshot_of(_state("4001"), _secrets("4001"), KEY)
    assert {c.action for c in changes(None, snap)} == {"add"}
