#!/usr/bin/env bash
# Creates the virtualenv the SDK tests run in (target/pyenv), with the SDKs
# pinned in tests/python/requirements.txt, from PyPI. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/pyenv
req=tests/python/requirements.txt
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi
