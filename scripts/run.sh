#!/usr/bin/env bash
# The product on its embedded default (README: `make run`). Starts a local control plane
# (kube-apiserver + etcd), a PostgreSQL primary + streaming standby and the AWS KMS API (moto),
# installs the chart's CRD, ServiceAccounts and RBAC into that apiserver, runs the controller and
# the API as local processes under the chart's ServiceAccount identities, applies an example
# VaultSecret and prints how to read and verify it. Everything keeps running in the background;
# `make stop` (scripts/run.sh down) stops it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
export HV_TESTENV_DIR="${HV_RUN_DIR:-/tmp/hyperion-vault-run}"
TESTENV="$REPO_ROOT/e2e/testenv/testenv"
RUN="$HV_TESTENV_DIR/run"
NS=hyperion-vault
API_PORT=${HV_API_PORT:-8200}
METRICS_PORT=${HV_METRICS_PORT:-8080}

stop_processes() {
  for pidfile in "$RUN"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && { for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; }
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "${1:-up}" = down ]; then
  [ -d "$RUN" ] && stop_processes
  "$TESTENV" down
  exit 0
fi

step "build the controller and the API"
cargo build --locked -p hyperion-vault-controller -p hyperion-vault-api
BIN="$CARGO_TARGET_DIR/debug"

step "start the local control plane, PostgreSQL pair and KMS"
"$TESTENV" up
# shellcheck disable=SC1091
source "$HV_TESTENV_DIR/env"
mkdir -p "$RUN"
stop_processes

step "install the chart's CRD, ServiceAccounts and RBAC"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
# Deployments need a kubelet, which the local control plane does not have: the two processes
# below stand in for their pods, using the same ServiceAccounts and RBAC.
"$HELM" template hyperion-vault charts/hyperion-vault --namespace "$NS" --set kms.keyId="$VAULT_KMS_KEY_ID" \
  | "$HV_VENV/bin/python" "$REPO_ROOT/scripts/select-kinds.py" \
      CustomResourceDefinition ServiceAccount ClusterRole ClusterRoleBinding Role RoleBinding Service \
  | "$KUBECTL" apply -n "$NS" -f - >/dev/null
"$KUBECTL" wait --for=condition=Established crd/vaultsecrets.vault.hyperiondb.io --timeout=30s >/dev/null

kubeconfig_for() { # <serviceaccount> <file>: a kubeconfig authenticating as that ServiceAccount
  local token
  token=$("$KUBECTL" -n "$NS" create token "$1" --duration=24h)
  KUBECONFIG="$2" "$KUBECTL" config set-cluster local --server="$KUBE_APISERVER_URL" \
    --certificate-authority="$KUBE_CA_FILE" --embed-certs=true >/dev/null
  KUBECONFIG="$2" "$KUBECTL" config set-credentials "$1" --token="$token" >/dev/null
  KUBECONFIG="$2" "$KUBECTL" config set-context default --cluster=local --user="$1" --namespace="$NS" >/dev/null
  KUBECONFIG="$2" "$KUBECTL" config use-context default >/dev/null
}
kubeconfig_for hyperion-vault-controller "$RUN/controller.kubeconfig"

step "database roles: the controller owns the schema, the API gets the service role"
OWNER_PW=$(openssl rand -hex 16)
API_PW=$(openssl rand -hex 16)
PGPASSWORD="$PG_SUPERPASSWORD" "$PG_BIN_DIR/psql" -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PRIMARY_PORT" \
  -U "$PG_SUPERUSER" -d "$PG_DATABASE" <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault_owner') THEN CREATE ROLE vault_owner LOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vault_api') THEN CREATE ROLE vault_api LOGIN; END IF;
END \$\$;
ALTER ROLE vault_owner PASSWORD '$OWNER_PW';
ALTER ROLE vault_api PASSWORD '$API_PW';
GRANT CREATE ON DATABASE $PG_DATABASE TO vault_owner;
SQL
common_env=(
  VAULT_PG_HOSTS="$PG_HOST:$PG_PRIMARY_PORT,$PG_HOST:$PG_STANDBY_PORT" VAULT_PG_DBNAME="$PG_DATABASE"
  VAULT_PG_SSLMODE=disable VAULT_KMS_MODE=aws VAULT_KMS_KEY_ID="$VAULT_KMS_KEY_ID"
  VAULT_KMS_ENDPOINT="$VAULT_KMS_ENDPOINT"
  # The launchers must not depend on the environment of whoever runs them (a restart from a clean
  # shell had no KMS credentials).
  AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
  AWS_REGION="$AWS_REGION" AWS_EC2_METADATA_DISABLED=true
)

