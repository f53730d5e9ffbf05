#!/usr/bin/env bash
# GPU readiness check, run as is on a machine with one GPU (or several): under 8 minutes.
#
#   bench/device_check.sh [OUT_FOLDER] [FLAGS...]
#
# Results go to $OUT if set, else OUT_FOLDER (a first argument not starting with -), else
# device_check_out/: nvidia_smi.txt, device_check.log (everything printed), workers.log
# (each measuring process's own output), device_check.json (all figures) and
# device_check.md (the table for docs/BENCHMARKS.md). FLAGS go to bench/device_check.py
# (e.g. --configs float32,mixed --steps 10; `python bench/device_check.py --helpshort`).
#
# Python: $PYTHON if set, else the repository's .venv, else python3 when it can import
# TensorFlow, Keras, absl and numba; only when none of these is there: ./run.sh setup.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if [[ -n "${OUT:-}" ]]; then
  FOLDER="$OUT"
  if [[ $# -gt 0 && "$1" != -* ]]; then shift; fi  # $OUT wins over a folder argument
elif [[ $# -gt 0 && "$1" != -* ]]; then
  FOLDER="$1"; shift
else
  FOLDER="device_check_out"
fi
mkdir -p "$FOLDER"
FOLDER="$(cd "$FOLDER" && pwd)"

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
elif command -v python3 >/dev/null &&
     python3 -c "import tensorflow, keras, absl, numba" >/dev/null 2>&1; then
  PY="$(command -v python3)"
else
  echo "[device_check] no Python with TensorFlow found: running ./run.sh setup" >&2
  "$ROOT/run.sh" setup
  PY="$ROOT/.venv/bin/python"
fi

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"

{
  echo "== nvidia-smi ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm,power.limit \
      --format=csv || true
  else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
  fi
} >"$FOLDER/nvidia_smi.txt" 2>&1

start=$SECONDS
echo "[device_check] python: $PY; results: $FOLDER" | tee "$FOLDER/device_check.log"
set +e
"$PY" "$ROOT/bench/device_check.py" --out "$FOLDER" "$@" 2>&1 | tee -a "$FOLDER/device_check.log"
rc=${PIPESTATUS[0]}
set -e
echo "[device_check] exit $rc after $((SECONDS - start)) s; results in $FOLDER:" \
  "device_check.md, device_check.json, device_check.log, workers.log, nvidia_smi.txt" |
  tee -a "$FOLDER/device_check.log"
exit "$rc"
