"""Load on the API while a fault happens: worker threads, the log of every request, the values known
per version, the read and write mixes the fault checks share, and reading it all back afterwards."""
import random
import secrets
import threading
import time
from collections import Counter


def rnd(prefix):
    return prefix + secrets.token_hex(16)


def poll(fetch, done=bool, timeout=60, every=0.25):
    """Calls fetch() until done(its value) or `timeout` seconds passed; returns the last value."""
    end = time.time() + timeout
    while not done(value := fetch()) and time.time() < end:
        time.sleep(every)
    return value


class Workers:
    """Threads sharing one stop event: `with Workers() as w: w.spawn(f, args...)`; leaving stops and joins them."""

    def __init__(self, join_timeout=60):
        self.stop, self.threads, self.join_timeout = threading.Event(), [], join_timeout

    def spawn(self, fn, *args, **kwargs):
        t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def halt(self):
        self.stop.set()
        for t in self.threads:
            t.join(self.join_timeout)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.halt()


class Log:
    """Every request: (kind, op, name, Resp)."""

    def __init__(self):
        self.items, self.lock = [], threading.Lock()

    def add(self, kind, op, name, r):
        with self.lock:
            self.items.append((kind, op, name, r))

    def of(self, kind):
        with self.lock:
            return [(op, n, r) for k, op, n, r in self.items if k == kind]


class Known:
    """The value of each (name, version) the load wrote or read; each is a leak marker too. A version
    seen with a second, different value is a conflict."""

    def __init__(self, mark):
        self.values, self.conflicts, self.mark, self.lock = {}, [], mark, threading.Lock()

    def add(self, name, version, value, label):
        self.mark(label, value)
        with self.lock:
            old = self.values.setdefault((name, version), value)
        if old != value:
            self.conflicts.append(f"{label}: {name} v{version} answered a different value than before")
        return old == value

    def get(self, name, version):
        with self.lock:
            return self.values.get((name, version))


def unclean(r):
    """A failure that is not a clean 503: a transport error, another 5xx, a 503 without JSON or Retry-After."""
    if r.status == 0 or (r.status >= 500 and r.status != 503):
        return True
    return r.status == 503 and not (r.clean_error() and r.retry_after)


def reader(api, log, known, mix, stop, seed, seen=None, pause=0.01, kind="read", timeout=30):
    """Reads secrets with known version-1 values, `mix` = [(cumulative probability, op, names)], op
    get / get_* (GET: a known version must come back with its value) or verify (of the version-1
    value: exactly {"valid": true, "version": 1}). A wrong answer sets the Resp's error; every 200
    GET is appended to `seen` as (name, version, value)."""
    rng = random.Random(seed)
    while not stop.is_set():
        x = rng.random()
        _, op, names = next(m for m in mix if x < m[0])
        name = rng.choice(names)
        if op == "verify":
            r = api.call("POST", f"/v1/secrets/{name}/verify", {"value": known.get(name, 1)}, timeout=timeout)
            if r.status == 200 and r.json() != {"valid": True, "version": 1}:
                r.error = f"verify of the right value answered {r.body[:100]!r}"
        else:
            r = api.call("GET", f"/v1/secrets/{name}", timeout=timeout)
            j = r.json() if r.status == 200 else None
            if isinstance(j, dict):
                want = known.get(name, j.get("version"))
                if want is not None and j.get("value") != want:
                    r.error = "wrong value"
                if seen is not None:
                    with log.lock:
                        seen.append((name, j.get("version"), j.get("value")))
                known.mark("read", j.get("value"))
        log.add(kind, op, name, r)
        time.sleep(pause)


class Writer:
    """The write mix of the fault checks, in turn from `first`: PUT a new value of `manual`, rotate
    `auto`, create a manual secret, create an automatic one (grace 1 h, interval 24 h) under `new`.
    Every 2xx goes into `known`; `acked` counts acknowledged writes per target, `created` the status
    of each create, `touched` every name a write was attempted on."""
    OPS = ("put", "rotate", "create_manual", "create_auto")

    def __init__(self, api, log, known, manual, auto, new, label, first=0, pause=0.1, timeout=30):
        self.api, self.log, self.known, self.manual, self.auto, self.new = api, log, known, manual, auto, new
        self.label, self.n, self.pause, self.timeout = label, first, pause, timeout
        self.acked, self.created, self.touched = Counter(), {}, {manual, auto}

    def create(self, name, value=None):
        body = {"name": name, "kind": "manual" if value else "automatic", "grace_period_secs": 3600}
        body.update({"value": value} if value else {"rotation_interval_secs": 86400})
        return self.api.call("POST", "/v1/secrets", body, auth=True, timeout=self.timeout)

    def step(self):
        op = self.OPS[self.n % len(self.OPS)]
        self.n += 1
        value = rnd("LDput") if op == "put" else rnd("LDcreate") if op == "create_manual" else None
        if value:
            self.known.mark(f"{self.label}_{op}", value)
        if op == "put":
            name = self.manual
            r = self.api.call("PUT", f"/v1/secrets/{name}", {"value": value}, auth=True, timeout=self.timeout)
        elif op == "rotate":
            name = self.auto
            r = self.api.call("POST", f"/v1/secrets/{name}/rotate", auth=True, timeout=self.timeout)
        else:
            name = f"{self.new}{op.removeprefix('create_')[0]}{self.n}"
            r = self.create(name, value)
            self.created[name] = r.status
        self.touched.add(name)
        j = r.json() if 200 <= r.status < 300 else None
        if isinstance(j, dict):
            self.known.add(name, j.get("version"), value or j.get("value"), f"{self.label}_{op}")
            if op in ("put", "rotate"):
                self.acked[name] += 1
        self.log.add("write", op, name, r)

    def run(self, stop):
        while not stop.is_set():
            self.step()
            time.sleep(self.pause)


def history(api, name, attempts=20):
    """A secret's versions (oldest first) from GET .../versions; None if it does not exist or the
    API did not answer (retried while it is down: `attempts` x 0.5 s)."""
    for _ in range(attempts):
        r = api.call("GET", f"/v1/secrets/{name}/versions", auth=True, timeout=15)
        if r.status == 200:
            return sorted(r.json()["versions"], key=lambda v: v["version"])
        if r.status == 404:
            return None
        time.sleep(0.5)
    return None


def read_back(api, name, known):
    """Ground truth of one secret: (status of its version listing, {version: listing entry},
    {version: Resp of GET ?version=N}); every value read is a leak marker."""
    r = api.call("GET", f"/v1/secrets/{name}/versions", auth=True)
    listed = {v["version"]: v for v in (r.json() or {}).get("versions", [])} if r.status == 200 else {}
    reads = {}
    for v in sorted(listed):
        reads[v] = api.call("GET", f"/v1/secrets/{name}?version={v}")
        known.mark("readback", (reads[v].json() or {}).get("value"))
    return r.status, listed, reads
