#!/usr/bin/env bash
# Schemathesis against a running instance (issue 8, "Hostile input"; DESIGN.md §7).
#
#   e2e/reliability/schemathesis.sh        (reads HV_RUN_DIR, HV_API_PORT; scripts/run.sh starts one)
#
# Fuzzes the OpenAPI document the instance serves (GET /v1/openapi.json) with every schemathesis
# check, in all four phases — examples, coverage, fuzzing and stateful, where schemathesis chains
# real calls through the document's links (create a secret → read/verify/update/rotate/versions/
# delete it; create a role → get/replace/delete it, mint a token for it → revoke that) — for
# HV_SCHEMATHESIS_MAX_TIME seconds (default 150; schemathesis splits the budget between phases).
# Settings and the one relaxed check, with reasons: schemathesis.toml. Hooks that keep the run from
# locking 127.0.0.1 out or revoking the admin token the other suites use: schemathesis_hooks.py.
#
# Figures (`FIGURE <name> <value>`): requests sent, 5xx answers (must be 0), check failures (must be
# 0), stateful steps and link transitions followed. Ends with `schemathesis: N passed, M failed`.
# The full schemathesis output is kept in $HV_SCHEMATHESIS_OUT (default: a temp dir, printed); its
# reports hold generated secret values, so they are written outside the run dir and deleted unless
# HV_SCHEMATHESIS_KEEP=1.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUN_DIR=${HV_RUN_DIR:-/tmp/hyperion-vault-run}
PORT=${HV_API_PORT:?HV_API_PORT: the port of the API started by scripts/run.sh}
API="http://127.0.0.1:$PORT"
MAX_TIME=${HV_SCHEMATHESIS_MAX_TIME:-150}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/hyperion-vault
VENV=${HV_SCHEMATHESIS_VENV:-$CACHE/schemathesis-venv}
SCHEMATHESIS_VERSION=4.32.5
# Pinned too: the hooks work around this version's optimiser crash (schemathesis_hooks.py).
HYPOTHESIS_VERSION=6.170.15
ADMIN=$(cat "$RUN_DIR/run/admin-token")
OUT=${HV_SCHEMATHESIS_OUT:-$(mktemp -d /tmp/hv-schemathesis-XXXXXX)}
mkdir -p "$OUT"
[ -n "${HV_SCHEMATHESIS_KEEP:-}" ] || trap 'rm -rf "$OUT/report"' EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
ko() { fail=$((fail + 1)); echo "FAIL - $*"; }

if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ] \
  || [ "$("$VENV/bin/python" -c 'import hypothesis; print(hypothesis.__version__)' 2>/dev/null)" != "$HYPOTHESIS_VERSION" ]; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION (hypothesis $HYPOTHESIS_VERSION) into $VENV"
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==$HYPOTHESIS_VERSION"
fi

code=$(curl -s -o /dev/null -w '%{http_code}' "$API/readyz")
if [ "$code" != 200 ]; then
  ko "the API at $API is ready (GET /readyz -> $code)"
  echo "schemathesis: $pass passed, $fail failed"
  exit 1
fi
panics_before=$(grep -c panicked "$RUN_DIR/run/api.log" 2>/dev/null)

# Run from the output dir: schemathesis writes nothing else, but keep the caller's cwd clean anyway.
start=$(date +%s)
(cd "$OUT" && PYTHONDONTWRITEBYTECODE=1 HV_RUN_DIR="$RUN_DIR" SCHEMATHESIS_HOOKS="$HERE/schemathesis_hooks.py" \
  "$VENV/bin/schemathesis" --config-file "$HERE/schemathesis.toml" --no-color run "$API/v1/openapi.json" \
  -H "Authorization: Bearer $ADMIN" --checks all --phases examples,coverage,fuzzing,stateful \
  --max-time "$MAX_TIME" --workers 2 --report ndjson,json --report-dir "$OUT/report" \
  >"$OUT/schemathesis.out" 2>&1)
rc=$?
wall=$(($(date +%s) - start))
echo "schemathesis exit $rc after ${wall} s; full output: $OUT/schemathesis.out"
grep -E '^ *(API Links|Scenarios|Operations|Test cases):|^ *[0-9]+ generated' "$OUT/schemathesis.out" | sed 's/^ */  /'

