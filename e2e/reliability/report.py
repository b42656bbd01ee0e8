"""What one check found: its results, figures and problems, printed as they happen (`ok   - `,
`FAIL - `, `FIGURE <name> <value>`, `  problem: `) and kept for the run's JSON results."""
import signal
import sys
import threading
import time


class Abort(Exception):
    """Ends a check early (a setup step failed, or its time ran out); what it found is kept."""


class Report:
    def __init__(self, name, label):
        self.name, self.label = name, label
        self.results, self.figures, self.problems = [], [], []
        self.started = time.time()
        self._lock = threading.Lock()

    def say(self, line):
        with self._lock:
            print(line, flush=True)

    def check(self, what, cond, detail=""):
        ok = bool(cond)
        with self._lock:
            self.results.append({"ok": ok, "what": what, "detail": "" if ok else str(detail)})
        self.say(f"ok   - {what}" if ok else f"FAIL - {what}" + (f"  [{detail}]" if detail else ""))
        return ok

    def require(self, what, cond, detail=""):
        """A check the rest depends on: if it fails, the check ends here."""
        if not self.check(what, cond, detail):
            raise Abort(what)

    def figure(self, name, value):
        with self._lock:
            self.figures.append({"name": name, "value": str(value)})
        self.say(f"FIGURE {name} {value}")

    def problem(self, text):
        with self._lock:
            self.problems.append(str(text))
        self.say(f"  problem: {text}")

    def note(self, text):
        self.say(f"  # {text}")

    @property
    def passed(self):
        return sum(r["ok"] for r in self.results)

    @property
    def failed(self):
        return len(self.results) - self.passed

    def time_limit(self, seconds):
        """After `seconds` a failed check says so and the check ends (its `finally` blocks run)."""
        def expired(*_):
            self.check(f"finished within {seconds} s", False)
            raise Abort("time limit")

        signal.signal(signal.SIGALRM, expired)
        signal.alarm(seconds)

    def summary(self):
        return f"{self.label}: {self.passed} passed, {self.failed} failed"

    def as_dict(self):
        return {"name": self.name, "label": self.label, "started": self.started, "seconds": time.time() - self.started,
                "passed": self.passed, "failed": self.failed, "results": self.results, "figures": self.figures,
                "problems": self.problems}


def counts(result):
    """(passed, failed) of a check's JSON result."""
    ok = sum(r["ok"] for r in result["results"])
    return ok, len(result["results"]) - ok


def table(run, out=sys.stdout):
    """The printed table of a run's JSON results: every figure, then each check's result."""
    row = "{:<15} {:<42} {}".format
    print(row("suite", "figure", "value"), file=out)
    print(row("-" * 15, "-" * 42, "-" * 28), file=out)
    for c in run["checks"]:
        for f in c["figures"]:
            print(row(c["name"], f["name"], f["value"]), file=out)
        print(row(c["name"], "result", "{} passed, {} failed".format(*counts(c))), file=out)
