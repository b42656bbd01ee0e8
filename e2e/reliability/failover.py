#!/usr/bin/env python3
"""Failover under load (issue 8, "Faults and load"; DESIGN.md §5: the writer pool follows failover).

Usage: failover.py            (HV_RUN_DIR, HV_API_PORT; HV_RUN_DIR/env for the rest; ~1-2 min)

Against a running instance (scripts/run.sh), with the API and the controller left alone (never
restarted or reconfigured; their pids are checked at the end):

  1. setup: read secrets with known values, and per writer thread one manual and one automatic
     secret (grace period 1 h, so every version stays readable with ?version=N); a plaintext
     control row in the primary (so the leak scan can prove it reads the data dir this suite
     retires); a VaultSecret for the controller check.
  2. load: 4 reader threads (GET of fixed secrets and of the writers' secrets, verify) and 3 writer
     threads (PUT of a manual value, POST .../rotate, create manual, create automatic), one TCP
     connection per request, every request logged with its start/end time and outcome.
  3. fault: `testenv pg-stop primary` (fast shutdown), 4 s without any primary, `testenv pg-promote`;
     the load keeps running until writes succeed again (at most 45 s), then 4 s more.
  4. verdict, from ground truth read back after the load (GET ?version=N of every version of every
     secret touched): every acknowledged write (2xx) is there with its acknowledged version and
     value (lost = 0); every value a reader got matches; version lists are contiguous and every
     version reads back; every failed request is a clean 503 with a JSON {"error"} body and
     Retry-After (any other 5xx, a transport error or a timeout is a failure); no write succeeded
     while there was no primary; reads were served from the standby while there was no primary;
     writes came back by themselves after the promotion; the controller rotates a VaultSecret
     after the failover without a restart.
  5. `testenv pg-rejoin`: the old primary comes back as a streaming standby of the promoted node
     (its old data dir kept aside in the state dir); the env file names the new roles; the
     rejoined standby has every version row and the API keeps working. The instance is left
     running on the rejoined pair.

Figures as `FIGURE <name> <value>` lines (times in seconds, relative to the start of pg-stop unless
named otherwise); the last line is `failover: N passed, M failed`; exit status 1 if any failed.
Every plaintext value sent or received is appended to $HV_LEAK_MARKERS (if set) for leak_scan.sh.
"""
import functools
import os
import random
import secrets
import threading
import time

import suite
from suite import ENV, RUN_DIR, check, figure, kubectl, load_env, mark, pid_of, psql, rnd, testenv

READERS, WRITERS = 4, 3
PRE_S, NO_PRIMARY_S, RECOVERY_MAX_S, POST_S = 4.0, 4.0, 45.0, 4.0
TIMEOUT_S = 30
WALL_LIMIT_S = 280  # the whole suite stops by itself after this

load_env()
T0 = time.monotonic()
call = functools.partial(suite.call, timeout=TIMEOUT_S)


def finish():
    suite.finish("failover")


suite.arm_wall_limit(WALL_LIMIT_S, finish)


def in_recovery(port):
    rc, out, _ = psql(port, "select pg_is_in_recovery()")
    return {"f": False, "t": True}.get(out) if rc == 0 else None


# ------------------------------------------------------------------ setup
tag = secrets.token_hex(4)
PREFIX = f"rel/failover-{tag}"
acked = {}  # (name, version) -> value, for every write answered 2xx
acked_lock = threading.Lock()
touched = set()  # every secret name a write was attempted on


def ack(name, version, value):
    with acked_lock:
        acked[(name, version)] = value


api_pid, ctl_pid = pid_of("api"), pid_of("controller")
check("setup: the API and the controller are running", api_pid is not None and ctl_pid is not None,
      f"api {api_pid}, controller {ctl_pid}")
ports = [int(ENV["PG_PRIMARY_PORT"]), int(ENV["PG_STANDBY_PORT"])]
roles = {p: in_recovery(p) for p in ports}
primary_ports = [p for p in ports if roles[p] is False]
if not check("setup: exactly one PostgreSQL primary and one streaming standby",
             len(primary_ports) == 1 and sorted(roles.values()) == [False, True], str(roles)):
    finish()
PRIMARY = primary_ports[0]
check("setup: the env file names the primary as PG_PRIMARY_PORT", PRIMARY == int(ENV["PG_PRIMARY_PORT"]),
      f"primary is {PRIMARY}")

