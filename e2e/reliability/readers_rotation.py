#!/usr/bin/env python3
"""Readers during rotation (issue 8): many clients read and verify automatic secrets while they
rotate every few seconds with a short grace period (DESIGN.md §3-§4, §6-§7).

Usage: readers_rotation.py [seconds]   (HV_RUN_DIR, HV_API_PORT; default 40 s of reading)
Needs the controller started with VAULT_MIN_ROTATION_INTERVAL=1s (HV_CONTROLLER_ENV of
scripts/run.sh) for the 4 s VaultSecret below.

Two secrets, both automatic, interval 4 s, gracePeriod 3 s: a VaultSecret (rotated by the
controller's reconcile) and an API-owned secret (rotated by the controller's API sweep, every
VAULT_API_SWEEP_INTERVAL = 5 s by default). 24 reader threads, for the duration, each in a loop:
GET /v1/secrets/{name} (remembering every value it saw with its version and when), then
POST .../verify with one of: the value just read; a value of an older version this reader saw
(mostly the previous one, so both "inside grace" and "after grace" cases occur); a wrong value;
and now and then GET ?version= of an older version. Every request keeps its start and end time.

Afterwards the version history (GET .../versions, admin) gives, per version p, created_at,
superseded_at and expires_at = superseded_at + grace. A request is judged only when its whole
[start, end] lies on one side of a boundary, with a margin M = 0.2 s for clock reading and
scheduling (client and API share one clock here):
  must be valid     end <= expires_at(p) - M            (current, or previous inside its grace)
  must be invalid   start >= max(expires_at(p), superseded_at(p) + 1 s + L) + M   (after grace)
  not judged        anything in between (counted as `verify_in_margin`)
where L is the largest PostgreSQL replay lag sampled on the primary during the run (DESIGN §6
lets an API replica serve a new version up to "replication lag + 1 s" after it committed, so
until then it may still take p for current). With grace 3 s the first term dominates.
Reads: any non-200 or connection error is a failed read; a version must always come with the
same value; a read that started more than 1 s + L + M after version p+1 was created must not
return p or older (stale read). ?version=p: inside grace (as above) it must answer 200 with
p's value; after grace it must not answer 200.

Figures as `FIGURE <name> <value>`; checks `ok   - ` / `FAIL - `; last line
`readers during rotation: N passed, M failed`. Positive control: judged again with every expiry
moved 1.5 s later (earlier), the same answers must show rejections inside "grace" (acceptances
after it), so both counts can be non-zero. Every plaintext value seen or presented is
appended to $HV_LEAK_MARKERS. Deletes both secrets at the end (the namespace stays, empty).
"""
import base64
import http.client
import json
import os
import random
import re
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import yaml

import suite
from suite import ENV, PORT, RUN, check, figure, leak_marker, load_env, prepare

load_env()
DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
READERS = int(os.environ.get("HV_READERS", "24"))
INTERVAL, GRACE = 4, 3
M = 0.2                  # s, margin on every boundary
GROUP = "vault.hyperiondb.io/v1alpha1"


def finish():
    suite.finish("readers during rotation")


TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$")


def ts(s):
    """RFC 3339 UTC -> float seconds since the epoch (µs exact in the fraction)."""
    if s is None:
        return None
    import calendar
    m = TS_RE.match(s)
    y, mo, d, h, mi, se, frac = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(se), 0, 0, 0))
    return secs + int((frac or "0")[:6].ljust(6, "0")) / 1e6


class Client:
    """A keep-alive connection to the API (one per reader thread); reconnects after an error."""

    def __init__(self):
        self.conn = None

    def req(self, method, path, body=None, auth=False):
        data, h = prepare(body, auth, close=False)
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=15)
            try:
                self.conn.request(method, path, data, h)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # a keep-alive connection the server closed while idle: retried once, on a new one
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        try:
            j = json.loads(raw) if raw else None
        except ValueError:
            j = None
        return r.status, j


