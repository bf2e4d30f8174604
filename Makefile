# The README's commands. `make demo` is the main job; `make test` runs every test tier.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data/synthetic
PYTEST_ARGS ?=

.PHONY: demo test unit lint clean

$(BIN)/nbfed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

$(DATA)/manifest.json: | $(BIN)/nbfed
	$(BIN)/nbfed synth-data -o $(DATA)

demo: $(BIN)/nbfed $(DATA)/manifest.json
	$(BIN)/nbfed run-local notebook/template.ipynb --data $(DATA) --baselines

test: $(BIN)/nbfed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: $(BIN)/nbfed
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build .pytest_cache
