"""Restarts (issue 8, "Faults"): kill -9 the controller mid-rotation and the API mid-request,
repeatedly, and restart the kube-apiserver, while rotations are due; then prove from the version
history that no rotation was done twice, none was lost, versions stayed in order, and every API
request answered 2xx before a kill is durable (DESIGN.md §3-§4, §7-§8). The verdict, with its
definitions: restarts_verdict.py.

Needs the controller started with VAULT_MIN_ROTATION_INTERVAL=1s (the runner does): the
VaultSecrets here rotate every 3-8 s. What runs (~2.5 min), in one fresh namespace and one fresh
API name prefix:
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
  next due slot of an S secret, + 0-300 ms), restarted after 0.1-7 s; 4x SIGKILL of the API while
  >= 2 requests are in flight, restarted after 0.2-2 s; 2x `testenv apiserver-restart` (its
  graceful stop takes ~10 s, so the controller cannot renew its Lease in time and exits, as
  documented; the check restarts it as a kubelet would and reports it). Then 12 s without faults,
  and the verdict. Kills and restarts go through the deployment (deployment.py).

Reproduce a run with HV_RESTARTS_SEED=<seed> (printed first; thread timing still varies).
Leaves the controller and the API running and healthy; deletes what it created (the namespace
stays, empty: no kube-controller-manager here to finish a namespace deletion).
"""
import http.client
import os
import random
import re
import secrets
import subprocess
import threading
import time

from .. import schedule
from ..api import ts_us
from ..load import Known, Workers, poll
from . import restarts_verdict

LABEL = "restarts"
BOUND = 10.0  # s: a due slot must have its version this soon (downtime excluded)
GRACE = 10    # s: grace period of every automatic secret here


def now_us():
    return time.time_ns() // 1000


def down_for(intervals, a, b):
    """Microseconds of [a, b] covered by the union of the given [start, end or None (ongoing)] intervals."""
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted((s, e if e is not None else now_us()) for s, e in intervals):
        s, e = max(s, a), min(e, b)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (cur_e - cur_s if cur_e is not None else 0)