# Each process is started by a launcher script in the run dir (mode 700: it holds the database
# password), so the reliability suite can kill -9 one and start it again exactly as here.
# HV_CONTROLLER_ENV / HV_API_ENV: extra space-separated VAR=value settings for each process.
write_launcher() { # <name> <binary> <env...>: writes $RUN/<name>.start
  local name=$1 bin=$2; shift 2
  {
    echo '#!/usr/bin/env bash'
    echo "# Starts the $name as scripts/run.sh did; appends to $RUN/$name.log, writes $RUN/$name.pid."
    printf 'env'; printf ' %q' "$@"; printf ' nohup %q >>%q 2>&1 </dev/null &\n' "$bin" "$RUN/$name.log"
    printf 'echo $! >%q\n' "$RUN/$name.pid"
  } >"$RUN/$name.start"
  chmod 700 "$RUN/$name.start"
}

step "start the controller (leader election, migrations) as ServiceAccount hyperion-vault-controller"
# shellcheck disable=SC2086 # HV_CONTROLLER_ENV is a list of VAR=value words
write_launcher controller "$BIN/hyperion-vault-controller" "${common_env[@]}" VAULT_PG_USER=vault_owner \
  VAULT_PG_PASSWORD="$OWNER_PW" KUBECONFIG="$RUN/controller.kubeconfig" POD_NAMESPACE="$NS" \
  POD_NAME=controller-local VAULT_METRICS_ADDR="127.0.0.1:$METRICS_PORT" RUST_LOG=info ${HV_CONTROLLER_ENV:-}
: >"$RUN/controller.log"
"$RUN/controller.start"
for _ in $(seq 120); do
  PGPASSWORD="$OWNER_PW" "$PG_BIN_DIR/psql" -qtA -h "$PG_HOST" -p "$PG_PRIMARY_PORT" -U vault_owner \
    -d "$PG_DATABASE" -c "SELECT 1 FROM pg_proc WHERE proname = 'grant_service_role'" 2>/dev/null | grep -q 1 && break
  kill -0 "$(cat "$RUN/controller.pid")" 2>/dev/null || { tail -20 "$RUN/controller.log"; exit 1; }
  sleep 0.5
done
PGOPTIONS="-c client_min_messages=warning" PGPASSWORD="$OWNER_PW" "$PG_BIN_DIR/psql" -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PRIMARY_PORT" \
  -U vault_owner -d "$PG_DATABASE" -c "SELECT vault.grant_service_role('vault_api')" >/dev/null

step "start the API on 127.0.0.1:$API_PORT"
ADMIN_TOKEN="hvt_$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')"
echo "$ADMIN_TOKEN" >"$RUN/admin-token"
chmod 600 "$RUN/admin-token"
# shellcheck disable=SC2086 # HV_API_ENV is a list of VAR=value words
write_launcher api "$BIN/hyperion-vault-api" "${common_env[@]}" VAULT_PG_USER=vault_api \
  VAULT_PG_PASSWORD="$API_PW" VAULT_API_LISTEN="127.0.0.1:$API_PORT" VAULT_ALLOWED_IPS="127.0.0.1,::1" \
  VAULT_BOOTSTRAP_TOKEN="$ADMIN_TOKEN" RUST_LOG=info ${HV_API_ENV:-}
: >"$RUN/api.log"
"$RUN/api.start"
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$API_PORT/readyz" >/dev/null && break
  kill -0 "$(cat "$RUN/api.pid")" 2>/dev/null || { tail -20 "$RUN/api.log"; exit 1; }
  sleep 0.5
done

step "apply an example VaultSecret and wait until it is sealed"
"$KUBECTL" -n default apply -f examples/automatic.yaml
"$KUBECTL" -n default wait vsec/payments-api-key --for=condition=Ready --timeout=60s
"$KUBECTL" -n default get vsec

cat <<TXT

hyperion-vault is running (logs: $RUN/*.log). In another shell:

  source $HV_TESTENV_DIR/env
  kubectl() { "\$KUBECTL" "\$@"; }
  kubectl get vsec -A
  curl -s http://127.0.0.1:$API_PORT/v1/secrets/default/payments-api-key
  VALUE=\$(curl -s http://127.0.0.1:$API_PORT/v1/secrets/default/payments-api-key | "\$HV_VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["value"])')
  curl -s -X POST -H 'content-type: application/json' -d "{\"value\": \"\$VALUE\"}" \\
    http://127.0.0.1:$API_PORT/v1/secrets/default/payments-api-key/verify
  kubectl annotate vsec payments-api-key vault.hyperiondb.io/rotate-now="\$(date +%s)" --overwrite
  curl -s -H "Authorization: Bearer \$(cat $RUN/admin-token)" http://127.0.0.1:$API_PORT/v1/secrets/default/payments-api-key/versions

Stop everything with: make stop
TXT
