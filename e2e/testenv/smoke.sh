#!/usr/bin/env bash
# Smoke suite for e2e/testenv: proves every part for real. Brings the environment up
# first if needed (`testenv up` is idempotent). Last line: "N passed, M failed".
# The PostgreSQL failover check is destructive and runs last; it ends with
# `testenv pg-reset`, so a fresh primary+standby pair is left for later tests.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TESTENV=$HERE/testenv

if ! "$TESTENV" up >/dev/null; then
  echo "FAIL - testenv up"
  echo "0 passed, 1 failed"
  exit 1
fi
# shellcheck disable=SC1090
source "$("$TESTENV" env)"

PASS=0 FAIL=0
WORK=$(mktemp -d)
RUN_ID=$(date +%s)-$$
NS=smoke-$RUN_ID

# Tests run in subshells; these flag files tell the EXIT trap what to restore.
cleanup() {
  [[ -e $WORK/kms-stopped ]] && { "$TESTENV" kms-start >/dev/null 2>&1 || true; }
  [[ -e $WORK/pg-destroyed ]] && { "$TESTENV" pg-reset >/dev/null 2>&1 || true; }
  "$KUBECTL" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); printf 'ok   - %s\n' "$1"; }
# shellcheck disable=SC2001
bad() { FAIL=$((FAIL + 1)); printf 'FAIL - %s\n' "$1"; [[ -n ${2:-} ]] && sed 's/^/       /' <<<"$2"; return 0; }

# check NAME CMD...: runs CMD in a subshell with errexit really on (not in an `if`,
# where bash would ignore set -e); passes on exit 0.
check() {
  local name=$1 rc; shift
  set +e
  ( set -e; "$@" ) >"$WORK/out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then ok "$name"; else bad "$name" "$(tail -20 "$WORK/out")"; fi
}
# poll TIMEOUT_S CMD...: retry CMD every 0.2s until it succeeds.
poll() {
  local t0 timeout=$1; shift
  t0=$(date +%s)
  until "$@"; do (( $(date +%s) - t0 >= timeout )) && return 1; sleep 0.2; done
}

k() { "$KUBECTL" "$@"; }
psql_at() { # PORT SQL
  PGPASSWORD=$PG_SUPERPASSWORD PGCONNECT_TIMEOUT=3 "$PG_BIN_DIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$1" -U "$PG_SUPERUSER" -d "$PG_DATABASE" -c "$2"
}
psql_multi() { # TARGET_SESSION_ATTRS SQL
  PGPASSWORD=$PG_SUPERPASSWORD "$PG_BIN_DIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
    "host=127.0.0.1,127.0.0.1 port=$PG_PRIMARY_PORT,$PG_STANDBY_PORT user=$PG_SUPERUSER dbname=$PG_DATABASE connect_timeout=3 target_session_attrs=$1" \
    -c "$2"
}

echo "# testenv smoke ($HV_TESTENV_DIR)"

# ------------------------------------------------------------ Kubernetes ---

t_version() {
  local v
  v=$(k version -o json) || return 1
  grep -q '"gitVersion": "v1.34.4"' <<<"$v" || { echo "$v"; return 1; }
}
check "kube-apiserver and kubectl report v1.34.4" t_version

t_crd() {
  k create namespace "$NS" >/dev/null
  cat >"$WORK/crd.yaml" <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.hyperion.test
spec:
  group: smoke.hyperion.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [color]
            properties:
              color: {type: string}
              size: {type: integer, minimum: 1}
    subresources: {status: {}}
EOF
  k apply -f "$WORK/crd.yaml" >/dev/null
  k wait --for=condition=Established --timeout=30s crd/widgets.smoke.hyperion.test >/dev/null
  cat >"$WORK/widget.yaml" <<EOF
apiVersion: smoke.hyperion.test/v1
kind: Widget
metadata: {name: w1, namespace: $NS}
spec: {color: "teal-$RUN_ID", size: 3}
EOF
  # Discovery of a fresh CRD can lag a moment behind Established.
  poll 30 k apply -f "$WORK/widget.yaml" >/dev/null 2>&1 || k apply -f "$WORK/widget.yaml"
  local got
  got=$(k get widget w1 -n "$NS" -o jsonpath='{.spec.color}')
  [[ $got == "teal-$RUN_ID" ]] || { echo "read back spec.color=$got"; return 1; }
}
check "CRD apply + custom object read back" t_crd

t_crd_validation() {
  local out
  if out=$(k apply -f - 2>&1 <<EOF
apiVersion: smoke.hyperion.test/v1
kind: Widget
metadata: {name: w2, namespace: $NS}
spec: {color: red, size: 0}
EOF
  ); then echo "invalid object was accepted"; return 1; fi
  grep -q 'spec.size' <<<"$out" || { echo "$out"; return 1; }
}
check "CRD schema validation rejects an invalid object" t_crd_validation

