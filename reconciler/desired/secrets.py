"""Turn `${NAME}` references into values, and refuse weak ones.

Values are looked up in this order: the environment (`settings.environ`), the env file
(`settings.env_file`, KEY=VALUE lines) and a file `settings.secrets_dir / NAME` (Docker secrets).
Problems name the reference and where it is used, never the value.

Env files and secrets files are read bounded (`safeio`): a FIFO, `/dev/zero`, a directory, a huge
or non-UTF-8 file is one clear line naming the file, not a hang or a traceback. `/dev/null` is an
empty env file (compose points RECONCILER_ENV_FILE at it).
"""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.desired.load import LoadedState, display_name
from reconciler.desired.model import SecretUse, field_name, secret_refs
from reconciler.errors import Problem, ReconcilerError, ValidationFailed
from reconciler.safeio import FileRefused, decode_utf8, read_regular, size_text
from reconciler.settings import Settings
from reconciler.textrules import unsafe_character

MIN_PASSWORD_LENGTH = 12
MIN_PIN_LENGTH = 6
MAX_ENV_FILE_BYTES = 1 << 20
MAX_SECRET_FILE_BYTES = 64 << 10
_CLASSES = tuple(re.compile(cls) for cls in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^a-zA-Z0-9]"))
_BLANKS = " \t"  # only these are trimmed: any other character is kept, and judged by weakness()


class SecretFileRefused(ReconcilerError):
    """A secrets file (`/run/secrets/NAME`) exists but cannot be used."""

    def __init__(self, name: str, path: Path, reason: str) -> None:
        self.name, self.path, self.reason = name, path, reason
        super().__init__(
            f"secret {name}: {path} {reason}",
            f"make {path} a regular UTF-8 file of at most {size_text(MAX_SECRET_FILE_BYTES)} "
            "holding only the value",
        )


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and `#` comments ignored; optional `export `; one level of
    matching single or double quotes around the value is removed. A missing file (and /dev/null) is
    empty. Raises `ValidationFailed` with one problem naming the file (and line) when it is a
    directory, FIFO or device, larger than 1 MiB, or not UTF-8.

    Lines end at `\n` only (a `\r` before it is dropped): a value holding U+2028 or \x1e stays one
    value, which the strength check then refuses, instead of becoming two lines."""
    values: dict[str, str] = {}
    try:
        text = decode_utf8(read_regular(path, MAX_ENV_FILE_BYTES, allow_dev_null=True))
    except (FileNotFoundError, NotADirectoryError):
        return values
    except FileRefused as exc:
        raise ValidationFailed(
            [Problem(display_name(path), exc.line, "-", f"env file {exc.reason}")]
        ) from None
    for raw in text.split("\n"):
        line = raw.removesuffix("\r").strip(_BLANKS)
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip(_BLANKS).removeprefix("export ").strip(_BLANKS)
        value = value.strip(_BLANKS)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key:
            values[key] = value
    return values


def read_secret_file(name: str, settings: Settings) -> str | None:
    """The value in `settings.secrets_dir / name` (one trailing line break removed), None when
    there is no such file. Raises `SecretFileRefused` for a file that cannot be used."""
    candidate = settings.secrets_dir / name
    try:
        text = decode_utf8(read_regular(candidate, MAX_SECRET_FILE_BYTES))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except FileRefused as exc:
        raise SecretFileRefused(name, candidate, exc.reason) from None
    return text.rstrip("\r\n") or None


def lookup(name: str, settings: Settings, env_file: dict[str, str] | None = None) -> str | None:
    """The value of secret `name`, or None when no source has a non-empty one."""
    # An empty value (`NAME=` copied from .env.example) counts as not set: look further.
    if settings.environ.get(name):
        return settings.environ[name]
    file_values = read_env_file(settings.env_file) if env_file is None else env_file
    if file_values.get(name):
        return file_values[name]
    return read_secret_file(name, settings)


def weakness(use: SecretUse, value: str) -> str | None:
    """Why `value` is not acceptable for `use`, or None. Never includes the value.

    For every kind (passwords, user names, PINs): no line break, control character or invisible
    formatting character (the rule of `textrules`, the same one render applies), no leading or
    trailing spaces."""
    unsafe = unsafe_character(value)
    if unsafe is not None:
        return f"contains {unsafe}"
    if value != value.strip():
        return "has leading/trailing spaces"
    if use.kind == "issued":
        return "is empty" if not value else None
    if use.kind == "username":
        if not value:
            return "is empty"
        return "a user name may not contain spaces" if " " in value else None
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
    if sum(1 for cls in _CLASSES if cls.search(value)) < 2:
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

    def problem(use: SecretUse, message: str) -> Problem:
        # Located only for a problem: finding the line of 100,000 references that are fine cost a
        # second at 50,000 extensions.
        return Problem(*loaded.locate(use.path), field_name(use.path), message)

    for use in secret_refs(loaded.state):
        try:
            value = lookup(use.name, settings, env_file)
        except SecretFileRefused as exc:
            problems.append(problem(use, f"secret {use.name} cannot be used: {exc.path} {exc.reason}"))
            continue
        if value is None:
            problems.append(
                problem(
                    use,
                    f"secret {use.name} is not set (looked in the environment, {settings.env_file} "
                    f"and {settings.secrets_dir / use.name})",
                )
            )
            continue
        why = weakness(use, value)
        if why is not None:
            problems.append(problem(use, f"secret {use.name} is refused: {why}"))
            continue
        values[use.name] = value
    if problems:
        raise ValidationFailed(problems)
    return values
