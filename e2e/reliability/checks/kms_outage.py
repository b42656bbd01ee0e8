"""KMS outage under load (issue 8, "Faults and load"; DESIGN.md §6: the DEK cache carries reads of
recently read secrets through a KMS outage; KMS is called before any transaction). ~1 min.

Three kinds of secrets, from the API process's point of view (its DEK cache holds unwrapped keys
per version; creating, updating or rotating through it also puts the new key in its cache):

  cached     created through this API and read once before the outage;
  uncached   never touched by this API process. How: they are written by *another* process, so
             this API's cache cannot hold their keys — (a) an extra API process (same binary and
             settings, its own database role and port; stopped again before the outage) creates
             manual secrets with known values, two versions each; (b) the controller seals
             VaultSecrets (Automatic). Nothing is restarted for this. Half of (a) are probed during
             the outage; the rest, and (b), stay untouched until after it, when reading each of
             them must be a cache miss (dek_cache_misses rises by exactly the number of versions
             read) — proof they were uncached all along;
  writes     create (manual and automatic), PUT of a manual value, POST .../rotate.

With 4 reader threads on the cached secrets (GET and verify), one thread probing uncached reads
(GET, GET ?version=1, verify) and two writer threads, `testenv kms-stop` closes the KMS endpoint
for 15 s, then `testenv kms-start`. Checks: cached reads answer 200 with the right value
throughout; uncached reads and every write fail closed during the outage with 503 + JSON error +
Retry-After (never 200, never 500); the KMS errors are real (kms_errors rises); uncached reads and
writes recover by themselves after kms-start (figures: seconds after kms-start returned);
afterwards no half-written version: every secret touched has a contiguous version list whose
every version reads back, a write target has exactly one version per acknowledged write, and a
create that failed left no secret; the API and the controller were never restarted.
"""
import functools
import secrets
import time

from ..load import Known, Log, Workers, Writer, poll, read_back, reader, rnd, unclean

LABEL = "kms outage"
READERS, WRITERS = 4, 2
PRE_S, OUTAGE_S, RECOVERY_MAX_S, POST_S = 3.0, 15.0, 40.0, 3.0
TIMEOUT_S = 40
WALL_LIMIT_S = 240


def counters(api):
    m = api.metrics()
    return {k: int(m.get(f"hyperion_vault_api_{k}_total", 0)) for k in
            ("kms_calls", "kms_errors", "dek_cache_hits", "dek_cache_misses")}


def run(ctx):
    ctx.report.time_limit(WALL_LIMIT_S)
    kms_stopped = [False]
    try:
        outage(ctx, kms_stopped)
    finally:
        if kms_stopped[0]:  # never leave the instance without its KMS
            ctx.env.testenv("kms-start", timeout=120)