t_rbac() {
  local token out
  k create serviceaccount reader -n "$NS" >/dev/null
  token=$(k create token reader -n "$NS" --duration=10m)
  sa_kubectl() {
    "$KUBECTL" --kubeconfig=/dev/null --server="$KUBE_APISERVER_URL" --certificate-authority="$KUBE_CA_FILE" \
      --token="$token" "$@"
  }
  out=$(sa_kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
  [[ $out == "system:serviceaccount:$NS:reader" ]] || { echo "whoami: $out"; return 1; }
  if out=$(sa_kubectl get configmaps -n "$NS" 2>&1); then echo "list allowed before any grant"; return 1; fi
  grep -q 'Forbidden' <<<"$out" || { echo "expected Forbidden, got: $out"; return 1; }
  k create role cm-reader -n "$NS" --verb=get,list,watch --resource=configmaps >/dev/null
  k create rolebinding cm-reader -n "$NS" --role=cm-reader --serviceaccount="$NS:reader" >/dev/null
  poll 15 sa_kubectl get configmaps -n "$NS" >/dev/null 2>&1 || { sa_kubectl get configmaps -n "$NS"; return 1; }
  # still denied outside the grant
  if sa_kubectl get secrets -n "$NS" >/dev/null 2>&1; then echo "secrets allowed without a grant"; return 1; fi
}
check "RBAC: SA token Forbidden, then allowed after Role+RoleBinding" t_rbac

t_helm() {
  mkdir -p "$WORK/chart/templates"
  printf 'apiVersion: v2\nname: smoke\nversion: 0.1.0\n' >"$WORK/chart/Chart.yaml"
  printf 'greeting: hello\n' >"$WORK/chart/values.yaml"
  cat >"$WORK/chart/templates/cm.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-cm}
data: {greeting: {{ .Values.greeting | quote }}}
EOF
  "$HELM" version --short | grep -q '^v3.19.5' || { "$HELM" version; return 1; }
  "$HELM" install smoke "$WORK/chart" -n "$NS" --set greeting="hi-$RUN_ID" --wait --timeout 60s >/dev/null
  [[ $(k get configmap smoke-cm -n "$NS" -o jsonpath='{.data.greeting}') == "hi-$RUN_ID" ]]
  "$HELM" uninstall smoke -n "$NS" >/dev/null
}
check "helm install of a chart into the apiserver" t_helm

t_apiserver_restart() {
  "$TESTENV" apiserver-restart >/dev/null 2>&1
  [[ $(k get widget w1 -n "$NS" -o jsonpath='{.spec.color}') == "teal-$RUN_ID" ]]
}
check "apiserver-restart keeps etcd state" t_apiserver_restart

# ------------------------------------------------------------------- KMS ---

t_kms() {
  "$HV_VENV/bin/python" - <<'EOF'
import os, boto3, botocore
# Same configuration the product gets: env credentials/region, AWS_ENDPOINT_URL_KMS.
kms = boto3.client("kms")
assert kms.meta.endpoint_url == os.environ["VAULT_KMS_ENDPOINT"], kms.meta.endpoint_url
key = os.environ["VAULT_KMS_KEY_ID"]
ctx = {"vault": "hyperion", "secret": "ns/name"}
dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=ctx)
assert len(dk["Plaintext"]) == 32
pt = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ctx)["Plaintext"]
assert pt == dk["Plaintext"], "decrypted data key differs"
for wrong in ({"vault": "hyperion", "secret": "other"}, None):
    try:
        kw = {"EncryptionContext": wrong} if wrong else {}
        kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], **kw)
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidCiphertextException", e
    else:
        raise AssertionError(f"decrypt with context {wrong} succeeded")
alias = kms.generate_data_key(KeyId=os.environ["VAULT_KMS_KEY_ALIAS"], KeySpec="AES_256")
assert alias["KeyId"].endswith(key), alias["KeyId"]
EOF
}
check "KMS GenerateDataKey(AES_256, context) + Decrypt; wrong/missing context rejected" t_kms

t_kms_outage() {
  touch "$WORK/kms-stopped"; "$TESTENV" kms-stop >/dev/null 2>&1
  if curl -sS --max-time 2 -o /dev/null "$VAULT_KMS_ENDPOINT/moto-api/" 2>/dev/null; then
    echo "endpoint still answers after kms-stop"; return 1
  fi
  "$TESTENV" kms-start >/dev/null 2>&1; rm -f "$WORK/kms-stopped"
  "$HV_VENV/bin/python" -c '
import os, boto3
boto3.client("kms").describe_key(KeyId=os.environ["VAULT_KMS_KEY_ID"])'
}
check "kms-stop refuses connections; kms-start restores it with the key intact" t_kms_outage

