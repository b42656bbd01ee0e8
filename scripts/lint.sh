#!/usr/bin/env bash
# Formatting and lints exactly as CI checks them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
