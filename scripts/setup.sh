#!/usr/bin/env bash
# Create (or reuse) the Python environment for hashkit and install hashkit into it in editable mode.
# The venv lives in ~/.cache/hashkit-ci/venv-<hash of requirements.txt> and is reused while
# requirements.txt is unchanged (installing torch takes ~3 minutes); ./.venv links to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
hash=$(sha256sum requirements.txt | cut -c1-12)
venv="${HASHKIT_VENV:-$HOME/.cache/hashkit-ci/venv-$hash}"
if [ ! -f "$venv/.complete" ]; then
  echo "setup: creating $venv (torch install takes a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r requirements.txt
  touch "$venv/.complete"
else
  echo "setup: reusing $venv" >&2
fi
out=$("$venv/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1) || { echo "$out" >&2; exit 1; }
ln -sfn "$venv" .venv
echo "setup: ready; run .venv/bin/hashkit --help" >&2
