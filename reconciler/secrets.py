"""Turn `${NAME}` references into values, and refuse weak ones.

Values are looked up in this order: the environment (`settings.environ`), the env file
(`settings.env_file`, KEY=VALUE lines) and a file `settings.secrets_dir / NAME` (Docker secrets).
Problems name the reference and where it is used, never the value.
"""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.errors import Problem, ValidationFailed
from reconciler.load import LoadedState
from reconciler.model import SecretUse, field_name, secret_refs
from reconciler.settings import Settings

MIN_PASSWORD_LENGTH = 12
MIN_PIN_LENGTH = 6
_CLASSES = (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#` comments ignored; optional `export `; one level of
    matching single or double quotes around the value is removed. A missing file is empty."""
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key:
            values[key] = value
    return values


def lookup(name: str, settings: Settings, env_file: dict[str, str] | None = None) -> str | None:
    """The value of secret `name`, or None when no source has a non-empty one."""
    # An empty value (`NAME=` copied from .env.example) counts as not set: look further.
    if settings.environ.get(name):
        return settings.environ[name]
    file_values = read_env_file(settings.env_file) if env_file is None else env_file
    if file_values.get(name):
        return file_values[name]
    candidate = settings.secrets_dir / name
    try:
        return candidate.read_text(encoding="utf-8").rstrip("\r\n") or None
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def weakness(use: SecretUse, value: str) -> str | None:
    """Why `value` is not acceptable for `use`, or None. Never includes the value."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or value != value.strip():
        return "contains control characters or leading/trailing spaces"
    if use.kind == "username":
        return None if value else "is empty"
    if use.kind == "pin":
        if not re.fullmatch(r"[0-9]+", value):
            return "a voicemail PIN must be digits only"
        if len(value) < MIN_PIN_LENGTH:
            return f"a voicemail PIN needs at least {MIN_PIN_LENGTH} digits"
        if len(set(value)) == 1 or value in "01234567890" or value in "09876543210":
            return "a voicemail PIN must not be a repeated or sequential run of digits"
        if use.owner in value:
            return f"must not contain the extension number {use.owner}"
        return None
    if len(value) < MIN_PASSWORD_LENGTH:
        return f"too short: at least {MIN_PASSWORD_LENGTH} characters are needed"
    if sum(1 for cls in _CLASSES if re.search(cls, value)) < 2:
        return "uses only one character class: mix letters, digits or symbols"
    if use.owner.isdigit() and use.owner in value:
        return f"must not contain the extension number {use.owner}"
    return None


def resolve_secrets(loaded: LoadedState, settings: Settings) -> dict[str, str]:
    """NAME → value for every reference in `loaded`. Raises `ValidationFailed` naming every missing
    reference and every weak value, located at the reference (FILE:LINE), never showing a value."""
    env_file = read_env_file(settings.env_file)
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for use in secret_refs(loaded.state):
        file, line = loaded.locate(use.path)
        value = lookup(use.name, settings, env_file)
        if value is None:
            problems.append(
                Problem(
                    file,
                    line,
                    field_name(use.path),
                    f"secret {use.name} is not set (looked in the environment, {settings.env_file} "
                    f"and {settings.secrets_dir / use.name})",
                )
            )
            continue
        why = weakness(use, value)
        if why is not None:
            problems.append(Problem(file, line, field_name(use.path), f"secret {use.name} is refused: {why}"))
            continue
        values[use.name] = value
    if problems:
        raise ValidationFailed(problems)
    return values
