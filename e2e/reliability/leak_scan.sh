#!/usr/bin/env bash
# Leak scan (issue 8): no plaintext secret value may be at rest anywhere but where the user put it.
#
# Against a running instance (HV_RUN_DIR, HV_API_PORT; scripts/run.sh starts one):
#   1. writes secrets with unique marker values through every path: API create (manual), API PUT,
#      API create automatic + API rotate (generated values, captured from the responses), a wrong
#      value presented to verify, a VaultSecret Automatic + rotate-now annotation, a VaultSecret
#      Manual fed from a Kubernetes Secret (valueFrom) whose key then changes, and an API PUT of a
#      manual value onto a VaultSecret-owned secret;
#   2. finds which PostgreSQL node is the primary (pg_is_in_recovery on PG_PRIMARY_PORT and
#      PG_STANDBY_PORT: after a failover the roles may have moved) and forces CHECKPOINT on it and,
#      once they have replayed everything, on the standbys (so heap pages, not only WAL, are on disk);
#      (plus, with HV_LEAK_MARKERS=<file of "label value scope" lines>, the values other suites used;
#      e2e/reliability/run.sh runs this suite last and passes that file);
#   3. scans, as raw bytes, every file under the run dir — every PostgreSQL data dir incl. pg_wal
#      (the live primary and standby, and any data dir `testenv pg-rejoin` moved aside),
#      the etcd data dir (bbolt + WAL), every process log (testenv logs/ and run/*.log) — plus all
#      Kubernetes events, every VaultSecret object, the audit trail (GET /v1/audit) and both
#      /metrics pages, for every marker in raw, hex and base64 (std + url alphabets, all 3 byte
#      alignments, so a marker embedded in a longer base64 string is found too).
#
# The Kubernetes Secret referenced by valueFrom legitimately holds its value in etcd (the user put it
# there; the API server stores Secrets unencrypted unless an EncryptionConfiguration is set), so those
# two markers (K8S_*) get their own values and are excluded from the etcd data dir only. Everywhere
# else — logs, events, VaultSecret status, PostgreSQL — they must not appear either.
#
# Positive controls prove the scan can fail: a marker inserted in plaintext into a PostgreSQL table
# (must be found in the primary's and the standby's data/WAL), one stored in a ConfigMap (must be found
# in etcd), and one written raw and one base64-embedded into a log file under run/ (must be found).
# Every PostgreSQL data dir found under the run dir must hold at least one control marker: the
# live ones hold this suite's row; a moved-aside one must hold a control row written before the
# failover (failover.py inserts one and lists it in HV_LEAK_MARKERS with scope `control`).
# Ends with `leak scan: N passed, M failed`; figures as `FIGURE <name> <value>` lines.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUN_DIR=${HV_RUN_DIR:-/tmp/hyperion-vault-run}
# shellcheck disable=SC1091
source "$RUN_DIR/env"
API="http://127.0.0.1:${HV_API_PORT:?HV_API_PORT}"
ADMIN="Authorization: Bearer $(cat "$RUN_DIR/run/admin-token")"
PY="$HV_VENV/bin/python"
K() { "$KUBECTL" "$@"; }
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
ko() { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else ko "$what"; fi; }
wait_for() { local i; for i in $(seq "$1"); do if eval "$2"; then return 0; fi; sleep 1; done; return 1; }
field() { "$PY" -c "import json,sys; print(json.load(sys.stdin)$1)"; }
WORK=$(mktemp -d /tmp/hv-leak-XXXXXX)
trap 'rm -rf "$WORK"; rm -f "$RUN_DIR/run/leak-positive-control.log"' EXIT
MARKERS="$WORK/markers"   # lines: <label> <value> <scope>   scope: all | not-etcd | control
: >"$MARKERS"
# values the other suites used (e2e/reliability/run.sh passes their list; kept outside the run dir)
if [ -n "${HV_LEAK_MARKERS:-}" ] && [ -s "$HV_LEAK_MARKERS" ]; then cat "$HV_LEAK_MARKERS" >>"$MARKERS"; fi
mark() { echo "$1 $2 ${3:-all}" >>"$MARKERS"; }
rnd() { echo "$1$(openssl rand -hex 16)"; }
tag=$(openssl rand -hex 3)
NS="leak-$tag"
acurl() { curl -s -H "$ADMIN" -H 'content-type: application/json' "$@"; }