def outage(ctx, kms_stopped):
    t_start = time.monotonic()
    check, figure, dep, env = ctx.check, ctx.figure, ctx.deployment, ctx.env
    call = functools.partial(ctx.api.call, timeout=TIMEOUT_S)
    testenv = functools.partial(env.testenv, timeout=120)
    tag = secrets.token_hex(4)
    prefix = f"rel/kms-{tag}"
    api_pid, ctl_pid = dep.identity("api"), dep.identity("controller")
    check("setup: the API and the controller are running", api_pid is not None and ctl_pid is not None)
    known, log = Known(ctx.mark), Log()

    def create(name, value=None, port=None):
        body = {"name": name, "kind": "manual" if value else "automatic", "grace_period_secs": 3600}
        body.update({"value": value} if value else {"rotation_interval_secs": 86400})
        return call("POST", "/v1/secrets", body, auth=True, port=port)

    cached = []
    for i in range(8):
        name, v = f"{prefix}/cached{i}", rnd("KOcached") if i < 6 else None
        ctx.mark(f"kms_cached_{i}", v)
        r = create(name, v)
        v = v or (r.json() or {}).get("value")
        g = call("GET", f"/v1/secrets/{name}")  # read once: this API has its key in cache
        if r.status == 201 and g.status == 200 and (g.json() or {}).get("value") == v:
            known.add(name, 1, v, f"kms_cached_{i}")
            cached.append(name)
    check("setup: 8 cached secrets created and read once through the API", len(cached) == 8, f"{len(cached)}")

    writers = []
    for w in range(WRITERS):
        wr = Writer(ctx.api, log, known, f"{prefix}/w{w}/manual", f"{prefix}/w{w}/auto", f"{prefix}/new/w{w}",
                    "kms", first=2 * w, pause=0.1, timeout=TIMEOUT_S)
        v = rnd("KOwman")
        r1, r2 = wr.create(wr.manual, v), wr.create(wr.auto)
        if r1.status == 201 and r2.status == 201:
            known.add(wr.manual, 1, v, "kms_w_manual_v1")
            known.add(wr.auto, 1, r2.json()["value"], "kms_w_auto_v1")
            writers.append(wr)
    check(f"setup: write targets created ({WRITERS} manual + {WRITERS} automatic)", len(writers) == WRITERS)

    # (a) uncached secrets written by an extra API process
    uncached = []
    extra = dep.extra_api({"VAULT_ALLOWED_IPS": "127.0.0.1"}, "kms-writer")
    try:
        for i in range(6) if extra.port else ():
            name, v1, v2 = f"{prefix}/uncached{i}", rnd("KOunc1"), rnd("KOunc2")
            ctx.mark(f"kms_uncached_{i}_v1", v1)
            ctx.mark(f"kms_uncached_{i}_v2", v2)
            r1 = create(name, v1, port=extra.port)
            r2 = call("PUT", f"/v1/secrets/{name}", {"value": v2}, auth=True, port=extra.port)
            if r1.status == 201 and r2.status == 200 and (r2.json() or {}).get("version") == 2:
                uncached.append(name)
                known.add(name, 1, v1, "kms_uncached")
                known.add(name, 2, v2, "kms_uncached")
    finally:
        extra.stop()
    check("setup: a second API process wrote 6 manual secrets (2 versions each) this API never saw",
          len(uncached) == 6, f"{len(uncached)}; extra API ready: {extra.port is not None}")
    probed, cold = uncached[:3], uncached[3:]

    # (b) uncached secrets sealed by the controller
    ns, vs = f"kms-{tag}", ["vs0", "vs1"]
    ctx.kube.create_namespace(ns)
    for n in vs:
        ctx.kube.create_vaultsecret(ns, n, {"kind": "Automatic", "rotationInterval": "24h", "gracePeriod": "1h"})
    ready = ctx.kube.wait_ready(ns, vs, 60)
    check("setup: 2 VaultSecrets sealed by the controller (Ready)", len(ready) == 2, f"ready: {sorted(ready)}")
    vs_names = [f"{ns}/{n}" for n in vs]
    if ctx.report.failed:
        return

    # ------------------------------------------------------------ load
    def prober(stop):
        n = 0
        while not stop.is_set():
            name = probed[n % len(probed)]
            op = ["get", "get_v1", "verify"][(n // len(probed)) % 3]
            n += 1
            if op == "verify":
                r = call("POST", f"/v1/secrets/{name}/verify", {"value": known.get(name, 1)})
            else:
                r = call("GET", f"/v1/secrets/{name}" + ("?version=1" if op == "get_v1" else ""))
            want = {"get": known.get(name, 2), "get_v1": known.get(name, 1), "verify": None}[op]
            if r.status == 200:
                j = r.json() or {}
                if (want is not None and j.get("value") != want) or (want is None and j != {"valid": True, "version": 1}):
                    r.error = f"wrong answer {r.body[:100]!r}"
            log.add("uncached", op, name, r)
            time.sleep(0.2)

    fault = {}
    with Workers(join_timeout=TIMEOUT_S + 5) as load:
        for i in range(READERS):
            load.spawn(reader, ctx.api, log, known, [(0.7, "get", cached), (1.0, "verify", cached)], load.stop, i,
                       kind="cached", timeout=TIMEOUT_S)
        for wr in writers:
            load.spawn(wr.run, load.stop)
        time.sleep(PRE_S)
        rc, out, fault["stop0"], fault["stop1"] = testenv("kms-stop")
        kms_stopped[0] = rc == 0
        check("fault: testenv kms-stop", rc == 0, out)
        m1 = counters(ctx.api)
        load.spawn(prober, load.stop)  # only now: nothing uncached may be read (and cached) before the outage
        time.sleep(OUTAGE_S)
        rc, out, fault["start0"], fault["start1"] = testenv("kms-start")
        kms_stopped[0] = rc != 0
        check("fault: testenv kms-start", rc == 0, out)

        def recovered(kind):
            return any(r.status in (200, 201) and r.t1 >= fault["start0"] for _, _, r in log.of(kind))

        poll(lambda: recovered("uncached") and recovered("write"), timeout=fault["start1"] + RECOVERY_MAX_S - time.time(),
             every=0.2)
        time.sleep(POST_S)
    m2 = counters(ctx.api)

    # ------------------------------------------------------------ verdict: requests
    ctx.require("fault sequence completed", all(k in fault for k in ("stop0", "stop1", "start0", "start1")), str(fault))
    stop1, start0, start1 = fault["stop1"], fault["start0"], fault["start1"]
    by = {k: log.of(k) for k in ("cached", "uncached", "write")}

    def within(r):  # entirely inside the outage
        return r.t0 >= stop1 and r.t1 <= start0

    bad = [(k, op, n, r) for k, items in by.items() for op, n, r in items
           if unclean(r) or (r.status in (200, 201) and r.error)]
    figure("outage_s", f"{start0 - stop1:.1f}")
    figure("kms_start_command_s", f"{start1 - start0:.2f}")
    for k in by:
        figure(f"{k}_requests", len(by[k]))
        figure(f"{k}_requests_during_outage", sum(1 for _, _, r in by[k] if within(r)))
    cached_fail = [(op, n, r) for op, n, r in by["cached"] if r.status != 200 or r.error]
    figure("cached_read_failures", len(cached_fail))
    figure("unclean_failures", len(bad))
    for k, op, n, r in (bad + [("cached",) + x for x in cached_fail])[:10]:
        ctx.problem(f"{k} {op} {n} at {r.t0 - fault['stop0']:+.2f}s -> {r!r} {r.error} retry-after={r.retry_after}")
    check("every failure is a clean 503 with a JSON error and Retry-After; every 200 has the right value "
          "(no 500, no other 5xx, no transport error or timeout)", not bad, f"{len(bad)}")
    cd = [r for _, _, r in by["cached"] if within(r)]
    check(f"cached reads (GET, verify) answer 200 with the right value throughout: {len(by['cached'])} reads, "
          f"{len(cd)} during the outage", not cached_fail and len(cd) >= 20, f"{len(cached_fail)} failed")
    ud = [(op, r) for op, _, r in by["uncached"] if within(r)]
    check(f"uncached reads during the outage fail closed with 503 ({len(ud)}: "
          f"{sorted({op for op, _ in ud})})", len(ud) >= 3 and all(r.status == 503 for _, r in ud),
          f"{[r.status for _, r in ud]}")
    wd = [(op, r) for op, _, r in by["write"] if within(r)]
    kinds = sorted({op for op, _ in wd})
    check(f"writes during the outage fail closed with 503 ({len(wd)}: {kinds})",
          len(kinds) == 4 and all(r.status == 503 for _, r in wd), f"{[(op, r.status) for op, r in wd]}")
    figure("kms_errors_during_outage", m2["kms_errors"] - m1["kms_errors"])
    check("the outage was real: the API's KMS calls failed (kms_errors rose)", m2["kms_errors"] > m1["kms_errors"],
          f"{m1} -> {m2}")
    uok = min((r.t1 for _, _, r in by["uncached"] if r.status == 200 and r.t1 >= start0), default=None)
    wok = min((r.t1 for _, _, r in by["write"] if r.status in (200, 201) and r.t1 >= start0), default=None)
    # measured from the start of `testenv kms-start` (it reopens the endpoint, then waits until it
    # answers: kms_start_command_s); a request already retrying when the endpoint reopens may finish first
    if uok is not None:
        figure("uncached_read_recovery_s_after_kms_start", f"{uok - start0:.2f}")
    if wok is not None:
        figure("write_recovery_s_after_kms_start", f"{wok - start0:.2f}")
    check(f"uncached reads recover by themselves after kms-start (within {RECOVERY_MAX_S:.0f} s)", uok is not None)
    check(f"writes recover by themselves after kms-start (within {RECOVERY_MAX_S:.0f} s)", wok is not None)
    early = [r for _, _, r in by["uncached"] + by["write"] if r.status in (200, 201) and r.t0 >= stop1 and r.t1 < start0]
    check("nothing that needs the KMS succeeded while it was down", not early, f"{len(early)}")

    # ------------------------------------------------------------ cold uncached secrets: a cache miss each
    mc0 = counters(ctx.api)
    cold_ok = cold_reads = 0
    for name in cold:
        for v in (1, 2):
            cold_reads += 1
            g = call("GET", f"/v1/secrets/{name}?version={v}")
            cold_ok += g.status == 200 and (g.json() or {}).get("value") == known.get(name, v)
    vs_vals = {}
    for name in vs_names:
        cold_reads += 1
        g = call("GET", f"/v1/secrets/{name}")
        j = g.json() or {}
        if g.status == 200 and j.get("version") == 1:
            vs_vals[name] = j["value"]
            known.add(name, 1, j["value"], "kms_vaultsecret")
            cold_ok += 1
    mc1 = counters(ctx.api)
    misses = mc1["dek_cache_misses"] - mc0["dek_cache_misses"]
    figure("cold_uncached_versions_read", cold_reads)
    figure("cold_uncached_cache_misses", misses)
    check(f"after the outage every untouched uncached version reads back ({cold_ok}/{cold_reads})", cold_ok == cold_reads)
    check(f"... and each of those reads was a DEK cache miss ({misses} misses for {cold_reads} reads: they were "
          "uncached all along)", misses == cold_reads, f"{mc0} -> {mc1}")
    ver_ok = all(call("POST", f"/v1/secrets/{n}/verify", {"value": v}).json() == {"valid": True, "version": 1}
                 for n, v in vs_vals.items())
    check("the controller-sealed values verify", ver_ok and len(vs_vals) == 2)

    # ------------------------------------------------------------ no half-written version
    problems = []
    created = {n: st for wr in writers for n, st in wr.created.items()}
    acked = {n: c for wr in writers for n, c in wr.acked.items()}
    targets = {n for wr in writers for n in (wr.manual, wr.auto)}
    touched = cached + uncached + vs_names + sorted(targets) + sorted(created)
    for name in touched:
        status, listed, reads = read_back(ctx.api, name, known)
        if name in created and created[name] != 201:
            if status != 404:
                problems.append(f"{name}: create answered {created[name]} but the secret exists ({status})")
            continue
        vers = sorted(listed)
        if status != 200 or not vers or vers != list(range(1, len(vers) + 1)):
            problems.append(f"{name}: versions {status} {vers}")
            continue
        if name in targets and len(vers) != 1 + acked.get(name, 0):
            problems.append(f"{name}: {len(vers)} versions for {acked.get(name, 0)} acknowledged writes + create")
        for v, g in reads.items():
            want = known.get(name, v)
            if g.status != 200 or (want is not None and (g.json() or {}).get("value") != want):
                problems.append(f"{name} v{v}: {g!r}")
    failed_creates = sum(1 for s in created.values() if s != 201)
    figure("secrets_checked_for_half_written_versions", len(touched))
    figure("failed_creates_checked_absent", failed_creates)
    for p in problems[:10]:
        ctx.problem(p)
    check(f"no half-written version: {len(touched)} secrets have contiguous versions that all read back, "
          f"write targets one version per acknowledged write, {failed_creates} failed creates left nothing",
          not problems, f"{len(problems)} problems")
    check("API and controller never restarted (same pids, alive)",
          dep.identity("api") == api_pid and dep.identity("controller") == ctl_pid)
    ctx.kube.delete_namespace(ns)
    figure("wall_s", f"{time.monotonic() - t_start:.0f}")
