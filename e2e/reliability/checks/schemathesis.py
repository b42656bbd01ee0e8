"""Schemathesis against the running instance (issue 8, "Hostile input"; DESIGN.md §7).

Fuzzes the OpenAPI document the instance serves (GET /v1/openapi.json) with every schemathesis
check, in all four phases — examples, coverage, fuzzing and stateful, where schemathesis chains
real calls through the document's links (create a secret → read/verify/update/rotate/versions/
delete it; create a role → get/replace/delete it, mint a token for it → revoke that) — for
HV_SCHEMATHESIS_MAX_TIME seconds (default 150; schemathesis splits the budget between phases).
Settings and the one relaxed check, with reasons: schemathesis.toml. Hooks that keep the run from
locking 127.0.0.1 out or revoking the admin token the other checks use: schemathesis_hooks.py.
schemathesis runs from its own venv (HV_SCHEMATHESIS_VENV, default ~/.cache/hyperion-vault/
schemathesis-venv; installed on first use, pinned below).

The full schemathesis output is kept in HV_SCHEMATHESIS_OUT (default: a temp dir, printed); its
reports hold generated secret values, so they are written outside the run dir and deleted unless
HV_SCHEMATHESIS_KEEP=1.
"""
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

LABEL = "schemathesis"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMATHESIS_VERSION = "4.32.5"
HYPOTHESIS_VERSION = "6.170.15"  # pinned too: the hooks work around this version's optimiser crash


