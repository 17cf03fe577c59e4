#!/usr/bin/env bash
# Runs the test suite in the project's venv (set up first by scripts/setup.sh).
#
#   scripts/test.sh                                  # -q -rs --durations=15 tests
#   scripts/test.sh tests/integration -k standalone  # any pytest arguments
#
# Exits with pytest's exit code, except that "no tests collected" (5) is a failure (1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${TFOS_VENV:-.venv}"
[[ "$VENV" = /* ]] || VENV="$ROOT/$VENV"

bash "$ROOT/scripts/setup.sh"

if [[ $# -eq 0 ]]; then
    # The whole run (what CI does) starts with the static checks configured in pyproject.toml.
    echo "[test] $VENV/bin/python -m ruff check tfos tests bench"
    "$VENV/bin/python" -m ruff check tfos tests bench
    echo "[test] $VENV/bin/python -m mypy"
    "$VENV/bin/python" -m mypy
    set -- -q -rs --durations=15 tests
fi
echo "[test] $VENV/bin/python -m pytest $*"
rc=0
"$VENV/bin/python" -m pytest "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    echo "[test] FAILED: pytest collected no tests (arguments: $*)" >&2
    exit 1
fi
exit "$rc"
