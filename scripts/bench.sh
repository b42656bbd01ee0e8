#!/usr/bin/env bash
# On-demand benchmarks against a private test environment. Each prints what it measured next to
# a baseline taken in the same run (this machine is shared and noisy, so compare ratios).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
export HV_TESTENV_DIR="${HV_TESTENV_DIR_BENCH:-/tmp/hyperion-vault-bench-$$}"
TESTENV="$REPO_ROOT/e2e/testenv/testenv"
trap '"$TESTENV" down >/dev/null 2>&1 || true' EXIT
"$TESTENV" up >/dev/null
# shellcheck disable=SC1091
source "$HV_TESTENV_DIR/env"

step "core: seal/open of a 64-byte value"
cargo run --locked --release -q -p hyperion-vault-core --example envelope_bench
step "store: read-current throughput vs pgbench point-select (one pinned current-thread runtime per CPU, as the API serves)"
BENCH_RUNTIME=sharded cargo run --locked --release -q -p hyperion-vault-store --example read_bench
step "store: the same on one multi-thread runtime (as the controller runs)"
BENCH_RUNTIME=multi cargo run --locked --release -q -p hyperion-vault-store --example read_bench
step "API: GET and verify (wrk) vs pgbench of the same SELECT, at 8 and 64 connections"
api/tools/bench.sh 10
step "controller: 1,000 VaultSecrets to Ready, then 1,000 rotations due at once"
cargo test --locked --release -q -p hyperion-vault-controller --test scale -- --ignored --nocapture
