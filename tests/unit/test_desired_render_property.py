"""Property: rendering is deterministic and independent of the order of YAML entries."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired.confparse import parse_conf
from reconciler.desired.model import (
    DesiredState,
    Extension,
    InboundRoute,
    OutboundRoute,
    PbxSettings,
    Provider,
    secret_refs,
)
from reconciler.desired.render import render
from reconciler.gitops.plan import make_plan
from tests.unit.desired_support import TEMPLATES_DIR

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
DISPLAY = st.from_regex(r"[A-Za-z][A-Za-z0-9 .'-]{0,15}", fullmatch=True).map(str.strip).filter(bool)


@st.composite
def desired_states(draw: st.DrawFn) -> DesiredState:
    provider_names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    providers = [
        Provider(
            name=name,
            host=draw(st.sampled_from(["127.0.0.1", "sip.example.com", "192.0.2.7"])),
            port=draw(st.integers(1024, 65535)),
            transport=draw(st.sampled_from(["udp", "tcp", "tls"])),
            username=draw(st.sampled_from(["trunkuser", f"${{{name.upper()}_USER}}"])),
            password=f"${{{name.upper()}_PASSWORD}}",
            register=draw(st.booleans()),
        )
        for name in provider_names
    ]
    numbers = draw(st.lists(st.integers(1000, 8999).map(str), min_size=1, max_size=8, unique=True))
    extensions = [
        Extension(
            number=n,
            name=draw(DISPLAY),
            password=f"${{EXT_{n}_PASSWORD}}",
            voicemail=draw(st.booleans()),
            codecs=draw(
                st.none() | st.lists(st.sampled_from(["ulaw", "alaw", "g722"]), min_size=1, unique=True)
            ),
        )
        for n in numbers
    ]
    emergency = draw(
        st.lists(st.sampled_from(["911", "112", "999", "110"]), min_size=1, max_size=3, unique=True)
    )
    outbound = [
        OutboundRoute(name="external", prefix="9", strip=draw(st.integers(0, 1)), provider=provider_names[0]),
        OutboundRoute(name="emergency", numbers=emergency, provider=draw(st.sampled_from(provider_names))),
    ]
    inbound = [
        InboundRoute(
            provider=draw(st.sampled_from(provider_names)),
            did=f"+3491000{i:04d}",
            to=draw(st.sampled_from(numbers)),
        )
        for i in range(draw(st.integers(0, 3)))
    ]
    pbx = PbxSettings(
        port=draw(st.integers(1024, 65535)), media_address=draw(st.sampled_from([None, "127.0.0.1"]))
    )
    return DesiredState(
        pbx=pbx, providers=providers, extensions=extensions, outbound=outbound, inbound=inbound
    )


def fake_secrets(state: DesiredState) -> dict[str, str]:
    return {use.name: f"Fake-{use.name.lower()}-9X" for use in secret_refs(state)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=desired_states(), seed=st.randoms(use_true_random=False))
def test_render_is_deterministic_and_ignores_entry_order(state: DesiredState, seed: object) -> None:
    secrets = fake_secrets(state)
    first = render(state, secrets, "feedc0ffee00", TEMPLATES_DIR)
    assert render(state, secrets, "feedc0ffee00", TEMPLATES_DIR) == first

    shuffled = state.model_copy(
        update={
            key: seed.sample(getattr(state, key), len(getattr(state, key)))  # type: ignore[attr-defined]
            for key in ("providers", "extensions", "outbound", "inbound")
        }
    )
    assert render(shuffled, secrets, "feedc0ffee00", TEMPLATES_DIR) == first
    assert not make_plan(first, first).has_changes

    # Extensions are rows of the realtime store, never file objects: the file has the providers only.
    endpoints = {s.name for s in parse_conf(first["pjsip.conf"]) if s.type == "endpoint"}
    assert endpoints == {p.name for p in state.providers}
