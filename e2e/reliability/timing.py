#!/usr/bin/env python3
"""Timing side channel of verify (issue 8, "Timing"; DESIGN.md §7: compare digests in constant time).

Usage: timing.py [n-per-group]      (HV_RUN_DIR, HV_API_PORT; default n = 2000)

For a secret with a known 64-byte value, time POST /v1/secrets/{name}/verify with
  A: a value of the same length with 0 leading bytes matching (every byte differs), and
  B: the same length with all but the last byte matching,
n times each, interleaved in random order over one keep-alive connection (so drift in machine load
hits both groups alike), after a warm-up. The two latency distributions are compared with the
Mann-Whitney U test (normal approximation, tie-corrected) and the two-sample Kolmogorov-Smirnov test
(asymptotic p-value), both in pure Python. Pass: neither test rejects "same distribution" at the
conservative alpha = 0.001 (two-sided).

A positive control proves the method can see a difference when one exists: a 64-byte vs a 60 KiB
presented value (more to parse and hash) must be found different (p < 0.001) with only 300 samples
each. Ends with `timing: N passed, M failed`; figures as `FIGURE <name> <value>` lines.
"""
import http.client
import json
import math
import os
import random
import secrets
import statistics
import sys
import time

RUN_DIR = os.environ.get("HV_RUN_DIR", "/tmp/hyperion-vault-run")
PORT = int(os.environ["HV_API_PORT"])
ADMIN = open(os.path.join(RUN_DIR, "run", "admin-token")).read().strip()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
ALPHA = 0.001
passed = failed = 0


def check(what, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   - {what}")
    else:
        failed += 1
        print(f"FAIL - {what}" + (f"  [{detail}]" if detail else ""))
    return cond


def norm_sf(z):
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney(a, b):
    """Two-sided Mann-Whitney U, normal approximation with tie correction. Returns (U, z, p)."""
    n1, n2 = len(a), len(b)
    allv = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(allv)
    ties = 0.0
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1][0] == allv[i][0]:
            j += 1
        r = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = r
        t = j - i + 1
        ties += t ** 3 - t
        i = j + 1
    r1 = sum(r for r, (_, g) in zip(ranks, allv) if g == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    mu = n1 * n2 / 2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u1 - mu) / sigma if sigma else 0.0
    return u1, z, min(1.0, 2 * norm_sf(abs(z)))


def ks_2samp(a, b):
    """Two-sample Kolmogorov-Smirnov D and its asymptotic two-sided p-value."""
    a, b = sorted(a), sorted(b)
    n1, n2 = len(a), len(b)
    i = j = 0
    d = 0.0
    while i < n1 and j < n2:
        x = min(a[i], b[j])
        while i < n1 and a[i] == x:
            i += 1
        while j < n2 and b[j] == x:
            j += 1
        d = max(d, abs(i / n1 - j / n2))
    en = math.sqrt(n1 * n2 / (n1 + n2))
    lam = (en + 0.12 + 0.11 / en) * d
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, max(0.0, min(1.0, p))


conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)


def req(method, path, body, auth=False):
    h = {"Content-Type": "application/json"}
    if auth:
        h["Authorization"] = "Bearer " + ADMIN
    data = json.dumps(body).encode()
    t0 = time.perf_counter_ns()
    conn.request(method, path, data, h)
    r = conn.getresponse()
    out = r.read()
    t1 = time.perf_counter_ns()
    return r.status, out, (t1 - t0) / 1000.0  # microseconds


name = f"rel/timing-{secrets.token_hex(4)}/key"
alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
value = "".join(secrets.choice(alphabet) for _ in range(64))
st, out, _ = req("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value}, auth=True)
if not check("setup: create a manual secret with a known 64-byte value", st == 201, out[:200]):
    print(f"timing: {passed} passed, {failed} failed")
    sys.exit(1)
# every byte differs (rotate each char within the alphabet) vs the last byte differs
zero_match = "".join(alphabet[(alphabet.index(c) + 1) % len(alphabet)] for c in value)
last_differs = value[:-1] + alphabet[(alphabet.index(value[-1]) + 1) % len(alphabet)]
assert len(zero_match) == len(last_differs) == len(value)
assert all(x != y for x, y in zip(zero_match, value)) and last_differs[:-1] == value[:-1] != last_differs
path = f"/v1/secrets/{name}/verify"
if os.environ.get("HV_LEAK_MARKERS"):  # plaintext values used here, for leak_scan.sh to look for
    with open(os.environ["HV_LEAK_MARKERS"], "a") as f:
        f.write(f"timing_value {value} all\ntiming_presented_0 {zero_match} all\ntiming_presented_63 {last_differs} all\n")

st, out, _ = req("POST", path, {"value": value})
check("control: the right value verifies", st == 200 and json.loads(out)["valid"] is True, out[:200])


def sample(values, n):
    times = {k: [] for k in values}
    bad = 0
    order = [k for k in values for _ in range(n)]
    random.shuffle(order)
    for k in order:
        st, out, us = req("POST", path, {"value": values[k]})
        if st != 200 or json.loads(out).get("valid") is not False:
            bad += 1
        times[k].append(us)
    return times, bad


sample({"w": zero_match}, 300)  # warm-up: connection, caches, allocator
t0 = time.time()
times, bad = sample({"zero": zero_match, "allbut1": last_differs}, N)
elapsed = time.time() - t0
check(f"all {2 * N} verify calls answered 200 valid=false", bad == 0, f"{bad} did not")
a, b = times["zero"], times["allbut1"]
ma, mb = statistics.median(a), statistics.median(b)
u, z, p_mw = mann_whitney(a, b)
d, p_ks = ks_2samp(a, b)
print(f"FIGURE timing_samples_per_group {N}")
print(f"FIGURE timing_wall_seconds {elapsed:.1f}")
print(f"FIGURE median_us_0_match {ma:.1f}")
print(f"FIGURE median_us_all_but_1_match {mb:.1f}")
print(f"FIGURE median_diff_us {mb - ma:+.1f}")
print(f"FIGURE p10_p90_us_0_match {statistics.quantiles(a, n=10)[0]:.1f}/{statistics.quantiles(a, n=10)[-1]:.1f}")
print(f"FIGURE p10_p90_us_all_but_1_match {statistics.quantiles(b, n=10)[0]:.1f}/{statistics.quantiles(b, n=10)[-1]:.1f}")
print(f"FIGURE mann_whitney_U {u:.0f} z {z:+.3f} p {p_mw:.4f}")
print(f"FIGURE ks_D {d:.4f} p {p_ks:.4f}")
check(f"Mann-Whitney: no significant difference (p = {p_mw:.4f} >= {ALPHA})", p_mw >= ALPHA)
check(f"Kolmogorov-Smirnov: no significant difference (p = {p_ks:.4f} >= {ALPHA})", p_ks >= ALPHA)

# positive control: the same method does see a real cost difference
big = "".join(secrets.choice(alphabet) for _ in range(60 * 1024))
ctl, _ = sample({"small": zero_match, "big": big}, 300)
_, zc, pc = mann_whitney(ctl["small"], ctl["big"])
print(f"FIGURE control_median_us_64B {statistics.median(ctl['small']):.1f}")
print(f"FIGURE control_median_us_60KiB {statistics.median(ctl['big']):.1f}")
print(f"FIGURE control_mann_whitney_p {pc:.2e}")
check(f"positive control: 64 B vs 60 KiB presented value is detected (p = {pc:.2e} < {ALPHA})", pc < ALPHA)
print(f"timing: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
