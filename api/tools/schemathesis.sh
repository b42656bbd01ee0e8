#!/usr/bin/env bash
# Fuzz the served OpenAPI document with schemathesis on a private instance of the product.
#
#   api/tools/schemathesis.sh [max-time-secs]      (default 150)
#
# The reliability suite's `schemathesis` check (e2e/reliability/checks/schemathesis.py: every
# check, all four phases including the stateful one that follows the document's links; settings
# and the one relaxed check: e2e/reliability/schemathesis.toml) on its own private instance, which
# it stops afterwards. Exit status: the check's. Against an instance that is already running:
# HV_RUN_DIR=... HV_API_PORT=... e2e/reliability/run.sh --attach schemathesis
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export HV_SCHEMATHESIS_MAX_TIME=${1:-150} HV_SCHEMATHESIS_OUT=${HV_SCHEMATHESIS_OUT:-/tmp/hv-schemathesis-$$}
exec "$ROOT/e2e/reliability/run.sh" schemathesis
