"""Fixtures shared by every test directory: Docker checks, the artifacts dir, failure dumps.

Integration and gitops tests run real Asterisk containers and SIPp. When one fails, the last lines of
every live container's messages.log (and SIPp's message traces) are left in `test-artifacts/`
(git-ignored), so a CI failure can be read without re-running it.
"""

from __future__ import annotations

import os

# Ryuk (testcontainers' reaper) cannot be pulled here: the fixtures remove their containers.
os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import containers, sipp
from tests.harness.containers import PbxStack

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO_ROOT / "test-artifacts"))
# How long to wait for the project image when it is still being built (0: do not wait).
IMAGE_WAIT_S = float(os.environ.get("ASTERISK_TEST_IMAGE_WAIT", "0"))


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """`test-artifacts/<run>/`: logs, SIPp traces and failure dumps of this test run."""
    run_dir = ARTIFACTS / time.strftime("%Y%m%d-%H%M%S") / f"pid{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    sipp.set_workdir(run_dir / "sipp")
    return run_dir


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The project's Asterisk image; skip (loudly) without Docker, fail when the image is missing."""
    if not containers.docker_available():
        pytest.skip(
            "SKIPPED LOUDLY: no Docker engine answers; integration tests need one (.ci/run starts it)"
        )
    orphans = containers.remove_orphans()
    if orphans:
        print(f"removed containers left by a killed test run: {', '.join(orphans)}")
    if not containers.wait_for_image(timeout_s=IMAGE_WAIT_S):
        pytest.fail(
            f"image {containers.IMAGE} is not built: run `make image` or .ci/run "
            "(set ASTERISK_TEST_IMAGE_WAIT=SECONDS to wait for a build in progress)",
            pytrace=False,
        )
    return containers.IMAGE


@pytest.fixture(autouse=True)
def _kill_stray_sipp() -> Iterator[None]:
    """No SIPp started by a test outlives it (SIGKILL: SIPp as a UAS ignores SIGTERM)."""
    yield
    sipp.kill_all()


@pytest.fixture(scope="module")
def pbx_stack(
    docker_image: str, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PbxStack]:
    """A started PBX (nothing applied) and its fake provider, shared by the test module.

    `pbx_stack.desired_dir` holds a desired state for them (4000-4005, `9`+number and 911/112 to
    the provider, a DID to 4000); `pbx_stack.apply()` runs the real apply pipeline.
    """
    with containers.pbx_stack(tmp_path_factory.mktemp("stack")) as stack:
        yield stack


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, dump the tail of every live container's messages.log into the artifacts."""
    report = yield
    if report.failed and containers.LIVE:
        target = ARTIFACTS / "failures" / re.sub(r"[^\w.-]+", "_", item.nodeid)
        target.mkdir(parents=True, exist_ok=True)
        for container in list(containers.LIVE):
            try:
                text = container.log_tail(300)
            except Exception as exc:  # a dump must never hide the real failure
                text = f"(could not read the log: {exc})"
            (target / f"{container.name}.messages.log").write_text(text)
        report.sections.append(("artifacts", f"container logs: {target}"))
    return report
