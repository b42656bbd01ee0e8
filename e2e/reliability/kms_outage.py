#!/usr/bin/env python3
"""KMS outage under load (issue 8, "Faults and load"; DESIGN.md §6: the DEK cache carries reads of
recently read secrets through a KMS outage; KMS is called before any transaction).

Usage: kms_outage.py            (HV_RUN_DIR, HV_API_PORT; HV_RUN_DIR/env for the rest; ~1 min)

Three kinds of secrets, from the API process's point of view (its DEK cache holds unwrapped keys
per version; creating, updating or rotating through it also puts the new key in its cache):

  cached     created through this API and read once before the outage;
  uncached   never touched by this API process. How: they are written by *another* process, so
             this API's cache cannot hold their keys — (a) a second API process started for the
             suite (same binary and settings as run/api.start, its own database role and port;
             stopped again before the outage) creates manual secrets with known values, two
             versions each; (b) the controller seals VaultSecrets (Automatic). Nothing is restarted
             for this. Half of (a) are probed during the outage; the rest, and (b), stay untouched
             until after it, when reading each of them must be a cache miss (dek_cache_misses
             rises by exactly the number of versions read) — proof they were uncached all along;
  writes     create (manual and automatic), PUT of a manual value, POST .../rotate.

With 4 reader threads on the cached secrets (GET and verify), one thread probing uncached reads
(GET, GET ?version=1, verify) and two writer threads, `testenv kms-stop` closes the KMS endpoint
for 15 s, then `testenv kms-start`. Checks: cached reads answer 200 with the right value
throughout; uncached reads and every write fail closed during the outage with 503 + JSON error +
Retry-After (never 200, never 500); the KMS errors are real (kms_errors rises); uncached reads and
writes recover by themselves after kms-start (figures: seconds after kms-start returned);
afterwards no half-written version: every secret touched has a contiguous version list whose
every version reads back, a write target has exactly one version per acknowledged write, and a
create that failed left no secret; the API and the controller were never restarted.

Figures as `FIGURE <name> <value>` lines; the last line is `kms outage: N passed, M failed`;
exit status 1 if any failed. Every plaintext value sent or received is appended to
$HV_LEAK_MARKERS (if set) for leak_scan.sh.
"""
import functools
import os
import random
import re
import secrets
import socket
import subprocess
import threading
import time

import suite
from suite import ENV, RUN_DIR, check, figure, kubectl, load_env, mark, pid_of, psql, rnd

READERS, WRITERS = 4, 2
PRE_S, OUTAGE_S, RECOVERY_MAX_S, POST_S = 3.0, 15.0, 40.0, 3.0
TIMEOUT_S = 40
WALL_LIMIT_S = 240

load_env()
T0 = time.monotonic()
call = functools.partial(suite.call, timeout=TIMEOUT_S)
testenv = functools.partial(suite.testenv, timeout=120)
kms_stopped = False


def finish():
    if kms_stopped:  # never leave the instance without its KMS
        testenv("kms-start")
    suite.finish("kms outage")


suite.arm_wall_limit(WALL_LIMIT_S, finish)


