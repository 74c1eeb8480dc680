"""Phones and the provider trunk register, as a person would check by hand on a fresh PBX."""

from __future__ import annotations

import secrets

import pytest

from tests.harness import sipp
from tests.harness.containers import PROVIDER_USER, PbxStack

pytestmark = pytest.mark.integration


def test_extension_registers_with_its_password_and_shows_in_contacts(live_pbx: PbxStack) -> None:
    result = sipp.register("4001", live_pbx.password("4001"), live_pbx.pbx.sip_port)

    assert result.final_status("REGISTER") == 200, result.describe()
    assert result.ok, result.describe()
    assert f"4001/sip:4001@127.0.0.1:{result.local_port}" in live_pbx.pbx.contacts()


def test_extension_with_a_wrong_password_never_gets_a_200(live_pbx: PbxStack) -> None:
    wrong = "Wrong-" + secrets.token_urlsafe(16)

    result = sipp.register("4003", wrong, live_pbx.pbx.sip_port)

    assert 200 not in result.statuses, result.describe()
    assert result.final_status("REGISTER") in (401, 403), result.describe()
    assert not result.ok
    assert not any(c.startswith("4003/") for c in live_pbx.pbx.contacts())


def test_another_extensions_password_does_not_register_an_extension(live_pbx: PbxStack) -> None:
    result = sipp.register("4003", live_pbx.password("4004"), live_pbx.pbx.sip_port)

    assert 200 not in result.statuses, result.describe()
    assert not any(c.startswith("4003/") for c in live_pbx.pbx.contacts())


def test_pbx_registration_to_the_provider_is_registered(live_pbx: PbxStack) -> None:
    registered = live_pbx.pbx.wait_registered("fake_provider", timeout_s=20)

    assert registered, live_pbx.pbx.cli("pjsip show registrations")
    # and the provider agrees: it holds the PBX's contact, from the PBX's own SIP port
    expected = f"{PROVIDER_USER}/sip:{PROVIDER_USER}@127.0.0.1:{live_pbx.pbx.sip_port}"
    contacts = [c.split(";")[0] for c in live_pbx.provider.contacts()]
    assert expected in contacts, live_pbx.provider.cli("pjsip show contacts")


def test_unregistering_removes_the_phone_from_contacts(live_pbx: PbxStack) -> None:
    registered = sipp.register("4004", live_pbx.password("4004"), live_pbx.pbx.sip_port)
    assert registered.final_status("REGISTER") == 200, registered.describe()
    assert f"4004/sip:4004@127.0.0.1:{registered.local_port}" in live_pbx.pbx.contacts()

    removed = sipp.unregister(
        "4004", live_pbx.password("4004"), live_pbx.pbx.sip_port, local_port=registered.local_port
    )

    assert removed.final_status("REGISTER") == 200, removed.describe()
    assert not any(c.startswith("4004/") for c in live_pbx.pbx.contacts())
