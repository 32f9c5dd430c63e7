#!/usr/bin/env bash
# Creates the linter venv for `make k8s-validate` once and reinstalls only when
# k8s/requirements-lint.txt changes (the stamp holds its hash). checkov gets its own venv
# because its pins clash with TensorFlow's in the project venv (termcolor).
# Usage: bash k8s/bootstrap_lint_venv.sh [VENV_DIR]   (default .venv/k8s-lint)
set -euo pipefail
cd "$(dirname "$0")/.."
LINT_VENV="${1:-${K8S_LINT_VENV:-.venv/k8s-lint}}"
PYTHON="${PYTHON:-python3}"
want="$(sha256sum k8s/requirements-lint.txt | cut -c1-16)"
stamp="$LINT_VENV/.installed-$want"
if [[ -f "$stamp" ]]; then
  exit 0
fi
echo "k8s-lint: creating $LINT_VENV from k8s/requirements-lint.txt (about 20 s, ~300 MB)"
[[ -x "$LINT_VENV/bin/python" ]] || "$PYTHON" -m venv "$LINT_VENV"
"$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --requirement k8s/requirements-lint.txt
rm -f "$LINT_VENV"/.installed-*
touch "$stamp"
echo "k8s-lint: done"
