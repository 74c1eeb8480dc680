"""Status at scale: extensions online come from the registered contacts, never from every endpoint."""

from __future__ import annotations

from typing import Any

from reconciler.asterisk import parsers
from reconciler.desired.model import DesiredState
from reconciler.observe.status import build_extensions, extension_endpoints, query_asterisk

CONTACTS = parsers.parse_contacts(
    "\n  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>\n"
    + "=" * 90
    + "\n\n"
    "  Contact:  4001/sip:4001@127.0.0.1:5091                   60d3445266 NonQual        -nan\n"
    "  Contact:  4002/sip:4002@127.0.0.1:5093                   780103546a Unavail        -nan\n"
    "  Contact:  provider/sip:127.0.0.1:5070                    b0e9390783 NonQual        -nan\n"
    "\nObjects found: 3\n\n"
)


def _state(count: int) -> DesiredState:
    return DesiredState.model_validate(
        {
            "providers": [{"name": "provider", "host": "127.0.0.1", "username": "u", "password": "${P}"}],
            "extensions": [
                {"number": str(4000 + i), "name": f"Ext {i}", "password": "${E}"} for i in range(count)
            ],
        }
    )


def test_every_desired_extension_is_listed_and_only_registered_ones_are_online() -> None:
    state = _state(10)
    eps = extension_endpoints(CONTACTS, [], {"provider"}, state)
    exts = build_extensions(eps, {"provider"}, {}, state)
    assert len(exts) == 10
    by = {e["number"]: e for e in exts}
    assert by["4001"]["state"] == "online" and by["4001"]["device_state"] == "Not in use"
    assert by["4002"]["state"] == "unreachable"
    assert by["4003"]["state"] == "offline" and by["4003"]["device_state"] == "Unavailable"
    assert "provider" not in by


def test_an_extension_with_a_channel_is_in_use() -> None:
    chan = parsers.ChannelInfo(
        "PJSIP/4001-00000000", "internal", "4002", 2, "Up", "Dial", "", "4001", 3, "", "u"
    )
    [ep] = [e for e in extension_endpoints(CONTACTS, [chan], {"provider"}, _state(2)) if e.name == "4001"]
    assert ep.state == "In use" and ep.channels_in_use == 1


class RecordingClient:
    managed_dir = "/etc/asterisk/managed"
    log_path = "/var/log/asterisk/messages.log"

    def __init__(self) -> None:
        self.steps: list[str] = []

    def run_steps(self, steps: list[str]) -> Any:
        self.steps = steps

        class Out:
            outputs = [""] * len(steps)

        return Out()


def test_the_status_exec_never_lists_every_endpoint_only_the_providers_it_was_given() -> None:
    client = RecordingClient()
    query_asterisk(client, None, ["provider"])
    script = "\n".join(client.steps)
    assert "pjsip show endpoints" not in script and "pjsip list endpoints" not in script
    assert "pjsip show endpoint provider" in script and "pjsip show contacts" in script