# ---------------------------------------------------------------- 1. write through every path
v=$(rnd LKapicreate); mark api_create "$v"
code=$(acurl -o "$WORK/r" -w '%{http_code}' -X POST "$API/v1/secrets" -d "{\"name\":\"rel/leak-$tag/manual\",\"kind\":\"manual\",\"value\":\"$v\"}")
check "API create manual (201)" test "$code" = 201
v=$(rnd LKapiput); mark api_put "$v"
code=$(acurl -o "$WORK/r" -w '%{http_code}' -X PUT "$API/v1/secrets/rel/leak-$tag/manual" -d "{\"value\":\"$v\"}")
check "API PUT manual (200)" test "$code" = 200
code=$(curl -s -o "$WORK/r" -w '%{http_code}' -H 'content-type: application/json' -X POST \
  "$API/v1/secrets/rel/leak-$tag/manual/verify" -d "{\"value\":\"$v\"}")
check "verify the PUT value (valid)" test "$(field '["valid"]' <"$WORK/r")" = True
v=$(rnd LKverifywrong); mark verify_wrong "$v"
curl -s -o /dev/null -H 'content-type: application/json' -X POST "$API/v1/secrets/rel/leak-$tag/manual/verify" -d "{\"value\":\"$v\"}"
acurl -o "$WORK/r" -X POST "$API/v1/secrets" -d "{\"name\":\"rel/leak-$tag/auto\",\"kind\":\"automatic\",\"rotation_interval_secs\":86400,\"grace_period_secs\":3600}"
v=$(field '["value"]' <"$WORK/r"); mark api_auto_v1 "$v"
check "API create automatic returns a generated value" test -n "$v"
for i in 1 2; do
  acurl -o "$WORK/r" -X POST "$API/v1/secrets/rel/leak-$tag/auto/rotate"
  v=$(field '["value"]' <"$WORK/r"); mark "api_auto_rotated_$i" "$v"
  check "API rotate $i returns a new value" test -n "$v"
done

K create namespace "$NS" >/dev/null
cat <<YAML | K -n "$NS" apply -f - >/dev/null
apiVersion: vault.hyperiondb.io/v1alpha1
kind: VaultSecret
metadata: {name: auto}
spec: {kind: Automatic, rotationInterval: 24h, gracePeriod: 1h}
YAML
check "VaultSecret Automatic Ready" K -n "$NS" wait vsec/auto --for=condition=Ready --timeout=60s
v=$(curl -s "$API/v1/secrets/$NS/auto" | field '["value"]'); mark vs_auto_v1 "$v"
K -n "$NS" annotate vsec auto vault.hyperiondb.io/rotate-now=leak-1 --overwrite >/dev/null
check "VaultSecret rotate-now gives version 2" wait_for 30 \
  '[ "$(K -n "$NS" get vsec auto -o jsonpath={.status.currentVersion})" = 2 ]'
v=$(curl -s "$API/v1/secrets/$NS/auto" | field '["value"]'); mark vs_auto_v2 "$v"

k8s1=$(rnd LKk8sref); mark k8s_secret_v1 "$k8s1" not-etcd
K -n "$NS" create secret generic src --from-literal=password="$k8s1" >/dev/null
cat <<YAML | K -n "$NS" apply -f - >/dev/null
apiVersion: vault.hyperiondb.io/v1alpha1
kind: VaultSecret
metadata: {name: fromref}
spec:
  kind: Manual
  gracePeriod: 10m
  valueFrom: {secretKeyRef: {name: src, key: password}}
