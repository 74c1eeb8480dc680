"""A provider's problem reaches every view: status (text and JSON shape), /metrics and doctor."""

from __future__ import annotations

import json

from reconciler.asterisk import parsers
from reconciler.asterisk.providers_health import HostLookup
from reconciler.desired.model import DesiredState
from reconciler.observe.doctor import Verdict, _provider_host_checks
from reconciler.observe.metrics import render_metrics
from reconciler.observe.status import build_providers, summarize
from tests.unit.test_status_build import ENDPOINTS, REJECTED

STATE = DesiredState.model_validate(
    {
        "providers": [
            {
                "name": "fake_provider",
                "host": "127.0.0.1",
                "port": 18520,
                "username": "u",
                "password": "${P}",
                "register": True,
            },
            {"name": "far", "host": "does-not-exist.invalid", "username": "u", "password": "${P}"},
        ],
    }
)
DEGRADED = {"fake_provider": "host does-not-exist.invalid does not resolve"}
NO_ANSWER = (
    "[2026-12-01 20:46:47.849] WARNING[52] res_pjsip_outbound_registration.c: No response received from "
    "'sip:127.0.0.1:18520' on registration attempt to 'sip:pbxtrunk@127.0.0.1:18520', retrying in '20'"
)


def status(degraded: dict[str, str], registrations: str = REJECTED, endpoints: str = ENDPOINTS) -> dict:
    providers = build_providers(
        parsers.parse_endpoints(endpoints),
        parsers.parse_registrations(registrations),
        STATE,
        degraded=degraded,
        events=parsers.parse_registration_events([NO_ANSWER]),
    )
    result = {
        "asterisk": {"reachable": True},
        "providers": providers,
        "extensions": [],
        "last_reconcile": None,
    }
    result["summary"] = summarize(result)
    return result


def test_a_degraded_provider_has_its_problem_a_hint_and_makes_status_unhealthy() -> None:
    shown = status(DEGRADED)
    (provider,) = shown["providers"]
    assert provider["problem"] == "host does-not-exist.invalid does not resolve"
    assert "comes up by itself" in provider["hint"]
    assert (
        "provider fake_provider: host does-not-exist.invalid does not resolve" in shown["summary"]["problems"]
    )
    assert shown["summary"]["providers_degraded"] == 1


def test_a_rejected_registration_says_why_from_the_log() -> None:
    (provider,) = status({})["providers"]
    assert provider["problem"] is None
    assert provider["reason"] == "no response from sip:127.0.0.1:18520, retrying in 20 s"
    assert "provider fake_provider is Rejected (no response from" in status({})["summary"]["problems"][0]


def test_a_desired_provider_without_its_identify_in_asterisk_is_a_problem() -> None:
    without_identify = ENDPOINTS.replace("   Identify:  fake_provider-identify/fake_provider\n", "").replace(
        "        Match: 127.0.0.1:18520/32\n", ""
    )
    (provider,) = status({}, endpoints=without_identify)["providers"]
    assert provider["problem"].startswith("identify not loaded")


def test_metrics_expose_one_degraded_gauge_per_provider() -> None:
    text = render_metrics(status(DEGRADED), [])
    assert 'reconciler_provider_degraded{provider="fake_provider"} 1' in text
    assert "# TYPE reconciler_provider_degraded gauge" in text
    assert 'reconciler_provider_degraded{provider="fake_provider"} 0' in render_metrics(status({}), [])


def test_doctor_fails_a_provider_whose_host_does_not_resolve_in_the_container_and_passes_the_others() -> None:
    raw = {
        "state": json.dumps(
            {"revision": "r", "degraded": {"far": "host does-not-exist.invalid does not resolve"}}
        ),
        "lookups": {"does-not-exist.invalid": HostLookup("does-not-exist.invalid", resolved=False)},
    }
    (check,) = _provider_host_checks(raw, STATE)  # 127.0.0.1 needs no lookup: no check for it
    assert (check.name, check.verdict) == ("provider far host resolves", Verdict.FAIL)
    assert "getent ahosts does-not-exist.invalid" in (check.fix or "")
    raw["lookups"] = {"does-not-exist.invalid": HostLookup("does-not-exist.invalid", resolved=True)}
    (check,) = _provider_host_checks(raw, STATE)
    assert check.verdict == Verdict.WARN and "recorded" in check.detail
