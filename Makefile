# The two commands: `make demo` and `make test`. Each creates .venv when missing and
# installs the project with the exact versions of constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean install

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' -c constraints.txt
	touch $(STAMP)

# The smoke study (ablations/smoke.yaml): synthetic data, local Ray, local MLflow store,
# then its final test evaluation (the only step that reads the test split).
# A fresh study each time; f is content-addressed under runs/smoke/classifiers and reused.
demo: $(STAMP)
	test -f data/synthetic/images.txt || $(BIN)/wsol synth data/synthetic --seed 0
	rm -rf runs/smoke/smoke runs/smoke/mlflow.db runs/smoke/mlartifacts
	$(BIN)/wsol study ablations/smoke.yaml
	$(BIN)/wsol evaluate ablations/smoke.yaml --no-progress

test: $(STAMP)
	$(BIN)/ruff check wsol study tests benchmarks
	$(BIN)/ruff format --check wsol study tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix wsol study tests benchmarks
	$(BIN)/ruff format wsol study tests benchmarks

clean:
	rm -rf runs data/synthetic .pytest_cache