YAML
check "VaultSecret Manual valueFrom Ready" K -n "$NS" wait vsec/fromref --for=condition=Ready --timeout=60s
check "valueFrom value served by the API" test "$(curl -s "$API/v1/secrets/$NS/fromref" | field '["value"]')" = "$k8s1"
k8s2=$(rnd LKk8sref2); mark k8s_secret_v2 "$k8s2" not-etcd
K -n "$NS" create secret generic src --from-literal=password="$k8s2" --dry-run=client -o yaml | K -n "$NS" replace -f - >/dev/null
check "changing the referenced Secret gives a new version" wait_for 30 \
  '[ "$(curl -s "$API/v1/secrets/$NS/fromref" | field "[\"value\"]")" = "$k8s2" ]'

cat <<YAML | K -n "$NS" apply -f - >/dev/null
apiVersion: vault.hyperiondb.io/v1alpha1
kind: VaultSecret
metadata: {name: manual}
spec: {kind: Manual}
YAML
v=$(rnd LKvsput); mark vs_manual_put "$v"
sleep 2
code=$(acurl -o "$WORK/r" -w '%{http_code}' -X PUT "$API/v1/secrets/$NS/manual" -d "{\"value\":\"$v\"}")
check "API PUT onto a VaultSecret-owned Manual secret (200)" test "$code" = 200
check "that VaultSecret becomes Ready" K -n "$NS" wait vsec/manual --for=condition=Ready --timeout=60s
sleep 3 # let the controller write its status/events for the last changes

# ---------------------------------------------------------------- positive controls
PGCTL=$(rnd LKcontrolpg); mark control_pg "$PGCTL" control
CMCTL=$(rnd LKcontroletcd); mark control_etcd "$CMCTL" control
LOGCTL=$(rnd LKcontrollog); mark control_log "$LOGCTL" control
B64CTL=$(rnd LKcontrolb64); mark control_b64 "$B64CTL" control
psql_super() { PGPASSWORD="$PG_SUPERPASSWORD" PGCONNECT_TIMEOUT=3 PGOPTIONS="-c client_min_messages=warning" "$PG_BIN_DIR/psql" -qtA -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$1" -U "$PG_SUPERUSER" -d postgres -c "$2"; }
# Which node is the primary now (a failover may have swapped the roles): ask each node.
PRIMARY="" STANDBYS=""
for port in "$PG_PRIMARY_PORT" "$PG_STANDBY_PORT"; do
  case $(psql_super "$port" "SELECT pg_is_in_recovery()" 2>/dev/null || true) in
    f) PRIMARY="$PRIMARY $port" ;;
    t) STANDBYS="$STANDBYS $port" ;;
  esac
done
read -r -a PRIMARY <<<"$PRIMARY"; read -r -a STANDBYS <<<"$STANDBYS"
check "exactly one PostgreSQL primary (pg_is_in_recovery): ${PRIMARY[*]:-none}; standbys: ${STANDBYS[*]:-none}" \
  test "${#PRIMARY[@]}" = 1 -a "${#STANDBYS[@]}" -ge 1
PRIMARY=${PRIMARY[0]:-$PG_PRIMARY_PORT}
psql_super "$PRIMARY" "CREATE TABLE IF NOT EXISTS leak_control(v text); INSERT INTO leak_control VALUES ('$PGCTL')" >/dev/null
K -n "$NS" create configmap leak-control --from-literal=v="$CMCTL" >/dev/null
{ echo "positive control: $LOGCTL"; printf 'x%s' "$B64CTL" | base64 -w0; echo; } >"$RUN_DIR/run/leak-positive-control.log"

# ---------------------------------------------------------------- 2. checkpoint
sleep 1
psql_super "$PRIMARY" "CHECKPOINT" >/dev/null
for _ in $(seq 30); do   # every standby has replayed everything the primary wrote
  lag=$(psql_super "$PRIMARY" "SELECT coalesce(max(coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 1)), 1) FROM pg_stat_replication")
  [ "${lag:-1}" = 0 ] && break; sleep 0.5
