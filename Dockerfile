# ocr-graph on one host: a Ray head and the Serve application of serve_config.yaml.
#   cp .env.example .env (and fill it in); docker compose up -d
# Runs as uid 1000 with a read-only root filesystem: everything it writes lies in
# /models (MODEL_CACHE_DIR, staging in /models/.tmp), /data/state (STATE_DIR) and /cache
# (Ray's session dir), which compose mounts as volumes (docs/operations.md).
FROM python:3.11.11-slim-bookworm

# Tesseract 5 with German, English and Fraktur (the tesseract engine), the same packages
# as `make system-deps`; libglib for OpenCV (rapidocr, surya).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      tesseract-ocr tesseract-ocr-deu tesseract-ocr-eng tesseract-ocr-frk \
      tesseract-ocr-script-frak libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --user-group ocr
WORKDIR /app
# Dependencies first, so a code change does not reinstall them; the README's install
# (pip install -c constraints.txt -e .) without the dev extras.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir serve_app deployments && touch serve_app/__init__.py deployments/__init__.py \
 && pip install --no-cache-dir --progress-bar off -c constraints.txt -e . \
 && rm -rf serve_app deployments
COPY serve_app serve_app
COPY deployments deployments
# Compiled here: the root filesystem is read-only at run time, so no process could write
# their bytecode, and every replica of every start would compile them again.
RUN python -m compileall -q serve_app deployments
COPY config config
COPY serve_config.yaml ./
# The bundled embedding model's ONNX export, beside the install (/usr/local/share/ocr-graph,
# INSTALLED_MODEL_CACHE_DIR's default): a container's first start loads it as a restart
# does, instead of exporting into /models. The same command as `make setup`'s.
RUN ocr-graph models export --installed
COPY deploy/entrypoint.sh /usr/local/bin/ocr-graph-entrypoint

ENV DATA_DIR=/data \
    STATE_DIR=/data/state \
    MODEL_CACHE_DIR=/models \
    TMPDIR=/models/.tmp \
    RAY_TMPDIR=/cache/ray \
    HF_HOME=/cache/huggingface \
    OCR_SIDECAR_UPLOAD_BASE=/data/uploads \
    PYTHONUNBUFFERED=1
RUN mkdir -p /data/state /data/uploads /models /cache \
 && chown ocr:ocr /data/state /models /cache
USER 1000:1000
VOLUME ["/data/state", "/models", "/cache"]
# 8000: the HTTP API; 8265: the Ray dashboard (capacity, logs, metrics).
EXPOSE 8000 8265
# A cold start may pull models first: ten minutes before a failing check counts.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/ocr-graph-entrypoint"]