def kube_client():
    cfg = yaml.safe_load(open(ENV["KUBECONFIG"]))
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg.get("current-context"))
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    tmp = tempfile.mkdtemp(prefix="hv-readers-kube-")

    def material(data_key, file_key, src, name):
        if src.get(file_key):
            return src[file_key]
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(base64.b64decode(src[data_key]))
        return p

    sc = ssl.create_default_context(cafile=material("certificate-authority-data", "certificate-authority",
                                                    cluster, "ca.crt"))
    if user.get("client-certificate-data") or user.get("client-certificate"):
        sc.load_cert_chain(material("client-certificate-data", "client-certificate", user, "c.crt"),
                           material("client-key-data", "client-key", user, "c.key"))
    for n in os.listdir(tmp):
        os.unlink(os.path.join(tmp, n))
    os.rmdir(tmp)
    m = re.match(r"https://([^:/]+):(\d+)", cluster["server"])
    host, port = m.group(1), int(m.group(2))

    def req(method, path, body=None):
        for _ in range(30):
            try:
                c = http.client.HTTPSConnection(host, port, context=sc, timeout=10)
                h = {"Accept": "application/json"}
                if user.get("token"):
                    h["Authorization"] = "Bearer " + user["token"]
                data = None
                if body is not None:
                    data, h["Content-Type"] = json.dumps(body).encode(), "application/json"
                c.request(method, path, data, h)
                r = c.getresponse()
                raw = r.read()
                c.close()
                return r.status, (json.loads(raw) if raw else None)
            except (OSError, http.client.HTTPException, ValueError):
                time.sleep(0.5)
        return None, None
    return req


# ---------------------------------------------------------------- setup
t_start = time.time()
tag = secrets.token_hex(3)
NS = f"rel-readers-{tag}"
kube = kube_client()
admin = Client()
controller_start = open(os.path.join(RUN, "controller.start")).read()
if not check("setup: controller started with VAULT_MIN_ROTATION_INTERVAL=1s (HV_CONTROLLER_ENV)",
             "VAULT_MIN_ROTATION_INTERVAL=1s" in controller_start, f"a {INTERVAL}s interval would be InvalidSpec"):
    finish()
st, _ = kube("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
check("setup: namespace created", st == 201, st)
st, j = kube("POST", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets", {
    "apiVersion": GROUP, "kind": "VaultSecret", "metadata": {"name": "key", "namespace": NS},
    "spec": {"kind": "Automatic", "rotationInterval": f"{INTERVAL}s", "gracePeriod": f"{GRACE}s",
             "generator": {"length": 40, "charset": "alphanumeric"}, "deletionPolicy": "Delete"}})
check("setup: VaultSecret created", st == 201, f"{st} {j}")
VS_NAME = f"{NS}/key"
API_NAME = f"rel/readers-{tag}/key"
st, j = admin.req("POST", "/v1/secrets", {"name": API_NAME, "kind": "automatic", "rotation_interval_secs": INTERVAL,
                                          "grace_period_secs": GRACE,
                                          "generator": {"length": 40, "charset": "alphanumeric"}}, auth=True)
check("setup: API-owned automatic secret created", st == 201, f"{st} {j}")
NAMES = [VS_NAME, API_NAME]
ok_ready = False
for _ in range(120):
    st, j = admin.req("GET", f"/v1/secrets/{VS_NAME}")
    if st == 200:
        ok_ready = True
        break
    time.sleep(0.25)
if not check("setup: the VaultSecret's value is served", ok_ready):
    finish()

# wrong values presented to verify: a few fixed ones (each is a leak marker)
WRONG = ["rrw" + secrets.token_hex(20) for _ in range(6)]
for w in WRONG:
    leak_marker("readers_wrong", w)

# ---------------------------------------------------------------- replication lag sampler
lag_samples = []
stop = threading.Event()


