# The two commands of the README: `make run` and `make test` (each installs first).
PY := .venv/bin/python

.PHONY: install run test bench lint
install:
	bash scripts/install.sh

run: install  ## the main job on the embedded default model (offline, CPU, a few minutes)
	$(PY) -m experiments.run $(ARGS)

test: install  ## the test suite (offline)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests $(ARGS)

bench: install  ## benchmarks/: scoring, selection (ARGS=--grouping adds sweep granularity); prints tables, writes JSON
	$(PY) -m benchmarks.run $(ARGS)

lint: install
	$(PY) -m ruff check harmcore experiments tests benchmarks