class Restarts:
    def __init__(self, ctx):
        self.ctx, self.api, self.kube, self.dep = ctx, ctx.api, ctx.kube, ctx.deployment
        self.seed = int(os.environ.get("HV_RESTARTS_SEED", str(int(time.time()))))
        self.rng = random.Random(self.seed)
        self.tag = secrets.token_hex(3)
        self.ns, self.prefix = f"rel-restarts-{self.tag}", f"rel/restarts-{self.tag}"
        self.sweep = 5.0  # s: VAULT_API_SWEEP_INTERVAL (default) for API-owned secrets
        self.secrets = {}  # key -> dict(group, interval, vault, interval_us)
        self.known = Known(ctx.mark)
        self.wrong = []  # wrong answers (descriptions)
        self.lock = threading.Lock()
        self.requests = []       # dicts: kind, name, t0, t1 (µs), outcome (ok|refused|cut|timeout|http|conflict|wrong)
        self.api_rotations = []  # dicts: name, t0, t1, outcome, version, created_at
        self.writes = {}         # name -> list of dicts(op, t0, t1, outcome, version, value)
        self.nonces = []         # dicts: key, name, nonce, t0, t1, tack
        self.inflight = 0
        self.ack_seen = {}       # (key, nonce) -> first µs the poller saw it acknowledged
        self.ctrl_down, self.apiserver_down = [], []  # [start µs, end µs or None]: controller not leading / apiserver
        self.api_kill_times = []
        self.stop_time = 0.0

    def downtime(self, a, b):
        with self.lock:
            return down_for([tuple(x) for x in self.ctrl_down + self.apiserver_down], a, b)

    # ------------------------------------------------------------ setup
    def setup(self):
        ctx, check = self.ctx, self.ctx.check
        ctx.note(f"seed {self.seed}; namespace {self.ns}; API prefix {self.prefix}")
        try:
            bad = schedule.mismatches(vectors := schedule.core_vectors())
        except (subprocess.CalledProcessError, ValueError, KeyError) as e:
            vectors, bad = {}, [f"could not get core's vectors: {e}"]
        n = sum(len(v) for v in vectors.values())
        ctx.figure("schedule_vectors_checked", n)
        check(f"the schedule model reproduces core's golden vectors ({n}, core/examples/schedule_vectors.rs)",
              not bad and n > 0, "; ".join(bad[:3]))
        check("setup: the controller is running and leading", self.dep.identity("controller")
              and self.dep.wait_ready("controller", 30))
        check("setup: the API is ready", self.dep.wait_ready("api", 30))
        ctx.require("setup: controller started with VAULT_MIN_ROTATION_INTERVAL=1s (HV_CONTROLLER_ENV)",
                    self.dep.setting("controller", "VAULT_MIN_ROTATION_INTERVAL") == "1s",
                    "3-8 s intervals would be InvalidSpec")
        m = re.fullmatch(r"(\d+)s", self.dep.setting("controller", "VAULT_API_SWEEP_INTERVAL") or "")
        self.sweep = float(m.group(1)) if m else self.sweep
        check("setup: namespace created", self.kube.create_namespace(self.ns) == 201)
        for i, iv in enumerate([3, 3, 4, 4, 5, 5]):
            self.secrets[f"s{i}"] = {"group": "S", "interval": iv}
        for i in range(4):
            self.secrets[f"n{i}"] = {"group": "N", "interval": 8}
        for key, s in self.secrets.items():
            s.update(vault=f"{self.ns}/{key}", interval_us=s["interval"] * 1_000_000)
            st, j = self.kube.create_vaultsecret(self.ns, key, {
                "kind": "Automatic", "rotationInterval": f"{s['interval']}s", "gracePeriod": f"{GRACE}s",
                "generator": {"length": 40, "charset": "alphanumeric"}, "deletionPolicy": "Delete"})
            ctx.require(f"setup: create VaultSecret {key} (interval {s['interval']}s)", st == 201, f"{st} {j}")
        for i, iv in enumerate([3, 3, 4, 4]):
            name = f"{self.prefix}/a{i}"
            r = self.api.call("POST", "/v1/secrets", {"name": name, "kind": "automatic", "rotation_interval_secs": iv,
                                                      "grace_period_secs": GRACE,
                                                      "generator": {"length": 40, "charset": "alphanumeric"}},
                              auth=True)
            ctx.require(f"setup: create API-owned automatic {name} ({iv}s)", r.status == 201, repr(r))
            self.remember(name, 1, r.json()["value"], "create")
            self.secrets[f"a{i}"] = {"group": "A", "interval": iv, "vault": name, "interval_us": iv * 1_000_000}
        vaultsecrets = [k for k, s in self.secrets.items() if s["group"] != "A"]
        ready = self.kube.wait_ready(self.ns, vaultsecrets, 60)
        ctx.require("setup: all 10 VaultSecrets Ready", len(ready) == 10, f"ready: {sorted(ready)}")

    # ------------------------------------------------------------ load
    def remember(self, name, version, value, where):
        if not self.known.add(name, version, value, f"restarts_{where}"):
            self.wrong.append(f"{where}: {name} v{version} answered a different value than before")
            return False
        return True

    def call(self, kind, name, method, path, body=None, auth=False):
        """One API request, recorded with its outcome; returns (record, parsed JSON or None)."""
        with self.lock:
            self.inflight += 1
        try:
            r = self.api.call(method, path, body, auth, timeout=15)
        finally:
            with self.lock:
                self.inflight -= 1
        outcome = r.kind if r.status == 0 else "ok" if 200 <= r.status < 300 else "http"
        if kind == "rotate" and r.status == 409:
            outcome = "conflict"  # "kept rotating concurrently; retry": allowed, creates no version
        rec = {"kind": kind, "name": name, "t0": int(r.t0 * 1e6), "t1": int(r.t1 * 1e6), "outcome": outcome,
               "status": r.status or None,
               "detail": r.error if r.status == 0 else "" if r.status < 300 else r.body[:200].decode("utf-8", "replace")}
        with self.lock:
            self.requests.append(rec)
        return rec, r.json() if outcome == "ok" else None

    def reader(self, stop, idx):
        rng = random.Random(self.seed * 100 + idx)
        names = [s["vault"] for s in self.secrets.values()]
        while not stop.is_set():
            name = rng.choice(names)
            r, j = self.call("read", name, "GET", f"/v1/secrets/{name}")
            if r["outcome"] == "ok":
                if not (isinstance(j, dict) and j.get("name") == name and isinstance(j.get("version"), int)
                        and isinstance(j.get("value"), str)):
                    r["outcome"] = "wrong"
                    self.wrong.append(f"read {name}: malformed 200 body")
                    continue
                if not self.remember(name, j["version"], j["value"], "read"):
                    r["outcome"] = "wrong"
                r2, j2 = self.call("verify", name, "POST", f"/v1/secrets/{name}/verify", {"value": j["value"]})
                # judged only if it ran well inside the grace period a just-read value has left
                if r2["outcome"] == "ok" and r2["t1"] - r["t1"] < (GRACE - 3) * 1_000_000:
                    if not (isinstance(j2, dict) and j2.get("valid") is True and j2.get("version") == j["version"]):
                        r2["outcome"] = "wrong"
                        self.wrong.append(f"verify {name} v{j['version']} just read: {j2}")
            time.sleep(rng.uniform(0.02, 0.1))

    def writer(self, stop, idx):
        rng = random.Random(self.seed * 100 + 50 + idx)
        mine = []  # names whose create was acknowledged
        k = 0
        while not stop.is_set():
            value = "rsw" + secrets.token_hex(20)
            self.ctx.mark("restarts_write", value)
            create = not mine or rng.random() < 0.3
            if create:
                name = f"{self.prefix}/w{idx}-{k}"
                k += 1
                r, j = self.call("create", name, "POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value},
                                 True)
            else:
                name = rng.choice(mine)
                r, j = self.call("put", name, "PUT", f"/v1/secrets/{name}", {"value": value}, True)
            op = {"op": r["kind"], "t0": r["t0"], "t1": r["t1"], "outcome": r["outcome"], "value": value,
                  "version": None}
            if r["outcome"] == "ok":
                if create and (r["status"] != 201 or not isinstance(j, dict) or j.get("version") != 1
                               or j.get("name") != name):
                    r["outcome"] = op["outcome"] = "wrong"
                    self.wrong.append(f"create {name}: {r['status']} {j}")
                elif not create and not (isinstance(j, dict) and isinstance(j.get("version"), int)):
                    r["outcome"] = op["outcome"] = "wrong"
                    self.wrong.append(f"put {name}: {j}")
                else:
                    op["version"] = j["version"]
                    if create:
                        mine.append(name)
            self.writes.setdefault(name, []).append(op)
            time.sleep(rng.uniform(0.05, 0.2))

    def rotator(self, stop):
        rng = random.Random(self.seed * 100 + 80)
        names = [s["vault"] for s in self.secrets.values() if s["group"] in ("A", "N")]
        while not stop.is_set():
            name = rng.choice(names)
            r, j = self.call("rotate", name, "POST", f"/v1/secrets/{name}/rotate", None, True)
            rec = {"name": name, "t0": r["t0"], "t1": r["t1"], "outcome": r["outcome"], "status": r["status"],
                   "version": None, "created_at": None}
            if r["outcome"] == "ok":
                if not (isinstance(j, dict) and isinstance(j.get("version"), int) and isinstance(j.get("value"), str)
                        and j.get("created_at")):
                    r["outcome"] = rec["outcome"] = "wrong"
                    self.wrong.append(f"rotate {name}: {j}")
                else:
                    rec["version"], rec["created_at"] = j["version"], ts_us(j["created_at"])
                    self.remember(name, j["version"], j["value"], "rotate")
            with self.lock:
                self.api_rotations.append(rec)
            time.sleep(rng.uniform(0.5, 1.5))

    def status_poller(self, stop):
        """Notes when each rotate-now nonce was first seen acknowledged in status.lastRotateRequest."""
        while not stop.is_set():
            try:
                st, j = self.kube.req("GET", self.kube.vaultsecrets_path(self.ns), timeout=5)
            except (OSError, http.client.HTTPException):
                st, j = None, None
            t = now_us()
            if st == 200 and j:
                with self.lock:
                    for it in j.get("items", []):
                        last = (it.get("status") or {}).get("lastRotateRequest")
                        if last:
                            self.ack_seen.setdefault((it["metadata"]["name"], last), t)
            time.sleep(0.2)

    def nonce_sender(self, stop, load_stop, key):
        rng = random.Random(self.seed * 100 + 90 + int(key[1:]))
        k = 0
        while not stop.is_set():
            time.sleep(rng.uniform(0.3, 2.5))
            if stop.is_set():
                break
            nonce = f"{self.tag}-{key}-{k}"
            k += 1
            rec = {"key": key, "name": self.secrets[key]["vault"], "nonce": nonce, "t0": now_us(), "t1": None,
                   "tack": None}
            with self.lock:
                self.nonces.append(rec)
            rec["patch_status"] = self.kube.rotate_now(self.ns, key, nonce)
            rec["t1"] = now_us()
            # wait for the acknowledgement (bounded: a lost one is judged in the verdict)
            end = time.time() + 45
            while rec["tack"] is None and time.time() < end and not (
                    load_stop.is_set() and time.time() > self.stop_time + 10):
                with self.lock:
                    rec["tack"] = self.ack_seen.get((key, nonce))
                time.sleep(0.05)
            with self.lock:
                rec["tack"] = rec["tack"] or self.ack_seen.get((key, nonce))
            if rec["tack"] is None:
                self.ctx.note(f"nonce {nonce} not acknowledged within 45 s")

    # ------------------------------------------------------------ faults
    def next_due_slot(self):
        """next_rotation_at (µs) of a random S secret, from the API (a standby read; good enough to aim)."""
        key = self.rng.choice([k for k, s in self.secrets.items() if s["group"] == "S"])
        r = self.api.call("GET", f"/v1/secrets/{self.secrets[key]['vault']}", timeout=3)
        at = (r.json() or {}).get("next_rotation_at") if r.status == 200 else None
        return ts_us(at) if at else None

    def restart(self, component, failures, why, since=None):
        """Starts a component that is down and waits until it is ready; the controller's time down
        (from `since`, default now) is recorded."""
        with self.lock:
            self.ctrl_down += [[since or now_us(), None]] if component == "controller" else []
        self.dep.start(component)
        up = self.dep.wait_ready(component, 60)
        if component == "controller":
            with self.lock:
                self.ctrl_down[-1][1] = now_us()
        if not up:
            failures.append(why)
        return up

    def faults(self, failures, unexpected):
        rng, dep = self.rng, self.dep
        events = ["controller"] * 5 + ["api"] * 4 + ["apiserver"] * 2
        rng.shuffle(events)
        if events[0] == "apiserver":
            events.append(events.pop(0))
        ctrl_delays = [0.1, 0.5, 1.0, 2.0, 7.0]  # 7 s: several 3-5 s periods missed
        rng.shuffle(ctrl_delays)
        kills = {"controller": 0, "api": 0}
        log, apiserver_secs, exits_after_apiserver = [], [], 0

        def watchdog():
            """A controller or API that died without being killed here is a failure; restart it."""
            for c in ("controller", "api"):
                if not dep.identity(c):
                    unexpected.append(c)
                    self.restart(c, failures, f"{c} did not come back after an unexpected exit")

        time.sleep(3)
        for ev in events:
            time.sleep(rng.uniform(2, 5))
            watchdog()
            if ev == "controller":
                aimed = kills["controller"] % 2 == 0
                slot = self.next_due_slot() if aimed else None
                if slot and 0 < (wait := (slot - now_us()) / 1e6 + rng.uniform(0, 0.3)) < 6:
                    time.sleep(wait)
                t_kill = now_us()
                if not dep.kill("controller"):
                    failures.append("controller was not running before a kill")
                delay = ctrl_delays[kills["controller"] % len(ctrl_delays)]
                kills["controller"] += 1
                time.sleep(delay)
                self.restart("controller", failures, "controller did not lead again within 60 s after a restart", t_kill)
                with self.lock:
                    back = (self.ctrl_down[-1][1] - t_kill) / 1e6 - delay
                log.append(f"controller kill{' (aimed at a slot)' if aimed else ''}, down {delay:.1f}s + "
                           f"{back:.1f}s to lead again")
            elif ev == "api":
                poll(lambda: self.inflight >= 2, timeout=3, every=0.002)  # kill while >= 2 requests are in flight
                t_kill = now_us()
                if not dep.kill("api"):
                    failures.append("API was not running before a kill")
                kills["api"] += 1
                self.api_kill_times.append(t_kill)
                delay = rng.uniform(0.2, 2.0)
                time.sleep(delay)
                self.restart("api", failures, "API not ready within 60 s after a restart")
                log.append(f"API kill, restarted after {delay:.1f}s, ready after {(now_us() - t_kill) / 1e6:.1f}s")
            else:
                rc, _, t0, _ = self.ctx.env.testenv("apiserver-restart")
                t0 = int(t0 * 1e6)
                poll(self.kube.ready, timeout=60, every=0.1)
                t1 = now_us()
                with self.lock:
                    self.apiserver_down.append([t0, t1])
                apiserver_secs.append((t1 - t0) / 1e6)
                if rc != 0:
                    failures.append(f"testenv apiserver-restart exited {rc}")
                # The controller exits when it cannot renew its lease for VAULT_LEASE_DURATION - renew
                # interval (10 s; README: "Losing the lease exits the process; the pod restarts"): the
                # apiserver's graceful stop alone can take that long. A kubelet would restart it; here the check does.
                poll(lambda: not dep.identity("controller"), timeout=8, every=0.1)
                extra = ""
                if not dep.identity("controller"):
                    exits_after_apiserver += 1
                    self.restart("controller", failures, "controller did not lead again after the apiserver restart", t0)
                    extra = "; the controller exited (lease not renewed in time) and was restarted"
                log.append(f"apiserver restart: {(t1 - t0) / 1e6:.1f}s{extra}")
        self.ctx.note("faults: " + "; ".join(log))
        time.sleep(12)  # no faults: everything due must be served
        watchdog()
        f = self.ctx.figure
        f("controller_kills", kills["controller"])
        f("api_kills", kills["api"])
        f("apiserver_restarts", len(apiserver_secs))
        f("apiserver_restart_seconds", " ".join(f"{s:.1f}" for s in apiserver_secs))
        f("controller_exits_after_apiserver_restart", exits_after_apiserver)