def lag_sampler():
    sql = "SELECT coalesce(extract(epoch FROM max(replay_lag)), 0) FROM pg_stat_replication"
    env = {**os.environ, "PGPASSWORD": ENV.get("PG_SUPERPASSWORD", "")}
    while not stop.is_set():
        try:
            out = subprocess.run([os.path.join(ENV["PG_BIN_DIR"], "psql"), "-qtA", "-h", ENV["PG_HOST"], "-p",
                                  ENV["PG_PRIMARY_PORT"], "-U", ENV["PG_SUPERUSER"], "-d", ENV["PG_DATABASE"],
                                  "-c", sql], env=env, capture_output=True, text=True, timeout=5).stdout.strip()
            lag_samples.append(float(out or 0))
        except (subprocess.SubprocessError, ValueError, OSError):
            pass
        stop.wait(1.0)


# ---------------------------------------------------------------- readers
log_lock = threading.Lock()
reads = []        # (name, t0, t1, status, version|None, error|None)
vreads = []       # versioned reads: (name, t0, t1, version asked, status, value matches?)
verifies = []     # (name, t0, t1, presented version | None for a wrong value, status, valid, version)
values = {}       # (name, version) -> value
conflicts = []


def reader(idx):
    rnd = random.Random(idx)
    c = Client()
    seen = {n: {} for n in NAMES}   # this reader's memory: name -> {version: (value, first seen)}
    my_reads, my_vreads, my_verifies = [], [], []
    while not stop.is_set():
        name = rnd.choice(NAMES)
        t0 = time.time()
        try:
            st, j = c.req("GET", f"/v1/secrets/{name}")
            err = None
        except (OSError, http.client.HTTPException) as e:
            st, j, err = None, None, f"{type(e).__name__}: {e}"
            c = Client()
        t1 = time.time()
        v = j.get("version") if st == 200 and isinstance(j, dict) else None
        my_reads.append((name, t0, t1, st, v, err))
        if v is None:
            continue
        value = j.get("value")
        with log_lock:
            known = values.setdefault((name, v), value)
        if known != value:
            conflicts.append(f"{name} v{v}: two different values")
        if v not in seen[name]:
            seen[name][v] = (value, t1)
            leak_marker("readers_value", value)
        # what to verify
        older = sorted((p for p in seen[name] if p < v), reverse=True)
        r = rnd.random()
        if r < 0.3 or not older:
            pv, pval = v, value
        elif r < 0.9:
            pv = older[0] if rnd.random() < 0.7 or len(older) == 1 else rnd.choice(older[1:4])
            pval = seen[name][pv][0]
        else:
            pv, pval = None, rnd.choice(WRONG)
        t0 = time.time()
        try:
            st, j = c.req("POST", f"/v1/secrets/{name}/verify", {"value": pval})
        except (OSError, http.client.HTTPException):
            st, j = None, None
            c = Client()
        t1 = time.time()
        valid = j.get("valid") if st == 200 and isinstance(j, dict) else None
        my_verifies.append((name, t0, t1, pv, st, valid, (j or {}).get("version") if isinstance(j, dict) else None))
        if older and rnd.random() < 0.15:
            pv = older[0] if rnd.random() < 0.6 else rnd.choice(older)
            t0 = time.time()
            try:
                st, j = c.req("GET", f"/v1/secrets/{name}?version={pv}")
            except (OSError, http.client.HTTPException):
                st, j = None, None
                c = Client()
            t1 = time.time()
            same = st == 200 and isinstance(j, dict) and j.get("value") == seen[name][pv][0] and j.get("version") == pv
            my_vreads.append((name, t0, t1, pv, st, same))
        time.sleep(rnd.uniform(0.02, 0.06))
    with log_lock:
        reads.extend(my_reads)
        vreads.extend(my_vreads)
        verifies.extend(my_verifies)


