"""Readers during rotation (issue 8): many clients read and verify automatic secrets while they
rotate every few seconds with a short grace period (DESIGN.md §3-§4, §6-§7).

Settings: HV_READERS_SECONDS (reading time, default 40), HV_READERS (threads, default 24). Needs
the controller started with VAULT_MIN_ROTATION_INTERVAL=1s (the runner does) for the 4 s VaultSecret.

Two secrets, both automatic, interval 4 s, gracePeriod 3 s: a VaultSecret (rotated by the
controller's reconcile) and an API-owned secret (rotated by the controller's API sweep, every
VAULT_API_SWEEP_INTERVAL = 5 s by default). Reader threads, for the duration, each in a loop:
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

Positive control: judged again with every expiry moved 1.5 s later (earlier), the same answers must
show rejections inside "grace" (acceptances after it), so both counts can be non-zero. Deletes
both secrets at the end (the namespace stays, empty).
"""
import os
import random
import secrets
import threading
import time

from ..api import ts_us
from ..load import Known, Workers, poll

LABEL = "readers during rotation"
INTERVAL, GRACE = 4, 3
M = 0.2  # s, margin on every boundary


def ts(s):
    return None if s is None else ts_us(s) / 1e6


def run(ctx):
    duration = float(os.environ.get("HV_READERS_SECONDS", "40"))
    n_readers = int(os.environ.get("HV_READERS", "24"))
    check, figure, api, kube = ctx.check, ctx.figure, ctx.api, ctx.kube
    t_start = time.time()
    tag = secrets.token_hex(3)
    ns = f"rel-readers-{tag}"
    ctx.require("setup: controller started with VAULT_MIN_ROTATION_INTERVAL=1s (HV_CONTROLLER_ENV)",
                ctx.deployment.setting("controller", "VAULT_MIN_ROTATION_INTERVAL") == "1s",
                f"a {INTERVAL}s interval would be InvalidSpec")
    check("setup: namespace created", kube.create_namespace(ns) == 201)
    st, j = kube.create_vaultsecret(ns, "key", {
        "kind": "Automatic", "rotationInterval": f"{INTERVAL}s", "gracePeriod": f"{GRACE}s",
        "generator": {"length": 40, "charset": "alphanumeric"}, "deletionPolicy": "Delete"})
    check("setup: VaultSecret created", st == 201, f"{st} {j}")
    vs_name, api_name = f"{ns}/key", f"rel/readers-{tag}/key"
    r = api.call("POST", "/v1/secrets", {"name": api_name, "kind": "automatic", "rotation_interval_secs": INTERVAL,
                                         "grace_period_secs": GRACE,
                                         "generator": {"length": 40, "charset": "alphanumeric"}}, auth=True)
    check("setup: API-owned automatic secret created", r.status == 201, repr(r))
    names = [vs_name, api_name]
    ctx.require("setup: the VaultSecret's value is served",
                poll(lambda: api.call("GET", f"/v1/secrets/{vs_name}").status == 200, timeout=30))

    # wrong values presented to verify: a few fixed ones (each is a leak marker)
    wrong_values = ["rrw" + secrets.token_hex(20) for _ in range(6)]
    for w in wrong_values:
        ctx.mark("readers_wrong", w)

    lag_samples = []
    log_lock = threading.Lock()
    reads = []     # (name, t0, t1, status, version|None)
    vreads = []    # versioned reads: (name, t0, t1, version asked, status, value matches?)
    verifies = []  # (name, t0, t1, presented version | None for a wrong value, status, valid, version)
    known = Known(ctx.mark)

    def lag_sampler(stop):
        sql = "SELECT coalesce(extract(epoch FROM max(replay_lag)), 0) FROM pg_stat_replication"
        while not stop.is_set():
            rc, out, _ = ctx.env.psql(ctx.env["PG_PRIMARY_PORT"], sql)
            if rc == 0:
                lag_samples.append(float(out or 0))
            stop.wait(1.0)

    def reader(stop, idx):
        rng = random.Random(idx)
        c = api.session()
        seen = {n: {} for n in names}  # this reader's memory: name -> {version: value}
        my_reads, my_vreads, my_verifies = [], [], []
        while not stop.is_set():
            name = rng.choice(names)
            r = c.req("GET", f"/v1/secrets/{name}")
            j = r.json() if r.status == 200 else None
            v = j.get("version") if isinstance(j, dict) else None
            my_reads.append((name, r.t0, r.t1, r.status, v))
            if v is None:
                continue
            value = j.get("value")
            known.add(name, v, value, "readers_value")
            seen[name].setdefault(v, value)
            # what to verify
            older = sorted((p for p in seen[name] if p < v), reverse=True)
            x = rng.random()
            if x < 0.3 or not older:
                pv, pval = v, value
            elif x < 0.9:
                pv = older[0] if rng.random() < 0.7 or len(older) == 1 else rng.choice(older[1:4])
                pval = seen[name][pv]
            else:
                pv, pval = None, rng.choice(wrong_values)
            r = c.req("POST", f"/v1/secrets/{name}/verify", {"value": pval})
            j = r.json() if r.status == 200 else None
            my_verifies.append((name, r.t0, r.t1, pv, r.status, j.get("valid") if isinstance(j, dict) else None,
                                j.get("version") if isinstance(j, dict) else None))
            if older and rng.random() < 0.15:
                pv = older[0] if rng.random() < 0.6 else rng.choice(older)
                r = c.req("GET", f"/v1/secrets/{name}?version={pv}")
                j = r.json() if r.status == 200 else None
                same = isinstance(j, dict) and j.get("value") == seen[name][pv] and j.get("version") == pv
                my_vreads.append((name, r.t0, r.t1, pv, r.status, same))
            time.sleep(rng.uniform(0.02, 0.06))
        with log_lock:
            reads.extend(my_reads)
            vreads.extend(my_vreads)
            verifies.extend(my_verifies)

    t_read0 = time.time()
    with Workers() as w:
        w.spawn(lag_sampler, w.stop)
        for i in range(n_readers):
            w.spawn(reader, w.stop, i)
        time.sleep(duration)
    t_read1 = time.time()
    time.sleep(0.5)

    # ------------------------------------------------------------ analysis
    hist = {}
    for n in names:
        r = api.call("GET", f"/v1/secrets/{n}/versions", auth=True)
        ctx.require(f"version history of {n}", r.status == 200, r.status)
        hist[n] = {v["version"]: (ts(v["created_at"]), ts(v["superseded_at"]), ts(v["expires_at"]))
                   for v in r.json()["versions"]}

    lag = max(lag_samples, default=0.0)
    rotations = {n: sum(1 for v, (c, _, _) in hist[n].items() if t_read0 <= c <= t_read1) for n in names}
    failed_reads = [r for r in reads if r[3] != 200]
    stale = []
    staleness_max = 0.0
    for name, t0, t1, st, v in reads:
        newer = hist[name].get(v + 1) if v is not None else None
        if newer and t0 > newer[0]:
            staleness_max = max(staleness_max, t0 - newer[0])
            if t0 > newer[0] + 1.0 + lag + M:
                stale.append(f"{name}: read started {t0 - newer[0]:.2f}s after v{v + 1} was created returned v{v}")

    def judge(name, pv, t0, t1, shift=0.0):
        """'valid' | 'invalid' | None (in a margin): what the answer must be for version pv's value.
        `shift` moves every expiry (positive controls only)."""
        _, sup, exp = hist[name][pv]
        if exp is None or t1 <= exp + shift - M:
            return "valid"
        if t0 >= max(exp + shift, sup + 1.0 + lag) + M:
            return "invalid"
        return None

    def control(shift):
        """(rejected though judged valid, accepted though judged invalid) with every expiry moved."""
        rej = acc = 0
        for name, t0, t1, pv, st, valid, _ in verifies:
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

    conflicts = known.conflicts
    figure("readers", n_readers)
    figure("read_seconds", f"{t_read1 - t_read0:.1f}")
    figure("rotations_during_reads", " ".join(f"{n}={rotations[n]}" for n in names))
    figure("reads", len(reads))
    figure("read_latency_ms_p50_p99", f"{pct(lat, 0.5) * 1000:.1f} {pct(lat, 0.99) * 1000:.1f}")
    figure("failed_reads", len(failed_reads))
    figure("read_value_conflicts", len(conflicts))
    figure("replay_lag_max_seconds", f"{lag:.3f}")
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
    for p in ([f"{r[0]}: read -> {r[3]}" for r in failed_reads[:5]] + conflicts[:5] + stale[:5] + verify_errors[:5]
              + cur_rejected[:5] + prev_rejected[:5] + after_accepted[:5] + wrong_accepted[:5] + wrong_version[:5]
              + vr_in_failed[:5] + vr_after_served[:5]):
        ctx.problem(p)

    late_rej, _ = control(+1.5)
    _, early_acc = control(-1.5)
    check(f"positive control: judged with every grace 1.5 s longer, {late_rej} verifies count as rejected inside "
          f"grace; 1.5 s shorter, {early_acc} as accepted after it", late_rej > 0 and early_acc > 0)
    check(f">= 4 rotations of each secret while reading "
          f"({', '.join(f'{n}: {r}' for n, r in rotations.items())})", all(r >= 4 for r in rotations.values()))
    check(f"failed reads: 0 of {len(reads)}", not failed_reads)
    check("each version always read with the same value", not conflicts)
    check(f"no read returned an older version more than 1 s + replay lag ({lag:.3f}s) + {M}s after a newer one was "
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

    api.call("DELETE", f"/v1/secrets/{api_name}", auth=True)
    kube.retry("DELETE", kube.vaultsecrets_path(ns, "key"))
    figure("wall_seconds", f"{time.time() - t_start:.0f}")
