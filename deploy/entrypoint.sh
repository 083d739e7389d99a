#!/usr/bin/env bash
# The container's start: check the writable dirs, clear old staging files, start a Ray
# head and the Serve application. One clear line and exit 1 when a dir is not writable.
set -euo pipefail

state_dir="${STATE_DIR:-${DATA_DIR:-/data}/state}"
cache_dir="${MODEL_CACHE_DIR:-${DATA_DIR:-/data}/models}"
staging_dir="${TMPDIR:-$cache_dir/.tmp}"
ray_dir="${RAY_TMPDIR:-/cache/ray}"

for dir in "$state_dir" "$cache_dir" "$staging_dir" "$ray_dir"; do
  if ! mkdir -p "$dir" 2>/dev/null || ! probe="$(mktemp -p "$dir" .write-probe.XXXXXX 2>/dev/null)"; then
    echo "ocr-graph: $dir is not writable by uid $(id -u): mount a volume there owned by" \
         "uid $(id -u) (docker compose runs volume-init for this)" >&2
    exit 1
  fi
  rm -f "$probe"
done

# Downloads interrupted more than a day ago: nothing will resume them.
find "$staging_dir" -mindepth 1 -maxdepth 1 -mtime +0 ! -name '*.pull-lock' -exec rm -rf {} +

if [ "$#" -gt 0 ]; then  # `docker run IMAGE ocr-graph models list` and the like
  exec "$@"
fi
# Read when Ray starts, so they must be in Ray's environment, not only the app's (ADR 008):
# HAProxy in front of the Ingress replicas, and the front door (admission, one error body)
# in Serve's Python proxy, HAProxy's fallback.
export RAY_SERVE_ENABLE_HA_PROXY="${RAY_SERVE_ENABLE_HA_PROXY:-1}"
export RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH="${RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH:-serve_app.front_door:middlewares}"
ray start --head --temp-dir="$ray_dir" --dashboard-host=0.0.0.0 --disable-usage-stats
RAY_ADDRESS=auto exec ocr-graph serve "${SERVE_CONFIG:-serve_config.yaml}"
