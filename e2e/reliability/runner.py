"""Runs checks by name against one instance of the product, each in its own process, and keeps what
they found as JSON: <out>/<check>.json per check, <out>/results.json for the run (the printed table
is made from it), <out>/<check>.out the check's full output."""
import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

from . import report as reports
from .deployment import LocalProcesses, free_port
from .environment import ROOT

# Order matters: failover leaves the instance on the rejoined PostgreSQL pair (the old primary's
# data dir kept for the leak scan), and the leak scan looks for every value the others used.
CHECKS = ("hostile_input", "schemathesis", "fuzz", "timing", "readers", "restarts", "kms_outage", "failover",
          "leak_scan")


class Context:
    """What a check gets: its report (check, require, figure, problem, note), the deployment, the
    API, the test environment, the Kubernetes API and the leak markers (mark)."""

    def __init__(self, report):
        self.report = report
        self.check, self.require, self.figure = report.check, report.require, report.figure
        self.problem, self.note = report.problem, report.note
        self.deployment = LocalProcesses.from_environ()
        self.env = self.deployment.env
        self._markers, self._marked, self._mlock = os.environ.get("HV_LEAK_MARKERS"), set(), threading.Lock()

    @functools.cached_property
    def api(self):
        return self.deployment.api()

    @functools.cached_property
    def kube(self):
        from .kube import Kube  # needs PyYAML, from the testenv venv
        return Kube(self.env["KUBECONFIG"])

    def mark(self, label, value, scope="all"):
        """A plaintext value the leak scan must not find at rest (scope all | not-etcd | control);
        each value once, none with whitespace (the markers file is `label value scope` lines)."""
        if not self._markers or not value or not isinstance(value, str) or any(c.isspace() for c in value):
            return
        with self._mlock:
            if value not in self._marked:
                self._marked.add(value)
                with open(self._markers, "a") as f:
                    f.write(f"{label} {value} {scope}\n")


def run_one(name, json_path):
    """One check in this process; the instance from HV_RUN_DIR / HV_API_PORT / HV_METRICS_PORT."""
    module = importlib.import_module(f"{__package__}.checks.{name}")
    report = reports.Report(name, module.LABEL)
    try:
        module.run(Context(report))
    except reports.Abort:
        pass
    except Exception:  # noqa: BLE001 - a crash is a failed check, with its traceback
        report.check(f"{name} ran to its end", False, traceback.format_exc(limit=-4))
    finally:
        signal.alarm(0)  # a time limit ends with the check
    with open(json_path + ".tmp", "w") as f:
        json.dump(report.as_dict(), f, indent=1)
    os.replace(json_path + ".tmp", json_path)
    report.say(report.summary())
    return 1 if report.failed else 0


def run_child(name, out, python, env):
    """Runs one check in a child process; its JSON result, with a failure added if it had none or exited non-zero."""
    log, js = os.path.join(out, f"{name}.out"), os.path.join(out, f"{name}.json")
    start = time.time()
    with open(log, "w") as f:
        rc = subprocess.run([python, "-m", __package__, "one", name, "--json", js], stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env).returncode
    try:
        res = json.load(open(js))
    except (OSError, ValueError):
        print("".join(open(log).readlines()[-20:]), end="")
        label = getattr(importlib.import_module(f"{__package__}.checks.{name}"), "LABEL", name)
        res = {"name": name, "label": label, "results": [], "figures": [], "problems": []}
    if not res["results"] or (rc != 0 and reports.counts(res)[1] == 0):
        res["results"].append({"ok": False, "what": f"{res['label']} exited {rc}", "detail": f"see {log}"})
    res.update(exit=rc, seconds=round(time.time() - start), output=log)
    return res


def run(names, attach=False, keep=False, out=None):
    """The reliability suite (or the named checks): prints each check's failures and summary, the
    table of every figure, and `reliability: N passed, M failed` (scripts/test.sh sums that line)."""
    skip_timing = os.environ.get("HV_RELIABILITY_SKIP_TIMING")
    names = names or [n for n in CHECKS if not (n == "timing" and skip_timing)]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown check(s) {' '.join(unknown)}; known: {' '.join(CHECKS)}", file=sys.stderr)
        return 2
    names = [n for n in CHECKS if n in names]
    out = out or f"/tmp/hv-reliability-{os.getpid()}"
    os.makedirs(out, exist_ok=True)
    if attach:
        dep = LocalProcesses.from_environ()
    else:
        dep = LocalProcesses(f"/tmp/hyperion-vault-reliability-{os.getpid()}",
                             os.environ.get("HV_API_PORT") or free_port(), os.environ.get("HV_METRICS_PORT") or free_port())
    # Plaintext values the checks used, for the leak scan: next to the run dir (which it scans), so
    # a check re-run on a kept instance adds to what earlier runs used there.
    markers = os.environ.get("HV_LEAK_MARKERS") or dep.run_dir.rstrip("/") + "-markers"
    open(markers, "a").close()
    results = {"started": time.time(), "out": out, "instance": dep.environ(), "checks": []}
    passed = failed = 0
    try:
        if not attach:
            log = os.path.join(out, "make-run.out")
            if not dep.up(log, controller_env="VAULT_MIN_ROTATION_INTERVAL=1s"):  # rotation checks use 3-8 s
                print("".join(open(log).readlines()[-30:]), end="")
                print(f"FAIL - make run (log: {log})")
                print("reliability: 0 passed, 1 failed")
                return 1
            print(f"ok   - make run: private instance up (API :{dep.api_port}, run dir {dep.run_dir})")
            passed = 1
        env = {**os.environ, **dep.environ(), "HV_LEAK_MARKERS": markers, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [os.path.join(ROOT, "e2e"), os.environ.get("PYTHONPATH")]))}
        python = os.path.join(dep.env["HV_VENV"], "bin", "python")
        for name in names:
            label = importlib.import_module(f"{__package__}.checks.{name}").LABEL
            print(f"\n==> {label}", flush=True)
            res = run_child(name, out, python, env)
            results["checks"].append(res)
            p, f = reports.counts(res)
            passed, failed = passed + p, failed + f
            results.update(passed=passed, failed=failed, finished=time.time())
            with open(os.path.join(out, "results.json"), "w") as fh:
                json.dump(results, fh, indent=1)
            lines = [f"FAIL - {r['what']}" + (f"  [{r['detail']}]" if r["detail"] else "")
                     for r in res["results"] if not r["ok"]] + [f"  problem: {p}" for p in res["problems"]]
            print("\n".join(lines[:40] + [f"{res['label']}: {p} passed, {f} failed (exit {res['exit']})   "
                                          f"[{res['seconds']} s, full output: {res['output']}]"]), flush=True)
        print()
        reports.table(results)
        print(f"\nresults: {os.path.join(out, 'results.json')}")
    finally:
        if not attach and not keep:
            dep.down()
            os.unlink(markers)
    print(f"reliability: {passed} passed, {failed} failed")
    return 1 if failed else 0