def metrics():
    r = call("GET", "/metrics")
    out = {}
    for line in r.body.decode(errors="replace").splitlines():
        m = re.match(r"^hyperion_vault_api_(kms_calls|kms_errors|dek_cache_hits|dek_cache_misses)_total (\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def create(name, kind, value=None, port=None):
    body = {"name": name, "kind": kind, "grace_period_secs": 3600}
    if kind == "automatic":
        body["rotation_interval_secs"] = 86400
    if value is not None:
        body["value"] = value
    return call("POST", "/v1/secrets", body, auth=True, port=port)


# ------------------------------------------------------------------ setup
tag = secrets.token_hex(4)
PREFIX = f"rel/kms-{tag}"
api_pid, ctl_pid = pid_of("api"), pid_of("controller")
check("setup: the API and the controller are running", api_pid is not None and ctl_pid is not None)
known = {}  # (name, version) -> value the suite knows

CACHED = []  # names
for i in range(8):
    name = f"{PREFIX}/cached{i}"
    if i < 6:
        v = rnd("KOcached")
        mark(f"kms_cached_{i}", v)
        r = create(name, "manual", v)
    else:
        r = create(name, "automatic")
        v = (r.json() or {}).get("value")
        mark(f"kms_cached_{i}", v)
    g = call("GET", f"/v1/secrets/{name}")  # read once: this API has its key in cache
    if r.status == 201 and g.status == 200 and (g.json() or {}).get("value") == v:
        CACHED.append(name)
        known[(name, 1)] = v
check("setup: 8 cached secrets created and read once through the API", len(CACHED) == 8, f"{len(CACHED)}")

W_MAN = [f"{PREFIX}/w{w}/manual" for w in range(WRITERS)]  # each writer thread has its own targets
W_AUTO = [f"{PREFIX}/w{w}/auto" for w in range(WRITERS)]
nt = 0
for man, auto in zip(W_MAN, W_AUTO):
    v = rnd("KOwman")
    mark("kms_w_manual_v1", v)
    r1, r2 = create(man, "manual", v), create(auto, "automatic")
    mark("kms_w_auto_v1", (r2.json() or {}).get("value"))
    nt += (r1.status == 201) + (r2.status == 201)
    known[(man, 1)] = v
    known[(auto, 1)] = (r2.json() or {}).get("value")
check(f"setup: write targets created ({WRITERS} manual + {WRITERS} automatic)", nt == 2 * WRITERS, f"{nt}")

# (a) uncached secrets written by a second API process (same binary and settings as the API's
# launcher; its own database role, since run.sh does not keep the API role's password anywhere)
launcher = open(os.path.join(RUN_DIR, "run", "api.start")).read()
m = re.search(r"nohup (\S+)", launcher)
BIN = m.group(1) if m else ""
primary = None
for p in (ENV["PG_PRIMARY_PORT"], ENV["PG_STANDBY_PORT"]):
    if psql(p, "select pg_is_in_recovery()")[1] == "f":
        primary = p
role_pw = secrets.token_hex(16)
rc, _, err = psql(primary or ENV["PG_PRIMARY_PORT"],
                  "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='vault_api_kmsrel') THEN "
                  "CREATE ROLE vault_api_kmsrel LOGIN; END IF; END $$; "
                  f"ALTER ROLE vault_api_kmsrel PASSWORD '{role_pw}'; SELECT vault.grant_service_role('vault_api_kmsrel');")
check("setup: database role for the second API process", rc == 0, err)
s = socket.socket()
s.bind(("127.0.0.1", 0))
port2 = s.getsockname()[1]
s.close()
env2 = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
env2.update({
    "VAULT_PG_HOSTS": f"{ENV['PG_HOST']}:{ENV['PG_PRIMARY_PORT']},{ENV['PG_HOST']}:{ENV['PG_STANDBY_PORT']}",
    "VAULT_PG_DBNAME": ENV["PG_DATABASE"], "VAULT_PG_SSLMODE": "disable", "VAULT_KMS_MODE": "aws",
    "VAULT_KMS_KEY_ID": ENV["VAULT_KMS_KEY_ID"], "VAULT_KMS_ENDPOINT": ENV["VAULT_KMS_ENDPOINT"],
    "VAULT_PG_USER": "vault_api_kmsrel", "VAULT_PG_PASSWORD": role_pw, "VAULT_API_LISTEN": f"127.0.0.1:{port2}",
    "VAULT_ALLOWED_IPS": "127.0.0.1", "RUST_LOG": "info",
    "AWS_ACCESS_KEY_ID": ENV.get("AWS_ACCESS_KEY_ID", "testing"),
    "AWS_SECRET_ACCESS_KEY": ENV.get("AWS_SECRET_ACCESS_KEY", "testing"),
    "AWS_REGION": ENV.get("AWS_REGION", "us-east-1"),
})
UNCACHED = []  # names of (a), each with versions 1 and 2
proc2 = None
if BIN and os.access(BIN, os.X_OK):
    proc2 = subprocess.Popen([BIN], env=env2, stdout=open(os.path.join(RUN_DIR, "run", "api-kms-writer.log"), "w"),
                             stderr=subprocess.STDOUT)
    for _ in range(120):
        if call("GET", "/readyz", port=port2, timeout=2).status == 200 or proc2.poll() is not None:
            break
        time.sleep(0.25)
    for i in range(6):
        name = f"{PREFIX}/uncached{i}"
        v1, v2 = rnd("KOunc1"), rnd("KOunc2")
        mark(f"kms_uncached_{i}_v1", v1)
        mark(f"kms_uncached_{i}_v2", v2)
        r1 = create(name, "manual", v1, port=port2)
        r2 = call("PUT", f"/v1/secrets/{name}", {"value": v2}, auth=True, port=port2)
        if r1.status == 201 and r2.status == 200 and (r2.json() or {}).get("version") == 2:
            UNCACHED.append(name)
            known[(name, 1)], known[(name, 2)] = v1, v2
    proc2.terminate()
    try:
        proc2.wait(15)
    except subprocess.TimeoutExpired:
        proc2.kill()
check("setup: a second API process wrote 6 manual secrets (2 versions each) this API never saw",
      len(UNCACHED) == 6, f"{len(UNCACHED)}; binary {BIN!r}")
PROBED, COLD = UNCACHED[:3], UNCACHED[3:]

# (b) uncached secrets sealed by the controller
NS = f"kms-{tag}"
kubectl("create", "namespace", NS)
VS = ["vs0", "vs1"]
kubectl("-n", NS, "apply", "-f", "-", stdin="".join(f"""---
apiVersion: vault.hyperiondb.io/v1alpha1
kind: VaultSecret
metadata: {{name: {n}}}
spec: {{kind: Automatic, rotationInterval: 24h, gracePeriod: 1h}}
""" for n in VS))
rc, out = kubectl("-n", NS, "wait", *[f"vsec/{n}" for n in VS], "--for=condition=Ready", "--timeout=60s")
check("setup: 2 VaultSecrets sealed by the controller (Ready)", rc == 0, out)
VS_NAMES = [f"{NS}/{n}" for n in VS]
if suite.failed:
    finish()

# ------------------------------------------------------------------ load
stop = threading.Event()
log = []  # (kind, op, name, Resp)
log_lock = threading.Lock()
acked_writes = {n: 0 for n in W_MAN + W_AUTO}
created = {}  # name -> status of the create


def record(kind, op, name, r):
    with log_lock:
        log.append((kind, op, name, r))


def reader(seed):
    rng = random.Random(seed)
    while not stop.is_set():
        name = rng.choice(CACHED)
        if rng.random() < 0.7:
            r = call("GET", f"/v1/secrets/{name}")
            if r.status == 200 and (r.json() or {}).get("value") != known[(name, 1)]:
                r.error = "wrong value"
            op = "get"
        else:
            r = call("POST", f"/v1/secrets/{name}/verify", {"value": known[(name, 1)]})
            if r.status == 200 and (r.json() or {}) != {"valid": True, "version": 1}:
                r.error = f"verify answered {r.body[:100]!r}"
            op = "verify"
        record("cached", op, name, r)
        time.sleep(0.01)


def prober():
    n = 0
    while not stop.is_set():
        name = PROBED[n % len(PROBED)]
        op = ["get", "get_v1", "verify"][(n // len(PROBED)) % 3]
        n += 1
        if op == "get":
            r = call("GET", f"/v1/secrets/{name}")
            want = known[(name, 2)]
        elif op == "get_v1":
            r = call("GET", f"/v1/secrets/{name}?version=1")
            want = known[(name, 1)]
        else:
            r = call("POST", f"/v1/secrets/{name}/verify", {"value": known[(name, 1)]})
            want = None
        if r.status == 200:
            j = r.json() or {}
            if (want is not None and j.get("value") != want) or (want is None and j != {"valid": True, "version": 1}):
                r.error = f"wrong answer {r.body[:100]!r}"
        record("uncached", op, name, r)
        time.sleep(0.2)


def writer(w):
    n = 2 * w  # the writers start at different operations
    while not stop.is_set():
        op = ["put", "rotate", "create_manual", "create_auto"][n % 4]
        n += 1
        if op == "put":
            name, v = W_MAN[w], rnd("KOput")
            mark("kms_put", v)
            r = call("PUT", f"/v1/secrets/{name}", {"value": v}, auth=True)
            if r.status == 200:
                acked_writes[name] += 1
                known[(name, (r.json() or {}).get("version"))] = v
        elif op == "rotate":
            name = W_AUTO[w]
            r = call("POST", f"/v1/secrets/{name}/rotate", auth=True)
            if r.status == 200:
                j = r.json() or {}
                mark("kms_rotate", j.get("value"))
                acked_writes[name] += 1
                known[(name, j.get("version"))] = j.get("value")
        elif op == "create_manual":
            name, v = f"{PREFIX}/new/w{w}m{n}", rnd("KOcreate")
            mark("kms_create", v)
            r = create(name, "manual", v)
            created[name] = r.status
            if r.status == 201:
                known[(name, 1)] = v
        else:
            name = f"{PREFIX}/new/w{w}a{n}"
            r = create(name, "automatic")
            created[name] = r.status
            if r.status == 201:
                mark("kms_create_auto", (r.json() or {}).get("value"))
                known[(name, 1)] = (r.json() or {}).get("value")
        record("write", op, name, r)
        time.sleep(0.1)


m0 = metrics()
threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
threads += [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
probe = threading.Thread(target=prober, daemon=True)
fault = {}
try:
    for t in threads:
        t.start()
    time.sleep(PRE_S)
    rc, out, fault["stop0"], fault["stop1"] = testenv("kms-stop")
    kms_stopped = rc == 0
    check("fault: testenv kms-stop", rc == 0, out)
    m1 = metrics()
    probe.start()  # only now: nothing uncached may be read (and cached) before the outage
    threads.append(probe)
    time.sleep(OUTAGE_S)
    rc, out, fault["start0"], fault["start1"] = testenv("kms-start")
    kms_stopped = rc != 0
    check("fault: testenv kms-start", rc == 0, out)

    def recovered(kind):
        with log_lock:
            return any(k == kind and r.status in (200, 201) and r.t1 >= fault["start0"] for k, _, _, r in log)

    while time.monotonic() < fault["start1"] + RECOVERY_MAX_S and not (recovered("uncached") and recovered("write")):
        time.sleep(0.2)
    time.sleep(POST_S)
finally:
    stop.set()
    for t in threads:
        t.join(TIMEOUT_S + 5)
    if kms_stopped:
        testenv("kms-start")
        kms_stopped = False
m2 = metrics()

# ------------------------------------------------------------------ verdict: requests
if not check("fault sequence completed", all(k in fault for k in ("stop0", "stop1", "start0", "start1")), str(fault)):
    finish()
stop0, stop1, start0, start1 = fault["stop0"], fault["stop1"], fault["start0"], fault["start1"]


def unclean(r):
    if r.status == 0 or (r.status >= 500 and r.status != 503):
        return True
    return r.status == 503 and not (r.clean_error() and r.retry_after)


by = {k: [(op, n, r) for kk, op, n, r in log if kk == k] for k in ("cached", "uncached", "write")}
within = lambda r: r.t0 >= stop1 and r.t1 <= start0  # noqa: E731 - entirely inside the outage
bad = [(k, op, n, r) for k, op, n, r in log if unclean(r) or (r.status in (200, 201) and r.error)]
figure("outage_s", f"{start0 - stop1:.1f}")
figure("kms_start_command_s", f"{start1 - start0:.2f}")
for k in ("cached", "uncached", "write"):
    figure(f"{k}_requests", len(by[k]))
    figure(f"{k}_requests_during_outage", sum(1 for _, _, r in by[k] if within(r)))
cached_fail = [(op, n, r) for op, n, r in by["cached"] if r.status != 200 or r.error]
figure("cached_read_failures", len(cached_fail))
figure("unclean_failures", len(bad))
for k, op, n, r in (bad + [("cached",) + x for x in cached_fail])[:10]:
    print(f"  problem: {k} {op} {n} at {r.t0 - stop0:+.2f}s -> {r!r} {r.error} retry-after={r.retry_after}")
check("every failure is a clean 503 with a JSON error and Retry-After; every 200 has the right value "
      "(no 500, no other 5xx, no transport error or timeout)", not bad, f"{len(bad)}")
cd = [r for _, _, r in by["cached"] if within(r)]
check(f"cached reads (GET, verify) answer 200 with the right value throughout: {len(by['cached'])} reads, "
      f"{len(cd)} during the outage", not cached_fail and len(cd) >= 20, f"{len(cached_fail)} failed")
ud = [(op, r) for op, _, r in by["uncached"] if within(r)]
check(f"uncached reads during the outage fail closed with 503 ({len(ud)}: "
      f"{sorted({op for op, _ in ud})})", len(ud) >= 3 and all(r.status == 503 for _, r in ud),
      f"{[r.status for _, r in ud]}")
wd = [(op, r) for op, _, r in by["write"] if within(r)]
kinds = sorted({op for op, _ in wd})
check(f"writes during the outage fail closed with 503 ({len(wd)}: {kinds})",
      len(kinds) == 4 and all(r.status == 503 for _, r in wd), f"{[(op, r.status) for op, r in wd]}")
figure("kms_errors_during_outage", m2.get("kms_errors", 0) - m1.get("kms_errors", 0))
check("the outage was real: the API's KMS calls failed (kms_errors rose)",
      m2.get("kms_errors", 0) > m1.get("kms_errors", 0), f"{m1} -> {m2}")
uok = min((r.t1 for _, _, r in by["uncached"] if r.status == 200 and r.t1 >= start0), default=None)
wok = min((r.t1 for _, _, r in by["write"] if r.status in (200, 201) and r.t1 >= start0), default=None)
# measured from the start of `testenv kms-start` (it reopens the endpoint, then waits until it
# answers: kms_start_command_s); a request already retrying when the endpoint reopens may finish first
if uok is not None:
    figure("uncached_read_recovery_s_after_kms_start", f"{uok - start0:.2f}")
if wok is not None:
    figure("write_recovery_s_after_kms_start", f"{wok - start0:.2f}")
check(f"uncached reads recover by themselves after kms-start (within {RECOVERY_MAX_S:.0f} s)", uok is not None)
check(f"writes recover by themselves after kms-start (within {RECOVERY_MAX_S:.0f} s)", wok is not None)
early = [r for _, _, r in by["uncached"] + by["write"] if r.status in (200, 201) and r.t0 >= stop1 and r.t1 < start0]
check("nothing that needs the KMS succeeded while it was down", not early, f"{len(early)}")

# ------------------------------------------------------------------ cold uncached secrets: a cache miss each
mc0 = metrics()
cold_ok = 0
cold_reads = 0
for name in COLD:
    for v in (1, 2):
        cold_reads += 1
        g = call("GET", f"/v1/secrets/{name}?version={v}")
        cold_ok += g.status == 200 and (g.json() or {}).get("value") == known[(name, v)]
vs_vals = {}
for name in VS_NAMES:
    cold_reads += 1
    g = call("GET", f"/v1/secrets/{name}")
    j = g.json() or {}
    if g.status == 200 and j.get("version") == 1:
        vs_vals[name] = j["value"]
        mark("kms_vaultsecret", j["value"])
        known[(name, 1)] = j["value"]
        cold_ok += 1
mc1 = metrics()
misses = mc1.get("dek_cache_misses", 0) - mc0.get("dek_cache_misses", 0)
figure("cold_uncached_versions_read", cold_reads)
figure("cold_uncached_cache_misses", misses)
check(f"after the outage every untouched uncached version reads back ({cold_ok}/{cold_reads})", cold_ok == cold_reads)
check(f"... and each of those reads was a DEK cache miss ({misses} misses for {cold_reads} reads: they were "
      "uncached all along)", misses == cold_reads, f"{mc0} -> {mc1}")
ver_ok = all(call("POST", f"/v1/secrets/{n}/verify", {"value": v}).json() == {"valid": True, "version": 1}
             for n, v in vs_vals.items())
check("the controller-sealed values verify", ver_ok and len(vs_vals) == 2)

# ------------------------------------------------------------------ no half-written version
problems = []
touched = CACHED + UNCACHED + VS_NAMES + W_MAN + W_AUTO + sorted(created)
for name in touched:
    r = call("GET", f"/v1/secrets/{name}/versions", auth=True)
    if name in created and created[name] != 201:
        if r.status != 404:
            problems.append(f"{name}: create answered {created[name]} but the secret exists ({r.status})")
        continue
    vers = sorted(v["version"] for v in (r.json() or {}).get("versions", []))
    if r.status != 200 or vers != list(range(1, len(vers) + 1)) or not vers:
        problems.append(f"{name}: versions {r.status} {vers}")
        continue
    if name in acked_writes and len(vers) != 1 + acked_writes[name]:
        problems.append(f"{name}: {len(vers)} versions for {acked_writes[name]} acknowledged writes + create")
    for v in vers:
        g = call("GET", f"/v1/secrets/{name}?version={v}")
        val = (g.json() or {}).get("value")
        mark("kms_readback", val)
        if g.status != 200 or ((name, v) in known and known[(name, v)] != val):
            problems.append(f"{name} v{v}: {g!r}")
failed_creates = sum(1 for s in created.values() if s != 201)
figure("secrets_checked_for_half_written_versions", len(touched))
figure("failed_creates_checked_absent", failed_creates)
for p in problems[:10]:
    print(f"  problem: {p}")
check(f"no half-written version: {len(touched)} secrets have contiguous versions that all read back, "
      f"write targets one version per acknowledged write, {failed_creates} failed creates left nothing",
      not problems, f"{len(problems)} problems")
check("API and controller never restarted (same pids, alive)",
      pid_of("api") == api_pid and pid_of("controller") == ctl_pid)
kubectl("delete", "namespace", NS, "--wait=false")
figure("wall_s", f"{time.monotonic() - T0:.0f}")
finish()
