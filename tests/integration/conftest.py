"""Fixtures for the SIP integration tests: the shared PBX + provider with the desired state applied.

Each test module gets its own PBX and provider (module scope), applied once through the real
pipeline (`reconciler.gitops.apply.apply_desired`); tests in a module share them and must leave them as
they found them (phones unregister, the provider's received list is cleared per test).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.containers import PbxStack


@pytest.fixture(scope="module")
def live_pbx(pbx_stack: PbxStack) -> PbxStack:
    """The module's PBX with `pbx_stack.desired_dir` applied and its SIP port proven to be its own."""
    result = pbx_stack.apply()
    assert not result.unchanged, "the first apply to an empty PBX must change something"
    pbx_stack.pbx.verify_owns_sip_port()
    return pbx_stack


@pytest.fixture
def provider_inbox(live_pbx: PbxStack) -> Iterator[PbxStack]:
    """The live PBX, with the provider's list of received numbers emptied before the test."""
    live_pbx.provider.clear_received()
    yield live_pbx
