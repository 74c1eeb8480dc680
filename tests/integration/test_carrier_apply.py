"""`reconciler.asterisk.carrier.apply_carrier` against a real carrier container: configure a fresh one, change
nothing when nothing changed, reload (not restart) for a new password, and fail loudly when its port
is taken (two Asterisks on one port fail silently otherwise)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from reconciler.asterisk import carrier
from reconciler.asterisk.client import AsteriskClient
from tests.harness import ports
from tests.harness.containers import AsteriskContainer

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_carrier(docker_image: str) -> Iterator[AsteriskContainer]:
    """A container in the carrier role with nothing applied yet, as `make up` starts it."""
    container = AsteriskContainer("carrier")
    container.role = "carrier"
    with container:
        yield container


def _config(container: AsteriskContainer, password: str = "First-Carrier-Pass-1") -> carrier.CarrierConfig:
    return carrier.CarrierConfig(container.sip_port, pbx_port=5999, username="trunk", password=password)


def test_a_fresh_carrier_is_configured_then_left_alone_and_a_new_password_is_only_a_reload(
    fresh_carrier: AsteriskContainer,
) -> None:
    client = AsteriskClient(fresh_carrier.name)

    first = carrier.apply_carrier(client, _config(fresh_carrier))
    assert (first.changed, first.restarted) == (("pjsip.conf", "extensions.conf"), True)
    fresh_carrier.verify_owns_sip_port()
    uptime = client.uptime_s()

    again = carrier.apply_carrier(client, _config(fresh_carrier))
    assert again.unchanged and not again.restarted

    rotated = carrier.apply_carrier(client, _config(fresh_carrier, "Second-Carrier-Pass-2"))
    assert (rotated.changed, rotated.restarted, rotated.reloads) == (
        ("pjsip.conf",),
        False,
        ("module reload res_pjsip.so",),
    )
    assert client.uptime_s() >= uptime  # not restarted
    assert "Second-Carrier-Pass-2" in fresh_carrier.read_file("/etc/asterisk/managed/pjsip.conf")


def test_a_carrier_whose_port_is_taken_says_so_instead_of_booting_deaf(
    fresh_carrier: AsteriskContainer,
) -> None:
    taken = ports.reserve_port()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind(("127.0.0.1", taken))
            config = carrier.CarrierConfig(
                taken, pbx_port=5999, username="trunk", password="Some-Carrier-Pass-3"
            )
            with pytest.raises(carrier.CarrierError) as info:
                carrier.apply_carrier(AsteriskClient(fresh_carrier.name), config)
    finally:
        ports.release_port(taken)
    assert f"could not listen on 127.0.0.1:{taken}/udp" in info.value.message
    assert "another program holds the port" in (info.value.hint or "")
