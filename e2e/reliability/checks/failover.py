"""Failover under load (issue 8, "Faults and load"; DESIGN.md §5: the writer pool follows failover).
~1-2 min, with the API and the controller left alone (never restarted or reconfigured; their
identities are checked at the end):

  1. setup: read secrets with known values, and per writer thread one manual and one automatic
     secret (grace period 1 h, so every version stays readable with ?version=N); a plaintext
     control row in the primary (so the leak scan can prove it reads the data dir this check
     retires); a VaultSecret for the controller check.
  2. load: 4 reader threads (GET of fixed secrets and of the writers' secrets, verify) and 3 writer
     threads (PUT of a manual value, POST .../rotate, create manual, create automatic), one TCP
     connection per request, every request logged with its start/end time and outcome.
  3. fault: `testenv pg-stop primary` (fast shutdown), 4 s without any primary, `testenv pg-promote`;
     the load keeps running until writes succeed again (at most 45 s), then 4 s more.
  4. verdict, from ground truth read back after the load (GET ?version=N of every version of every
     secret touched): every acknowledged write (2xx) is there with its acknowledged version and
     value (lost = 0); every value a reader got matches; version lists are contiguous and every
     version reads back; every failed request is a clean 503 with a JSON {"error"} body and
     Retry-After (any other 5xx, a transport error or a timeout is a failure); no write succeeded
     while there was no primary; reads were served from the standby while there was no primary;
     writes came back by themselves after the promotion; the controller rotates a VaultSecret
     after the failover without a restart.
  5. `testenv pg-rejoin`: the old primary comes back as a streaming standby of the promoted node
     (its old data dir kept aside in the state dir); the env file names the new roles; the
     rejoined standby has every version row and the API keeps working. The instance is left
     running on the rejoined pair.

Times in the figures are seconds, relative to the start of pg-stop unless named otherwise.
"""
import functools
import os
import secrets
import time

from ..load import Known, Log, Workers, Writer, read_back, poll, reader, rnd, unclean

LABEL = "failover"
READERS, WRITERS = 4, 3
PRE_S, NO_PRIMARY_S, RECOVERY_MAX_S, POST_S = 4.0, 4.0, 45.0, 4.0
TIMEOUT_S = 30
WALL_LIMIT_S = 280


