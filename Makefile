# The README's commands. `make demo` is the main job (deploy.yml on inventory/local); `make test`
# runs every test tier.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data/synthetic
PYTEST_ARGS ?=
# Where no registry can be reached, images/base/build.sh makes this base from Debian packages;
# elsewhere use BASE_IMAGE=python:3.11-slim-bookworm.
BASE_IMAGE ?= nbfed/base:bookworm

.PHONY: demo down engine registry run-local test unit lint docs images dry-run clean

$(BIN)/nbfed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[deploy,test]'
	@touch $@

$(DATA)/manifest.json: | $(BIN)/nbfed
	$(BIN)/nbfed synth-data -o $(DATA)

# A Docker Engine with the compose v2 plugin (installed and started as root when missing).
engine:
	@docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 || bash .ci/docker-engine

# Debian's docker-registry: the multi-host tests deliver images through it, as a consortium may.
registry:
	@command -v docker-registry >/dev/null 2>&1 || { apt-get update -qq \
	  && apt-get install -y -qq --no-install-recommends docker-registry >/dev/null; }

demo: engine $(BIN)/nbfed $(DATA)/manifest.json
	$(BIN)/ansible-playbook deploy.yml -i inventory/local

# Stop the demo's federation (its results, state and keys stay; add -e teardown_purge=true to remove them).
down: $(BIN)/nbfed
	$(BIN)/ansible-playbook playbooks/teardown.yml -i inventory/local

# The same federation as plain processes on loopback (no Docker), with each site alone beside it.
run-local: $(BIN)/nbfed $(DATA)/manifest.json
	$(BIN)/nbfed run-local notebook/template.ipynb --data $(DATA) --baselines

images: $(BIN)/nbfed
	@if [ "$(BASE_IMAGE)" = nbfed/base:bookworm ]; then images/base/build.sh; fi
	$(BIN)/nbfed build-images notebook/template.ipynb --base-image $(BASE_IMAGE)

dry-run: images $(DATA)/manifest.json
	docker compose -f compose/dry-run.yml up --exit-code-from runner
	docker compose -f compose/dry-run.yml down --volumes

test: engine registry $(BIN)/nbfed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/nbfed
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests/unit/test_role_docs.py

# Every role's README: its hand-written part stays, the variable table below the marker is
# made from meta/argument_specs.yml and defaults/main.yml (docs/role-readme/README.md.j2).
docs: $(BIN)/nbfed
	ANSIBLE_DOCTOR_TEMPLATE__SRC="local>$(CURDIR)/docs" \
	    $(BIN)/ansible-doctor -c docs/role-readme/ansible-doctor.yml -r -f roles

unit: $(BIN)/nbfed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
