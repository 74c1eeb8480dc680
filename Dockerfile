# The reconciler, for compose: runs `reconciler watch` and execs into the Asterisk container
# through the Docker socket (docker SDK; no docker CLI needed).
#
# Two stages on one apt layer: `wheel` builds the package's wheel from the source tree, the final
# stage installs that wheel (as `pip install` of a release would), so the image runs the installed
# package with its packaged templates, not an editable source tree.
ARG BASE=debian:sid-slim
FROM ${BASE} AS runtime

# Runtime dependencies come from Debian, not PyPI: apt works on machines where PyPI does not (no
# route, or a TLS-intercepting proxy whose CA the image does not know), and nothing compiles.
# pip runs with --no-deps (Debian's gitdb metadata pins smmap<6 while Debian ships smmap 6), so
# the build checks instead that every dependency of pyproject.toml is installed: add new ones here.
# git: the watch loop follows a branch. setuptools: builds the wheel (kept in the one apt layer so
# both stages share it). The sid mirror may serve a Release file apt calls expired.
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-setuptools git ca-certificates \
        python3-pydantic python3-jinja2 python3-yaml python3-typer python3-rich \
        python3-docker python3-git python3-watchdog python3-qrcode \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && python3 -m venv --system-site-packages /opt/venv

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

FROM runtime AS wheel
WORKDIR /src
COPY . ./
# README.md is not in the build context (.dockerignore), so a README edit does not rebuild the
# image; the wheel's long description is this stub instead. Offline: Debian's setuptools, no index.
RUN printf 'asterisk-gitops: see README.md of the repository.\n' > README.md \
 && pip wheel --no-cache-dir --disable-pip-version-check --no-build-isolation --no-deps --no-index \
        --wheel-dir /dist .

FROM runtime
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps --no-index /tmp/dist/*.whl \
 && rm -rf /tmp/dist \
 && python3 -c "import re; from importlib.metadata import requires, version; \
[version(re.match(r'[A-Za-z0-9_.-]+', r)[0]) for r in requires('asterisk-gitops') if 'extra ==' not in r]" \
 && python3 -c "from reconciler.settings import packaged_templates_dir as d; \
assert (d() / 'pjsip.conf.j2').is_file(), d()" \
 && reconciler --help >/dev/null

ENV RECONCILER_STATE_DIR=/state
VOLUME ["/state"]
CMD ["reconciler", "--help"]
