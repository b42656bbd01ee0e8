"""python -m reliability run [--attach] [--keep] [--out DIR] [CHECK ...] | list | table RESULTS | one CHECK --json F"""
import argparse
import json
import sys

from . import report, runner

p = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
sub = p.add_subparsers(dest="cmd", required=True)
r = sub.add_parser("run", help="start a private instance (make run), run the checks (default: all), stop it")
r.add_argument("checks", nargs="*", metavar="CHECK")
r.add_argument("--attach", action="store_true",
               help="use the running instance named by HV_RUN_DIR, HV_API_PORT, HV_METRICS_PORT instead")
r.add_argument("--keep", action="store_true", help="leave the instance running and keep the leak markers")
r.add_argument("--out", help="where results go (default /tmp/hv-reliability-<pid>)")
sub.add_parser("list", help="the checks, in the order they run")
t = sub.add_parser("table", help="print the table of a run's results.json")
t.add_argument("results")
o = sub.add_parser("one", help="one check in this process, against the instance in HV_RUN_DIR / HV_API_PORT")
o.add_argument("check", choices=runner.CHECKS)
o.add_argument("--json", required=True, help="where its result goes")
a = p.parse_args()

if a.cmd == "run":
    sys.exit(runner.run(a.checks, a.attach, a.keep, a.out))
elif a.cmd == "list":
    print("\n".join(runner.CHECKS))
elif a.cmd == "table":
    results = json.load(open(a.results))
    report.table(results)
    print(f"reliability: {results.get('passed', 0)} passed, {results.get('failed', 0)} failed")
else:
    sys.exit(runner.run_one(a.check, a.json))
