# ocr-graph on one host: Ray head + the Serve application of serve_config.yaml.
#   docker compose up -d        (with Ollama beside it; see docker-compose.yml)
# Models are not baked in: mount MODEL_CACHE_DIR (/models) with BGE-M3, the reranker and
# any surya/kraken checkpoints (docs/operations.md, "Models without a network").
FROM python:3.11-slim-bookworm

# Tesseract 5 with German, English and Fraktur (the tesseract engine), the same packages
# as `make system-deps`; libglib for OpenCV (rapidocr, surya).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      tesseract-ocr tesseract-ocr-deu tesseract-ocr-eng tesseract-ocr-frk \
      tesseract-ocr-script-frak libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 ocr
WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir serve_app deployments && touch serve_app/__init__.py deployments/__init__.py \
 && pip install --no-cache-dir --progress-bar off -c constraints.txt -e . \
 && rm -rf serve_app deployments
COPY serve_app serve_app
COPY deployments deployments
COPY config config
COPY serve_config.yaml ./

ENV DATA_DIR=/data \
    MODEL_CACHE_DIR=/models \
    OCR_SIDECAR_UPLOAD_BASE=/data/uploads \
    PYTHONUNBUFFERED=1
RUN mkdir -p /data /models && chown ocr:ocr /data /models
USER ocr
VOLUME ["/data", "/models"]
# 8000: the HTTP API; 8265: the Ray dashboard (capacity, logs, metrics).
EXPOSE 8000 8265
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["sh", "-c", "ray start --head --dashboard-host=0.0.0.0 --disable-usage-stats && RAY_ADDRESS=auto exec ocr-graph serve serve_config.yaml"]
