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
  # --no-compile: no .pyc for the ~20k files of torch and friends up front (Python compiles what it imports).
  "$venv/bin/pip" install -q --no-compile -r requirements.txt
  touch "$venv/.complete"
else
  echo "setup: reusing $venv" >&2
fi
out=$("$venv/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1) || { echo "$out" >&2; exit 1; }
ln -sfn "$venv" .venv
# Headless browser for the page tests (tests/test_serve_browser.py): Debian's chromium + its chromium-driver.
# CI machines start bare; where apt cannot install them the browser tests skip with the reason.
if [ -z "${HASHKIT_NO_BROWSER:-}" ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium + chromium-driver for the browser tests (a minute or two)" >&2
    log=$(mktemp)
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
             chromium chromium-driver; } >"$log" 2>&1; then
      echo "setup: could not install chromium ($(tail -n 1 "$log")); the browser tests will skip" >&2
    fi
    rm -f "$log"
  else
    echo "setup: chromium/chromedriver missing and apt-get not usable here; the browser tests will skip" >&2
  fi
fi
echo "setup: ready; run .venv/bin/hashkit --help" >&2
