"""The baseline: the same extensions as one plain pjsip.conf in a separate PBX of the project's image,
reloaded by Asterisk's own `module reload res_pjsip.so`, timed inside the container."""

from __future__ import annotations

import io
import statistics
import tarfile
from collections.abc import Mapping
from pathlib import Path

import jinja2

from reconciler.desired.model import DesiredState, SecretRef
from tests.harness.containers import PbxContainer

TEMPLATE = Path(__file__).with_name("bare_pjsip.conf.j2")
CONF = "/etc/asterisk/pjsip.conf"  # a symlink into the managed dir in the image: written through it
# `touch` first: Asterisk skips a file whose mtime and size are unchanged (an apply reloads after
# a change, so the fair baseline is a reload that parses the file). Prints microseconds.
TIMED_RELOAD = (
    f'touch "$(readlink -f {CONF})"; '
    "s=$(date +%s%N); asterisk -rx 'module reload res_pjsip.so' >/dev/null; "
    "e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
)


def file_mode_pbx(workdir: Path) -> PbxContainer:
    """A PBX of the project's image that keeps every PJSIP object in pjsip.conf: an empty
    sorcery.conf (mounted over the image's, which may map extensions to a realtime store) leaves
    res_pjsip on its default, the config file. Start it with `with`: leaving removes it."""
    workdir.mkdir(parents=True, exist_ok=True)
    sorcery = workdir / "sorcery.conf"
    sorcery.write_text("; file mode: every PJSIP object from pjsip.conf\n")
    sorcery.chmod(0o644)
    return PbxContainer(name_prefix="bench").with_read_only_file(sorcery, "/etc/asterisk/sorcery.conf")


def render_bare(state: DesiredState, secrets: Mapping[str, str], port: int) -> str:
    """The plain pjsip.conf of `state`'s extensions (passwords as values: a hand-kept file)."""
    extensions = [
        {
            "number": e.number,
            "name": e.name,
            "codecs": list(e.codecs or state.pbx.codecs),
            "password": secrets[SecretRef(e.password).name],
        }
        for e in state.extensions
    ]
    template = jinja2.Template(TEMPLATE.read_text(), trim_blocks=True, lstrip_blocks=True)
    return template.render(port=port, extensions=extensions)


def install(pbx: PbxContainer, text: str) -> None:
    """Make `text` the container's pjsip.conf and load it once (the first load is not timed)."""
    data = text.encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bare-pjsip.conf")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    pbx.docker_container.put_archive("/tmp", buf.getvalue())
    code, out = pbx.exec(f'cat /tmp/bare-pjsip.conf > "$(readlink -f {CONF})" && rm /tmp/bare-pjsip.conf')
    if code != 0:
        raise RuntimeError(f"could not write the bare pjsip.conf: {out.strip()}")
    pbx.cli("module reload res_pjsip.so")


def reload_inside_s(pbx: PbxContainer, runs: int) -> float:
    """Median of `runs` in-container `module reload res_pjsip.so` of the installed file, seconds."""

    def once() -> float:
        _code, out = pbx.exec(["sh", "-c", TIMED_RELOAD])
        return int(out.strip().splitlines()[-1]) / 1e6

    return statistics.median(once() for _ in range(runs))
