"""An upgrade from a PBX whose pjsip.conf still defines the extensions: after the first apply the
extension is in the store only (an id in both places would let the file's password win silently)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.asterisk import store
from tests.harness import sipp, storedb
from tests.harness.containers import (
    MANAGED_DIR,
    PbxContainer,
    PbxStack,
    pbx_stack,
)

pytestmark = pytest.mark.integration

OLD_PASSWORD = "Old-file-password-4001"


def old_style_pjsip(port: int) -> str:
    """A pjsip.conf as the reconciler wrote it before the store: extension 4001 as file objects."""
    return (
        "; written by an older reconciler\n"
        "[transport-udp]\ntype = transport\nprotocol = udp\n"
        f"bind = 127.0.0.1:{port}\n\n"
        "[4001-auth]\ntype = auth\nauth_type = userpass\nusername = 4001\n"
        f"password = {OLD_PASSWORD}\n\n"
        "[4001]\ntype = aor\nmax_contacts = 1\nremove_existing = yes\n\n"
        "[4001]\ntype = endpoint\ncontext = internal\ndisallow = all\nallow = ulaw\n"
        "auth = 4001-auth\naors = 4001\n"
    )


@pytest.fixture
def upgraded(docker_image: str, tmp_path: Path) -> Iterator[PbxStack]:
    def old_pjsip(pbx: PbxContainer) -> None:
        pbx.with_managed_file("pjsip.conf", old_style_pjsip(pbx.sip_port))

    with pbx_stack(tmp_path, name_prefix="storeup", prepare=old_pjsip) as stack:
        yield stack


def test_an_extension_defined_in_an_old_pjsip_conf_ends_up_only_in_the_store_and_works(
    upgraded: PbxStack,
) -> None:
    stack = upgraded
    before = sipp.register("4001", OLD_PASSWORD, stack.pbx.sip_port)
    assert before.final_status("REGISTER") == 200, before.describe()  # the old file is live

    result = stack.apply()

    assert result.recorded and all(c.ok for c in result.checks), result
    on_disk = stack.pbx.read_file(f"{MANAGED_DIR}/pjsip.conf")
    assert "[4001]" not in on_disk and "[4001-auth]" not in on_disk
    assert "4001" in storedb.endpoint_ids(stack.pbx)
    assert storedb.password_row(stack.pbx, "4001") == stack.password("4001")
    new = sipp.register("4001", stack.password("4001"), stack.pbx.sip_port)
    assert new.final_status("REGISTER") == 200, new.describe()
    old = sipp.register("4001", OLD_PASSWORD, stack.pbx.sip_port)
    assert old.final_status("REGISTER") in (401, 403), old.describe()
    # Asterisk finds 4001 once, with the store's auth
    shown = stack.pbx.cli("pjsip show endpoint 4001")
    assert store.endpoint_found(shown) and "4001-auth" in shown
    assert stack.apply().unchanged
