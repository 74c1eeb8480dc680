"""`softphones`: what a person types into a softphone for each extension, and a QR code of it.

The account comes from the desired state: server and port from `pbx` (or `--server`, because a PBX
bound to 0.0.0.0 has no dialable address of its own), transport UDP (every extension endpoint is
reachable on the UDP transport), user and auth user = the extension number. Passwords are shown
only when asked for, and only resolved then.

QR payload: there is no cross-vendor standard for SIP account QR codes, so the code holds a SIP URI
in the RFC 3261 userinfo form, `sip:USER[:PASSWORD]@SERVER:PORT;transport=udp`, which generic QR
scanners show as text and several softphones (e.g. Linphone's address field, Zoiper's QR login
in "URI" mode) accept; the same fields are printed in the table for typing by hand.
"""

from __future__ import annotations

import io
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import qrcode

from reconciler.desired.model import DesiredState, SecretRef

UNSPECIFIED = ("0.0.0.0", "::")


@dataclass(frozen=True)
class SoftphoneAccount:
    """The settings of one extension as a softphone wants them."""

    number: str
    display_name: str
    server: str
    port: int
    transport: str
    username: str
    auth_username: str
    password_ref: str
    password: str | None = field(default=None, repr=False)
    voicemail: bool = False

    def uri(self, with_password: bool = False) -> str:
        """The account as `sip:user[:password]@server:port;transport=...` (the QR payload)."""
        host = f"[{self.server}]" if _is_ipv6(self.server) else self.server
        userinfo = quote(self.username, safe="")
        if with_password and self.password is not None:
            userinfo += ":" + quote(self.password, safe="")
        return f"sip:{userinfo}@{host}:{self.port};transport={self.transport}"


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def server_address(state: DesiredState, server: str | None = None) -> tuple[str, str | None]:
    """(address phones dial, warning or None). `server` (from --server) wins; an unspecified bind
    address falls back to `pbx.external_address`, else stays a placeholder with a warning."""
    if server:
        return server, None
    bind = state.pbx.bind
    if bind not in UNSPECIFIED:
        return bind, None
    if state.pbx.external_address:
        return state.pbx.external_address, (
            f"pbx.bind is {bind}: showing pbx.external_address; phones on the LAN should use the "
            "PBX's LAN address instead (pass --server ADDRESS)"
        )
    return "<PBX address>", (
        f"pbx.bind is {bind}, which phones cannot dial: pass --server with the PBX's LAN address or host name"
    )


def accounts(
    state: DesiredState,
    *,
    server: str | None = None,
    passwords: dict[str, str | None] | None = None,
) -> list[SoftphoneAccount]:
    """One account per extension, in the order of the desired state. `passwords` maps a secret
    reference name to its value (None: not set); without it no password is filled in."""
    address, _ = server_address(state, server)
    result = []
    for ext in state.extensions:
        ref = SecretRef(ext.password).name
        result.append(
            SoftphoneAccount(
                number=ext.number,
                display_name=ext.name,
                server=address,
                port=state.pbx.port,
                transport="udp",
                username=ext.number,
                auth_username=ext.number,
                password_ref=ref,
                password=(passwords or {}).get(ref),
                voicemail=ext.has_voicemail,
            )
        )
    return result


def qr_ascii(payload: str) -> str:
    """The QR code of `payload` as terminal text (two characters per module, readable by phone cameras)."""
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(payload)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def write_qr_svg(payload: str, path: Path) -> Path:
    """Write the QR code of `payload` as an SVG file (pure Python: no imaging library needed)."""
    from qrcode.image.svg import SvgPathImage

    image = qrcode.make(payload, image_factory=SvgPathImage, border=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        image.save(fh)
    return path
