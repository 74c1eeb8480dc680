"""Reading files that someone else controls: bounded, regular files only, UTF-8 with a line to show.

Desired files, env files and secrets files are read through `read_regular` and `decode_utf8`, so a
FIFO never blocks a read, `/dev/zero` or a 50 MB file never fills memory, a directory is a clear
message, and bytes that are not UTF-8 are reported at their line and column instead of a traceback.
Python's `open()` would block on a FIFO, read a device forever and raise `UnicodeDecodeError`
with a byte offset; nothing in the standard library or our dependencies does this bounded read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_CHUNK = 1 << 16


class FileRefused(Exception):
    """A file that is not read: `reason` completes "<file> ..." and never quotes the content."""

    def __init__(self, reason: str, line: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _is_dev_null(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def size_text(size: int) -> str:
    """`16 MiB`, `512 KiB`, `300 bytes`."""
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f} {unit}" if value.is_integer() or value >= 10 else f"{value:.1f} {unit}"
    return f"{size} bytes"


def read_regular(path: Path, limit: int, *, allow_dev_null: bool = False) -> bytes:
    """The bytes of the regular file at `path` (a symlink is followed), at most `limit` of them.

    Raises FileNotFoundError (or NotADirectoryError) when there is no such file, and `FileRefused`
    for a directory, FIFO, socket or device (`/dev/null` reads as empty with `allow_dev_null`), a
    file larger than `limit`, or one that cannot be opened. Never blocks: the file is opened
    non-blocking and checked with fstat before anything is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except IsADirectoryError:
        raise FileRefused("is a directory, not a file") from None
    except OSError as exc:
        raise FileRefused(f"cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            if allow_dev_null and _is_dev_null(st):
                return b""
            raise FileRefused(f"is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileRefused(f"is {size_text(st.st_size)}, larger than the limit of {size_text(limit)}")
        chunks: list[bytes] = []
        total = 0
        while True:  # st_size can lie (a file that grows, /proc): stop at limit + 1 bytes
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise FileRefused(f"is larger than the limit of {size_text(limit)}")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def decode_utf8(data: bytes) -> str:
    """`data` as UTF-8 text. Raises `FileRefused` naming the line and column (in characters) of the
    first byte that is not UTF-8, never the byte itself (the file may hold a secret)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        raise FileRefused(
            f"is not UTF-8 text: line {line}, column {column} cannot be decoded; save the file as UTF-8",
            line,
        ) from None
