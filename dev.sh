#!/usr/bin/env bash
# Set up the project (virtualenv + install) if needed, then run one of:
#   ./dev.sh demo [--fresh]     the whole pipeline offline on the embedded defaults
#   ./dev.sh test [pytest args] ruff check, ruff format --check, mypy app, then the whole test suite (what CI runs)
#   ./dev.sh test --quick [...] the same checks, then every test but the slow and process ones (<= 5 min target)
#   ./dev.sh test --torture [...] the whole suite with 10 random kill -9s instead of 3 (COINLAKE_TEST_KILLS)
#   ./dev.sh setup              only set up
# Needs Python 3.11-3.14 (the newest found is used; PYTHON=... overrides) and Java 17+. Delta jars come from Maven Central on the first Spark start.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${COINLAKE_VENV:-.venv}"

# Supported interpreters, newest first (setup.cfg: python_requires = >=3.11,<3.15).
SUPPORTED_PYTHONS="3.14 3.13 3.12 3.11"

find_python() {
  local check='import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 14) else 1)'
  if [ -n "${PYTHON:-}" ]; then
    if command -v "$PYTHON" >/dev/null 2>&1 && "$PYTHON" -c "$check" 2>/dev/null; then
      echo "$PYTHON"; return 0
    fi
    echo "dev.sh: PYTHON=$PYTHON is not Python 3.11-3.14" >&2
    return 1
  fi
  local version candidate
  for version in $SUPPORTED_PYTHONS; do
    candidate="python$version"
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$check" 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  for candidate in python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$check" 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "dev.sh: Python 3.11-3.14 is required (set PYTHON=/path/to/python3.x)" >&2
  return 1
}

setup() {
  if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
    echo "dev.sh: Java 17+ is required (e.g. apt-get install openjdk-17-jre-headless)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  # Reinstall only when the packaging changed.
  stamp="$VENV/.coinlake-installed"
  want="$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[spark,dev]"
    echo "$want" > "$stamp"
  fi
}

# The report test renders the HTML in headless Chromium; install it when we can (root + apt).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
    command -v google-chrome >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "dev.sh: installing Chromium for the report screenshot test" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
      echo "dev.sh: could not install Chromium; the screenshot test will be skipped" >&2
  fi
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/coinlake" demo "$@" ;;
  test)
    # Tiers (docs/TESTING.md): --quick leaves out the tests marked slow (long end-to-end, soak) or
    # process (their own JVM: kill -9, crash points, SIGTERM, the CLI lifecycle, local-cluster);
    # --torture makes more random kills (COINLAKE_TEST_KILLS, default 10; CI makes 3).
    tier=ci
    case "${1:-}" in
      --quick) tier=quick; shift ;;
      --torture) tier=torture; shift ;;
    esac
    setup; ensure_chromium
    # Lint, format and types first: they take seconds, the suite takes minutes.
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy" app
    # Resolve the Delta jars once before the workers start (they would race on the Ivy cache).
    "$VENV/bin/python" -c 'from app.spark import resolve_jars; resolve_jars()'
    # One seed for the whole run (every worker): randomised tests use it; printed so a failure replays.
    export COINLAKE_TEST_SEED="${COINLAKE_TEST_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
    echo "dev.sh: test tier $tier, COINLAKE_TEST_SEED=$COINLAKE_TEST_SEED" >&2
    tier_args=()
    case "$tier" in
      quick) tier_args=(-m "not slow and not process") ;;
      torture) export COINLAKE_TEST_KILLS="${COINLAKE_TEST_KILLS:-10}" ;;
    esac
    # Two workers, one test file each at a time (module fixtures stay in one process), files
    # handed out in collection order (tests/conftest.py puts the slow ones first) instead of
    # largest-first; COINLAKE_TEST_WORKERS=0 (or passing -n 0) runs everything in this process.
    exec "$VENV/bin/python" -m pytest -n "${COINLAKE_TEST_WORKERS:-2}" --dist loadfile \
      --no-loadscope-reorder ${tier_args[@]+"${tier_args[@]}"} "$@" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
