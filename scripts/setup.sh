#!/usr/bin/env bash
# Creates (if missing) the project's virtualenv and installs tfos into it, editable, with the extras the tests
# and examples need. Idempotent: the install is skipped while pyproject.toml is unchanged since the last one.
#
# Environment:
#   TFOS_VENV          venv path (default: <repo>/.venv; relative paths are relative to the repo root)
#   TFOS_EXTRAS        pip extras (default: tf-cpu,test,examples)
#   TFOS_SETUP_FORCE   set to 1 to reinstall even when nothing changed
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${TFOS_VENV:-.venv}"
[[ "$VENV" = /* ]] || VENV="$ROOT/$VENV"
EXTRAS="${TFOS_EXTRAS:-tf-cpu,test,examples}"
STAMP="$VENV/.tfos-setup-stamp"

say() { echo "[setup] $*"; }

if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtualenv $VENV"
    python3 -m venv "$VENV"
else
    say "using existing virtualenv $VENV"
fi

want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS $ROOT"
have="$(cat "$STAMP" 2>/dev/null || true)"
# Also reinstall when tfos stopped being importable from this checkout (e.g. the venv was rebuilt).
found="$(cd / && "$VENV/bin/python" -c 'import os, tfos; print(os.path.dirname(os.path.dirname(tfos.__file__)))' \
    2>/dev/null || true)"

if [[ "${TFOS_SETUP_FORCE:-0}" != 1 && "$want" == "$have" && "$found" == "$ROOT" ]]; then
    say "tfos[$EXTRAS] already installed from $ROOT and pyproject.toml unchanged; nothing to do"
    exit 0
fi

say "upgrading pip"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
say "installing tfos[$EXTRAS] (editable) from $ROOT"
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
echo "$want" > "$STAMP"
say "done: $("$VENV/bin/python" --version), $("$VENV/bin/python" -m pip --version | cut -d' ' -f1-2)"
