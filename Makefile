# The two commands a newcomer needs: `make demo` and `make test`. Both create the
# virtual environment when it is missing and (re)install only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: demo test lint protos fmt clean fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/yrd demo $(ARGS)

# Two workers, each stealing from the other's queue when its own runs dry, so the long
# multi-process tests do not leave one worker idle at the end.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd proto && ../$(BIN)/buf lint
	$(BIN)/python scripts/gen_protos.py --check

# The long coverage-guided fuzz run (atheris), kept out of `make test`: each target in turn,
# its corpus kept in .fuzz/<target>/ between runs, any crashing input written to .fuzz/.
FUZZ_TARGETS ?= envelope manifest policy catalogue peer_bodies certificate
FUZZ_ARGS ?= -max_total_time=120

$(VENV)/.fuzz-installed: pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[dev,fuzz]'
	touch $@

fuzz: $(VENV)/.fuzz-installed
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p .fuzz/$$t; \
		echo "== fuzzing $$t"; \
		$(BIN)/python -m tests.fuzz.$$t $(FUZZ_ARGS) -artifact_prefix=.fuzz/ .fuzz/$$t || exit 1; \
	done

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
