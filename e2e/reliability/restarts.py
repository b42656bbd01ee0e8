#!/usr/bin/env python3
"""Restarts (issue 8, "Faults"): kill -9 the controller mid-rotation and the API mid-request,
repeatedly, and restart the kube-apiserver, while rotations are due; then prove from the version
history that no rotation was done twice, none was lost, versions stayed in order, and every API
request answered 2xx before a kill is durable (DESIGN.md §3-§4, §7-§8).

Usage: restarts.py        (HV_RUN_DIR, HV_API_PORT, HV_METRICS_PORT; HV_RUN_DIR/env for the rest)
Needs the controller started with VAULT_MIN_ROTATION_INTERVAL=1s (HV_CONTROLLER_ENV of
scripts/run.sh): the suite's VaultSecrets rotate every 3-8 s.

What runs (~2.5 min), in one fresh namespace and one fresh API name prefix:
  S  6 VaultSecrets, Automatic, rotationInterval 3-5 s, gracePeriod 10s: schedule only.
  N  4 VaultSecrets, Automatic, rotationInterval 8 s: schedule + a stream of rotate-now nonces
     (one outstanding per object: the next is set once status.lastRotateRequest acknowledged the
     last) + POST /v1/secrets/{name}/rotate now and then (VaultSecret-owned secrets accept it).
  A  4 API-owned automatic secrets (POST /v1/secrets), rotation_interval_secs 3-4: rotated by the
     controller's API sweep + POST .../rotate.
  Load on the API all along: readers (GET + verify of the value just read), writers (create
  manual secrets, PUT new values), the rotator above. Every request is recorded with its start
  and end time and outcome.
  Faults, in random order 2-5 s apart: 5x SIGKILL of the controller (every other one aimed at the
  next due slot of an S secret, + 0-300 ms), restarted after 0.1-7 s by run/controller.start;
  4x SIGKILL of the API while >= 2 requests are in flight, restarted after 0.2-2 s by
  run/api.start; 2x `testenv apiserver-restart` (its graceful stop takes ~10 s, so the controller
  cannot renew its Lease in time and exits, as documented; the suite restarts it as a kubelet
  would and reports it). Then 12 s without faults, and the analysis.

Definitions (schedule rules: core/src/schedule.rs, store/src/secrets.rs `rotate`). Each version
v+1 of a secret is replayed against the slot S_v the database held after version v: v1 created at
c1 gives S_1 = c1 + interval + spread(name) (spread = sha256(name)[0..8] mod min(interval/10, 5
min), in µs); a version created at t >= S_v is a *scheduled* rotation serving slot S_v, and the
next slot is the first S_v + k*interval > t; one created at t < S_v is *forced* (a rotate-now
nonce or an API rotate) and re-anchors: next slot = t + interval + spread. The replayed final
slot must equal the database's next_rotation_at (the model is the product's).
  double rotation  a forced version that no request explains: requests are the API rotates
                   (a 2xx names its version exactly; one cut by a kill may explain one version
                   created inside its [start, end]) and the nonces (each explains at most one
                   version created inside [set, acknowledged]). Two versions for one slot or one
                   request always leave one unexplained.
  lost rotation    a slot whose version came later than BOUND (10 s; +5 s sweep period for
                   API-owned) after it was due, not counting time the controller was not leading
                   or the apiserver was restarting; or a slot still pending BOUND after it was
                   due at the end; or a nonce never acknowledged, or acknowledged without any
                   version created after it was set (answered by an older version).
  out of order     versions not exactly 1..n, created_at not strictly increasing, or superseded_at
                   of v != created_at of v+1, or expires_at != superseded_at + grace.
  durability       every 2xx create / PUT / rotate is in the history afterwards with the version
                   (and value) it acknowledged; a GET value is the same for a (name, version)
                   everywhere; verify of a value just read is valid.
  kill cuts        requests in flight when the API was killed end as connection errors (or 2xx
                   that made it out before the kill), never a wrong answer, a 5xx or a hang.

Positive control: the same matching, without the API rotates' acknowledgements, must find
unexplained forced versions (so the double count can be non-zero). Reproduce a run with
HV_RESTARTS_SEED=<seed> (printed first; thread timing still varies).
Figures as `FIGURE <name> <value>`; checks `ok   - ` / `FAIL - `; ends with
`restarts: N passed, M failed`. Every plaintext value seen is appended to $HV_LEAK_MARKERS.
Leaves the controller and the API running and healthy; deletes what it created (the namespace
stays, empty: no kube-controller-manager here to finish a namespace deletion).
"""
import base64
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import yaml

import suite
from suite import ENV, PORT, ROOT, RUN, RUN_DIR, check, figure, leak_marker, load_env, prepare, say

load_env()
METRICS_PORT = int(os.environ.get("HV_METRICS_PORT", "8080"))
SEED = int(os.environ.get("HV_RESTARTS_SEED", str(int(time.time()))))
random.seed(SEED)

BOUND = 10.0            # s: a due slot must have its version this soon (downtime excluded)
SWEEP = 5.0             # s: VAULT_API_SWEEP_INTERVAL (default) for API-owned secrets
GRACE = 10              # s: grace period of every automatic secret here
ANNOTATION = "vault.hyperiondb.io/rotate-now"
GROUP = "vault.hyperiondb.io/v1alpha1"


def note(s):
    say(f"  # {s}")


def finish():
    suite.finish("restarts")


