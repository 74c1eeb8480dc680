"""The package as a user installs it: the sdist and the wheel built from a clean export of the
repository (tracked files only), the wheel installed into a fresh virtualenv (not editable), and the
installed `reconciler` run from a directory outside the checkout on the sample and on a broken change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from reconciler.desired.render import RENDERED_FILES, render_desired
from tests.harness import containers
from tests.harness.install import REPO_ROOT, Venv, fresh_venv, tracked_export
from tests.unit.desired_support import FAKE_SECRETS, SAMPLE_DIR, edit, fake_settings

REVISION = "wheel-test-1"
RECONCILER_IMAGE = os.environ.get("RECONCILER_TEST_IMAGE", "asterisk-gitops/reconciler:latest")


@dataclass(frozen=True)
class Built:
    export: Path
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`python -m build` of the export: the sdist, then the wheel built *from that sdist*."""
    export = tracked_export(tmp_path_factory.mktemp("export"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(export)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"python -m build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    return Built(export, sdist, wheel)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return fresh_venv(tmp_path_factory.mktemp("venv") / "fresh", str(built.wheel))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A user's directory far from the checkout: `desired/` (the sample) and `secrets.env`."""
    shutil.copytree(SAMPLE_DIR, tmp_path / "desired")
    (tmp_path / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in FAKE_SECRETS.items()))
    return tmp_path


def add_typo(workdir: Path) -> int:
    """Misspell one `password:` key of the sample; return the line it is on."""
    edit(workdir / "desired", "extensions.yaml", "    password:", "    pasword:")
    lines = (workdir / "desired" / "extensions.yaml").read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if "pasword:" in text)


def tracked(prefix: str) -> set[str]:
    names = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", prefix], check=True, capture_output=True, text=True
    ).stdout.split()
    return {n for n in names if (REPO_ROOT / n).exists()}


def test_the_sdist_and_the_wheel_hold_every_tracked_module_and_the_templates(built: Built) -> None:
    wheel_names = set(zipfile.ZipFile(built.wheel).namelist())
    modules = {n for n in tracked("reconciler") if n.endswith(".py")}
    missing = sorted(m for m in modules if m not in wheel_names)
    assert not missing, f"modules not in the wheel (add their package to pyproject.toml): {missing}"
    templates = {n.removeprefix("templates/") for n in tracked("templates")}
    assert {"pjsip.conf.j2", "extensions.conf.j2", "voicemail.conf.j2"} <= templates
    assert {f"reconciler/templates/{t}" for t in templates} <= wheel_names
    assert {n for n in tracked("reconciler/web")} <= wheel_names
    with tarfile.open(built.sdist) as sdist:
        sdist_names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {f"templates/{t}" for t in templates} <= sdist_names


