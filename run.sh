#!/usr/bin/env bash
# One entry point for set-up, tests and the project's jobs.  `./run.sh help` lists the subcommands.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
STAMP="$VENV/.face-hashing-installed"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"  # TensorFlow's C++ start-up chatter

usage() {
  cat <<'USAGE'
usage: ./run.sh [SUBCOMMAND] [ARGS...]

  (no subcommand) [FLAGS]  the main job: set up, generate the synthetic data set, train
                   DCBH (a few minutes on 2 CPU cores), evaluate, export a SavedModel;
                   FLAGS go to its training (./run.sh --epochs 40)
  train [METHOD] [FLAGS]   python -m METHOD_tf.train FLAGS    (METHOD: dcbh (default))
  eval [METHOD] [FLAGS]    python -m METHOD_tf.evaluate FLAGS (re-evaluate a run folder)
  export [METHOD] [FLAGS]  python -m METHOD_tf.export FLAGS   (SavedModel of a run folder)
  reproduce [FLAGS]        the paper's table: every method x bit length, tables and figures
                           (python -m common.reproduce FLAGS; see README "Reproducing the table")
  lint             ruff (pyproject.toml [tool.ruff]), the type hints (mypy, [tool.mypy])
                   and the import layers (lint-imports, [tool.importlinter]): what CI
                   checks before the tests
  setup            create .venv and install the package (editable) with its dev extras;
                   a no-op when nothing changed since the last install
  test [ARGS]      set up if needed, then run the whole test suite (ARGS go to pytest);
                   test files run in parallel processes (TEST_WORKERS, default: the CPU
                   count up to 4; TEST_WORKERS=1 runs them one after another);
                   test -m "not slow" is the fast lane (no training, no extra processes)
  synthetic [ARGS] write the synthetic identity data set (python -m common.synthetic ARGS)
  bench NAME       run bench/NAME.py (e.g. ./run.sh bench metrics)
  help             this text

Environment: VENV (default ./.venv), PYTHON (interpreter used to create the venv, default python3),
TEST_WORKERS (see test).
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

# Test worker processes by default: one per CPU, at most 4 (each worker runs TensorFlow,
# about 1-3 GB at its peak, and its tests start further processes of their own).
test_workers() {
  local n; n=$("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || echo 1)
  (( n > 4 )) && n=4
  echo "$n"
}

# The main job's settings (documented in README.md, "The main job").
MAIN_RUN="${MAIN_RUN:-runs/dcbh_synthetic}"
MAIN_EXPORT="${MAIN_EXPORT:-exports/dcbh_synthetic}"
MAIN_FLAGS=(--dataset synthetic --data_dir data/synthetic --model_dir "$MAIN_RUN"
            --epochs 20 --width_multiplier 0.25 --batch_size 64 --shuffle --eval_every 10
            --log_every_steps 0)

# Flags the main job cannot take: its evaluation and export read $MAIN_RUN, and it trains on
# the synthetic set (another folder or data set: ./run.sh train, eval, export).
MAIN_FIXED=(model_dir dataset data_dir train_dir test_dir extra_train_dir)

main_job() {
  local arg name
  for arg in "$@"; do
    name="${arg#-}"; name="${name#-}"; name="${name%%=*}"
    if [[ "$arg" == -* ]] && [[ " ${MAIN_FIXED[*]} " == *" $name "* ]]; then
      echo "error: the main job does not take --$name: it trains DCBH on the synthetic set" \
           "into MAIN_RUN ($MAIN_RUN), then evaluates and exports that run; set MAIN_RUN /" \
           "MAIN_EXPORT to use other folders, or run ./run.sh train, eval and export on your" \
           "own data (README, \"Training\")" >&2
      exit 2
    fi
  done
  setup
  echo "== 1/3 train DCBH on the synthetic data set (resumes if $MAIN_RUN exists)"
  "$PY" -m dcbh_tf.train "${MAIN_FLAGS[@]}" "$@"
  echo "== 2/3 evaluate best_map under the original's legacy distance as well"
  "$PY" -m dcbh_tf.evaluate --model_dir "$MAIN_RUN" --hamming legacy
  echo "== 3/3 export the SavedModel"
  "$PY" -m dcbh_tf.export --model_dir "$MAIN_RUN" --export_dir "$MAIN_EXPORT"
  cat <<EOF
== done
  data        data/synthetic/{train,test}/   (original pickle layout)
  run folder  $MAIN_RUN/   (checkpoints/, metrics.json, history.jsonl, tensorboard/)
  export      $MAIN_EXPORT/   (SavedModel + model.keras + export_info.json)
EOF
}

# train|eval|export [METHOD] FLAGS: run METHOD_tf.MODULE (METHOD defaults to dcbh).
method_module() {
  local module="$1"; shift
  local method=dcbh
  if [[ $# -gt 0 && "$1" != -* ]]; then method="$1"; shift; fi
  if [[ ! -d "${method}_tf" ]]; then
    echo "error: unknown method '$method' (no ${method}_tf/ package)" >&2; exit 2
  fi
  setup
  exec "$PY" -m "${method}_tf.${module}" "$@"
}

if [[ $# -eq 0 ]]; then main_job; exit 0; fi
case "$1" in
  -h|--help) ;;
  -*) main_job "$@"; exit 0 ;;  # ./run.sh --epochs 40: flags of the main job's training
esac
cmd="$1"; shift
case "$cmd" in
  train) method_module train "$@" ;;
  eval) method_module evaluate "$@" ;;
  export) method_module export "$@" ;;
  reproduce)
    setup
    exec "$PY" -m common.reproduce "$@" ;;
  setup) setup ;;
  lint)
    setup
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/lint-imports" ;;
  test)
    setup
    workers="${TEST_WORKERS:-$(test_workers)}"
    if [[ ! "$workers" =~ ^[1-9][0-9]*$ ]]; then
      echo "error: TEST_WORKERS must be a whole number >= 1, not '$workers'" >&2; exit 2
    fi
    if [[ "$workers" -gt 1 ]]; then
      # One test file per worker at a time (pytest-xdist --dist loadfile): a file's
      # module-scoped fixtures (trained tiny models, generated data) are built once.
      exec "$PY" -m pytest -n "$workers" --dist loadfile "$@"
    fi
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