# ---------------------------------------------------------------- time
TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def ts_us(s):
    """RFC 3339 -> integer microseconds since the epoch (exact; the store keeps µs)."""
    if s is None:
        return None
    m = TS_RE.match(s)
    if not m:
        raise ValueError(f"bad timestamp {s!r}")
    import calendar
    y, mo, d, h, mi, se, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(se), 0, 0, 0))
    us = int((frac or "0")[:6].ljust(6, "0"))
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        secs -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return secs * 1_000_000 + us


def now_us():
    return time.time_ns() // 1000


# ---------------------------------------------------------------- schedule model (core/src/schedule.rs)
def spread_us(identity, interval_us):
    window = min(interval_us // 10, 300_000_000)
    if window == 0:
        return 0
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "big") % window


def next_after(scheduled, interval_us, now):
    elapsed = now - scheduled
    periods = 1 if elapsed < 0 else elapsed // interval_us + 1
    return scheduled + periods * interval_us


# ---------------------------------------------------------------- the vault API
class ConnErr(Exception):
    def __init__(self, kind, detail):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # refused | cut | timeout


def api(method, path, body=None, auth=False, timeout=15):
    """One request on its own connection. Returns (status, parsed JSON or None, raw bytes)."""
    data, h = prepare(body, auth)
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError as e:
            raise ConnErr("refused", e)
        except socket.timeout as e:
            raise ConnErr("timeout", e)
        try:
            conn.request(method, path, data, h)
            r = conn.getresponse()
            raw = r.read()
        except socket.timeout as e:
            raise ConnErr("timeout", e)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise ConnErr("cut", f"{type(e).__name__} {e}")
    finally:
        conn.close()
    try:
        j = json.loads(raw) if raw else None
    except ValueError:
        j = None
    return r.status, j, raw


# ---------------------------------------------------------------- the Kubernetes API
class Kube:
    def __init__(self, kubeconfig):
        cfg = yaml.safe_load(open(kubeconfig))
        ctx_name = cfg.get("current-context")
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.tmp = tempfile.mkdtemp(prefix="hv-restarts-kube-")
        os.chmod(self.tmp, 0o700)

        def material(data_key, file_key, src, name):
            if src.get(file_key):
                return src[file_key]
            p = os.path.join(self.tmp, name)
            with open(p, "wb") as f:
                f.write(base64.b64decode(src[data_key]))
            return p

        ca = material("certificate-authority-data", "certificate-authority", cluster, "ca.crt")
        self.ssl = ssl.create_default_context(cafile=ca)
        self.token = user.get("token")
        if user.get("client-certificate-data") or user.get("client-certificate"):
            self.ssl.load_cert_chain(material("client-certificate-data", "client-certificate", user, "c.crt"),
                                     material("client-key-data", "client-key", user, "c.key"))
        m = re.match(r"https://([^:/]+):(\d+)", cluster["server"])
        self.host, self.port = m.group(1), int(m.group(2))

    def close(self):
        for n in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, n))
        os.rmdir(self.tmp)

    def req(self, method, path, body=None, ctype="application/json", timeout=10):
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = ctype
        try:
            conn.request(method, path, data, h)
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, None

    def req_retry(self, method, path, body=None, ctype="application/json", deadline=60):
        end = time.time() + deadline
        while True:
            try:
                st, j = self.req(method, path, body, ctype)
                if st < 500:
                    return st, j
            except (OSError, http.client.HTTPException):
                st, j = None, None
            if time.time() > end:
                return st, j
            time.sleep(0.3)


kube = Kube(ENV["KUBECONFIG"])


# ---------------------------------------------------------------- processes
down_lock = threading.Lock()
ctrl_down = []       # [start_us, end_us or None]: controller not leading
apiserver_down = []  # [start_us, end_us]


def read_pid(name):
    try:
        return int(open(os.path.join(RUN, f"{name}.pid")).read().strip())
    except (OSError, ValueError):
        return None


def alive(pid):
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def kill9(name):
    pid = read_pid(name)
    if not alive(pid):
        return False
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if not alive(pid):
            break
        time.sleep(0.01)
    return True


def start(name):
    # The launchers take AWS_* (KMS credentials and region) from the caller's environment, as
    # scripts/run.sh had them from the testenv env file: give them the same.
    subprocess.run(["bash", os.path.join(RUN, f"{name}.start")], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})


def controller_leading():
    try:
        c = http.client.HTTPConnection("127.0.0.1", METRICS_PORT, timeout=2)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        c.close()
        return re.search(r"^hyperion_vault_controller_leader 1$", body, re.M) is not None
    except (OSError, http.client.HTTPException):
        return False