# Figures from the reports: every request schemathesis recorded (auth probes included), by status.
"$VENV/bin/python" - "$OUT/report" "$OUT/schemathesis.out" "$OUT/server_errors" >"$OUT/figures" <<'PY'
import collections, glob, json, re, sys
report, out, errors_file = sys.argv[1:4]
statuses = collections.Counter()
seen = set()
steps = links = 0
server_errors = []
for path in glob.glob(report + "/*.ndjson"):
    for line in open(path):
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        rec = finished["recorder"]
        for case_id, inter in rec.get("interactions", {}).items():
            if case_id in seen or not inter.get("response"):
                continue
            seen.add(case_id)
            status = inter["response"]["status_code"]
            statuses[status] += 1
            if status >= 500:
                server_errors.append(f'{status} {inter["request"]["method"]} {inter["request"]["uri"][:160]}')
            if finished["phase"] == "stateful":
                case = rec.get("cases", {}).get(case_id, {})
                # Auth probes (no Authorization header) are checks, not steps of the scenario.
                if "Authorization" in (case.get("value", {}).get("headers") or {}):
                    steps += 1
                    if case.get("transition") and case.get("is_transition_applied"):
                        links += 1
failures = errors = 0
for path in glob.glob(report + "/*.json"):
    run = json.load(open(path))
    failures = sum(f.get("count", 1) for f in run.get("failures", []))
    errors = len(run.get("errors", []))
m = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", open(out).read())
print(f"requests {sum(statuses.values())}")
print(f"5xx {sum(v for k, v in statuses.items() if k >= 500)}")
print(f"failures {failures}")
print(f"errors {errors}")
print(f"stateful_steps {steps}")
print(f"links_followed {links}")
print(f"links_covered {m.group(1) if m else 0}")
print(f"links_total {m.group(2) if m else 0}")
print("statuses " + ",".join(f"{k}:{v}" for k, v in sorted(statuses.items())))
with open(errors_file, "w") as f:
    f.writelines(e + "\n" for e in server_errors[:20])
PY
fig() { awk -v k="$1" '$1 == k { print $2 }' "$OUT/figures"; }
requests=$(fig requests) e5xx=$(fig 5xx) failures=$(fig failures) errors=$(fig errors)
steps=$(fig stateful_steps) links=$(fig links_followed) covered=$(fig links_covered) total=$(fig links_total)
echo "FIGURE schemathesis_requests ${requests:-0}"
echo "FIGURE schemathesis_5xx ${e5xx:-unknown}"
echo "FIGURE schemathesis_failures ${failures:-unknown}"
echo "FIGURE schemathesis_stateful_steps ${steps:-0}"
echo "FIGURE schemathesis_links_followed ${links:-0}"
echo "FIGURE schemathesis_api_links_covered ${covered:-0}/${total:-0}"
echo "FIGURE schemathesis_wall_s $wall"
echo "  statuses: $(fig statuses)"
sed 's/^/  problem: 5xx /' "$OUT/server_errors" 2>/dev/null

if [ "${requests:-0}" -gt 0 ]; then ok "schemathesis ran ($requests requests in $wall s)"; else ko "schemathesis ran (exit $rc, no requests recorded)"; fi
if [ "${e5xx:-1}" -eq 0 ]; then ok "5xx answers: 0"; else ko "5xx answers: $e5xx"; fi
if [ "${failures:-1}" -eq 0 ] && [ "${errors:-1}" -eq 0 ] && [ "$rc" -eq 0 ]; then
  ok "check failures: 0 (every check; schemathesis exit 0)"
else
  ko "check failures: ${failures:-?}, errors: ${errors:-?}, schemathesis exit $rc (see $OUT/schemathesis.out)"
  sed -n '/^=* FAILURES =*$/,/^=* SUMMARY =*$/p' "$OUT/schemathesis.out" | grep -E '^[0-9]+\. |^- |^ +(curl|Expected)' | head -40 \
    | sed 's/^/  problem: /'
fi
if [ "${steps:-0}" -gt 0 ] && [ "${links:-0}" -gt 0 ]; then
  ok "stateful phase chained calls through links ($steps steps, $links link transitions, $covered of $total links)"
else
  ko "stateful phase chained calls through links ($steps steps, $links link transitions)"
fi
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ADMIN" "$API/v1/secrets?limit=1")
if [ "$code" = 200 ]; then ok "afterwards: 127.0.0.1 not locked out, admin token still valid (GET /v1/secrets 200)"
else ko "afterwards: GET /v1/secrets with the admin token from 127.0.0.1 -> $code (want 200)"; fi
panics_after=$(grep -c panicked "$RUN_DIR/run/api.log" 2>/dev/null)
if kill -0 "$(cat "$RUN_DIR/run/api.pid")" 2>/dev/null && [ "${panics_after:-0}" -eq "${panics_before:-0}" ]; then
  ok "the API process is alive and logged no panic"
else
  ko "the API process is alive and logged no panic"
fi
echo "schemathesis: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
