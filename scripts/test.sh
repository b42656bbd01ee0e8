#!/usr/bin/env bash
# The project's test command (README: `make test`). On a fresh machine it installs what is
# missing (apt packages, Go-built kube-apiserver/etcd/kubectl/helm, the moto venv), builds the
# workspace, runs the unit tests, starts a private test environment (real kube-apiserver + etcd,
# PostgreSQL primary + streaming standby, AWS KMS API via moto), runs the smoke suite and every
# integration test against it, and stops it again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

# A private environment per run, so a developer's running testenv is neither used nor disturbed.
export HV_TESTENV_DIR="${HV_TESTENV_DIR_TEST:-/tmp/hyperion-vault-test-$$}"
TESTENV="$REPO_ROOT/e2e/testenv/testenv"
started=$(date +%s)
cleanup() {
  local rc=$?
  "$TESTENV" down >/dev/null 2>&1 || true
  printf '\n==> total %ss, exit %s\n' "$(( $(date +%s) - started ))" "$rc"
}
trap cleanup EXIT

step "install test tooling (idempotent)"
"$TESTENV" install

step "build the workspace"
cargo build --workspace --all-targets --locked

step "unit tests"
cargo test --workspace --locked

step "start the test environment in $HV_TESTENV_DIR"
"$TESTENV" up
# shellcheck disable=SC1091
source "$HV_TESTENV_DIR/env"

step "smoke suite: every real part answers"
"$REPO_ROOT/e2e/testenv/smoke.sh"

step "integration tests against the test environment"
cargo test --workspace --locked -- --ignored --test-threads="${HV_TEST_THREADS:-4}"
