#!/usr/bin/env bash
# Creates the virtualenvs the SDK tests run in, from PyPI. Idempotent.
#   target/pyenv                  the SDKs pinned in tests/python/requirements.txt
#   target/pyenv-agenttier-0.1.1  agenttier's first release
#                                 (tests/python/requirements-agenttier-0.1.1.txt)
#   target/pyenv-hogland-0.1.0    posthog-hogland 0.1.0 and 0.5.0
#   target/pyenv-hogland-0.5.0    (tests/python/requirements-hogland-*.txt)
#   target/pyenv-boxd-0.1.5.dev25 boxd 0.1.5.dev25
#                                 (tests/python/requirements-boxd-0.1.5.dev25.txt)
set -euo pipefail
cd "$(dirname "$0")/.."

# venv VENV REQUIREMENTS [PIP-OPTION...]: VENV made if missing, REQUIREMENTS
# installed into it (with the options) unless the ones last installed are
# the same.
venv() {
  local venv=$1 req=$2
  shift 2
  if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
  fi
  if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" -r "$req"
    cp "$req" "$venv/.requirements"
  fi
}

venv target/pyenv tests/python/requirements.txt
venv target/pyenv-agenttier-0.1.1 tests/python/requirements-agenttier-0.1.1.txt
# posthog-hogland declares Requires-Python >=3.12 yet runs on 3.11 (it uses
# nothing newer than typing.Self and enum.StrEnum): installed past the check.
for v in 0.1.0 0.5.0; do
  venv target/pyenv-hogland-$v tests/python/requirements-hogland-$v.txt --ignore-requires-python
done
venv target/pyenv-boxd-0.1.5.dev25 tests/python/requirements-boxd-0.1.5.dev25.txt
