#!/usr/bin/env bash
# One entry point for set-up, tests and the project's jobs.  `./run.sh help` lists the subcommands.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.face-hashing-installed"

usage() {
  cat <<'USAGE'
usage: ./run.sh [SUBCOMMAND] [ARGS...]

  setup            create .venv and install the package (editable) with its dev extras;
                   a no-op when nothing changed since the last install
  test [ARGS]      set up if needed, then run the whole test suite (ARGS go to pytest)
  synthetic [ARGS] write the synthetic identity data set (python -m common.synthetic ARGS)
  bench NAME       run bench/NAME.py (e.g. ./run.sh bench metrics)
  help             this text

Environment: VENV (default ./.venv), PYTHON (interpreter used to create the venv, default python3).
USAGE
}

# A hash of everything that decides what gets installed: re-install only when it changes.
install_key() { cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1; }

setup() {
  local key; key=$(install_key)
  if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$key" ]]; then
    return 0
  fi
  if [[ ! -x "$PY" ]]; then
    echo "[setup] creating virtual environment in $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  echo "[setup] installing the package and its dev extras (first time: a few minutes)" >&2
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet -e ".[dev]"
  echo "$key" > "$STAMP"
  echo "[setup] done" >&2
}

cmd="${1:-help}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  setup) setup ;;
  test)
    setup
    exec "$PY" -m pytest "$@" ;;
  synthetic)
    setup
    exec "$PY" -m common.synthetic "$@" ;;
  bench)
    setup
    name="${1:?usage: ./run.sh bench NAME [ARGS]}"; shift
    exec "$PY" "bench/${name}.py" "$@" ;;
  help|-h|--help) usage ;;
  *) echo "unknown subcommand: $cmd" >&2; usage >&2; exit 2 ;;
esac