done
ckpt=0
for port in "${STANDBYS[@]}"; do psql_super "$port" "CHECKPOINT" >/dev/null && ckpt=$((ckpt + 1)); done
check "CHECKPOINT on the primary ($PRIMARY) and ${#STANDBYS[@]} standby(s) (replay lag ${lag:-?} bytes)" \
  test "$ckpt" = "${#STANDBYS[@]}" -a "${lag:-1}" = 0
# Every PostgreSQL data dir under the run dir, named by role: the live nodes by what they answer
# (SHOW data_directory), anything else (moved aside by pg-rejoin, or stopped) is pg_retired.
PGDIRS="$WORK/pgdirs"   # lines: <area> <path>
: >"$PGDIRS"
for port in "$PRIMARY" "${STANDBYS[@]}"; do
  d=$(psql_super "$port" "SHOW data_directory" 2>/dev/null || true)
  [ -n "$d" ] || continue
  if [ "$port" = "$PRIMARY" ]; then echo "pg_primary $(realpath "$d")"; else echo "pg_standby $(realpath "$d")"; fi
done >>"$PGDIRS"
find "$RUN_DIR" -name PG_VERSION -path '*/PG_VERSION' -printf '%h\n' 2>/dev/null | sort -u | while read -r d; do
  [ -f "$d/global/pg_control" ] || continue   # base/<db>/PG_VERSION is not a data dir
  d=$(realpath "$d")
  grep -q " $d\$" "$PGDIRS" || echo "pg_retired $d"
done >>"$PGDIRS"
sed 's/^/  data dir: /' "$PGDIRS"

# ---------------------------------------------------------------- 3. API-visible surfaces, then scan
rm -f "$WORK/r"
K get events -A -o json >"$WORK/events.json"
K get vaultsecrets -A -o json >"$WORK/vaultsecrets.json"
acurl "$API/v1/audit?limit=1000" >"$WORK/audit.json" || true
curl -s "$API/metrics" >"$WORK/api-metrics.txt" || true
curl -s "http://127.0.0.1:${HV_METRICS_PORT:-8080}/metrics" >"$WORK/controller-metrics.txt" || true
echo "events: $("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$WORK/events.json"), vaultsecrets: $("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$WORK/vaultsecrets.json")"

"$PY" - "$MARKERS" "$RUN_DIR" "$ETCD_DATA_DIR" "$PGDIRS" "$WORK" <<'PY' >"$WORK/scan.out"
import base64, os, subprocess, sys
markers_file, run_dir, etcd, pgdirs_file, work = sys.argv[1:]
markers = [l.split() for l in open(markers_file) if l.strip()]
pgdirs = [tuple(l.split(None, 1)) for l in open(pgdirs_file).read().splitlines() if l.strip()]
# one spelling for every path compared below (the data dirs in pgdirs_file are realpaths)
markers_file, run_dir, etcd, work = (os.path.realpath(p) for p in (markers_file, run_dir, etcd, work))

