#!/usr/bin/env bash
# Creates the project venv once per machine and reinstalls only when the pins change.
# The stamp holds a hash of the files that define the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
want="$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)"
stamp="$VENV/.installed-$want"
if [[ -f "$stamp" ]]; then
  exit 0
fi
echo "bootstrap: creating $VENV from pyproject.toml + requirements.lock (about 1 minute, ~3 GB)"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip==25.3" "setuptools==80.9.0" wheel
# torch==2.13.0: this machine's pip config supplies the CPU wheel. Elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to keep the 3 GB CUDA build out.
"$VENV/bin/python" -m pip install --quiet \
  -c requirements.lock -e ".[dev]"
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "bootstrap: done"