threads = [threading.Thread(target=lag_sampler, daemon=True)]
threads += [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
t_read0 = time.time()
for t in threads:
    t.start()
time.sleep(DURATION)
stop.set()
for t in threads:
    t.join(timeout=60)
t_read1 = time.time()
time.sleep(0.5)

# ---------------------------------------------------------------- analysis
hist = {}
for n in NAMES:
    st, j = admin.req("GET", f"/v1/secrets/{n}/versions", auth=True)
    if not check(f"version history of {n}", st == 200, st):
        finish()
    hist[n] = {v["version"]: (ts(v["created_at"]), ts(v["superseded_at"]), ts(v["expires_at"]))
               for v in j["versions"]}

L = max(lag_samples, default=0.0)
rotations = {n: sum(1 for v, (c, _, _) in hist[n].items() if t_read0 <= c <= t_read1) for n in NAMES}

failed_reads = [r for r in reads if r[3] != 200]
stale = []
staleness_max = 0.0
for name, t0, t1, st, v, _ in reads:
    if v is None:
        continue
    newer = hist[name].get(v + 1)
    if newer and t0 > newer[0]:
        staleness_max = max(staleness_max, t0 - newer[0])
        if t0 > newer[0] + 1.0 + L + M:
            stale.append(f"{name}: read started {t0 - newer[0]:.2f}s after v{v + 1} was created returned v{v}")


def judge(name, pv, t0, t1, shift=0.0):
    """'valid' | 'invalid' | None (in a margin): what the answer must be for version pv's value.
    `shift` moves every expiry (positive controls only)."""
    _, sup, exp = hist[name][pv]
    if exp is None or t1 <= exp + shift - M:
        return "valid"
    if t0 >= max(exp + shift, sup + 1.0 + L) + M:
        return "invalid"
    return None


def control(shift):
    """(rejected though judged valid, accepted though judged invalid) with every expiry moved."""
    rej = acc = 0
    for name, t0, t1, pv, st, valid, rv in verifies:
        if st == 200 and pv is not None and valid is not None:
            must = judge(name, pv, t0, t1, shift)
            rej += must == "valid" and not valid
            acc += must == "invalid" and bool(valid)
    return rej, acc


n_cur = n_prev_in = n_after = n_margin = n_wrong = 0
cur_rejected, prev_rejected, after_accepted, wrong_accepted, wrong_version, verify_errors = [], [], [], [], [], []
for name, t0, t1, pv, st, valid, rv in verifies:
    if st != 200 or valid is None:
        verify_errors.append(f"{name}: verify -> {st}")
        continue
    if pv is None:
        n_wrong += 1
        if valid:
            wrong_accepted.append(f"{name}: a wrong value verified (version {rv})")
        continue
    if valid and rv != pv:
        wrong_version.append(f"{name}: v{pv}'s value verified as version {rv}")
    must = judge(name, pv, t0, t1)
    sup = hist[name][pv][1]
    if must == "valid":
        if sup is not None and t0 >= sup:
            n_prev_in += 1
            if not valid:
                prev_rejected.append(f"{name}: v{pv} rejected {t0 - sup:.2f}s after it was superseded "
                                     f"(grace ends {hist[name][pv][2] - t1:.2f}s after the answer)")
        else:
            n_cur += 1
            if not valid:
                cur_rejected.append(f"{name}: v{pv} rejected while current or just superseded")
    elif must == "invalid":
        n_after += 1
        if valid:
            after_accepted.append(f"{name}: v{pv} accepted {t0 - hist[name][pv][2]:.2f}s after its grace ended")
    else:
        n_margin += 1

vr_in = vr_after = 0
vr_in_failed, vr_after_served = [], []
for name, t0, t1, pv, st, same in vreads:
    must = judge(name, pv, t0, t1)
    if must == "valid":
        vr_in += 1
        if not same:
            vr_in_failed.append(f"{name}?version={pv} -> {st} inside grace")
    elif must == "invalid":
        vr_after += 1
        if st == 200:
            vr_after_served.append(f"{name}?version={pv} served {t0 - hist[name][pv][2]:.2f}s after grace")

lat = sorted(r[2] - r[1] for r in reads)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


figure("readers", READERS)
figure("read_seconds", f"{t_read1 - t_read0:.1f}")
figure("rotations_during_reads", " ".join(f"{n}={rotations[n]}" for n in NAMES))
figure("reads", len(reads))
figure("read_latency_ms_p50_p99", f"{pct(lat, 0.5) * 1000:.1f} {pct(lat, 0.99) * 1000:.1f}")
figure("failed_reads", len(failed_reads))
figure("read_value_conflicts", len(conflicts))
figure("replay_lag_max_seconds", f"{L:.3f}")
figure("read_staleness_max_seconds", f"{staleness_max:.3f}")
figure("stale_reads_beyond_lag_plus_1s", len(stale))
figure("verifies", len(verifies))
figure("verify_errors", len(verify_errors))
figure("verify_current_checked", n_cur)
figure("verify_current_rejected", len(cur_rejected))
figure("verify_prev_in_grace_checked", n_prev_in)
figure("verify_prev_in_grace_rejected", len(prev_rejected))
figure("verify_after_grace_checked", n_after)
figure("verify_after_grace_accepted", len(after_accepted))
figure("verify_in_margin_not_judged", n_margin)
figure("verify_wrong_value_checked", n_wrong)
figure("verify_wrong_value_accepted", len(wrong_accepted))
figure("versioned_reads_in_grace", f"{vr_in} failed={len(vr_in_failed)}")
figure("versioned_reads_after_grace", f"{vr_after} served={len(vr_after_served)}")
for p in (failed_reads[:5] + conflicts[:5] + stale[:5] + verify_errors[:5] + cur_rejected[:5] + prev_rejected[:5]
          + after_accepted[:5] + wrong_accepted[:5] + wrong_version[:5] + vr_in_failed[:5] + vr_after_served[:5]):
    print(f"  problem: {p}")

late_rej, _ = control(+1.5)
_, early_acc = control(-1.5)
check(f"positive control: judged with every grace 1.5 s longer, {late_rej} verifies count as rejected inside "
      f"grace; 1.5 s shorter, {early_acc} as accepted after it", late_rej > 0 and early_acc > 0)
check(f">= 4 rotations of each secret while reading "
      f"({', '.join(f'{n}: {r}' for n, r in rotations.items())})", all(r >= 4 for r in rotations.values()))
check(f"failed reads: 0 of {len(reads)}", not failed_reads)
check("each version always read with the same value", not conflicts)
check(f"no read returned an older version more than 1 s + replay lag ({L:.3f}s) + {M}s after a newer one was "
      f"created", not stale)
check(f"verify answered 200 every time ({len(verifies)})", not verify_errors)
check(f"verify of the current value: never rejected ({n_cur} judged)", not cur_rejected and n_cur > 0)
check(f"verify of a previous value inside its grace: never rejected ({n_prev_in} judged)",
      not prev_rejected and n_prev_in >= 50)
check(f"verify of a value after its grace ended: never accepted ({n_after} judged)",
      not after_accepted and n_after >= 50)
check(f"verify of a wrong value: never accepted ({n_wrong})", not wrong_accepted and n_wrong > 0)
check("a valid verify names the version the value belongs to", not wrong_version)
check(f"?version= of a previous version: served inside grace ({vr_in}), refused after ({vr_after})",
      not vr_in_failed and not vr_after_served and vr_in > 0 and vr_after > 0)

# ---------------------------------------------------------------- clean up
admin.req("DELETE", f"/v1/secrets/{API_NAME}", auth=True)
kube("DELETE", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets/key")
figure("wall_seconds", f"{time.time() - t_start:.0f}")
finish()
