# ocr-graph: `make serve` sets everything up and starts the embedded default on
# 127.0.0.1:8000; `make test` runs the whole test suite (lint, unit, integration).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXPORTS := $(VENV)/.exported

.PHONY: setup system-deps serve test lint unit integration bench soak constraints clean

# Debian/Ubuntu packages for the tesseract engine (German, English, Fraktur); needs root.
# Without them the service runs and says so in /v1/models; CI installs them.
TESSERACT_PACKAGES := tesseract-ocr tesseract-ocr-deu tesseract-ocr-eng tesseract-ocr-frk \
	tesseract-ocr-script-frak

setup: $(STAMP) $(EXPORTS)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --progress-bar off -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The bundled embedding model's ONNX export, beside the install (INSTALLED_MODEL_CACHE_DIR):
# a first start on an empty DATA_DIR loads it as a restart does, instead of exporting.
$(EXPORTS): $(STAMP) config/models.yaml deployments/engines/embedding/onnx_encoder.py \
		deployments/engines/embedding/onnx_export.py
	$(VENV)/bin/ocr-graph models export --installed
	touch $(EXPORTS)

system-deps:
	command -v tesseract >/dev/null && tesseract --list-langs | grep -qx Fraktur || \
	  { apt-get update -qq && apt-get install -y -qq $(TESSERACT_PACKAGES); }

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

# Every benchmark, each writing its section of docs/benchmarks.md.
bench: setup
	$(PY) bench/all.py

# Mixed load for SOAK_MINUTES (default 10): errors, latency and replica memory over time,
# written to docs/soak.md.
SOAK_MINUTES ?= 10
soak: setup
	$(PY) bench/soak.py --minutes $(SOAK_MINUTES)

constraints: setup
	head -n 2 constraints.txt > constraints.txt.new
	$(PY) -m pip freeze --exclude-editable | grep -v '^ocr-graph' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