READ_SECRETS = {}
for i in range(6):
    name, value = f"{PREFIX}/r{i}", rnd("FOread")
    mark(f"failover_read_{i}", value)
    r = call("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value, "grace_period_secs": 3600},
             auth=True)
    if r.status == 201:
        READ_SECRETS[name] = value
        ack(name, 1, value)
targets = []  # per writer: (manual name, automatic name)
for w in range(WRITERS):
    man, auto = f"{PREFIX}/w{w}/manual", f"{PREFIX}/w{w}/auto"
    value = rnd("FOman")
    mark(f"failover_w{w}_manual_v1", value)
    r1 = call("POST", "/v1/secrets", {"name": man, "kind": "manual", "value": value, "grace_period_secs": 3600},
              auth=True)
    if r1.status == 201:
        ack(man, 1, value)
    r2 = call("POST", "/v1/secrets", {"name": auto, "kind": "automatic", "rotation_interval_secs": 86400,
                                       "grace_period_secs": 3600}, auth=True)
    if r2.status == 201:
        j = r2.json()
        mark(f"failover_w{w}_auto_v1", j["value"])
        ack(auto, j["version"], j["value"])
    touched.update((man, auto))
    targets.append((man, auto))
    if r1.status != 201 or r2.status != 201:
        break
if not check("setup: 6 read secrets and 2 secrets per writer created (201)",
             len(READ_SECRETS) == 6 and len(acked) == 6 + 2 * WRITERS, f"{len(acked)} created"):
    finish()
touched.update(READ_SECRETS)

# Plaintext control row written before the failover: it ends up in the data dir pg-rejoin moves
# aside, and leak_scan.sh must find it there (proof that it scans that dir too).
control = rnd("LKcontrolfailover")
mark("control_pg_before_failover", control, "control")
rc, _, err = psql(PRIMARY, "CREATE TABLE IF NOT EXISTS failover_control(v text); "
                           f"INSERT INTO failover_control VALUES ('{control}')", db="postgres")
check("setup: plaintext control row for the leak scan inserted in the primary", rc == 0, err)

NS = f"failover-{tag}"
kubectl("create", "namespace", NS)
rc, out = kubectl("-n", NS, "apply", "-f", "-", stdin="""apiVersion: vault.hyperiondb.io/v1alpha1
kind: VaultSecret
metadata: {name: ctl}
spec: {kind: Automatic, rotationInterval: 24h, gracePeriod: 1h}
""")
rc, out = kubectl("-n", NS, "wait", "vsec/ctl", "--for=condition=Ready", "--timeout=60s")
check("setup: a VaultSecret (controller-owned) is Ready", rc == 0, out)

# ------------------------------------------------------------------ load
stop = threading.Event()
log = []  # Resp objects with .kind/.op/.name attributes kept alongside
log_lock = threading.Lock()
reads_seen = []  # (name, version, value) of every 200 GET


def record(kind, op, name, r):
    with log_lock:
        log.append((kind, op, name, r))


def reader(seed):
    rng = random.Random(seed)
    names = list(READ_SECRETS)
    while not stop.is_set():
        x = rng.random()
        if x < 0.45:
            name = rng.choice(names)
            r = call("GET", f"/v1/secrets/{name}")
            op = "get"
        elif x < 0.75:
            name = rng.choice(rng.choice(targets))
            r = call("GET", f"/v1/secrets/{name}")
            op = "get_target"
        else:
            name = rng.choice(names)
            r = call("POST", f"/v1/secrets/{name}/verify", {"value": READ_SECRETS[name]})
            op = "verify"
        if r.status == 200:
            j = r.json() or {}
            if op == "verify":
                if not (j.get("valid") is True and j.get("version") == 1):
                    r.error = f"verify of the right value answered {j}"
            else:
                with log_lock:
                    reads_seen.append((name, j.get("version"), j.get("value")))
                if op == "get_target":
                    mark("failover_read_back", j.get("value"))
        record("read", op, name, r)
        time.sleep(0.01)


