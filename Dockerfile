# The reconciler, for compose: runs `reconciler watch` and execs into the Asterisk container
# through the Docker socket (docker SDK; no docker CLI needed).
ARG BASE=debian:sid-slim
FROM ${BASE}

# Runtime dependencies come from Debian, not PyPI: apt works on machines where PyPI does not (no
# route, or a TLS-intercepting proxy whose CA the image does not know), and nothing compiles.
# pip runs with --no-deps (Debian's gitdb metadata pins smmap<6 while Debian ships smmap 6), so
# the build checks instead that every dependency of pyproject.toml is installed: add new ones here.
# git: the watch loop follows a branch. The sid mirror may serve a Release file apt calls expired.
RUN apt-get -o Acquire::Check-Valid-Until=false update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-setuptools git ca-certificates \
        python3-pydantic python3-jinja2 python3-yaml python3-typer python3-rich \
        python3-docker python3-git python3-watchdog python3-qrcode \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && python3 -m venv --system-site-packages /opt/venv

ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY . ./
RUN touch README.md \
 && pip install --no-cache-dir --disable-pip-version-check --no-build-isolation --no-deps -e . \
 && python3 -c "import re; from importlib.metadata import requires, version; \
[version(re.match(r'[A-Za-z0-9_.-]+', r)[0]) for r in requires('asterisk-gitops') if 'extra ==' not in r]" \
 && reconciler --help >/dev/null

ENV RECONCILER_STATE_DIR=/state RECONCILER_TEMPLATES=/app/templates
VOLUME ["/state"]
CMD ["reconciler", "--help"]
