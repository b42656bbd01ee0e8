#!/usr/bin/env bash
# On-demand load benchmark: API GET and verify (wrk) next to a pgbench point-select of the same
# query the store runs for a read, at the same concurrency, in the same run.
#
#   e2e/testenv/testenv up && api/tools/bench.sh [seconds-per-run]
#
# Needs `wrk` (Debian package) and `pgbench` (postgresql-client). Builds the release binary.
# Everything shares this machine's cores: the figures compare the API with PostgreSQL under the
# same constraints, they are not absolute capacity numbers.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE=${HV_TESTENV_DIR:-/tmp/hyperion-vault-testenv}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hyperion-vault
PORT=${PORT:-18291}
DUR=${1:-10}
CONNS=${CONNS:-"8 64"}
POOL=${VAULT_PG_POOL_SIZE:-16}
command -v wrk > /dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
[ -f "$STATE/env" ] || { echo "no testenv at $STATE: run e2e/testenv/testenv up" >&2; exit 1; }
# shellcheck disable=SC1091
source "$STATE/env"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
cargo build -q --release -p hyperion-vault-api --manifest-path "$ROOT/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/hyperion-vault-api

WORK=$(mktemp -d)
TOKEN=$(python3 -c 'import secrets; print("bench-" + secrets.token_hex(24))')
env VAULT_DATABASE_URL="$TESTENV_PG_DSN_RW" VAULT_KMS_MODE=aws VAULT_API_MIGRATE=true \
  VAULT_ALLOWED_IPS=127.0.0.1 VAULT_API_LISTEN=127.0.0.1:$PORT VAULT_PG_POOL_SIZE=$POOL RUST_LOG=warn \
  VAULT_BOOTSTRAP_TOKEN="$TOKEN" \
  setsid "$BIN" > "$WORK/server.log" 2>&1 < /dev/null &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null && break; sleep 0.2; done
# The bootstrap token creates the admin role on a fresh database (a database that already has a
# bootstrap-admin token keeps it); then mint this run's own admin token.
ADMIN=$(env VAULT_DATABASE_URL="$TESTENV_PG_DSN_RW" VAULT_KMS_MODE=aws RUST_LOG=error \
  "$BIN" mint-token --name "bench-$(date +%s%N)" --role admin --expires-in-secs 3600 2> /dev/null) \
  || { echo "could not mint an admin token (see $WORK/server.log)" >&2; exit 1; }
NAME="bench/$(date +%s%N)"
VALUE=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
curl -sf -X POST "http://127.0.0.1:$PORT/v1/secrets" -H "Authorization: Bearer $ADMIN" \
  -H 'Content-Type: application/json' -d "{\"name\":\"$NAME\",\"kind\":\"manual\",\"value\":\"$VALUE\"}" > /dev/null
curl -sf "http://127.0.0.1:$PORT/v1/secrets/$NAME" > /dev/null

cat > "$WORK/verify.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"value":"$VALUE"}'
wrk.headers["Content-Type"] = "application/json"
LUA
# The store's read-current query (store/src/secrets.rs), as the superuser (no RLS) and prepared.
cat > "$WORK/select.sql" <<SQL
SELECT s.name, s.kind, s.next_rotation_at, v.version, v.created_at, v.expires_at, v.kms_key_id, v.wrapped_dek, v.nonce, v.ciphertext FROM vault.secrets s JOIN vault.secret_versions v ON v.secret_id = s.id AND v.version = s.current_version WHERE s.name = '$NAME' AND s.deleted_at IS NULL;
SQL

wrk_run() { # conns url [lua] -> "rps p50ms p99ms"
  local c=$1 url=$2 lua=${3:-}
  local out
  out=$(wrk -t2 -c"$c" -d"${DUR}s" --latency ${lua:+-s "$lua"} "$url")
  echo "$out" > "$WORK/wrk-$c-$(basename "$url").txt"
  echo "$out" | python3 -c '
import re, sys
t = sys.stdin.read()
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p = {k: ms(v, u) for k, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
bad = non2xx.group(1) if non2xx else 0
print("%.0f %.2f %.2f %s" % (rps, p["50"], p["99"], bad))'
}

pg_run() { # conns -> "tps p50ms p99ms"
  local c=$1
  (cd "$WORK" && rm -f pgbench_log.* && "$PGBENCH" -n -M prepared -c "$c" -j 2 -T "$DUR" -f select.sql \
    --log --log-prefix=pgbench_log "$TESTENV_PG_DSN_RW" > "pgbench-$c.txt" 2>&1)
  python3 - "$WORK" "$c" <<'PY'
import glob, re, sys
work, c = sys.argv[1], sys.argv[2]
lat = sorted(int(l.split()[2]) for f in glob.glob(work + "/pgbench_log.*") for l in open(f))
tps = float(re.search(r"tps = ([\d.]+)", open(f"{work}/pgbench-{c}.txt").read()).group(1))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000.0
print(f"{tps:.0f} {q(0.50):.2f} {q(0.99):.2f}")
PY
}

printf '%-6s %-30s %10s %9s %9s %8s\n' conns what req/s p50_ms p99_ms non2xx
for c in $CONNS; do
  read -r grps gp50 gp99 gbad <<< "$(wrk_run "$c" "http://127.0.0.1:$PORT/v1/secrets/$NAME")"
  read -r vrps vp50 vp99 vbad <<< "$(wrk_run "$c" "http://127.0.0.1:$PORT/v1/secrets/$NAME/verify" "$WORK/verify.lua")"
  read -r ptps pp50 pp99 <<< "$(pg_run "$c")"
  printf '%-6s %-30s %10s %9s %9s %8s\n' "$c" "API GET /v1/secrets/{name}" "$grps" "$gp50" "$gp99" "$gbad"
  printf '%-6s %-30s %10s %9s %9s %8s\n' "$c" "API POST .../verify" "$vrps" "$vp50" "$vp99" "$vbad"
  printf '%-6s %-30s %10s %9s %9s %8s\n' "$c" "pgbench same SELECT" "$ptps" "$pp50" "$pp99" "-"
  python3 -c "print('%6s GET/pgbench = %.2f   verify/GET = %.2f' % ('', $grps / $ptps, $vrps / $grps))"
done
echo "API pool size: $POOL; DEK cache on; audit queue on (fail-closed); debug logs off. Raw output: $WORK"