def writer(w):
    man, auto = targets[w]
    n = 0
    ops = ["put", "rotate", "create_manual", "create_auto"]
    while not stop.is_set():
        op = ops[n % len(ops)]
        n += 1
        if op == "put":
            name, value = man, rnd("FOput")
            mark(f"failover_put_w{w}", value)
            r = call("PUT", f"/v1/secrets/{man}", {"value": value}, auth=True)
            if r.status == 200:
                ack(name, (r.json() or {}).get("version"), value)
        elif op == "rotate":
            name = auto
            r = call("POST", f"/v1/secrets/{auto}/rotate", auth=True)
            if r.status == 200:
                j = r.json() or {}
                mark(f"failover_rotate_w{w}", j.get("value"))
                ack(name, j.get("version"), j.get("value"))
        elif op == "create_manual":
            name, value = f"{PREFIX}/w{w}/c{n}", rnd("FOcreate")
            mark(f"failover_create_w{w}", value)
            r = call("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value,
                                              "grace_period_secs": 3600}, auth=True)
            if r.status == 201:
                ack(name, (r.json() or {}).get("version"), value)
        else:
            name = f"{PREFIX}/w{w}/a{n}"
            r = call("POST", "/v1/secrets", {"name": name, "kind": "automatic", "rotation_interval_secs": 86400,
                                              "grace_period_secs": 3600}, auth=True)
            if r.status == 201:
                j = r.json() or {}
                mark(f"failover_create_auto_w{w}", j.get("value"))
                ack(name, j.get("version"), j.get("value"))
        with acked_lock:
            touched.add(name)
        record("write", op, name, r)
        time.sleep(0.02)


threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
threads += [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
for t in threads:
    t.start()

fault = {}
promoted = False
try:
    time.sleep(PRE_S)
    rc, out, fault["stop0"], fault["stop1"] = testenv("pg-stop", "primary")
    check("fault: testenv pg-stop primary", rc == 0, out)
    time.sleep(NO_PRIMARY_S)
    rc, out, fault["prom0"], fault["prom1"] = testenv("pg-promote")
    promoted = rc == 0
    check("fault: testenv pg-promote (the standby accepts writes)", promoted, out)

    def first_write_ok_after(t):
        with log_lock:
            oks = [r.t1 for kind, _, _, r in log if kind == "write" and r.t0 >= t and 200 <= r.status < 300]
        return min(oks) if oks else None

    deadline = fault["prom1"] + RECOVERY_MAX_S
    while time.monotonic() < deadline and first_write_ok_after(fault["stop1"]) is None:
        time.sleep(0.2)
    time.sleep(POST_S)
finally:
    stop.set()
    for t in threads:
        t.join(TIMEOUT_S + 5)
    if fault.get("stop1") and not promoted:  # never leave the instance without a primary
        testenv("pg-promote")

# ------------------------------------------------------------------ verdict: requests
if not check("fault sequence completed", all(k in fault for k in ("stop0", "stop1", "prom0", "prom1")), str(fault)):
    finish()
stop0, stop1, prom0, prom1 = fault["stop0"], fault["stop1"], fault["prom0"], fault["prom1"]
reads = [(op, name, r) for kind, op, name, r in log if kind == "read"]
writes = [(op, name, r) for kind, op, name, r in log if kind == "write"]
rel = lambda t: t - stop0  # noqa: E731


def unclean(r):
    """A failure that is not a clean 503: transport error, other 5xx, 503 without JSON/Retry-After."""
    if r.status == 0 or (r.status >= 500 and r.status != 503):
        return True
    return r.status == 503 and not (r.clean_error() and r.retry_after)


read_fail = [r for _, _, r in reads if r.status != 200 or r.error]
write_ok = [r for _, _, r in writes if 200 <= r.status < 300]
write_fail = [r for _, _, r in writes if not 200 <= r.status < 300]
other_4xx = [(op, name, r) for op, name, r in reads + writes if 400 <= r.status < 500]
bad = [(op, name, r) for op, name, r in reads + writes if unclean(r)]
wrong_verify = [(op, name, r) for op, name, r in reads if r.status == 200 and r.error]

figure("reads_attempted", len(reads))
figure("reads_failed", len(read_fail))
if read_fail:
    first, last = min(r.t0 for r in read_fail), max(r.t1 for r in read_fail)
    figure("read_failure_window_s", f"{last - first:.2f}")
    figure("read_failures_from_to_s", f"{rel(first):+.2f}..{rel(last):+.2f}")
else:
    figure("read_failure_window_s", "0.00")
sw = sorted(r.t1 - r.t0 for _, _, r in reads if r.t0 >= stop0 - 1 and r.t0 <= prom1 + 2)
if sw:
    figure("read_latency_max_s_during_switch", f"{sw[-1]:.3f}")
    figure("read_latency_p50_s_during_switch", f"{sw[len(sw) // 2]:.3f}")
figure("writes_attempted", len(writes))
figure("writes_acknowledged", len(write_ok))
figure("writes_failed_503", sum(1 for r in write_fail if r.status == 503))
figure("pg_stop_s", f"{stop1 - stop0:.2f}")
figure("no_primary_window_s", f"{prom0 - stop1:.2f}")
figure("pg_promote_s", f"{prom1 - prom0:.2f}")
first_ok = min((r.t1 for r in write_ok if r.t0 >= stop1), default=None)
last_ok_before = max((r.t1 for r in write_ok if r.t1 <= stop1), default=None)
if first_ok is not None:
    figure("write_recovery_s_from_pg_stop", f"{first_ok - stop0:.2f}")
    figure("write_recovery_s_after_promote", f"{first_ok - prom1:.2f}")
if last_ok_before is not None:
    figure("last_write_ack_before_stop_s", f"{rel(last_ok_before):+.2f}")
figure("unclean_failures", len(bad))
for op, name, r in bad[:10]:
    print(f"  problem: {op} {name} at {rel(r.t0):+.2f}s -> {r!r} retry-after={r.retry_after}")
for op, name, r in (other_4xx + wrong_verify)[:10]:
    print(f"  problem: {op} {name} at {rel(r.t0):+.2f}s -> {r!r} {r.error}")

check("load ran before the fault (reads and writes acknowledged)",
      any(r.t1 < stop0 for r in write_ok) and any(r.t1 < stop0 and r.status == 200 for _, _, r in reads))
check("every failed request is a clean 503 with a JSON error and Retry-After (no 500, no other 5xx, "
      "no transport error or timeout)", not bad, f"{len(bad)} unclean")
check("no 4xx for well-formed requests and verify of the right value answers valid (0)",
      not other_4xx and not wrong_verify, f"{len(other_4xx)} 4xx, {len(wrong_verify)} wrong verify")
during = [r for _, _, r in writes if r.t0 >= stop1 + 0.5 and r.t1 <= prom0]
check(f"writes while there was no primary: all refused with 503 ({len(during)} attempted)",
      during and all(r.status == 503 for r in during), f"{[r.status for r in during][:20]}")
served = [r for _, _, r in reads if r.t0 >= stop1 + 1.0 and r.t1 <= prom0 and r.status == 200]
check(f"reads kept being served from the standby while there was no primary ({len(served)} answered 200)",
      len(served) > 0)
check(f"writes succeed again by themselves after the promotion (within {RECOVERY_MAX_S:.0f} s)",
      first_ok is not None and first_ok - prom1 <= RECOVERY_MAX_S)
check("writes were acknowledged after the recovery as well (load continued)",
      sum(1 for r in write_ok if r.t0 > prom1) >= 5)

# ------------------------------------------------------------------ verdict: ground truth
truth = {}  # (name, version) -> value, read back now
version_problems = []
for name in sorted(touched):
    r = call("GET", f"/v1/secrets/{name}/versions", auth=True)
    if r.status == 404:
        continue  # a create that failed before committing
    j = r.json() or {}
    vers = sorted(v["version"] for v in j.get("versions", []))
    states = {v["version"]: v["state"] for v in j.get("versions", [])}
    if r.status != 200 or not vers:
        version_problems.append(f"{name}: versions -> {r!r}")
        continue
    if vers != list(range(1, len(vers) + 1)):
        version_problems.append(f"{name}: versions not contiguous {vers}")
    for v in vers:
        if states[v] not in ("current", "grace"):
            version_problems.append(f"{name}: version {v} is {states[v]}")
        g = call("GET", f"/v1/secrets/{name}?version={v}")
        if g.status != 200 or (g.json() or {}).get("version") != v:
            version_problems.append(f"{name}: version {v} does not read back: {g!r}")
            continue
        truth[(name, v)] = g.json()["value"]
        mark("failover_truth", truth[(name, v)])

lost = [(k, v) for k, v in acked.items() if truth.get(k) != v]
bad_reads = [x for x in reads_seen if truth.get((x[0], x[1])) != x[2]]
unacked_committed = [k for k in truth if k not in acked]
figure("acknowledged_writes_checked", len(acked))
figure("acknowledged_writes_lost", len(lost))
figure("versions_read_back", len(truth))
figure("reads_with_wrong_value", len(bad_reads))
figure("committed_but_answered_503", len(unacked_committed))
for (name, v), _ in lost[:10]:
    print(f"  problem: acknowledged {name} v{v} is {'missing' if (name, v) not in truth else 'different'}")
for p in version_problems[:10]:
    print(f"  problem: {p}")
check(f"acknowledged writes lost: 0 (of {len(acked)}, each read back with ?version=N)", not lost, f"{len(lost)} lost")
check("every value a reader got is the one stored for that version", not bad_reads, f"{len(bad_reads)} wrong")
check(f"version lists contiguous and every version of the {len(touched)} secrets touched reads back",
      not version_problems, f"{len(version_problems)} problems")

# ------------------------------------------------------------------ the controller follows too
rc, out = kubectl("-n", NS, "annotate", "vsec", "ctl", f"vault.hyperiondb.io/rotate-now=failover-{tag}",
                  "--overwrite")
t = time.monotonic()
ver = None
while time.monotonic() - t < 60:
    rc, ver = kubectl("-n", NS, "get", "vsec", "ctl", "-o", "jsonpath={.status.currentVersion}")
    if ver == "2":
        break
    time.sleep(1)
figure("controller_rotation_after_failover_s", f"{time.monotonic() - t:.1f}")
check("the controller rotates a VaultSecret after the failover (rotate-now -> version 2), no restart",
      ver == "2", f"currentVersion {ver!r}")
check("API and controller never restarted (same pids, alive)",
      pid_of("api") == api_pid and pid_of("controller") == ctl_pid,
      f"api {api_pid}->{pid_of('api')}, controller {ctl_pid}->{pid_of('controller')}")

# ------------------------------------------------------------------ rejoin
rc, out, r0, r1 = testenv("pg-rejoin")
figure("pg_rejoin_s", f"{r1 - r0:.1f}")
check("testenv pg-rejoin: the old primary rejoins as a standby of the promoted node", rc == 0, out[-600:])
ENV = load_env()
newp, news = int(ENV["PG_PRIMARY_PORT"]), int(ENV["PG_STANDBY_PORT"])
check("env file after rejoin: PG_PRIMARY_PORT is the promoted node and accepts writes",
      newp == ports[1 - ports.index(PRIMARY)] and in_recovery(newp) is False, f"{newp}: {in_recovery(newp)}")
check("env file after rejoin: PG_STANDBY_PORT is the old primary's port, in recovery",
      news == PRIMARY and in_recovery(news) is True, f"{news}: {in_recovery(news)}")
retired = ENV.get("PG_RETIRED_DATA", "").split()
check("the old primary's data dir is kept inside the state dir (PG_RETIRED_DATA)",
      bool(retired) and all(d.startswith(RUN_DIR.rstrip("/") + "/") and os.path.isdir(d) for d in retired),
      str(retired))
rc, out, _ = psql(newp, "select state from pg_stat_replication")
check("the rejoined standby is streaming", "streaming" in out.split(), out)
name, value = f"{PREFIX}/after-rejoin", rnd("FOafter")
mark("failover_after_rejoin", value)
r = call("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value}, auth=True)
g = call("GET", f"/v1/secrets/{name}")
ok = r.status == 201 and g.status == 200 and (g.json() or {}).get("value") == value
for _ in range(20):  # the API reads from the first host (now the standby): allow replication lag
    if ok:
        break
    time.sleep(0.25)
    g = call("GET", f"/v1/secrets/{name}")
    ok = r.status == 201 and g.status == 200 and (g.json() or {}).get("value") == value
check("API after rejoin: create + read back", ok, f"{r!r} / {g!r}")
count_sql = "select count(*) from vault.secret_versions"
want = psql(newp, count_sql)[1]
got = None
for _ in range(40):
    got = psql(news, count_sql)[1]
    if got == want:
        break
    time.sleep(0.25)
check(f"the rejoined standby has every version row ({want})", got == want and want not in ("", "0"), f"{got}")
psql(newp, "DROP TABLE IF EXISTS failover_control", db="postgres")
kubectl("delete", "namespace", NS, "--wait=false")
check("API and controller still the same processes at the end",
      pid_of("api") == api_pid and pid_of("controller") == ctl_pid)
figure("wall_s", f"{time.monotonic() - T0:.0f}")
finish()