def test_the_installed_package_runs_from_site_packages_not_from_the_checkout(
    installed: Venv, tmp_path: Path
) -> None:
    probe = (
        "import reconciler, reconciler.settings as s; "
        "print(reconciler.__file__); print(s.packaged_templates_dir()); print(s.Settings().templates_dir)"
    )
    result = installed.run("python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    package, templates, default = (Path(line) for line in result.stdout.split())
    site = installed.root.resolve()
    assert package.resolve().is_relative_to(site) and "site-packages" in package.parts
    assert templates.resolve().is_relative_to(site) and (templates / "pjsip.conf.j2").is_file()
    assert default == templates
    assert not package.resolve().is_relative_to(REPO_ROOT)


def test_validate_render_plan_and_schema_work_on_the_sample_from_the_installed_wheel(
    installed: Venv, workdir: Path
) -> None:
    validate = installed.run("reconciler", "validate", "desired", cwd=workdir)
    assert validate.returncode == 0, validate.stderr
    assert "desired: valid" in validate.stdout

    render = installed.run(
        "reconciler", "render", "desired", "--out", "out", "--env-file", "secrets.env",
        "--revision", REVISION, cwd=workdir,
    )  # fmt: skip
    assert render.returncode == 0, render.stderr
    # The installed templates are the checkout's: the same bytes as rendering in this process.
    expected = render_desired(workdir / "desired", fake_settings(workdir), revision=REVISION).files
    for name in RENDERED_FILES:
        assert (workdir / "out" / name).read_text() == expected[name], name

    same = installed.run(
        "reconciler", "plan", "desired", "--against", "out", "--env-file", "secrets.env", cwd=workdir
    )
    assert same.returncode == 0, same.stdout + same.stderr
    new = installed.run(
        "reconciler", "plan", "desired", "--against", "nothing-yet", "--env-file", "secrets.env",
        "--format", "markdown", cwd=workdir,
    )  # fmt: skip
    assert new.returncode == 2, new.stderr
    assert "### reconciler plan" in new.stdout and "extension 4001 added" in new.stdout
    assert FAKE_SECRETS["EXT_4001_PASSWORD"] not in new.stdout

    schema = installed.run("reconciler", "schema", cwd=workdir)
    assert schema.returncode == 0, schema.stderr
    assert {"pbx", "providers", "extensions", "outbound", "inbound"} <= set(
        json.loads(schema.stdout)["properties"]
    )


def test_a_broken_change_fails_validate_render_and_plan_naming_the_file_and_line(
    installed: Venv, workdir: Path
) -> None:
    line = add_typo(workdir)
    where = f"desired/extensions.yaml:{line}: "
    for args in (
        ("validate", "desired"),
        ("render", "desired", "--out", "out", "--env-file", "secrets.env"),
        ("plan", "desired", "--against", "out", "--env-file", "secrets.env"),
    ):
        result = installed.run("reconciler", *args, cwd=workdir)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert where in result.stderr and "unknown key 'pasword'" in result.stderr, (args, result.stderr)
    assert not (workdir / "out").exists()


def _skip_unless_verify_can_run(venv: Venv, cwd: Path) -> None:
    if venv.run("reconciler", "verify", "--help", cwd=cwd).returncode != 0:
        pytest.skip("SKIPPED LOUDLY: this build has no `reconciler verify` command (wp6-provider adds it)")
    if not containers.docker_available():
        pytest.skip("SKIPPED LOUDLY: no Docker engine answers; `reconciler verify` needs one")
    if not containers.image_available(containers.IMAGE):
        pytest.skip(f"SKIPPED LOUDLY: image {containers.IMAGE} is not built (make image)")


def broken_templates(workdir: Path) -> Path:
    """The packaged templates with an endpoint option Asterisk does not know: it renders, and it
    passes validation, but Asterisk logs an error for it."""
    target = workdir / "my-templates"
    target.mkdir()
    for source in (REPO_ROOT / "templates").glob("*.j2"):
        shutil.copy(source, target / source.name)
    pjsip = target / "pjsip.conf.j2"
    pjsip.write_text(
        pjsip.read_text().replace("type = endpoint\n", "type = endpoint\nnot_an_option = 1\n", 1)
    )
    return target


def test_verify_passes_on_the_sample_and_fails_naming_the_problem_on_a_template_asterisk_rejects(
    installed: Venv, workdir: Path
) -> None:
    _skip_unless_verify_can_run(installed, workdir)
    image = ["--image", containers.IMAGE]
    good = installed.run("reconciler", "verify", "desired", "--env-file", "secrets.env", *image, cwd=workdir)
    assert good.returncode == 0, good.stdout + good.stderr
    templates = str(broken_templates(workdir))
    bad = installed.run(
        "reconciler",
        "verify",
        "desired",
        "--env-file",
        "secrets.env",
        "--templates",
        templates,
        *image,
        cwd=workdir,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "not_an_option" in bad.stdout + bad.stderr


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    if not containers.docker_available():
        pytest.skip("SKIPPED LOUDLY: no Docker engine answers; the reconciler image cannot be checked")
    client = docker.from_env()
    try:
        client.images.get(RECONCILER_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        pytest.skip(f"SKIPPED LOUDLY: image {RECONCILER_IMAGE} is not built (make image)")
    yield client
    client.close()


def test_the_reconciler_image_runs_the_installed_wheel_with_its_packaged_templates(
    docker_client: docker.DockerClient,
) -> None:
    probe = (
        "import os, reconciler, reconciler.settings as s; "
        "print(reconciler.__file__); print(s.Settings.from_env().templates_dir); "
        "print(os.environ.get('RECONCILER_TEMPLATES', '-')); print(os.path.exists('/app'))"
    )
    name = f"test-wheelimage-{uuid.uuid4().hex[:8]}"
    try:
        output = docker_client.containers.run(
            RECONCILER_IMAGE, ["python3", "-c", probe], name=name, network_mode="none", remove=False
        ).decode()
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(name).remove(force=True, v=True)  # its /state VOLUME too
    package, templates, variable, app = output.split()
    assert "/site-packages/reconciler/" in package
    assert templates.endswith("/site-packages/reconciler/templates")
    assert (variable, app) == ("-", "False")