def forms(m):
    b = m.encode()
    out = {"raw": b, "hex": b.hex().encode()}
    for k in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            e = enc(b"\0" * k + b)
            out[f"{name}{k}"] = e[-(-4 * k // 3):(4 * (k + len(b))) // 3]
    return out

pats = {}
for label, value, scope in markers:
    for fname, p in forms(value).items():
        pats.setdefault(p, (label, fname, scope))
patfile = os.path.join(work, "patterns")
with open(patfile, "wb") as f:
    for p in pats:
        f.write(p + b"\n")

def area(path):
    for name, root in [("etcd", etcd)] + pgdirs:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return name
    if path.startswith(work):
        return "k8s_objects_audit_metrics"
    if path.endswith(".log"):
        return "logs"
    return "other_run_dir"

files = {}
for root in (run_dir, work):
    for dp, dn, fn in os.walk(root):
        for n in fn:
            p = os.path.join(dp, n)
            if p in (markers_file, patfile) or os.path.islink(p) or not os.path.isfile(p):
                continue
            try:
                files[p] = os.path.getsize(p)
            except OSError:
                pass
totals = {}
for p, s in files.items():
    a = area(p)
    n, b = totals.get(a, (0, 0))
    totals[a] = (n + 1, b + s)
for a, (n, b) in sorted(totals.items()):
    print(f"AREA {a} {n} {b}")
listing = os.path.join(work, "files")
with open(listing, "wb") as f:
    f.write(b"\0".join(p.encode() for p in files) + b"\0")
res = subprocess.run(f"xargs -0 grep -FoaH -f {patfile} -- < {listing}", shell=True, capture_output=True,
                     env={**os.environ, "LC_ALL": "C"})
seen = set()
for line in res.stdout.split(b"\n"):
    if not line:
        continue
    # the path never contains ':' here; the match is everything after the first ':'
    path, _, match = line.partition(b":")
    if match not in pats:
        continue
    label, fname, scope = pats[match]
    a = area(path.decode())
    key = (label, fname, a, path)
    if key in seen:
        continue
    seen.add(key)
    kind = "CONTROL" if scope == "control" else ("EXCLUDED" if scope == "not-etcd" and a == "etcd" else "HIT")
    print(f"{kind} {label} {fname} {a} {path.decode()}")
PY
cat "$WORK/scan.out" | sed 's/^/  /'
nfiles=$(awk '$1=="AREA"{n+=$3} END{print n+0}' "$WORK/scan.out")
nbytes=$(awk '$1=="AREA"{n+=$4} END{printf "%d", n+0}' "$WORK/scan.out")
hits=$(grep -c '^HIT ' "$WORK/scan.out" || true)
excluded=$(grep -c '^EXCLUDED ' "$WORK/scan.out" || true)
nmarkers=$(grep -vc ' control$' "$MARKERS")
awk '$1=="AREA"{printf "FIGURE files_scanned_%s %d\nFIGURE bytes_scanned_%s %d\n", $2, $3, $2, $4}' "$WORK/scan.out"
echo "FIGURE markers $nmarkers"
echo "FIGURE files_scanned $nfiles"
echo "FIGURE bytes_scanned $nbytes"
echo "FIGURE hits $hits"
echo "FIGURE excluded_k8s_secret_in_etcd $excluded"
check "positive control: plaintext row found in the primary's data dir" grep -q '^CONTROL control_pg raw pg_primary' "$WORK/scan.out"
check "positive control: plaintext row found in the standby's data dir" grep -q '^CONTROL control_pg raw pg_standby' "$WORK/scan.out"
npg=0 npg_ctl=0 nretired=0
while read -r a d; do
  npg=$((npg + 1)); [ "$a" = pg_retired ] && nretired=$((nretired + 1))
  if grep -q "^CONTROL [^ ]* raw $a $d/" "$WORK/scan.out"; then npg_ctl=$((npg_ctl + 1)); else echo "  no control marker found in $a $d"; fi
done <"$PGDIRS"
echo "FIGURE pg_data_dirs $npg"
echo "FIGURE pg_data_dirs_retired $nretired"
check "positive control: a plaintext control row found in each of the $npg PostgreSQL data dirs ($nretired moved aside)" \
  test "$npg_ctl" = "$npg" -a "$npg" -ge 2
check "positive control: ConfigMap value found in etcd" grep -q '^CONTROL control_etcd raw etcd' "$WORK/scan.out"
check "positive control: raw marker found in a log" grep -q '^CONTROL control_log raw logs' "$WORK/scan.out"
check "positive control: base64-embedded marker (alignment 1) found in a log" grep -q '^CONTROL control_b64 b64. logs' "$WORK/scan.out"
check "the referenced Kubernetes Secret's value is in etcd (why it is excluded there)" test "$excluded" -gt 0
check "scanned something substantial (> 50 MB)" test "$nbytes" -gt 50000000
check "hits: 0 for $nmarkers markers in $nfiles files / $nbytes bytes" test "$hits" = 0
psql_super "$PRIMARY" "DROP TABLE leak_control" >/dev/null || true
K delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
echo "leak scan: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
