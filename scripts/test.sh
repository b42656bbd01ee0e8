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
LOG=$(mktemp /tmp/hyperion-vault-test-log.XXXXXX)
cleanup() {
  local rc=$?
  "$TESTENV" down >/dev/null 2>&1 || true
  printf '\n==> %ss, exit %s\n' "$(( $(date +%s) - started ))" "$rc"
  # One closing line for the whole run: every cargo test binary, the smoke and chart suites.
  awk '
    /^test result: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    /^([a-z][a-z -]*: )?[0-9]+ passed, [0-9]+ failed$/ { n = split($0, w, " "); for (i = 1; i <= n; i++) { if (w[i+1] ~ /^passed/) p += w[i]; if (w[i+1] ~ /^failed/) f += w[i] } }
    END { printf "all: %d passed, %d failed\n", p, f }' "$LOG"
  rm -f "$LOG"
}
trap cleanup EXIT
# Runs a command with its output also captured for the closing summary.
run() { "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

step "install test tooling (idempotent)"
"$TESTENV" install

step "build the workspace"
cargo build --workspace --all-targets --locked

step "unit tests"
# The fuzz targets run here as a quick smoke; the reliability suite runs them in full (fuzz.sh).
HV_FUZZ_CASES=${HV_FUZZ_CASES_UNIT:-100} run cargo test --workspace --locked

step "start the test environment in $HV_TESTENV_DIR"
"$TESTENV" up
# shellcheck disable=SC1091
source "$HV_TESTENV_DIR/env"

step "smoke suite: every real part answers"
run "$REPO_ROOT/e2e/testenv/smoke.sh"

step "chart: lint, template with every values file, install --dry-run against the apiserver"
run "$REPO_ROOT/scripts/chart-check.sh"

step "integration tests against the test environment"
# Benchmarks are on demand (make bench), not part of the test run.
run cargo test --workspace --locked -- --ignored --test-threads="${HV_TEST_THREADS:-4}" \
  --skip scale_1000_vaultsecrets

step "the user's path end to end: make run, chart RBAC sufficient and used"
run "$REPO_ROOT/e2e/user_path.sh"

step "reliability: hostile input, timing, faults under load, restarts, leak scan"
run "$REPO_ROOT/e2e/reliability/run.sh"
