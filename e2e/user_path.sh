#!/usr/bin/env bash
# The user's path end to end, on the embedded default that `make run` starts: the chart's CRD,
# ServiceAccounts and RBAC installed into a real kube-apiserver, the controller running with a
# token of the chart's controller ServiceAccount, the API in front of the PostgreSQL pair and KMS.
# Proves the chart's RBAC is sufficient (the whole VaultSecret lifecycle works with exactly it)
# and used (removing one rule makes reconciliation fail visibly). Ends with `N passed, M failed`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC1091
source "$ROOT/scripts/lib.sh"   # free_port
export HV_RUN_DIR="/tmp/hyperion-vault-userpath-$$"
export HV_API_PORT=${HV_API_PORT:-$(free_port)} HV_METRICS_PORT=${HV_METRICS_PORT:-$(free_port)}
trap '"$ROOT/scripts/run.sh" down >/dev/null 2>&1 || true' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
ko() { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else ko "$what"; fi; }

"$ROOT/scripts/run.sh" >"/tmp/hyperion-vault-userpath-$$.log" 2>&1 || { tail -30 "/tmp/hyperion-vault-userpath-$$.log"; ko "make run"; echo "user-path: $pass passed, $fail failed"; exit 1; }
ok "make run: chart CRD + RBAC installed, controller and API up, example VaultSecret Ready"
# shellcheck disable=SC1091
source "$HV_RUN_DIR/env"
K() { "$KUBECTL" "$@"; }
API="http://127.0.0.1:$HV_API_PORT"
ADMIN="Authorization: Bearer $(cat "$HV_RUN_DIR/run/admin-token")"
json() { "$HV_VENV/bin/python" -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
wait_for() { local i; for i in $(seq "$1"); do if eval "$2"; then return 0; fi; sleep 1; done; return 1; }

value=$(curl -sf "$API/v1/secrets/default/payments-api-key" | json '["value"]')
check "the API serves version 1 of the example" test "$(curl -sf "$API/v1/secrets/default/payments-api-key" | json '["version"]')" = 1
check "verify accepts the value" test "$(curl -sf -X POST -H 'content-type: application/json' \
  -d "{\"value\":\"$value\"}" "$API/v1/secrets/default/payments-api-key/verify" | json '["valid"]')" = True

K -n default annotate vsec payments-api-key vault.hyperiondb.io/rotate-now=e2e-1 --overwrite >/dev/null
check "rotate-now gives version 2 in status" wait_for 30 \
  '[ "$(K -n default get vsec payments-api-key -o jsonpath={.status.currentVersion})" = 2 ]'
check "the old value still verifies during grace" test "$(curl -sf -X POST -H 'content-type: application/json' \
  -d "{\"value\":\"$value\"}" "$API/v1/secrets/default/payments-api-key/verify" | json '["version"]')" = 1
check "management API lists both versions" test "$(curl -sf -H "$ADMIN" \
  "$API/v1/secrets/default/payments-api-key/versions" | json '["versions"].__len__()')" = 2

K -n default delete vsec payments-api-key --wait=false >/dev/null
check "delete releases the finalizer" wait_for 30 '! K -n default get vsec payments-api-key >/dev/null 2>&1'
# Each API replica may serve sealed rows it cached up to 1 s ago (DESIGN.md §6: new state within
# the replication lag plus one second), so the 404 must come within that, not at once.
gone=$(date +%s%N)
for _ in $(seq 40); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$API/v1/secrets/default/payments-api-key")
  [ "$code" = 404 ] && break
  sleep 0.05
done
took_ms=$(( ($(date +%s%N) - gone) / 1000000 ))
check "a deleted secret no longer reads (404 after ${took_ms} ms; allowed: lag + 1 s)" \
  test "$code" = 404 -a "$took_ms" -lt 1500

# The RBAC is used: take away the status rule and a new VaultSecret can no longer become Ready.
ROLE=hyperion-vault-controller
K get clusterrole "$ROLE" -o json >"$HV_RUN_DIR/role.json"
"$HV_VENV/bin/python" - "$HV_RUN_DIR/role.json" <<'PY' | K apply -f - >/dev/null
import json, sys
role = json.load(open(sys.argv[1]))
role["rules"] = [r for r in role["rules"] if "vaultsecrets/status" not in r.get("resources", [])]
for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
    role["metadata"].pop(k, None)
print(json.dumps(role))
PY
cat <<YAML | K -n default apply -f - >/dev/null
apiVersion: vault.hyperiondb.io/v1alpha1
kind: VaultSecret
metadata: {name: rbac-probe}
spec: {kind: Automatic, rotationInterval: 24h}
YAML
sleep 10
check "without the status rule the VaultSecret does not become Ready" \
  test -z "$(K -n default get vsec rbac-probe -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
check "the controller reports the denial" grep -qi forbidden "$HV_RUN_DIR/run/controller.log"
"$HELM" template hyperion-vault "$ROOT/charts/hyperion-vault" --namespace hyperion-vault --show-only templates/controller-rbac.yaml \
  | "$HV_VENV/bin/python" "$ROOT/scripts/select-kinds.py" ClusterRole | K apply -f - >/dev/null
check "restoring the chart's rule lets it reach Ready" wait_for 60 \
  '[ "$(K -n default get vsec rbac-probe -o jsonpath="{.status.conditions[?(@.type==\"Ready\")].status}")" = True ]'

echo "user-path: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