def wait_controller(timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if controller_leading():
            return True
        if not alive(read_pid("controller")):
            return False
        time.sleep(0.05)
    return False


def api_ready():
    try:
        st, _, _ = api("GET", "/readyz", timeout=2)
        return st == 200
    except ConnErr:
        return False


def wait_api(timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if api_ready():
            return True
        time.sleep(0.05)
    return False


def down_for(intervals_list, a, b):
    """Seconds of [a, b] (µs) covered by the union of the given [start, end] intervals."""
    iv = sorted((s, e if e is not None else now_us()) for s, e in intervals_list)
    total, cur_s, cur_e = 0, None, None
    for s, e in iv:
        s, e = max(s, a), min(e, b)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def downtime(a, b):
    with down_lock:
        return down_for([tuple(x) for x in ctrl_down] + [tuple(x) for x in apiserver_down], a, b)


# ---------------------------------------------------------------- setup
tag = secrets.token_hex(3)
NS = f"rel-restarts-{tag}"
PREFIX = f"rel/restarts-{tag}"
t_start = time.time()
note(f"seed {SEED}; namespace {NS}; API prefix {PREFIX}")

pid = read_pid("controller")
check("setup: the controller is running and leading", alive(pid) and wait_controller(30))
check("setup: the API is ready", wait_api(30))
min_iv = open(os.path.join(RUN, "controller.start")).read()
if not check("setup: controller started with VAULT_MIN_ROTATION_INTERVAL=1s (HV_CONTROLLER_ENV)",
             "VAULT_MIN_ROTATION_INTERVAL=1s" in min_iv, "3-8 s intervals would be InvalidSpec"):
    finish()
m = re.search(r"VAULT_API_SWEEP_INTERVAL=(\d+)s", min_iv)
if m:
    SWEEP = float(m.group(1))

st, _ = kube.req_retry("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
check("setup: namespace created", st == 201, st)

# name -> dict(group, vault, interval_us, owner)
SECRETS = {}
for i, iv in enumerate([3, 3, 4, 4, 5, 5]):
    SECRETS[f"s{i}"] = {"group": "S", "interval": iv}
for i in range(4):
    SECRETS[f"n{i}"] = {"group": "N", "interval": 8}
for key, s in SECRETS.items():
    s["vault"] = f"{NS}/{key}"
    s["interval_us"] = s["interval"] * 1_000_000
    body = {"apiVersion": GROUP, "kind": "VaultSecret", "metadata": {"name": key, "namespace": NS},
            "spec": {"kind": "Automatic", "rotationInterval": f"{s['interval']}s", "gracePeriod": f"{GRACE}s",
                     "generator": {"length": 40, "charset": "alphanumeric"}, "deletionPolicy": "Delete"}}
    st, j = kube.req_retry("POST", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets", body)
    if not check(f"setup: create VaultSecret {key} (interval {s['interval']}s)", st == 201, f"{st} {j}"):
        finish()

value_lock = threading.Lock()
values = {}            # (vault name, version) -> value, from every 2xx that carried one
wrong = []             # wrong answers (descriptions)


def remember(name, version, value, where):
    leak_marker(f"restarts_{where}", value)
    with value_lock:
        old = values.setdefault((name, version), value)
    if old != value:
        wrong.append(f"{where}: {name} v{version} answered a different value than before")
        return False
    return True


for i, iv in enumerate([3, 3, 4, 4]):
    name = f"{PREFIX}/a{i}"
    t0 = now_us()
    st, j, raw = api("POST", "/v1/secrets", {"name": name, "kind": "automatic", "rotation_interval_secs": iv,
                                              "grace_period_secs": GRACE,
                                              "generator": {"length": 40, "charset": "alphanumeric"}}, auth=True)
    if not check(f"setup: create API-owned automatic {name} ({iv}s)", st == 201, f"{st} {raw[:200]!r}"):
        finish()
    remember(name, 1, j["value"], "create")
    SECRETS[f"a{i}"] = {"group": "A", "interval": iv, "vault": name, "interval_us": iv * 1_000_000}

# wait until every VaultSecret is Ready with version 1
deadline = time.time() + 60
ready = set()
while time.time() < deadline and len(ready) < 10:
    st, j = kube.req_retry("GET", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets")
    for it in (j or {}).get("items", []):
        conds = (it.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            ready.add(it["metadata"]["name"])
    time.sleep(0.3)
if not check("setup: all 10 VaultSecrets Ready", len(ready) == 10, f"ready: {sorted(ready)}"):
    finish()

# ---------------------------------------------------------------- workers
stop = threading.Event()
stop_nonces = threading.Event()
stop_time = [0.0]
stop_poller = threading.Event()   # last: acknowledgements of the last nonces are still watched
req_lock = threading.Lock()
requests_log = []      # dicts: kind, name, t0, t1 (µs), outcome (ok|refused|cut|timeout|http), status, extra
api_rotations = []     # dicts: name, t0, t1, outcome, version, created_at
writes = {}            # name -> list of dicts(op, t0, t1, outcome, version, value)
nonces = []            # dicts: key, nonce, t0, t1, tack


inflight = [0]


def record(kind, name, t0, outcome, status=None, **extra):
    r = {"kind": kind, "name": name, "t0": t0, "t1": now_us(), "outcome": outcome, "status": status, **extra}
    with req_lock:
        requests_log.append(r)
    return r


def call(kind, name, method, path, body=None, auth=False):
    t0 = now_us()
    with req_lock:
        inflight[0] += 1
    try:
        st, j, raw = api(method, path, body, auth)
    except ConnErr as e:
        return record(kind, name, t0, e.kind, detail=str(e)), None
    finally:
        with req_lock:
            inflight[0] -= 1
    outcome = "ok" if 200 <= st < 300 else "http"
    if kind == "rotate" and st == 409:
        outcome = "conflict"  # "kept rotating concurrently; retry": allowed, creates no version
    r = record(kind, name, t0, outcome, st, detail="" if st < 300 else raw[:200].decode("utf-8", "replace"))
    return r, j


AUTOMATIC = [s["vault"] for s in SECRETS.values()]


def reader(idx):
    rnd = random.Random(SEED * 100 + idx)
    while not stop.is_set():
        name = rnd.choice(AUTOMATIC)
        r, j = call("read", name, "GET", f"/v1/secrets/{name}")
        if r["outcome"] == "ok":
            if not (isinstance(j, dict) and j.get("name") == name and isinstance(j.get("version"), int)
                    and isinstance(j.get("value"), str)):
                r["outcome"] = "wrong"
                wrong.append(f"read {name}: malformed 200 body")
                continue
            if not remember(name, j["version"], j["value"], "read"):
                r["outcome"] = "wrong"
            t_read = r["t1"]
            r2, j2 = call("verify", name, "POST", f"/v1/secrets/{name}/verify", {"value": j["value"]})
            # judged only if it ran well inside the grace period a just-read value has left
            if r2["outcome"] == "ok" and r2["t1"] - t_read < (GRACE - 3) * 1_000_000:
                if not (isinstance(j2, dict) and j2.get("valid") is True and j2.get("version") == j["version"]):
                    r2["outcome"] = "wrong"
                    wrong.append(f"verify {name} v{j['version']} just read: {j2}")
        time.sleep(rnd.uniform(0.02, 0.1))


def writer(idx):
    rnd = random.Random(SEED * 100 + 50 + idx)
    mine = []   # names whose create was acknowledged
    k = 0
    while not stop.is_set():
        if not mine or rnd.random() < 0.3:
            name = f"{PREFIX}/w{idx}-{k}"
            k += 1
            value = "rsw" + secrets.token_hex(20)
            leak_marker("restarts_write", value)
            r, j = call("create", name, "POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value}, True)
            op = {"op": "create", "t0": r["t0"], "t1": r["t1"], "outcome": r["outcome"], "value": value,
                  "version": None}
            if r["outcome"] == "ok":
                if r["status"] != 201 or not isinstance(j, dict) or j.get("version") != 1 or j.get("name") != name:
                    r["outcome"] = op["outcome"] = "wrong"
                    wrong.append(f"create {name}: {r['status']} {j}")
                else:
                    op["version"] = 1
                    mine.append(name)
            writes.setdefault(name, []).append(op)
        else:
            name = rnd.choice(mine)
            value = "rsw" + secrets.token_hex(20)
            leak_marker("restarts_write", value)
            r, j = call("put", name, "PUT", f"/v1/secrets/{name}", {"value": value}, True)
            op = {"op": "put", "t0": r["t0"], "t1": r["t1"], "outcome": r["outcome"], "value": value, "version": None}
            if r["outcome"] == "ok":
                if not isinstance(j, dict) or not isinstance(j.get("version"), int):
                    r["outcome"] = op["outcome"] = "wrong"
                    wrong.append(f"put {name}: {j}")
                else:
                    op["version"] = j["version"]
            writes[name].append(op)
        time.sleep(rnd.uniform(0.05, 0.2))


ROTATABLE = [s["vault"] for s in SECRETS.values() if s["group"] in ("A", "N")]


def rotator():
    rnd = random.Random(SEED * 100 + 80)
    while not stop.is_set():
        name = rnd.choice(ROTATABLE)
        r, j = call("rotate", name, "POST", f"/v1/secrets/{name}/rotate", None, True)
        rec = {"name": name, "t0": r["t0"], "t1": r["t1"], "outcome": r["outcome"], "status": r["status"],
               "version": None, "created_at": None}
        if r["outcome"] == "ok":
            if not (isinstance(j, dict) and isinstance(j.get("version"), int) and isinstance(j.get("value"), str)
                    and j.get("created_at")):
                r["outcome"] = rec["outcome"] = "wrong"
                wrong.append(f"rotate {name}: {j}")
            else:
                rec["version"], rec["created_at"] = j["version"], ts_us(j["created_at"])
                remember(name, j["version"], j["value"], "rotate")
        with req_lock:
            api_rotations.append(rec)
        time.sleep(rnd.uniform(0.5, 1.5))


status_lock = threading.Lock()
status_seen = {}       # key -> (lastRotateRequest, currentVersion)
ack_seen = {}          # (key, nonce) -> first µs the poller saw it acknowledged


def status_poller():
    while not stop_poller.is_set():
        try:
            st, j = kube.req("GET", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets", timeout=5)
        except (OSError, http.client.HTTPException):
            st, j = None, None
        t = now_us()
        if st == 200 and j:
            with status_lock:
                for it in j.get("items", []):
                    key = it["metadata"]["name"]
                    s = it.get("status") or {}
                    status_seen[key] = (s.get("lastRotateRequest"), s.get("currentVersion"))
                    if s.get("lastRotateRequest"):
                        ack_seen.setdefault((key, s["lastRotateRequest"]), t)
        time.sleep(0.2)


def nonce_sender(key):
    rnd = random.Random(SEED * 100 + 90 + int(key[1:]))
    k = 0
    while not stop_nonces.is_set():
        time.sleep(rnd.uniform(0.3, 2.5))
        if stop_nonces.is_set():
            break
        nonce = f"{tag}-{key}-{k}"
        k += 1
        rec = {"key": key, "name": SECRETS[key]["vault"], "nonce": nonce, "t0": now_us(), "t1": None, "tack": None}
        with req_lock:
            nonces.append(rec)
        patch = {"metadata": {"annotations": {ANNOTATION: nonce}}}
        st, _ = kube.req_retry("PATCH", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets/{key}", patch,
                               "application/merge-patch+json", deadline=60)
        rec["t1"] = now_us()
        rec["patch_status"] = st
        # wait for the acknowledgement (bounded: a lost one is judged in the analysis)
        end = time.time() + 45
        while time.time() < end and not (stop.is_set() and time.time() > stop_time[0] + 10):
            with status_lock:
                t = ack_seen.get((key, nonce))
            if t:
                rec["tack"] = t
                break
            time.sleep(0.05)
        if rec["tack"] is None:
            with status_lock:
                rec["tack"] = ack_seen.get((key, nonce))
        if rec["tack"] is None:
            note(f"nonce {nonce} not acknowledged within 45 s")


threads = [threading.Thread(target=status_poller, daemon=True)]
threads += [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(3)]
threads += [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(2)]
threads += [threading.Thread(target=rotator, daemon=True)]
nonce_threads = [threading.Thread(target=nonce_sender, args=(k,), daemon=True)
                 for k, s in SECRETS.items() if s["group"] == "N"]
for t in threads + nonce_threads:
    t.start()

# ---------------------------------------------------------------- faults
events = ["controller"] * 5 + ["api"] * 4 + ["apiserver"] * 2
random.shuffle(events)
if events[0] == "apiserver":
    events.append(events.pop(0))
ctrl_delays = [0.1, 0.5, 1.0, 2.0, 7.0]   # 7 s: several 3-5 s periods missed
random.shuffle(ctrl_delays)
fault_log = []
kills = {"controller": 0, "api": 0}
api_kill_times = []
restart_failures = []
controller_exits_after_apiserver = 0
apiserver_restart_secs = []


def next_due_slot():
    """next_rotation_at (µs) of a random S secret, from the API (a standby read; good enough to aim)."""
    key = random.choice([k for k, s in SECRETS.items() if s["group"] == "S"])
    try:
        st, j, _ = api("GET", f"/v1/secrets/{SECRETS[key]['vault']}", timeout=3)
        if st == 200 and j.get("next_rotation_at"):
            return ts_us(j["next_rotation_at"])
    except ConnErr:
        pass
    return None


time.sleep(3)
unexpected_exits = []


def watchdog():
    """A controller or API that died without being killed here is a failure; restart it."""
    for name, wait in (("controller", wait_controller), ("api", wait_api)):
        if not alive(read_pid(name)):
            unexpected_exits.append(name)
            t = now_us()
            start(name)
            wait(60)
            if name == "controller":
                with down_lock:
                    ctrl_down.append([t, now_us()])


for ev in events:
    time.sleep(random.uniform(2, 5))
    watchdog()
    if ev == "controller":
        aimed = kills["controller"] % 2 == 0
        if aimed:
            slot = next_due_slot()
            if slot:
                wait = (slot - now_us()) / 1e6 + random.uniform(0, 0.3)
                if 0 < wait < 6:
                    time.sleep(wait)
        t_kill = now_us()
        if not kill9("controller"):
            restart_failures.append("controller was not running before a kill")
        kills["controller"] += 1
        with down_lock:
            ctrl_down.append([t_kill, None])
        delay = ctrl_delays[(kills["controller"] - 1) % len(ctrl_delays)]
        time.sleep(delay)
        start("controller")
        up = wait_controller(60)
        with down_lock:
            ctrl_down[-1][1] = now_us()
        fault_log.append(f"controller kill{' (aimed at a slot)' if aimed else ''}, down {delay:.1f}s + "
                         f"{(ctrl_down[-1][1] - t_kill) / 1e6 - delay:.1f}s to lead again")
        if not up:
            restart_failures.append("controller did not lead again within 60 s after a restart")
    elif ev == "api":
        # kill while requests are in flight: wait (briefly) until at least two are open
        end = time.time() + 3
        while time.time() < end:
            with req_lock:
                if inflight[0] >= 2:
                    break
            time.sleep(0.002)
        t_kill = now_us()
        if not kill9("api"):
            restart_failures.append("API was not running before a kill")
        kills["api"] += 1
        api_kill_times.append(t_kill)
        delay = random.uniform(0.2, 2.0)
        time.sleep(delay)
        start("api")
        up = wait_api(60)
        fault_log.append(f"API kill, restarted after {delay:.1f}s, ready after {(now_us() - t_kill) / 1e6:.1f}s")
        if not up:
            restart_failures.append("API not ready within 60 s after a restart")
    else:
        t0 = now_us()
        rc = subprocess.run([os.path.join(ROOT, "e2e/testenv/testenv"), "apiserver-restart"],
                            env={**os.environ, "HV_TESTENV_DIR": RUN_DIR}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
        # ready = answers a request
        end = time.time() + 60
        while time.time() < end:
            try:
                if kube.req("GET", "/readyz", timeout=2)[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        t1 = now_us()
        with down_lock:
            apiserver_down.append([t0, t1])
        apiserver_restart_secs.append((t1 - t0) / 1e6)
        if rc != 0:
            restart_failures.append(f"testenv apiserver-restart exited {rc}")
        # The controller exits when it cannot renew its lease for VAULT_LEASE_DURATION - renew interval
        # (10 s; README: "Losing the lease exits the process; the pod restarts"): the apiserver's
        # graceful stop alone can take that long. A kubelet would restart it; here the suite does.
        extra = ""
        end = time.time() + 8
        while time.time() < end and alive(read_pid("controller")):
            time.sleep(0.1)
        if not alive(read_pid("controller")):
            controller_exits_after_apiserver += 1
            with down_lock:
                ctrl_down.append([t0, None])
            start("controller")
            up = wait_controller(60)
            with down_lock:
                ctrl_down[-1][1] = now_us()
            extra = "; the controller exited (lease not renewed in time) and was restarted"
            if not up:
                restart_failures.append("controller did not lead again after the apiserver restart")
        fault_log.append(f"apiserver restart: {(t1 - t0) / 1e6:.1f}s{extra}")

note("faults: " + "; ".join(fault_log))
time.sleep(12)   # no faults: everything due must be served
watchdog()
stop_time[0] = time.time()
stop.set()
stop_nonces.set()
for t in nonce_threads + threads[1:]:
    t.join(timeout=60)
stop_poller.set()
threads[0].join(timeout=10)

# ---------------------------------------------------------------- collect
check("the controller leads again after every kill/restart, the API is ready again after every kill",
      not restart_failures, "; ".join(restart_failures))
figure("controller_kills", kills["controller"])
figure("api_kills", kills["api"])
figure("apiserver_restarts", len(apiserver_restart_secs))
figure("apiserver_restart_seconds", " ".join(f"{s:.1f}" for s in apiserver_restart_secs))
figure("controller_exits_after_apiserver_restart", controller_exits_after_apiserver)
figure("unexpected_exits", len(unexpected_exits))
check("no controller or API process died without being killed", not unexpected_exits, ", ".join(unexpected_exits))
figure("controller_not_leading_seconds", f"{down_for([tuple(x) for x in ctrl_down], 0, now_us()) / 1e6:.1f}")

# make sure the controller and the API are up for the analysis (and for the suites after this one)
if not alive(read_pid("controller")):
    start("controller")
wait_controller(60)
if not api_ready():
    if not alive(read_pid("api")):
        start("api")
    wait_api(60)


def history(name):
    for _ in range(20):
        try:
            st, j, _ = api("GET", f"/v1/secrets/{name}/versions", auth=True)
            if st == 200:
                return sorted(j["versions"], key=lambda v: v["version"])
            if st == 404:
                return None
        except ConnErr:
            pass
        time.sleep(0.5)
    return None


def next_rotation_db(name):
    """(current version, next_rotation_at µs) consistent with the primary's history."""
    for _ in range(10):
        h1 = history(name)
        try:
            st, j, _ = api("GET", f"/v1/secrets/{name}")
        except ConnErr:
            continue
        h2 = history(name)
        if st == 200 and h1 and h2 and h1 == h2 and j["version"] == h1[-1]["version"]:
            return j["version"], ts_us(j.get("next_rotation_at")), h2
        time.sleep(0.3)
    return None, None, history(name)


def unexplained(forced, reqs):
    """Forced versions left over by a maximum matching onto requests (each explains at most one
    version created inside its window)."""
    match = {}

    def try_assign(i, seen):
        ft = forced[i][1]
        for j, (a, b, _) in enumerate(reqs):
            if j in seen or not (a <= ft <= b):
                continue
            seen.add(j)
            if j not in match or try_assign(match[j], seen):
                match[j] = i
                return True
        return False

    for i in range(len(forced)):
        try_assign(i, set())
    matched = set(match.values())
    return [f for i, f in enumerate(forced) if i not in matched]


t_end = now_us()
control_doubles = 0
lost_nonces = []
out_of_order = []
doubles = []
lost = []
lateness = []
model_mismatch = []
n_sched = n_forced = n_versions = 0
per_group = {"S": [0, 0], "N": [0, 0], "A": [0, 0]}

for key, s in SECRETS.items():
    name = s["vault"]
    _, db_next, hist = next_rotation_db(name)
    if not hist:
        lost.append(f"{name}: no version history")
        continue
    n_versions += len(hist)
    # --- order
    nums = [v["version"] for v in hist]
    if nums != list(range(1, len(hist) + 1)):
        out_of_order.append(f"{name}: versions {nums[:5]}..{nums[-5:]} not exactly 1..{len(hist)}")
    created = [ts_us(v["created_at"]) for v in hist]
    for a, b in zip(hist, hist[1:]):
        ca, cb = ts_us(a["created_at"]), ts_us(b["created_at"])
        if cb <= ca:
            out_of_order.append(f"{name}: v{b['version']} created_at not after v{a['version']}'s")
        if ts_us(a["superseded_at"]) != cb:
            out_of_order.append(f"{name}: v{a['version']} superseded_at {a['superseded_at']} != "
                                f"v{b['version']} created_at {b['created_at']}")
        if a["expires_at"] is None or ts_us(a["expires_at"]) != ts_us(a["superseded_at"]) + GRACE * 1_000_000:
            out_of_order.append(f"{name}: v{a['version']} expires_at {a['expires_at']} != superseded + {GRACE}s")
    if hist[-1]["superseded_at"] is not None:
        out_of_order.append(f"{name}: newest version v{hist[-1]['version']} is superseded")
    # --- replay
    iv = s["interval_us"]
    spr = spread_us(name, iv)
    bound = (BOUND + (SWEEP if s["group"] == "A" else 0)) * 1_000_000
    nxt = created[0] + iv + spr
    forced = []   # (version, created)
    due_versions = []
    for v, t in zip(nums[1:], created[1:]):
        if t >= nxt:
            n_sched += 1
            per_group[s["group"]][0] += 1
            late = t - nxt
            eff = late - downtime(nxt, t)
            lateness.append(eff / 1e6)
            if eff > bound:
                lost.append(f"{name}: slot {nxt} served by v{v} {late / 1e6:.1f}s late "
                            f"({eff / 1e6:.1f}s not counting downtime)")
            due_versions.append((v, t))
            nxt = next_after(nxt, iv, t)
        else:
            n_forced += 1
            per_group[s["group"]][1] += 1
            forced.append((v, t))
            nxt = t + iv + spr
    if db_next is not None and db_next != nxt:
        model_mismatch.append(f"{name}: replayed next slot {nxt} != database {db_next}")
    if db_next is None:
        model_mismatch.append(f"{name}: could not read a consistent next_rotation_at")
    pending_eff = (t_end - nxt) - downtime(nxt, t_end)
    if pending_eff > bound:
        lost.append(f"{name}: slot at {nxt} still not served {pending_eff / 1e6:.1f}s (downtime excluded) later")
    # --- requests that may explain forced versions
    by_version = {v: t for v, t in zip(nums, created)}
    api_ok = set()  # versions an API rotate acknowledged (each explains exactly its own version)
    reqs = []       # (t0, t1, label): may explain one forced version created inside [t0, t1]
    for r in api_rotations:
        if r["name"] != name:
            continue
        if r["outcome"] == "ok":
            v = r["version"]
            if v not in by_version:
                lost.append(f"{name}: API rotate acknowledged v{v}, which is not in the history")
            elif by_version[v] != r["created_at"]:
                lost.append(f"{name}: API rotate acknowledged v{v} created {r['created_at']}, history has {by_version[v]}")
            else:
                api_ok.add(v)
        elif r["outcome"] in ("cut", "timeout", "http", "wrong"):
            reqs.append((r["t0"], r["t1"], f"api-rotate-{r['outcome']}"))
    due_set = {v for v, _ in due_versions}
    for n in (n for n in nonces if n["name"] == name):
        reqs.append((n["t0"], n["tack"] if n["tack"] else t_end, f"nonce {n['nonce']}"))
        # lost: never acknowledged, or no version created after it was set, by its acknowledgement
        if n["tack"] is None:
            lost.append(f"{name}: nonce {n['nonce']} never acknowledged")
        elif not any(n["t0"] <= t <= n["tack"] for t in created):
            newest = max((v for v, t in zip(nums, created) if t < n["t0"]), default=None)
            how = ("an API rotate" if newest in api_ok else "the schedule" if newest in due_set
                   else "a forced rotation (an earlier nonce or a cut API rotate)")
            lost_nonces.append(how)
            lost.append(f"{name}: nonce {n['nonce']} acknowledged {(n['tack'] - n['t0']) / 1e6:.2f}s after it was "
                        f"set with no version created in between; the newest version then, v{newest}, came "
                        f"{(n['t0'] - by_version[newest]) / 1e6:.2f}s earlier from {how}")
    for v, t in unexplained([f for f in forced if f[0] not in api_ok], reqs):
        doubles.append(f"{name}: v{v} created at {t} before its slot with no request to explain it")
    # positive control: without the API rotates' acknowledgements their forced versions are unexplained
    control_doubles += len(unexplained(forced, [r for r in reqs if r[2].startswith("nonce")]))

api_req = len(requests_log)
outcomes = {}
for r in requests_log:
    outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
n5xx = sum(1 for r in requests_log if r["outcome"] == "http" and r["status"] >= 500)
other_http = [r for r in requests_log if r["outcome"] == "http" and r["status"] < 500
              and not (r["kind"] == "rotate" and r["status"] == 409)]
timeouts = [r for r in requests_log if r["outcome"] == "timeout"]
in_flight = [r for r in requests_log if any(r["t0"] < k < r["t1"] for k in api_kill_times)]
in_flight_bad = [r for r in in_flight if r["outcome"] not in ("ok", "cut", "refused", "conflict")]

# durability of acknowledged writes
acked = lost_writes = 0
write_problems = []
for name, ops in writes.items():
    acked_ops = [o for o in ops if o["outcome"] == "ok"]
    acked += len(acked_ops)
    created_ok = any(o["op"] == "create" and o["outcome"] == "ok" for o in ops)
    st, j = None, None
    for _ in range(10):
        try:
            st, j, _ = api("GET", f"/v1/secrets/{name}")
            break
        except ConnErr:
            time.sleep(0.5)
    hist = history(name)
    if st == 404:
        if created_ok:
            lost_writes += len(acked_ops)
            write_problems.append(f"{name}: create acknowledged, secret missing afterwards")
        continue
    if st != 200 or not hist:
        write_problems.append(f"{name}: read back {st}")
        continue
    leak_marker("restarts_write", j.get("value"))
    hv = [v["version"] for v in hist]
    if hv != list(range(1, len(hist) + 1)):
        out_of_order.append(f"{name}: versions {hv} not exactly 1..{len(hist)}")
    for a, b in zip(hist, hist[1:]):
        if ts_us(b["created_at"]) <= ts_us(a["created_at"]):
            out_of_order.append(f"{name}: v{b['version']} created_at not after v{a['version']}'s")
    for o in acked_ops:
        if o["version"] not in hv:
            lost_writes += 1
            write_problems.append(f"{name}: {o['op']} acknowledged v{o['version']}, not in the history")
    final = j["version"]
    if acked_ops and final < max(o["version"] for o in acked_ops):
        lost_writes += 1
        write_problems.append(f"{name}: current v{final} older than acknowledged v{max(o['version'] for o in acked_ops)}")
    same = [o for o in acked_ops if o["version"] == final]
    if same and same[-1]["value"] != j["value"]:
        write_problems.append(f"{name}: current v{final} value differs from the acknowledged write")
        lost_writes += 1
    if not same:
        # a cut write committed after the last acknowledged one: the value must be one we sent
        if j["value"] not in {o["value"] for o in ops}:
            write_problems.append(f"{name}: current v{final} value is none we sent")
            lost_writes += 1

# status vs database, per VaultSecret (status catches up on each reconcile: retry a while)
status_mismatch = []
end = time.time() + 20
pending = [k for k, s in SECRETS.items() if s["group"] in ("S", "N")]
while pending and time.time() < end:
    st, j = kube.req_retry("GET", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets")
    items = {it["metadata"]["name"]: it for it in (j or {}).get("items", [])}
    still = []
    for key in pending:
        h = history(SECRETS[key]["vault"])
        stv = ((items.get(key) or {}).get("status") or {}).get("currentVersion")
        if not h or stv != h[-1]["version"]:
            still.append(key)
    pending = still
    if pending:
        time.sleep(1)
status_mismatch = pending

# ---------------------------------------------------------------- report
figure("versions_total", n_versions)
figure("rotations_scheduled", n_sched)
figure("rotations_forced", n_forced)
for g in ("S", "N", "A"):
    figure(f"rotations_group_{g}_scheduled_forced", f"{per_group[g][0]} {per_group[g][1]}")
lateness.sort()
if lateness:
    figure("slot_lateness_seconds_median_max",
           f"{lateness[len(lateness) // 2]:.2f} {lateness[-1]:.2f} (downtime excluded)")
figure("nonces_sent", len(nonces))
figure("nonces_acknowledged", sum(1 for n in nonces if n["tack"]))
figure("api_rotates", " ".join(f"{k}={sum(1 for r in api_rotations if r['outcome'] == k)}"
                               for k in ("ok", "cut", "refused", "conflict", "http", "timeout", "wrong")))
figure("double_rotations", len(doubles))
figure("lost_rotate_now", " ".join([str(len(lost_nonces))] + [
    f"after_{k.split(' (')[0].replace(' ', '_')}={lost_nonces.count(k)}" for k in sorted(set(lost_nonces))]))
figure("lost_rotations", len(lost))
figure("versions_out_of_order", len(out_of_order))
figure("api_requests", api_req)
figure("api_request_outcomes", " ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
figure("api_requests_in_flight_at_kill", len(in_flight))
figure("api_requests_in_flight_at_kill_outcomes",
       " ".join(f"{k}={sum(1 for r in in_flight if r['outcome'] == k)}" for k in ("ok", "cut", "refused", "http", "timeout", "wrong")))
figure("api_wrong_answers", len(wrong))
figure("api_5xx", n5xx)
figure("acknowledged_writes", acked)
figure("acknowledged_writes_lost", lost_writes)
for p in (doubles + lost + out_of_order + model_mismatch + wrong + write_problems)[:40]:
    say(f"  problem: {p}")
for r in (other_http + timeouts + in_flight_bad)[:20]:
    say(f"  problem: {r['kind']} {r['name']} -> {r['outcome']} {r['status']} {r.get('detail', '')}")

check(f"double rotations: 0 (of {n_sched} scheduled + {n_forced} forced rotations)", not doubles, "; ".join(doubles[:3]))
check(f"positive control: ignoring the API rotates' answers leaves their forced versions unexplained "
      f"({control_doubles} would count as doubles)", control_doubles > 0)
check(f"lost rotations: 0 (slots served within {BOUND:.0f}s, +{SWEEP:.0f}s for API-owned, downtime excluded; "
      f"{len(nonces)} nonces each answered by a version created after it)", not lost, "; ".join(lost[:3]))
check("versions in order: 1..n, created_at increasing, superseded_at/expires_at consistent",
      not out_of_order, "; ".join(out_of_order[:3]))
check("the replayed schedule ends on the database's next_rotation_at for every secret",
      not model_mismatch, "; ".join(model_mismatch[:3]))
check(f"every acknowledged write is durable ({acked} creates/PUTs)", lost_writes == 0 and not write_problems,
      "; ".join(write_problems[:3]))
check("every acknowledged API rotate is in the history with its version and created_at",
      not any("API rotate acknowledged" in p for p in lost))
check(f"requests in flight at an API kill ended as connection errors or 2xx ({len(in_flight)} in flight)",
      not in_flight_bad and len(in_flight) > 0,
      "none in flight: the kill case was not exercised" if not in_flight else
      "; ".join(f"{r['kind']} {r['outcome']} {r['status']}" for r in in_flight_bad[:3]))
check("no wrong answers (values per version consistent; a value just read verifies)", not wrong, "; ".join(wrong[:3]))
check("no 5xx, no hung requests, no unexpected 4xx", n5xx == 0 and not timeouts and not other_http,
      f"5xx={n5xx} timeouts={len(timeouts)} 4xx={len(other_http)}")
check(f"enough exercised: >= 60 scheduled rotations ({n_sched}), >= 10 acknowledged nonces, "
      f">= 5 acknowledged API rotates",
      n_sched >= 60 and sum(1 for n in nonces if n["tack"]) >= 10
      and sum(1 for r in api_rotations if r["outcome"] == "ok") >= 5)
check("every VaultSecret's status.currentVersion catches up with the database", not status_mismatch,
      f"behind: {status_mismatch}")

# ---------------------------------------------------------------- clean up, leave it healthy
for key, s in SECRETS.items():
    if s["group"] == "A":
        try:
            api("DELETE", f"/v1/secrets/{s['vault']}", auth=True)
        except ConnErr:
            pass
for name, ops in writes.items():
    try:
        api("DELETE", f"/v1/secrets/{name}", auth=True)
    except ConnErr:
        pass
for key, s in SECRETS.items():
    if s["group"] in ("S", "N"):
        kube.req_retry("DELETE", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets/{key}")
end = time.time() + 30
while time.time() < end:
    st, j = kube.req_retry("GET", f"/apis/{GROUP}/namespaces/{NS}/vaultsecrets")
    if st == 200 and not j.get("items"):
        break
    time.sleep(0.5)
kube.close()
healthy = alive(read_pid("controller")) and controller_leading() and api_ready()
check("at the end the controller leads and the API is ready", healthy)
figure("wall_seconds", f"{time.time() - t_start:.0f}")
finish()
