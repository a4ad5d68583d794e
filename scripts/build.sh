#!/usr/bin/env bash
# Builds the paddock binary and the static in-sandbox agent (release).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p paddock
# The agent runs inside every sandbox, whatever its image: link it statically.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release -p paddock-agent --target x86_64-unknown-linux-gnu
