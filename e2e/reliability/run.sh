#!/usr/bin/env bash
# The reliability and security suite (issue 8) on a private instance of the product started by
# scripts/run.sh (`make run`): `make reliability`, and the last step of `make test`.
#
#   e2e/reliability/run.sh                       # every check, ~12-15 min warm on 2 cores
#   e2e/reliability/run.sh failover kms_outage   # only these (a private instance all the same)
#   e2e/reliability/run.sh --attach restarts     # against the instance named by HV_RUN_DIR, HV_API_PORT
#
# Prints each check's failures and summary, a table of every figure, and last
# `reliability: N passed, M failed` (N/M count the individual checks); exit status non-zero if any
# failed. Results as JSON and each check's full output: /tmp/hv-reliability-<pid>/ (README.md).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck disable=SC1091
source "$ROOT/scripts/lib.sh"   # CARGO_TARGET_DIR for make run, the fuzz targets and core's vectors
PYTHONPATH="$ROOT/e2e${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 exec python3 -m reliability run "$@"