def venv():
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "hyperion-vault")
    path = os.environ.get("HV_SCHEMATHESIS_VENV", os.path.join(cache, "schemathesis-venv"))

    def version(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return None

    if version(f"{path}/bin/schemathesis", "--version") != f"schemathesis, version {SCHEMATHESIS_VERSION}" or \
            version(f"{path}/bin/python", "-c", "import hypothesis; print(hypothesis.__version__)") != HYPOTHESIS_VERSION:
        print(f"installing schemathesis {SCHEMATHESIS_VERSION} (hypothesis {HYPOTHESIS_VERSION}) into {path}", flush=True)
        subprocess.run(["python3", "-m", "venv", path], check=True)
        subprocess.run([f"{path}/bin/pip", "install", "-q", "--disable-pip-version-check",
                        f"schemathesis=={SCHEMATHESIS_VERSION}", f"hypothesis=={HYPOTHESIS_VERSION}"], check=True)
    return path


def figures(report_dir, output):
    """What the reports recorded: every request (auth probes included) by status, stateful steps and links."""
    statuses, seen, server_errors = collections.Counter(), set(), []
    steps = links = failures = errors = 0
    for path in glob.glob(report_dir + "/*.ndjson"):
        for line in open(path):
            finished = json.loads(line).get("ScenarioFinished")
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
                case = rec.get("cases", {}).get(case_id, {})
                # Auth probes (no Authorization header) are checks, not steps of the scenario.
                if finished["phase"] == "stateful" and "Authorization" in (case.get("value", {}).get("headers") or {}):
                    steps += 1
                    links += bool(case.get("transition") and case.get("is_transition_applied"))
    for path in glob.glob(report_dir + "/*.json"):
        run = json.load(open(path))
        failures = sum(f.get("count", 1) for f in run.get("failures", []))
        errors = len(run.get("errors", []))
    m = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", output)
    return {"requests": sum(statuses.values()), "5xx": sum(v for k, v in statuses.items() if k >= 500),
            "failures": failures, "errors": errors, "steps": steps, "links": links,
            "covered": m.group(1) if m else "0", "total": m.group(2) if m else "0", "statuses": statuses,
            "server_errors": server_errors[:20]}


def run(ctx):
    check, api, dep = ctx.check, ctx.api, ctx.deployment
    max_time = os.environ.get("HV_SCHEMATHESIS_MAX_TIME", "150")
    out = os.environ.get("HV_SCHEMATHESIS_OUT") or tempfile.mkdtemp(prefix="hv-schemathesis-")
    os.makedirs(out, exist_ok=True)
    path = venv()
    if not api.ready():
        ctx.require(f"the API at :{api.port} is ready (GET /readyz)", False)

    def panics():
        return open(dep.log("api"), errors="replace").read().count("panicked")

    panics_before = panics()
    start = time.time()
    try:
        with open(os.path.join(out, "schemathesis.out"), "w") as f:
            # Run from the output dir: schemathesis writes nothing else, but keep the caller's cwd clean anyway.
            rc = subprocess.run([f"{path}/bin/schemathesis", "--config-file", os.path.join(HERE, "schemathesis.toml"),
                                 "--no-color", "run", f"http://127.0.0.1:{api.port}/v1/openapi.json",
                                 "-H", f"Authorization: Bearer {api.admin}", "--checks", "all",
                                 "--phases", "examples,coverage,fuzzing,stateful", "--max-time", max_time,
                                 "--workers", "2", "--report", "ndjson,json", "--report-dir", f"{out}/report"],
                                cwd=out, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HV_SCHEMATHESIS_ADMIN_TOKEN": api.admin,
                                     "SCHEMATHESIS_HOOKS": os.path.join(HERE, "schemathesis_hooks.py")}).returncode
        wall = time.time() - start
        output = open(os.path.join(out, "schemathesis.out")).read()
        ctx.note(f"schemathesis exit {rc} after {wall:.0f} s; full output: {out}/schemathesis.out")
        for line in re.findall(r"(?m)^ *((?:API Links|Scenarios|Operations|Test cases):.*|[0-9]+ generated.*)$", output):
            ctx.note(line)
        fig = figures(f"{out}/report", output)
    finally:
        if not os.environ.get("HV_SCHEMATHESIS_KEEP"):
            shutil.rmtree(f"{out}/report", ignore_errors=True)
    for name, key in (("requests", "requests"), ("5xx", "5xx"), ("failures", "failures"),
                      ("stateful_steps", "steps"), ("links_followed", "links")):
        ctx.figure(f"schemathesis_{name}", fig[key])
    ctx.figure("schemathesis_api_links_covered", f"{fig['covered']}/{fig['total']}")
    ctx.figure("schemathesis_wall_s", f"{wall:.0f}")
    ctx.note("statuses: " + ",".join(f"{k}:{v}" for k, v in sorted(fig["statuses"].items())))
    for e in fig["server_errors"]:
        ctx.problem(f"5xx {e}")

    check(f"schemathesis ran ({fig['requests']} requests in {wall:.0f} s)" if fig["requests"] else
          f"schemathesis ran (exit {rc}, no requests recorded)", fig["requests"] > 0)
    check(f"5xx answers: {fig['5xx']}", fig["5xx"] == 0)
    if not check("check failures: 0 (every check; schemathesis exit 0)" if fig["failures"] == fig["errors"] == 0
                 and rc == 0 else f"check failures: {fig['failures']}, errors: {fig['errors']}, schemathesis exit "
                                  f"{rc} (see {out}/schemathesis.out)", fig["failures"] == fig["errors"] == 0 and rc == 0):
        failures = re.search(r"(?ms)^=* FAILURES =*$(.*?)^=* SUMMARY =*$", output)
        for line in re.findall(r"(?m)^(?:[0-9]+\. |- | +(?:curl|Expected)).*$", failures.group(1) if failures else "")[:40]:
            ctx.problem(line)
    check(f"stateful phase chained calls through links ({fig['steps']} steps, {fig['links']} link transitions, "
          f"{fig['covered']} of {fig['total']} links)", fig["steps"] > 0 and fig["links"] > 0)
    r = api.call("GET", "/v1/secrets?limit=1", auth=True)
    check("afterwards: 127.0.0.1 not locked out, admin token still valid (GET /v1/secrets 200)" if r.status == 200
          else f"afterwards: GET /v1/secrets with the admin token from 127.0.0.1 -> {r.status} (want 200)",
          r.status == 200)
    check("the API process is alive and logged no panic", dep.identity("api") and panics() == panics_before)
