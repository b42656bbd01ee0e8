"""Shared pieces of the reliability suites (failover.py, kms_outage.py, readers_rotation.py,
restarts.py, timing.py); standard library only.

A suite runs as `python e2e/reliability/<suite>.py` (HV_RUN_DIR, HV_API_PORT), so this directory is
on sys.path and `import suite` finds this module. It provides:

  - where the instance is: RUN_DIR, RUN, ROOT, TESTENV, PORT, ADMIN (the admin token), and the
    testenv env file as ENV (filled by load_env(), which re-reads it in place);
  - the report: check() (the `ok   - ` / `FAIL - ` lines and the pass/fail counters, read them as
    suite.passed / suite.failed), figure() (`FIGURE <name> <value>`), say() (one line, under a lock),
    finish(label) (`<label>: N passed, M failed`, exit status 1 if any failed), arm_wall_limit();
  - leak markers for leak_scan.sh: mark() (an open $HV_LEAK_MARKERS, values with whitespace skipped,
    with a scope) and leak_marker() (each value once);
  - the API: prepare() (body and headers of a request), Resp and call() (one request on its own
    connection, timed, transport errors as status 0);
  - the environment: testenv(), psql(), kubectl(), pid_of(), rnd().
"""
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

RUN_DIR = os.environ.get("HV_RUN_DIR", "/tmp/hyperion-vault-run")
RUN = os.path.join(RUN_DIR, "run")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTENV = os.path.join(ROOT, "e2e", "testenv", "testenv")
PORT = int(os.environ["HV_API_PORT"])
ADMIN = open(os.path.join(RUN, "admin-token")).read().strip()
ENV = {}


def load_env():
    """(Re-)read HV_RUN_DIR/env into ENV (in place, so every holder of ENV sees it) and return it."""
    env = {}
    for line in open(os.path.join(RUN_DIR, "env")):
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip("'\"")
    ENV.clear()
    ENV.update(env)
    return ENV


# ------------------------------------------------------------------ report
passed = failed = 0
out_lock = threading.Lock()


def say(s):
    with out_lock:
        print(s, flush=True)


def check(what, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        say(f"ok   - {what}")
    else:
        failed += 1
        say(f"FAIL - {what}" + (f"  [{detail}]" if detail else ""))
    return cond


def figure(name, value):
    say(f"FIGURE {name} {value}")


def finish(label):
    say(f"{label}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def arm_wall_limit(seconds, finish_suite):
    """After `seconds` the suite fails a check saying so and finishes through finish_suite()."""
    def on_alarm(*_):
        check(f"suite finished within {seconds} s", False)
        finish_suite()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)


# ------------------------------------------------------------------ leak markers
_mlock = threading.Lock()
_mfile = None


def mark(label, value, scope="all"):
    """Appends the value with its scope, unless it has whitespace (kept open: called under load)."""
    global _mfile
    if not os.environ.get("HV_LEAK_MARKERS") or not value or any(c.isspace() for c in value):
        return
    with _mlock:
        if _mfile is None:
            _mfile = open(os.environ["HV_LEAK_MARKERS"], "a")
        _mfile.write(f"{label} {value} {scope}\n")
        _mfile.flush()


marker_lock = threading.Lock()
markers_seen = set()


def leak_marker(label, value):
    """Appends each value once (scope all)."""
    if not value or value in markers_seen:
        return
    with marker_lock:
        if value in markers_seen:
            return
        markers_seen.add(value)
        if os.environ.get("HV_LEAK_MARKERS"):
            with open(os.environ["HV_LEAK_MARKERS"], "a") as f:
                f.write(f"{label} {value} all\n")


# ------------------------------------------------------------------ the vault API
def prepare(body=None, auth=False, close=True):
    """(data, headers) of a request: JSON body, admin token, Connection: close."""
    h = {"Connection": "close"} if close else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if auth:
        h["Authorization"] = "Bearer " + ADMIN
    return data, h


class Resp:
    __slots__ = ("status", "body", "retry_after", "t0", "t1", "error")

    def __init__(self, status, body, retry_after, t0, t1, error=""):
        self.status, self.body, self.retry_after, self.t0, self.t1, self.error = status, body, retry_after, t0, t1, error

    def json(self):
        try:
            return json.loads(self.body)
        except Exception:
            return None

    def clean_error(self):
        """A JSON {"error": "..."} body."""
        j = self.json()
        return isinstance(j, dict) and isinstance(j.get("error"), str) and bool(j["error"])

    def __repr__(self):
        return f"{self.status} {self.error or self.body[:160]!r}"


def call(method, path, body=None, auth=False, port=None, timeout=30):
    """One request on its own connection (no keep-alive ambiguity). status 0 = transport error or
    timeout."""
    data, h = prepare(body, auth)
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port or PORT, timeout=timeout)
    try:
        conn.request(method, path, data, h)
        r = conn.getresponse()
        out = r.read()
        return Resp(r.status, out, r.getheader("Retry-After"), t0, time.monotonic())
    except Exception as e:  # noqa: BLE001 - every transport failure is a finding
        return Resp(0, b"", None, t0, time.monotonic(), f"{type(e).__name__}: {e}")
    finally:
        conn.close()


# ------------------------------------------------------------------ the environment
def testenv(*args, timeout=180):
    t0 = time.monotonic()
    p = subprocess.run([TESTENV, *args], env={**os.environ, "HV_TESTENV_DIR": RUN_DIR}, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).strip(), t0, time.monotonic()


def psql(port, sql, db=None):
    p = subprocess.run([os.path.join(ENV["PG_BIN_DIR"], "psql"), "-X", "-qtA", "-v", "ON_ERROR_STOP=1",
                        "-h", ENV["PG_HOST"], "-p", str(port), "-U", ENV["PG_SUPERUSER"], "-d",
                        db or ENV["PG_DATABASE"], "-c", sql],
                       env={**os.environ, "PGPASSWORD": ENV["PG_SUPERPASSWORD"], "PGCONNECT_TIMEOUT": "3",
                            "PGOPTIONS": "-c client_min_messages=warning"},
                       capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout.strip(), p.stderr.strip()


def kubectl(*args, stdin=None, timeout=90):
    env = {**os.environ, "KUBECONFIG": ENV["KUBECONFIG"], "KUBECACHEDIR": ENV.get("KUBECACHEDIR", "")}
    p = subprocess.run([ENV["KUBECTL"], *args], input=stdin, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).strip()


def pid_of(name):
    """The pid in RUN/<name>.pid if that process exists, else None."""
    try:
        pid = int(open(os.path.join(RUN, f"{name}.pid")).read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def rnd(prefix):
    return prefix + secrets.token_hex(16)