def run(ctx):
    t_start = time.time()
    rs = Restarts(ctx)
    rs.setup()
    failures, unexpected = [], []
    with Workers() as load, Workers() as nonces, Workers(join_timeout=10) as poller:
        poller.spawn(rs.status_poller, poller.stop)
        for i in range(3):
            load.spawn(rs.reader, load.stop, i)
        for i in range(2):
            load.spawn(rs.writer, load.stop, i)
        load.spawn(rs.rotator, load.stop)
        for key in (k for k, s in rs.secrets.items() if s["group"] == "N"):
            nonces.spawn(rs.nonce_sender, nonces.stop, load.stop, key)
        try:
            rs.faults(failures, unexpected)
        finally:
            rs.stop_time = time.time()
            load.stop.set()
            nonces.halt()
            load.halt()
    # the poller stops last: acknowledgements of the last nonces are still watched
    ctx.check("the controller leads again after every kill/restart, the API is ready again after every kill",
              not failures, "; ".join(failures))
    ctx.figure("unexpected_exits", len(unexpected))
    ctx.check("no controller or API process died without being killed", not unexpected, ", ".join(unexpected))
    ctx.figure("controller_not_leading_seconds", f"{down_for([tuple(x) for x in rs.ctrl_down], 0, now_us()) / 1e6:.1f}")
    # the controller and the API up for the verdict (and for the checks after this one)
    for c in ("controller", "api"):
        if not rs.dep.ready(c):
            if not rs.dep.identity(c):
                rs.dep.start(c)
            rs.dep.wait_ready(c, 60)
    restarts_verdict.verdict(rs, now_us(), BOUND, GRACE)
    restarts_verdict.clean_up(rs)
    ctx.figure("wall_seconds", f"{time.time() - t_start:.0f}")
