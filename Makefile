# Every target installs what it needs on a fresh Debian machine (python3, make and git assumed).
#   make up [DESIRED=dir]   PBX + reconciler (+ sandbox carrier) with the desired state applied
#   make down               stop the stack, keep config, voicemail and logs (volumes)
#   make cli                Asterisk console
#   make carrier-log        what the sandbox carrier received (one line per answered call)
#   make test               lint + unit + integration tests (real Asterisk, real SIPp)
#   make lint               ruff check + ruff format --check + mypy + import-linter (the layers)
#   make image              build the images (cached by content hash)
#   make fleet-up [FLEET=dir]   a fleet (docs/fleet.md) as a Docker Swarm stack (default examples/fleet)
#   make fleet-down [FLEET=dir] remove it (volumes kept unless PURGE=1; leaves a swarm fleet-up made)
#   make fleet-status [FLEET=dir] [JSON=1]  every site: live revision, sync, trunks, rollout
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

DESIRED ?= desired
FLEET ?= examples/fleet
ENV_FILE ?= .env
PBX_CONTAINER ?= gitops-pbx
RECONCILER_NAME ?= gitops-reconciler
CARRIER_CONTAINER ?= gitops-carrier
CARRIER_PORT ?= 5070
# Written by the carrier's dialplan (reconciler/asterisk/carrier.py CALLS_LOG; a unit test keeps them equal).
CARRIER_CALLS_LOG := /var/log/asterisk/carrier_calls.log
SHOW_PASSWORDS ?= 1
VENV := .venv
PY := $(VENV)/bin/python
export DESIRED FLEET ENV_FILE PBX_CONTAINER RECONCILER_NAME CARRIER_CONTAINER CARRIER_PORT SHOW_PASSWORDS

.PHONY: help up down cli carrier-log test lint image venv test-tools fleet-up fleet-down fleet-status

help:
	@sed -n '2,11p' Makefile | sed 's/^# //'

fleet-up:
	scripts/fleet-up.sh

fleet-down:
	scripts/fleet-down.sh

fleet-status:
	@scripts/fleet-status.sh

up:
	scripts/up.sh

down:
	scripts/ensure-docker.sh
	DESIRED_DIR="$(abspath $(DESIRED))" docker compose --profile watch --profile carrier down

cli:
	docker exec -it $(PBX_CONTAINER) asterisk -rvvv

carrier-log:
	@docker exec $(CARRIER_CONTAINER) sh -c 'cat $(CARRIER_CALLS_LOG) 2>/dev/null || echo "no calls yet: dial 9 + a number from a phone"'

image:
	scripts/build-images.sh

# The virtualenv is rebuilt when pyproject.toml changes.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@python3 -c 'import ensurepip' 2>/dev/null || scripts/apt-install.sh python3-venv
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# SIPp plays the phones; chromium renders the dashboard in its tests; openssl makes the TLS test's
# certificates; ss (iproute2) tells which process owns a SIP port; kubectl (Debian's
# kubernetes-client, kustomize built in) renders the Kubernetes overlays offline.
test-tools:
	@command -v kubectl >/dev/null || scripts/apt-install.sh kubernetes-client
	@command -v sipp >/dev/null || scripts/apt-install.sh sip-tester
	@command -v openssl >/dev/null || scripts/apt-install.sh openssl
	@command -v ss >/dev/null || scripts/apt-install.sh iproute2
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || scripts/apt-install.sh chromium

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: image venv test-tools lint
	mkdir -p test-artifacts
	TESTCONTAINERS_RYUK_DISABLED=true $(VENV)/bin/pytest --junitxml=test-artifacts/junit.xml
	$(PY) scripts/check-junit.py test-artifacts/junit.xml
