"""Calls that do something after the answer (DTMF, waiting, listening) and phones that only ring.

`scripted_call` dials like `sipp.call` but then runs steps: `Pause(s)`, `Dtmf(digits)` and `Play()`
(speech from a pcap, e.g. a message left on voicemail). DTMF goes
as RFC 4733 events in RTP (SIPp's `<exec play_dtmf>`, payload 96, accepted by an endpoint with
`dtmf_mode=rfc4733`, the default of the rendered endpoints) or as SIP INFO `application/dtmf-relay`
(res_pjsip_dtmf_info; Asterisk 22 accepted it on an rfc4733 endpoint too). Every pause is a wait for
the PBX's BYE, so a dialplan that hangs up mid-script ends the run cleanly
(`result.requests_received("BYE") == 1`). `media_port` points the SDP at another local port, e.g. a
`tests.harness.rtp.RtpReceiver` counting what the caller hears; with `rtp_symmetric=yes` Asterisk
switches its audio to the port RFC 4733 DTMF comes from (SIPp's), so combine a receiver with INFO
DTMF only. `background_call` runs the same in the background (a caller left ringing while another
phone picks it up). `ringing_phone` registers a phone that answers every INVITE with 180 and never
with 200; it records each INVITE and each CANCEL, as `sipp.answering_phone` records answers.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar
from xml.etree import ElementTree

from tests.harness import ports, sipp
from tests.harness.waiting import wait_until

DtmfMethod = Literal["rfc4733", "info"]
_TEMPLATE = sipp.SCENARIOS / "call_steps.xml"
_MARKER = "<!--STEPS-->"


@dataclass(frozen=True)
class Pause:
    """Stay in the call for `seconds` (ends early, successfully, when the PBX hangs up)."""

    seconds: float


@dataclass(frozen=True)
class Dtmf:
    """Press `digits` (0-9, *, #), each `duration_ms` long, `gap_ms` apart."""

    digits: str
    duration_ms: int = 250
    gap_ms: int = 250


SPEECH_PCAP = Path("/usr/share/sip-tester/g711a.pcap")  # 7 s of PCMA speech shipped with SIPp


@dataclass(frozen=True)
class Play:
    """Send the RTP of a pcap from SIPp's media port (default: 7 s of speech, for a voicemail), and
    stay `seconds` (the pcap plays on in the background when `seconds` is shorter)."""

    seconds: float = 7.5
    pcap: Path = SPEECH_PCAP


Step = Pause | Dtmf | Play


def _wait_xml(index: int, ms: int) -> str:
    # An interruptible pause: a BYE from the PBX ends the script, silence for `ms` goes on. A
    # re-INVITE from the PBX (a connected-line update once the call is bridged) is answered with
    # our SDP and the pause starts over (INFO and BYE name the PBX's tag with [peer_tag_param]:
    # [last_To:] would be the re-INVITE's, whose To is our side).
    return (
        f'  <label id="wait{index}"/>\n'
        # SIPp times the first of a run of recvs: the timeout is on the optional one
        f'  <recv request="INVITE" optional="true" timeout="{max(ms, 1)}" ontimeout="step{index}" '
        f'next="reinvite{index}"/>\n'
        f'  <recv request="BYE" next="remote_bye"/>\n'
        f'  <label id="reinvite{index}"/>\n' + _REINVITE_OK + f'  <recv request="ACK" next="wait{index}"/>\n'
        f'  <label id="step{index}"/>\n'
    )


_REINVITE_OK = """  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=phone 53655765 2353687639 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [sdp_port] RTP/AVP 0 8 96
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
      a=rtpmap:96 telephone-event/8000
      a=fmtp:96 0-16
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
"""


_INFO = """  <send retrans="500">
    <![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "[service]" <sip:[service]@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[dial]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration={duration}

    ]]>
  </send>
  <recv response="200" next="info{index}"/>
  <label id="info{index}"/>
"""


def _steps_xml(steps: Sequence[Step], dtmf: DtmfMethod) -> tuple[str, int]:
    """The scenario text for `steps` and the CSeq the BYE must use."""
    out: list[str] = []
    cseq = 10
    index = 0
    for step in steps:
        index += 1
        if isinstance(step, Pause):
            out.append(_wait_xml(index, int(step.seconds * 1000)))
            continue
        if isinstance(step, Play):
            out.append(f'  <nop><action><exec play_pcap_audio="{step.pcap}"/></action></nop>\n')
            index += 1
            out.append(_wait_xml(index, int(step.seconds * 1000)))
            continue
        if not step.digits or any(d not in "0123456789*#" for d in step.digits):
            raise ValueError(f"DTMF digits must be 0-9, * or #: {step.digits!r}")
        if dtmf == "rfc4733":
            out.append(
                f'  <nop><action><exec play_dtmf="{step.digits},{step.duration_ms}"/></action></nop>\n'
            )
            index += 1
            # play_dtmf does not block: wait until every digit has been sent
            out.append(_wait_xml(index, len(step.digits) * (step.duration_ms + step.gap_ms) + 100))
            continue
        for digit in step.digits:
            cseq += 1
            index += 1
            out.append(_INFO.format(cseq=cseq, digit=digit, duration=step.duration_ms, index=index))
            index += 1
            out.append(_wait_xml(index, step.gap_ms))
    return "".join(out), cseq + 1


_ANSWER = '<recv response="200" rrs="true"/>'


def _scenario(run_dir: Path, steps: Sequence[Step], dtmf: DtmfMethod, ring_timeout_s: float | None) -> Path:
    body, bye_cseq = _steps_xml(steps, dtmf)
    text = _TEMPLATE.read_text()
    if _MARKER not in text or text.count(_ANSWER) != 1:
        raise sipp.SippError(f"{_TEMPLATE} has no {_MARKER} marker or not one {_ANSWER}")
    if ring_timeout_s is not None:
        # no answer in time: every recv after the authenticated INVITE jumps to give_up (CANCEL)
        start = text.index("CSeq: 2 INVITE")
        end = text.index(_ANSWER) + len(_ANSWER)
        waits = text[start:end].replace(
            "<recv response=", f'<recv timeout="{int(ring_timeout_s * 1000)}" ontimeout="give_up" response='
        )
        text = text[:start] + waits + text[end:]
    text = text.replace(_MARKER, body).replace("[bye_cseq]", str(bye_cseq))
    cancel, ack = _offsets(text)
    text = text.replace("CANCEL_OFFSET", str(cancel)).replace("ACK_OFFSET", str(ack))
    path = run_dir / "scenario.xml"
    path.write_text(text)
    return path


def _offsets(text: str) -> tuple[int, int]:
    """How many SIPp messages (labels are not messages) the give-up CANCEL and its ACK are after the
    authenticated INVITE: SIPp's [branch-N] names the branch of the message N before."""
    root = ElementTree.fromstring(text.encode("iso-8859-1"))
    messages = [el for el in root if el.tag in ("send", "recv", "pause", "nop", "sendCmd", "recvCmd")]
    sends = [i for i, el in enumerate(messages) if el.tag == "send"]
    invite = next(i for i in sends if "CSeq: 2 INVITE" in (messages[i].text or ""))
    cancel = next(i for i in sends if "CSeq: 2 CANCEL" in (messages[i].text or ""))
    ack = next(i for i in sends if i > cancel and "CSeq: 2 ACK" in (messages[i].text or ""))
    return cancel - invite, ack - invite


class BackgroundCall:
    """A scripted call running in the background; `result()` waits for it and parses its trace."""

    # A phone's port is reserved for the one call and released with it; a trunk's is not.
    releases_local_port = True

    def __init__(
        self, proc: subprocess.Popen[bytes], run_dir: Path, local_port: int, media: int, bound_s: float
    ) -> None:
        self.process = proc
        self.run_dir = run_dir
        self.local_port = local_port
        self._media = media
        self._deadline = time.monotonic() + bound_s
        self._result: sipp.SippResult | None = None

    @property
    def running(self) -> bool:
        """The SIPp of this call is still running."""
        return self.process.poll() is None

    def result(self) -> sipp.SippResult:
        """Wait (at most until the call's own bound) for SIPp to exit; SIGKILL it after that."""
        if self._result is not None:
            return self._result
        killed = False
        try:
            self.process.wait(timeout=max(self._deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            killed = True
        finally:
            sipp._kill(self.process)
            if self.releases_local_port:
                ports.release_port(self.local_port)
            ports.release_port(self._media)
        trace = self.run_dir / "messages.log"
        messages = sipp.parse_trace(trace.read_text(errors="replace")) if trace.exists() else []
        code = self.process.returncode if self.process.returncode is not None else -9
        self._result = sipp.SippResult(code, messages, self.run_dir, self.local_port, killed)
        return self._result


def start_call(
    ext: str,
    password: str,
    dial: str,
    pbx_port: int,
    steps: Sequence[Step] = (Pause(1.0),),
    *,
    dtmf: DtmfMethod = "rfc4733",
    media_port: int | None = None,
    hangup: Literal["caller", "pbx"] = "caller",
    ring_timeout_s: float | None = None,
    timeout_s: float = 30.0,
) -> BackgroundCall:
    """Start a scripted call from `ext` to `dial` (digest auth) and return at once.

    After the 200 the steps run, then the caller sends BYE; with `hangup="pbx"` it waits (within
    `timeout_s`) for the PBX's BYE instead. `media_port`: the RTP port written into the SDP.
    `ring_timeout_s`: give up (CANCEL, `result.ok` False) when no 200 came in that time after the
    INVITE; without it the caller waits up to `timeout_s` and is then SIGKILLed (no CANCEL: the
    PBX keeps ringing until its Dial timeout).
    """
    port = ports.reserve_port()
    try:
        return spawn_scripted(
            BackgroundCall, f"steps-{ext}-{dial.replace('*', 's').replace('#', 'h')}", pbx_port, port,
            lambda run_dir, all_steps: _scenario(run_dir, all_steps, dtmf, ring_timeout_s),
            steps, service=ext, dial=dial, credentials=(ext, password), media_port=media_port,
            hangup=hangup, timeout_s=timeout_s,
        )  # fmt: skip
    except BaseException:
        ports.release_port(port)
        raise


CallT = TypeVar("CallT", bound="BackgroundCall")


def spawn_scripted(
    call_class: type[CallT],
    label: str,
    pbx_port: int,
    local_port: int,
    scenario: Callable[[Path, list[Step]], Path],
    steps: Sequence[Step],
    *,
    service: str,
    dial: str,
    credentials: tuple[str, str] | None,
    media_port: int | None,
    hangup: Literal["caller", "pbx"],
    timeout_s: float,
    extra: Sequence[str] = (),
) -> CallT:
    """Start SIPp from `local_port` with the scenario `scenario(run_dir, steps)` writes (steps, then a
    wait for the PBX's BYE with `hangup="pbx"`), a media port of its own; return `call_class` at once."""
    media = ports.reserve_port(also_free=(2,))
    run_dir = sipp._run_dir(label)
    all_steps = list(steps) + ([Pause(timeout_s)] if hangup == "pbx" else [])
    argv = sipp._argv(
        "call_steps.xml", pbx_port, local_port, media, run_dir,
        service=service, keys={"dial": dial, "sdp_port": str(media_port or media)},
        credentials=credentials, timeout_s=timeout_s, extra=tuple(extra),
    )  # fmt: skip
    try:
        argv[argv.index("-sf") + 1] = str(scenario(run_dir, all_steps))
        proc = sipp._spawn(argv, run_dir)
    except BaseException:
        ports.release_port(media)
        raise
    return call_class(proc, run_dir, local_port, media, timeout_s + 5)


def scripted_call(
    ext: str,
    password: str,
    dial: str,
    pbx_port: int,
    steps: Sequence[Step] = (Pause(1.0),),
    *,
    dtmf: DtmfMethod = "rfc4733",
    media_port: int | None = None,
    hangup: Literal["caller", "pbx"] = "caller",
    ring_timeout_s: float | None = None,
    timeout_s: float = 30.0,
) -> sipp.SippResult:
    """`start_call(...)` and wait for its result: `result.ok` means answered, every step ran, and
    the call ended with a BYE (ours answered 200, or the PBX's)."""
    return start_call(
        ext, password, dial, pbx_port, steps,
        dtmf=dtmf, media_port=media_port, hangup=hangup, ring_timeout_s=ring_timeout_s,
        timeout_s=timeout_s,
    ).result()  # fmt: skip


@contextlib.contextmanager
def background_call(
    ext: str,
    password: str,
    dial: str,
    pbx_port: int,
    steps: Sequence[Step] = (Pause(1.0),),
    **kwargs: object,
) -> Iterator[BackgroundCall]:
    """`start_call` as a context manager: the SIPp is SIGKILLed on exit if still running."""
    call = start_call(ext, password, dial, pbx_port, steps, **kwargs)  # type: ignore[arg-type]
    try:
        yield call
    finally:
        if call.running:
            sipp._kill(call.process)
        call.result()


class RingingPhone(sipp.AnsweringPhone):
    """A registered SIPp UAS that rings (180) and never answers: it tells which calls reached it."""

    def invited_calls(self) -> list[str]:
        """Call-IDs of the INVITEs this phone received (and answered 180)."""
        return self._events("invited")

    def cancelled_calls(self) -> list[str]:
        """Call-IDs the PBX CANCELled (a pickup, another contact answering, or the caller gone)."""
        return self._events("cancelled")

    def wait_invited(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until this phone received at least `count` INVITEs."""
        return wait_until(lambda: len(self.invited_calls()) >= count, timeout_s, interval_s=0.05)


@contextlib.contextmanager
def ringing_phone(
    ext: str, password: str, pbx_port: int, *, expires: int = 300, max_life_s: float = 300.0
) -> Iterator[RingingPhone]:
    """Register `ext` from a reserved port and ring (never answer) there until the block ends.

    Like `sipp.answering_phone` (same registration, same clean-up), with scenario ring.xml.
    Raises SippError when the registration is refused.
    """
    with sipp.answering_phone(
        ext, password, pbx_port, expires=expires, max_life_s=max_life_s, scenario="ring.xml"
    ) as phone:
        ringing = RingingPhone(phone.ext, phone.local_port, phone.events_file, phone.registration)
        ringing.process = phone.process
        yield ringing
