#!/usr/bin/env bash
# Fuzz the served OpenAPI document with schemathesis on a private instance of the product.
#
#   api/tools/schemathesis.sh [max-time-secs]      (default 150)
#
# Starts the product with scripts/run.sh in its own run dir on free ports, runs
# e2e/reliability/schemathesis.sh against it (every check, all four phases including the stateful
# one that follows the document's links; settings and the one relaxed check: e2e/reliability/
# schemathesis.toml), keeps the full output, and stops the instance. Exit status: the suite's.
# Against an instance that is already running: HV_RUN_DIR=... HV_API_PORT=... e2e/reliability/schemathesis.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export HV_RUN_DIR="/tmp/hyperion-vault-schemathesis-$$"
export HV_API_PORT=${HV_API_PORT:-$(free_port)} HV_METRICS_PORT=${HV_METRICS_PORT:-$(free_port)}
export HV_SCHEMATHESIS_MAX_TIME=${1:-150} HV_SCHEMATHESIS_OUT=${HV_SCHEMATHESIS_OUT:-/tmp/hv-schemathesis-$$}
trap '"$ROOT/scripts/run.sh" down >/dev/null 2>&1 || true' EXIT
"$ROOT/scripts/run.sh" >"$HV_SCHEMATHESIS_OUT.run.log" 2>&1 || { tail -30 "$HV_SCHEMATHESIS_OUT.run.log"; exit 1; }
"$ROOT/e2e/reliability/schemathesis.sh"
