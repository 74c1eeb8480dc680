"""Issue 9, "Other input": YAML bombs, deep nesting, non-UTF-8, symlinks, forged problem lines, huge
values, booleans as numbers, hostile env and secrets files. Each is one FILE:LINE line (or names
the file), never a traceback, a hang or a flood."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.desired.load import load_desired
from reconciler.desired.model import Extension
from reconciler.errors import Problem
from reconciler.settings import REPO_ROOT
from tests.unit.desired_support import CliResult, edit
from tests.unit.hostile_support import FULL_SECRETS, problem_lines, without_office

Cli = Callable[..., CliResult]


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs": each anchor is a list of `width` aliases of the one before."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_used_as_a_mapping_key_is_one_short_problem(full: Path, cli: Cli) -> None:
    bomb = "bomb:\n" + "".join("  " + line + "\n" for line in alias_bomb(6).splitlines())
    assert len(bomb) < 400
    (full / "bomb.yaml").write_text(bomb + "extensions:\n  *l5 : 1\n")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem == (
        "desired/bomb.yaml:9: -: malformed YAML: while constructing a mapping "
        "an alias (*name) cannot be a mapping key"
    )


def test_a_list_or_mapping_as_a_key_is_refused(full: Path, cli: Cli) -> None:
    (full / "odd.yaml").write_text("inbound:\n  - ? [a, b]\n    : 1\n")
    [problem] = problem_lines(cli("validate", "desired"))
    assert "a mapping key must be a plain value, not a list or a mapping" in problem


def test_an_alias_bomb_used_as_a_value_is_refused_before_it_is_expanded(full: Path, cli: Cli) -> None:
    (full / "routes.yaml").write_text(alias_bomb(9) + "outbound: *l8\n")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith("desired/routes.yaml:")
    assert "aliases expand this document by more than 1,000,000 values" in problem


def test_ordinary_merge_keys_over_many_items_are_no_bomb(full: Path) -> None:
    # Other extensions than the full state's: its office features' member 4002 would dangle.
    without_office(full)
    items = "".join(
        f'  - <<: *phone\n    number: "{5000 + i}"\n    password: ${{EXT_{5000 + i}_PASSWORD}}\n'
        for i in range(2000)
    )
    (full / "extensions.yaml").write_text(
        "extensions:\n  - &phone\n    number: '4001'\n    name: Sales\n"
        "    password: ${EXT_4001_PASSWORD}\n    voicemail: true\n" + items
    )
    assert len(load_desired(full).state.extensions) == 2001


@pytest.mark.parametrize(
    "text",
    [
        "inbound: " + "[" * 600 + "]" * 600 + "\n",
        "inbound:\n  " + "- " * 600 + "x\n",
        "inbound: " + "[" * 1200 + "]" * 1200 + "\n",  # beyond libyaml's own limit: the Python parser
        "inbound: " + "{a: " * 600 + "1" + "}" * 600 + "\n",
    ],
)
def test_deep_nesting_is_one_problem_line_not_a_recursion_error(full: Path, cli: Cli, text: str) -> None:
    (full / "routes.yaml").write_text(text)
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith("desired/routes.yaml:")
    assert "nested deeper than 32 levels" in problem


def test_bytes_that_are_not_utf8_are_reported_at_their_line_and_column(full: Path, cli: Cli) -> None:
    (full / "extensions.yaml").write_bytes(
        (full / "extensions.yaml").read_bytes().replace(b"name: Support", b"name: Supp\xff\xfert")
    )
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem == (
        "desired/extensions.yaml:10: -: is not UTF-8 text: line 10, column 15 cannot be decoded; "
        "save the file as UTF-8"
    )


def test_a_raw_unicode_line_separator_in_a_file_is_refused_at_its_line(full: Path, cli: Cli) -> None:
    edit(full, "extensions.yaml", "    name: Support", "    name: Supp\u2028ort")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith("desired/extensions.yaml:10: -: contains a line break (U+2028) at column 15")


SHADOW_LIKE = "root:$6$SECRETHASHSECRETHASH:19000:0:99999:7:::\n"


def test_a_desired_file_that_is_a_symlink_leaving_the_directory_is_refused_unread(
    full: Path, cli: Cli, tmp_path: Path
) -> None:
    outside = tmp_path / "shadow-copy"
    outside.write_text(SHADOW_LIKE)
    (full / "x.yaml").symlink_to(outside)
    result = cli("validate", "desired")
    [problem] = problem_lines(result)
    assert problem == (
        "desired/x.yaml:1: -: is a symbolic link that leaves the desired directory (its target is not read)"
    )
    assert "SECRETHASH" not in result.stdout + result.stderr
    assert "shadow-copy" not in result.stderr


def test_a_relative_symlink_climbing_out_of_the_directory_is_refused(full: Path, cli: Cli) -> None:
    (full.parent / "elsewhere.yaml").write_text("inbound: []\n")
    (full / "up.yaml").symlink_to("../elsewhere.yaml")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem.startswith("desired/up.yaml:1: -: is a symbolic link that leaves the desired directory")


def test_a_dangling_symlink_is_refused_not_ignored(full: Path, cli: Cli) -> None:
    (full / "gone.yaml").symlink_to("nowhere.yaml")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem == "desired/gone.yaml:1: -: is a symbolic link to nothing (dangling)"


def test_a_symlink_to_a_file_inside_the_directory_is_read(full: Path) -> None:
    (full / "shared").mkdir()
    (full / "routes.yaml").rename(full / "shared" / "routes.yaml")
    (full / "routes.yaml").symlink_to("shared/routes.yaml")
    assert len(load_desired(full).state.outbound) == 2


def test_an_editor_lock_file_is_not_a_desired_file(full: Path) -> None:
    (full / ".#extensions.yaml").symlink_to("user@host.1234:1700000000")  # how Emacs locks a file
    assert len(load_desired(full).state.extensions) == 2


def test_a_fifo_named_like_a_desired_file_is_refused_without_blocking(full: Path, cli: Cli) -> None:
    os.mkfifo(full / "pipe.yaml")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem == "desired/pipe.yaml:1: -: is not a regular file (a directory, pipe, socket or device)"


def test_a_file_over_the_size_limit_is_refused_unread(full: Path, cli: Cli) -> None:
    with (full / "huge.yaml").open("wb") as f:
        f.truncate(50 << 20)  # a 50 MiB sparse file
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem == "desired/huge.yaml:1: -: is 50 MiB, larger than the limit of 16 MiB"


@pytest.mark.parametrize(
    "key",
    [
        "nmae\n::error file=x.yaml,line=1::forged annotation",
        "nmae\ndesired/extensions.yaml:1: extensions[0].name: forged problem",
        "nmae\u2028::warning::forged",
        "nmae ##[error]legacy command",
    ],
)
def test_a_key_with_a_line_break_cannot_forge_problem_lines_or_ci_annotations(
    full: Path, cli: Cli, key: str
) -> None:
    escaped = key.encode("unicode_escape").decode()
    edit(full, "extensions.yaml", "    name: Support", f'    "{escaped}": Support')
    lines = problem_lines(cli("validate", "desired"))
    assert lines == [
        "desired/extensions.yaml:9: extensions[1].name: required field is missing",
        lines[1],
    ]
    assert lines[1].startswith("desired/extensions.yaml:10: extensions[1].nmae")
    assert "unknown key 'nmae" in lines[1]


def test_a_problem_line_never_starts_a_workflow_command_even_from_its_file_name() -> None:
    problem = Problem("::error::x.yaml", 1, "pbx", "a\nb")
    assert str(problem) == "./::error::x.yaml:1: pbx: a\\nb"


def test_a_huge_value_is_never_echoed_whole(full: Path, cli: Cli) -> None:
    edit(full, "extensions.yaml", '  - number: "4002"', '  - number: "4002' + "x;" * 2_000_000 + '"')
    result = cli("validate", "desired")
    [problem] = problem_lines(result)
    assert problem.startswith("desired/extensions.yaml:9: extensions[1].number: '4002x;x;x;")
    assert problem.endswith("…(+3999944 characters)' must be digits only (1-15)")
    assert len(result.stderr) < 1000


def test_an_unknown_key_that_looks_like_a_type_name_or_has_brackets_is_still_reported(
    full: Path, cli: Cli
) -> None:
    edit(full, "extensions.yaml", "    name: Support", "    Name: Support\n    'a[b]': 1")
    assert problem_lines(cli("validate", "desired")) == [
        "desired/extensions.yaml:9: extensions[1].name: required field is missing",
        "desired/extensions.yaml:10: extensions[1].Name: unknown key 'Name' (did you mean 'name'?)",
        "desired/extensions.yaml:11: extensions[1].a[b]: unknown key 'a[b]' "
        f"(allowed: {', '.join(Extension.model_fields)})",
    ]


@pytest.mark.parametrize(
    ("name", "old", "where"),
    [
        ("pbx.yaml", "  port: 5060", "desired/pbx.yaml:3: pbx.port"),
        ("pbx.yaml", "  tls_port: 5061", "desired/pbx.yaml:4: pbx.tls_port"),
        ("providers.yaml", "    port: 5070", "desired/providers.yaml:4: providers[0].port"),
        ("providers.yaml", "    expiration: 600", "desired/providers.yaml:14: providers[0].expiration"),
        ("routes.yaml", "    strip: 1", "desired/routes.yaml:4: outbound[0].strip"),
    ],
)
def test_true_is_not_a_number_in_any_integer_field(
    full: Path, cli: Cli, name: str, old: str, where: str
) -> None:
    edit(full, name, old, old.split(":")[0] + ": true")
    [problem] = problem_lines(cli("validate", "desired"))
    assert problem == f"{where}: must be a number, not true/false"


# ---- env files and secrets files ------------------------------------------------------------


def hostile_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"hostile-{kind}"
    if kind == "not utf-8":
        path.write_bytes(b"# ok\nTRUNK_PASSWORD=Fake\xff-Pass-31\n")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "oversize":
        with path.open("wb") as f:
            f.truncate(5 << 20)
    elif kind == "device":
        return Path("/dev/zero")
    return path


ENV_FILE_REASONS = {
    "not utf-8": ":2: -: env file is not UTF-8 text: line 2, column 20 cannot be decoded",
    "fifo": ":1: -: env file is a named pipe (FIFO), not a regular file",
    "directory": ":1: -: env file is a directory",
    "oversize": ":1: -: env file is 5 MiB, larger than the limit of 1 MiB",
    "device": ":1: -: env file is a device, not a regular file",
}


@pytest.mark.parametrize("kind", list(ENV_FILE_REASONS))
def test_a_hostile_env_file_is_one_line_naming_it(full: Path, cli: Cli, tmp_path: Path, kind: str) -> None:
    path = hostile_file(tmp_path, kind)
    env = {k: v for k, v in FULL_SECRETS.items() if k != "TRUNK_PASSWORD"}
    result = cli("render", "desired", "--out", "out", "--env-file", str(path), secrets=env)
    [problem] = problem_lines(result)
    shown = path.name if kind != "device" else str(path)
    assert problem.startswith(shown + ENV_FILE_REASONS[kind]), problem
    assert "Fake" not in result.stderr
    assert not (tmp_path / "out").exists()


SECRET_FILE_REASONS = {
    "not utf-8": "is not UTF-8 text: line 2, column 20 cannot be decoded",
    "fifo": "is a named pipe (FIFO), not a regular file",
    "directory": "is a directory",
    "oversize": "is 5 MiB, larger than the limit of 64 KiB",
}


@pytest.mark.parametrize("kind", list(SECRET_FILE_REASONS))
def test_a_hostile_secrets_file_is_one_line_at_the_reference(
    full: Path, cli: Cli, tmp_path: Path, kind: str
) -> None:
    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    made = hostile_file(tmp_path, kind)
    made.rename(secrets_dir / "TRUNK_PASSWORD")
    env = {k: v for k, v in FULL_SECRETS.items() if k != "TRUNK_PASSWORD"}
    env["RECONCILER_SECRETS_DIR"] = str(secrets_dir)
    [problem] = problem_lines(cli("render", "desired", "--out", "out", secrets=env))
    assert problem.startswith(
        "desired/providers.yaml:7: providers[0].password: secret TRUNK_PASSWORD cannot be used: "
        f"{secrets_dir / 'TRUNK_PASSWORD'} {SECRET_FILE_REASONS[kind]}"
    ), problem


def test_dev_null_is_an_empty_env_file_as_compose_uses_it(full: Path, cli: Cli) -> None:
    result = cli(
        "render", "desired", "--out", "out", secrets={**FULL_SECRETS, "RECONCILER_ENV_FILE": "/dev/null"}
    )
    assert result.code == 0, result.stderr


def test_the_installed_command_prints_no_traceback_for_hostile_input(full: Path, tmp_path: Path) -> None:
    (full / "routes.yaml").write_text("inbound: " + "[" * 1200 + "]" * 1200 + "\n")
    (full / "bomb.yaml").write_text(alias_bomb(6) + "extensions:\n  *l5 : 1\n")
    (full / "x.yaml").symlink_to("/etc/passwd")
    env = {**os.environ, "RECONCILER_ENV_FILE": "/dev/zero", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "desired"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().split("\n")
    assert lines[0] == "error: 3 problem(s) in the desired state:"
    assert [line.split(": ")[0] for line in lines[1:4]] == [
        "desired/bomb.yaml:8",
        "desired/routes.yaml:1",
        "desired/x.yaml:1",
    ]
    assert "root:" not in result.stderr
