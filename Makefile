# ocr-graph: `make serve` sets everything up and starts the embedded default on
# 127.0.0.1:8000; `make test` runs the whole test suite (lint, unit, integration).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint unit integration bench constraints clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $(STAMP)

serve: setup
	$(VENV)/bin/ocr-graph serve config/local.yaml

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

bench: setup
	$(PY) bench/embed_throughput.py

constraints: setup
	head -n 2 constraints.txt > constraints.txt.new
	$(PY) -m pip freeze --exclude-editable | grep -v '^ocr-graph' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
