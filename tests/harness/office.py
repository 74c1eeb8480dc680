"""Office features in tests: a desired state with per-extension call settings and ring groups, the
phones' own settings (AstDB) wiped, and a phone that rings a while before it answers.

`write_office_desired(stack, extensions={"4001": {"pickup_group": "sales"}}, ring_groups=[...])`
rewrites `stack.desired_dir`: the stack's usual desired state (4000-4005, routes, provider) with
the given fields added to those extensions and the ring groups in `office.yaml`; `stack.apply()`
then makes it live. `forget_phone_settings(stack)` deletes what phones set with feature codes
(`*72`, `*78`, ...), so a test starts from "as in desired/".

`slow_answering_phone` registers like `sipp.answering_phone` but records each INVITE (as
`calls.ringing_phone` does), rings `answer_after_s`, then answers: long enough for a busy lamp to
see the ringing, or to tell which member of a hunt group rang first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import yaml

from tests.harness import calls, containers, sipp
from tests.harness.containers import PbxStack

PHONE_FAMILIES = ("gitops-dnd", "gitops-fwd-always", "gitops-fwd-busy", "gitops-fwd-noanswer")


def office_yaml(
    pbx_port: int,
    provider_port: int,
    *,
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    ring_groups: Sequence[Mapping[str, Any]] = (),
) -> dict[str, str]:
    """File name → YAML text: `containers.desired_yaml` with `extensions` (number → extra fields,
    e.g. `{"devices": 2}`) merged into those extensions, and `ring_groups` in `office.yaml`."""
    files = containers.desired_yaml(pbx_port, provider_port)
    extra = dict(extensions or {})
    unknown = sorted(set(extra) - set(containers.EXTENSIONS))
    if unknown:
        raise ValueError(f"no such test extension(s): {', '.join(unknown)}")
    entries = [
        {
            "number": number,
            "name": f"Extension {number}",
            "password": f"${{EXT_{number}_PASSWORD}}",
            "voicemail": True,
            **extra.get(number, {}),
        }
        for number in containers.EXTENSIONS
    ]
    files["extensions.yaml"] = yaml.safe_dump({"extensions": entries}, sort_keys=False)
    if ring_groups:
        files["office.yaml"] = yaml.safe_dump(
            {"ring_groups": [dict(g) for g in ring_groups]}, sort_keys=False
        )
    return files


def write_office_desired(
    stack: PbxStack,
    *,
    extensions: Mapping[str, Mapping[str, Any]] | None = None,
    ring_groups: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Replace the YAML files of `stack.desired_dir` with `office_yaml(...)` for this stack."""
    files = office_yaml(
        stack.pbx.sip_port, stack.provider.sip_port, extensions=extensions, ring_groups=ring_groups
    )
    for old in stack.desired_dir.glob("*.yaml"):
        old.unlink()
    for name, text in files.items():
        (stack.desired_dir / name).write_text(text)


def forget_phone_settings(stack: PbxStack) -> None:
    """Delete every do-not-disturb and forward a phone set with a feature code (AstDB)."""
    stack.pbx.cli(*(f"database deltree {family}" for family in PHONE_FAMILIES))


def phone_settings(stack: PbxStack) -> str:
    """`database show` of the feature-code families: what phones have set (for assertion messages)."""
    return stack.pbx.cli(*(f"database show {family}" for family in PHONE_FAMILIES))


def _slow_answer_scenario(answer_after_s: float) -> str:
    """answer.xml with the INVITE recorded (`invited <Call-ID>`) and a pause between 180 and 200."""
    text = (sipp.SCENARIOS / "answer.xml").read_text()
    invite = '<recv request="INVITE" crlf="true"/>'
    ringing_end = "</send>"
    if text.count(invite) != 1:
        raise sipp.SippError("answer.xml has not one INVITE recv to record")
    text = text.replace(
        invite,
        '<recv request="INVITE" crlf="true">\n    <action>\n'
        '      <exec command="echo invited [call_id] >> [events]"/>\n    </action>\n  </recv>',
    )
    first_send_end = text.index(ringing_end, text.index("180 Ringing")) + len(ringing_end)
    pause = f'\n\n  <pause milliseconds="{int(answer_after_s * 1000)}"/>\n'
    return text[:first_send_end] + pause + text[first_send_end:]


@contextlib.contextmanager
def slow_answering_phone(
    ext: str, password: str, pbx_port: int, *, answer_after_s: float = 2.0, max_life_s: float = 300.0
) -> Iterator[calls.RingingPhone]:
    """A registered phone that rings `answer_after_s` (180), then answers (200); it records each
    INVITE (`invited_calls()`), each answer (`answered_calls()`) and each BYE (`hung_up_calls()`).
    A CANCEL while it rings is not expected (the scenario then fails for that call)."""
    scenario_dir = sipp._run_dir(f"slow-answer-scenario-{ext}")
    scenario = scenario_dir / "slow_answer.xml"
    scenario.write_text(_slow_answer_scenario(answer_after_s), encoding="iso-8859-1")
    # an absolute scenario path: `SCENARIOS / scenario` is that path
    with sipp.answering_phone(
        ext, password, pbx_port, max_life_s=max_life_s, scenario=str(scenario)
    ) as phone:
        slow = calls.RingingPhone(phone.ext, phone.local_port, phone.events_file, phone.registration)
        slow.process = phone.process
        yield slow
