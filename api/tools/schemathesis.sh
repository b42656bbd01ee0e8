#!/usr/bin/env bash
# Fuzz the served OpenAPI document against a live API on the testenv with schemathesis (PyPI).
#
#   e2e/testenv/testenv up && api/tools/schemathesis.sh [max-examples]
#
# Builds the debug binary, starts it on 127.0.0.1 (allowlist 127.0.0.1, a bootstrap admin token),
# runs every check except `positive_data_acceptance` (see below), prints the status counts and
# stops the server. Exit status: schemathesis's.
#
# positive_data_acceptance is a heuristic ("a schema-valid request should not get 400"). It flags
# two things on purpose: an arbitrary string is a schema-valid but meaningless pagination `cursor`
# (400), and rotating a manual secret is 400 (DESIGN.md §7). Run with CHECKS=all to see them.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE=${HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hyperion-vault
VENV=$CACHE/schemathesis-venv
PORT=${PORT:-18290}
MAX_EXAMPLES=${1:-100}
CHECKS=${CHECKS:-all}
EXCLUDE=${EXCLUDE:-positive_data_acceptance}
[ -f "$STATE/env" ] || { echo "no testenv at $STATE: run e2e/testenv/testenv up" >&2; exit 1; }
# shellcheck disable=SC1091
source "$STATE/env"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
cargo build -q -p hyperion-vault-api --manifest-path "$ROOT/Cargo.toml"

TOKEN=$(python3 -c 'import secrets; print("st-" + secrets.token_hex(24))')
WORK=$(mktemp -d)
env VAULT_DATABASE_URL="$TESTENV_PG_DSN_RW" VAULT_KMS_MODE=aws VAULT_API_MIGRATE=true \
  VAULT_ALLOWED_IPS=127.0.0.1 VAULT_API_LISTEN=127.0.0.1:$PORT VAULT_BOOTSTRAP_TOKEN="$TOKEN" \
  VAULT_AUTH_MAX_FAILURES=1000000 RUST_LOG=warn \
  setsid "$CARGO_TARGET_DIR/debug/hyperion-vault-api" > "$WORK/server.log" 2>&1 < /dev/null &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 0.2; done
# A previous run may have reused the bootstrap-admin name with another token: mint our own.
ADMIN=$(env VAULT_DATABASE_URL="$TESTENV_PG_DSN_RW" VAULT_KMS_MODE=aws RUST_LOG=error \
  "$CARGO_TARGET_DIR/debug/hyperion-vault-api" mint-token --name "st-$(date +%s%N)" --role admin --expires-in-secs 3600)

set +e
"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/v1/openapi.json" \
  -H "Authorization: Bearer $ADMIN" --checks "$CHECKS" --exclude-checks "$EXCLUDE" \
  --max-examples "$MAX_EXAMPLES" --no-color --report har --report-dir "$WORK/report"
rc=$?
set -e
python3 - "$WORK/report" <<'PY'
import collections, glob, json, sys
c = collections.Counter()
for f in glob.glob(sys.argv[1] + "/*.json"):
    for e in json.load(open(f))["log"]["entries"]:
        c[e["response"]["status"]] += 1
print("requests:", sum(c.values()), "by status:", dict(sorted(c.items())),
      "5xx:", sum(v for k, v in c.items() if k >= 500))
PY
exit $rc
