#!/usr/bin/env bash
# Runs the whole test suite: unit tests, and integration tests that drive
# real sandboxes through a real `paddock serve` (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
scripts/pyenv.sh
export PADDOCK_TEST_PYTHON="$PWD/target/pyenv/bin/python"
export PADDOCK_TEST_AGENT="$PWD/target/x86_64-unknown-linux-gnu/release/paddock-agent"
cargo test --release --workspace -- --test-threads=4