def run(ctx):
    ctx.report.time_limit(WALL_LIMIT_S)
    t_start = time.monotonic()
    check, figure, dep, env, kube = ctx.check, ctx.figure, ctx.deployment, ctx.env, ctx.kube
    call = functools.partial(ctx.api.call, timeout=TIMEOUT_S)
    tag = secrets.token_hex(4)
    prefix = f"rel/failover-{tag}"
    known, log = Known(ctx.mark), Log()
    acked = {}  # (name, version) -> value, for every write answered 2xx

    api_pid, ctl_pid = dep.identity("api"), dep.identity("controller")
    check("setup: the API and the controller are running", api_pid is not None and ctl_pid is not None,
          f"api {api_pid}, controller {ctl_pid}")
    ports = env.ports()
    roles = {p: env.in_recovery(p) for p in ports}
    primary_ports = [p for p in ports if roles[p] is False]
    ctx.require("setup: exactly one PostgreSQL primary and one streaming standby",
                len(primary_ports) == 1 and sorted(roles.values()) == [False, True], str(roles))
    primary = primary_ports[0]
    check("setup: the env file names the primary as PG_PRIMARY_PORT", primary == int(env["PG_PRIMARY_PORT"]),
          f"primary is {primary}")

    read_secrets = []
    for i in range(6):
        name, value = f"{prefix}/r{i}", rnd("FOread")
        r = call("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value, "grace_period_secs": 3600},
                 auth=True)
        if r.status == 201:
            read_secrets.append(name)
            known.add(name, 1, value, f"failover_read_{i}")
    writers = []
    for w in range(WRITERS):
        wr = Writer(ctx.api, log, known, f"{prefix}/w{w}/manual", f"{prefix}/w{w}/auto", f"{prefix}/w{w}/",
                    f"failover_w{w}", pause=0.02, timeout=TIMEOUT_S)
        value = rnd("FOman")
        r1, r2 = wr.create(wr.manual, value), wr.create(wr.auto)
        if r1.status != 201 or r2.status != 201:
            break
        known.add(wr.manual, 1, value, f"failover_w{w}_manual_v1")
        known.add(wr.auto, 1, r2.json()["value"], f"failover_w{w}_auto_v1")
        writers.append(wr)
    ctx.require("setup: 6 read secrets and 2 secrets per writer created (201)",
                len(read_secrets) == 6 and len(writers) == WRITERS, f"{len(read_secrets) + 2 * len(writers)} created")
    targets = [n for wr in writers for n in (wr.manual, wr.auto)]

    # Plaintext control row written before the failover: it ends up in the data dir pg-rejoin moves
    # aside, and the leak scan must find it there (proof that it scans that dir too).
    control = rnd("LKcontrolfailover")
    ctx.mark("control_pg_before_failover", control, "control")
    rc, _, err = env.psql(primary, "CREATE TABLE IF NOT EXISTS failover_control(v text); "
                                   f"INSERT INTO failover_control VALUES ('{control}')", db="postgres")
    check("setup: plaintext control row for the leak scan inserted in the primary", rc == 0, err)
    ns = f"failover-{tag}"
    kube.create_namespace(ns)
    kube.create_vaultsecret(ns, "ctl", {"kind": "Automatic", "rotationInterval": "24h", "gracePeriod": "1h"})
    check("setup: a VaultSecret (controller-owned) is Ready", kube.wait_ready(ns, ["ctl"], 60) == {"ctl"})

    # ------------------------------------------------------------ load and fault
    reads_seen = []  # (name, version, value) of every 200 GET
    fault = {}
    promoted = False
    with Workers(join_timeout=TIMEOUT_S + 5) as load:
        for i in range(READERS):
            load.spawn(reader, ctx.api, log, known, [(0.45, "get", read_secrets), (0.75, "get_target", targets),
                                                     (1.0, "verify", read_secrets)], load.stop, i, reads_seen,
                       timeout=TIMEOUT_S)
        for wr in writers:
            load.spawn(wr.run, load.stop)
        try:
            time.sleep(PRE_S)
            rc, out, fault["stop0"], fault["stop1"] = env.testenv("pg-stop", "primary")
            check("fault: testenv pg-stop primary", rc == 0, out)
            time.sleep(NO_PRIMARY_S)
            rc, out, fault["prom0"], fault["prom1"] = env.testenv("pg-promote")
            promoted = rc == 0
            check("fault: testenv pg-promote (the standby accepts writes)", promoted, out)
            poll(lambda: any(200 <= r.status < 300 and r.t0 >= fault["stop1"] for _, _, r in log.of("write")),
                 timeout=fault["prom1"] + RECOVERY_MAX_S - time.time(), every=0.2)
            time.sleep(POST_S)
        finally:
            load.halt()
            if fault.get("stop1") and not promoted:  # never leave the instance without a primary
                env.testenv("pg-promote")

    # ------------------------------------------------------------ verdict: requests
    ctx.require("fault sequence completed", all(k in fault for k in ("stop0", "stop1", "prom0", "prom1")), str(fault))
    stop0, stop1, prom0, prom1 = fault["stop0"], fault["stop1"], fault["prom0"], fault["prom1"]
    reads, writes = log.of("read"), log.of("write")
    for op, name, r in writes:
        j = r.json() if 200 <= r.status < 300 else None
        if isinstance(j, dict):
            acked[(name, j.get("version"))] = known.get(name, j.get("version"))
    for name in read_secrets + targets:
        acked[(name, 1)] = known.get(name, 1)

    def rel(t):
        return t - stop0

    read_fail = [r for _, _, r in reads if r.status != 200 or r.error]
    write_ok = [r for _, _, r in writes if 200 <= r.status < 300]
    write_fail = [r for _, _, r in writes if not 200 <= r.status < 300]
    other_4xx = [(op, name, r) for op, name, r in reads + writes if 400 <= r.status < 500]
    bad = [(op, name, r) for op, name, r in reads + writes if unclean(r)]
    wrong = [(op, name, r) for op, name, r in reads if r.status == 200 and r.error]
    figure("reads_attempted", len(reads))
    figure("reads_failed", len(read_fail))
    if read_fail:
        first, last = min(r.t0 for r in read_fail), max(r.t1 for r in read_fail)
        figure("read_failure_window_s", f"{last - first:.2f}")
        figure("read_failures_from_to_s", f"{rel(first):+.2f}..{rel(last):+.2f}")
    else:
        figure("read_failure_window_s", "0.00")
    sw = sorted(r.t1 - r.t0 for _, _, r in reads if stop0 - 1 <= r.t0 <= prom1 + 2)
    if sw:
        figure("read_latency_max_s_during_switch", f"{sw[-1]:.3f}")
        figure("read_latency_p50_s_during_switch", f"{sw[len(sw) // 2]:.3f}")
    figure("writes_attempted", len(writes))
    figure("writes_acknowledged", len(write_ok))
    figure("writes_failed_503", sum(1 for r in write_fail if r.status == 503))
    figure("pg_stop_s", f"{stop1 - stop0:.2f}")
    figure("no_primary_window_s", f"{prom0 - stop1:.2f}")
    figure("pg_promote_s", f"{prom1 - prom0:.2f}")
    first_ok = min((r.t1 for r in write_ok if r.t0 >= stop1), default=None)
    last_ok_before = max((r.t1 for r in write_ok if r.t1 <= stop1), default=None)
    if first_ok is not None:
        figure("write_recovery_s_from_pg_stop", f"{first_ok - stop0:.2f}")
        figure("write_recovery_s_after_promote", f"{first_ok - prom1:.2f}")
    if last_ok_before is not None:
        figure("last_write_ack_before_stop_s", f"{rel(last_ok_before):+.2f}")
    figure("unclean_failures", len(bad))
    for op, name, r in bad[:10]:
        ctx.problem(f"{op} {name} at {rel(r.t0):+.2f}s -> {r!r} retry-after={r.retry_after}")
    for op, name, r in (other_4xx + wrong)[:10]:
        ctx.problem(f"{op} {name} at {rel(r.t0):+.2f}s -> {r!r} {r.error}")

    check("load ran before the fault (reads and writes acknowledged)",
          any(r.t1 < stop0 for r in write_ok) and any(r.t1 < stop0 and r.status == 200 for _, _, r in reads))
    check("every failed request is a clean 503 with a JSON error and Retry-After (no 500, no other 5xx, "
          "no transport error or timeout)", not bad, f"{len(bad)} unclean")
    check("no 4xx for well-formed requests and reads answer the right value, verify of the right value valid (0)",
          not other_4xx and not wrong, f"{len(other_4xx)} 4xx, {len(wrong)} wrong answers")
    during = [r for _, _, r in writes if r.t0 >= stop1 + 0.5 and r.t1 <= prom0]
    check(f"writes while there was no primary: all refused with 503 ({len(during)} attempted)",
          during and all(r.status == 503 for r in during), f"{[r.status for r in during][:20]}")
    served = [r for _, _, r in reads if r.t0 >= stop1 + 1.0 and r.t1 <= prom0 and r.status == 200]
    check(f"reads kept being served from the standby while there was no primary ({len(served)} answered 200)",
          len(served) > 0)
    check(f"writes succeed again by themselves after the promotion (within {RECOVERY_MAX_S:.0f} s)",
          first_ok is not None and first_ok - prom1 <= RECOVERY_MAX_S)
    check("writes were acknowledged after the recovery as well (load continued)",
          sum(1 for r in write_ok if r.t0 > prom1) >= 5)

    # ------------------------------------------------------------ verdict: ground truth
    truth = {}  # (name, version) -> value, read back now
    version_problems = []
    touched = set(read_secrets) | {n for wr in writers for n in wr.touched}
    for name in sorted(touched):
        status, listed, got = read_back(ctx.api, name, known)
        if status == 404:
            continue  # a create that failed before committing
        vers = sorted(listed)
        if status != 200 or not vers:
            version_problems.append(f"{name}: versions -> {status}")
            continue
        if vers != list(range(1, len(vers) + 1)):
            version_problems.append(f"{name}: versions not contiguous {vers}")
        for v, g in got.items():
            if listed[v]["state"] not in ("current", "grace"):
                version_problems.append(f"{name}: version {v} is {listed[v]['state']}")
            if g.status != 200 or (g.json() or {}).get("version") != v:
                version_problems.append(f"{name}: version {v} does not read back: {g!r}")
                continue
            truth[(name, v)] = g.json()["value"]
    version_problems += known.conflicts  # two acknowledged values for one version
    lost = [k for k, v in acked.items() if truth.get(k) != v]
    bad_reads = [x for x in reads_seen if truth.get((x[0], x[1])) != x[2]]
    figure("acknowledged_writes_checked", len(acked))
    figure("acknowledged_writes_lost", len(lost))
    figure("versions_read_back", len(truth))
    figure("reads_with_wrong_value", len(bad_reads))
    figure("committed_but_answered_503", sum(1 for k in truth if k not in acked))
    for name, v in lost[:10]:
        ctx.problem(f"acknowledged {name} v{v} is {'missing' if (name, v) not in truth else 'different'}")
    for p in version_problems[:10]:
        ctx.problem(p)
    check(f"acknowledged writes lost: 0 (of {len(acked)}, each read back with ?version=N)", not lost,
          f"{len(lost)} lost")
    check("every value a reader got is the one stored for that version", not bad_reads, f"{len(bad_reads)} wrong")
    check(f"version lists contiguous and every version of the {len(touched)} secrets touched reads back",
          not version_problems, f"{len(version_problems)} problems")

    # ------------------------------------------------------------ the controller follows too
    kube.rotate_now(ns, "ctl", f"failover-{tag}")
    t = time.monotonic()
    ver = poll(lambda: (((kube.vaultsecrets(ns) or {}).get("ctl") or {}).get("status") or {}).get("currentVersion"),
               lambda v: v == 2, 60, 1)
    figure("controller_rotation_after_failover_s", f"{time.monotonic() - t:.1f}")
    check("the controller rotates a VaultSecret after the failover (rotate-now -> version 2), no restart",
          ver == 2, f"currentVersion {ver!r}")
    check("API and controller never restarted (same pids, alive)",
          dep.identity("api") == api_pid and dep.identity("controller") == ctl_pid,
          f"api {api_pid}->{dep.identity('api')}, controller {ctl_pid}->{dep.identity('controller')}")

    # ------------------------------------------------------------ rejoin
    rc, out, r0, r1 = env.testenv("pg-rejoin")
    figure("pg_rejoin_s", f"{r1 - r0:.1f}")
    check("testenv pg-rejoin: the old primary rejoins as a standby of the promoted node", rc == 0, out[-600:])
    env.reload()
    newp, news = int(env["PG_PRIMARY_PORT"]), int(env["PG_STANDBY_PORT"])
    check("env file after rejoin: PG_PRIMARY_PORT is the promoted node and accepts writes",
          newp == ports[1 - ports.index(primary)] and env.in_recovery(newp) is False, f"{newp}: {env.in_recovery(newp)}")
    check("env file after rejoin: PG_STANDBY_PORT is the old primary's port, in recovery",
          news == primary and env.in_recovery(news) is True, f"{news}: {env.in_recovery(news)}")
    retired = env.get("PG_RETIRED_DATA", "").split()
    check("the old primary's data dir is kept inside the state dir (PG_RETIRED_DATA)",
          bool(retired) and all(d.startswith(env.dir.rstrip("/") + "/") and os.path.isdir(d) for d in retired),
          str(retired))
    rc, out, _ = env.psql(newp, "select state from pg_stat_replication")
    check("the rejoined standby is streaming", "streaming" in out.split(), out)
    name, value = f"{prefix}/after-rejoin", rnd("FOafter")
    ctx.mark("failover_after_rejoin", value)
    r = call("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": value}, auth=True)
    def read_back_ok(g):
        return g.status == 200 and (g.json() or {}).get("value") == value

    # the API reads from the first host (now the standby): allow replication lag
    g = poll(lambda: call("GET", f"/v1/secrets/{name}"), read_back_ok, 5)
    check("API after rejoin: create + read back", r.status == 201 and read_back_ok(g), f"{r!r} / {g!r}")
    count_sql = "select count(*) from vault.secret_versions"
    want = env.psql(newp, count_sql)[1]
    got = poll(lambda: env.psql(news, count_sql)[1], lambda got: got == want, 10)
    check(f"the rejoined standby has every version row ({want})", got == want and want not in ("", "0"), f"{got}")
    env.psql(newp, "DROP TABLE IF EXISTS failover_control", db="postgres")
    kube.delete_namespace(ns)
    check("API and controller still the same processes at the end",
          dep.identity("api") == api_pid and dep.identity("controller") == ctl_pid)
    figure("wall_s", f"{time.monotonic() - t_start:.0f}")