# ------------------------------------------------------------ PostgreSQL ---

t_pg_auth() {
  local out
  if out=$(PGPASSWORD=wrong "$PG_BIN_DIR/psql" -X -h 127.0.0.1 -p "$PG_PRIMARY_PORT" -U "$PG_SUPERUSER" \
      -d "$PG_DATABASE" -c 'select 1' 2>&1); then echo "wrong password accepted"; return 1; fi
  grep -q 'password authentication failed' <<<"$out" || { echo "$out"; return 1; }
}
check "PostgreSQL requires the password over TCP (scram-sha-256)" t_pg_auth

t_pg_tls() {
  local port out
  for port in "$PG_PRIMARY_PORT" "$PG_STANDBY_PORT"; do
    out=$(PGSSLMODE=verify-full PGSSLROOTCERT=$PG_TLS_CA_FILE psql_at "$port" \
      'select ssl, version from pg_stat_ssl where pid = pg_backend_pid()')
    [[ $out == "t|TLSv1.3" ]] || { echo "port $port: verify-full session is $out"; return 1; }
    if PGSSLMODE=verify-full PGSSLROOTCERT=$PG_TLS_OTHER_CA_FILE psql_at "$port" 'select 1' >/dev/null 2>&1; then
      echo "port $port: verify-full accepted a CA that did not sign the server"; return 1
    fi
  done
  [[ $(psql_at "$PG_PRIMARY_PORT" 'select ssl from pg_stat_ssl where pid = pg_backend_pid()') == f ]] \
    || { echo "PGSSLMODE=disable from the env file did not keep psql on plain TCP"; return 1; }
}
check "PostgreSQL offers TLS on both nodes (verify-full with the testenv CA; refused with another)" t_pg_tls

t_pg_replication() {
  [[ $(psql_at "$PG_PRIMARY_PORT" 'select pg_is_in_recovery()') == f ]] || { echo "primary in recovery"; return 1; }
  [[ $(psql_at "$PG_STANDBY_PORT" 'select pg_is_in_recovery()') == t ]] || { echo "standby not in recovery"; return 1; }
  psql_at "$PG_PRIMARY_PORT" "create table if not exists smoke (id text primary key, at timestamptz default now())"
  psql_at "$PG_PRIMARY_PORT" "insert into smoke (id) values ('row-$RUN_ID')"
  # shellcheck disable=SC2329 # called through poll
  replicated() { [[ $(psql_at "$PG_STANDBY_PORT" "select count(*) from smoke where id = 'row-$RUN_ID'" 2>/dev/null) == 1 ]]; }
  poll 15 replicated || { echo "row not on the standby after 15s"; return 1; }
  # the standby refuses writes
  if psql_at "$PG_STANDBY_PORT" "insert into smoke (id) values ('x-$RUN_ID')" >/dev/null 2>&1; then
    echo "standby accepted a write"; return 1
  fi
}
check "row written on the primary is read on the standby" t_pg_replication

t_pg_routing() {
  [[ $(psql_multi read-write 'select inet_server_port()') == "$PG_PRIMARY_PORT" ]] || return 1
  [[ $(psql_multi read-only 'select inet_server_port()') == "$PG_STANDBY_PORT" ]] || return 1
}
check "multi-host routing: read-write -> primary, read-only -> standby" t_pg_routing

t_pg_failover() {
  touch "$WORK/pg-destroyed"
  "$TESTENV" pg-stop primary >/dev/null 2>&1
  if psql_multi read-write 'select 1' >/dev/null 2>&1; then echo "read-write connected with no primary"; return 1; fi
  "$TESTENV" pg-promote >/dev/null 2>&1
  local port
  port=$(psql_multi read-write "insert into smoke (id) values ('after-failover-$RUN_ID'); select inet_server_port()")
  [[ $port == "$PG_STANDBY_PORT" ]] || { echo "read-write landed on port '$port'"; return 1; }
  [[ $(psql_at "$PG_STANDBY_PORT" "select count(*) from smoke where id in ('row-$RUN_ID','after-failover-$RUN_ID')") == 2 ]]
}
check "failover: stop primary, promote standby, multi-host read-write writes to it" t_pg_failover

t_pg_reset() {
  "$TESTENV" pg-reset >/dev/null 2>&1
  rm -f "$WORK/pg-destroyed"
  [[ $(psql_multi read-write 'select inet_server_port()') == "$PG_PRIMARY_PORT" ]] || return 1
  [[ $(psql_at "$PG_STANDBY_PORT" 'select pg_is_in_recovery()') == t ]] || return 1
  "$TESTENV" status >/dev/null
}
check "pg-reset restores a fresh streaming primary+standby pair" t_pg_reset

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
