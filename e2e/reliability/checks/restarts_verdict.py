"""The verdict of the restarts check, from the version histories and every request it recorded.

Each version v+1 of a secret is replayed against the slot S_v the database held after version v
(schedule.py, the model of core/src/schedule.rs and the store's `rotate`, checked against core's
golden vectors first): v1 created at c1 gives S_1 = first_rotation(c1); a version created at
t >= S_v is a *scheduled* rotation serving slot S_v and the next slot is the first S_v + k*interval
> t; one created at t < S_v is *forced* (a rotate-now nonce or an API rotate) and re-anchors. The
replayed final slot must equal the database's next_rotation_at (the model is the product's).
  double rotation  a forced version that no request explains: requests are the API rotates
                   (a 2xx names its version exactly; one cut by a kill may explain one version
                   created inside its [start, end]) and the nonces (each explains at most one
                   version created inside [set, acknowledged]). Two versions for one slot or one
                   request always leave one unexplained.
  lost rotation    a slot whose version came later than BOUND (10 s; + the sweep period for
                   API-owned) after it was due, not counting time the controller was not leading
                   or the apiserver was restarting; or a slot still pending BOUND after it was
                   due at the end; or a nonce never acknowledged, or acknowledged without any
                   version created after it was set (answered by an older version).
  out of order     versions not exactly 1..n, created_at not strictly increasing, or superseded_at
                   of v != created_at of v+1, or expires_at != superseded_at + grace.
  durability       every 2xx create / PUT / rotate is in the history afterwards with the version
                   (and value) it acknowledged; a GET value is the same for a (name, version)
                   everywhere; verify of a value just read is valid.
  kill cuts        requests in flight when the API was killed end as connection errors (or 2xx
                   that made it out before the kill), never a wrong answer, a 5xx or a hang.
Positive control: the same matching, without the API rotates' acknowledgements, must find
unexplained forced versions (so the double count can be non-zero).
"""
import time

from .. import schedule
from ..api import ts_us
from ..load import history, poll


def next_rotation_db(api, name):
    """(current version, next_rotation_at µs, history) consistent with the primary's history."""
    for _ in range(10):
        h1 = history(api, name)
        r = api.call("GET", f"/v1/secrets/{name}", timeout=15)
        h2 = history(api, name)
        j = r.json() if r.status == 200 else None
        if j and h1 and h2 and h1 == h2 and j["version"] == h1[-1]["version"]:
            return j["version"], ts_us(j.get("next_rotation_at")), h2
        time.sleep(0.3)
    return None, None, history(api, name)


def unexplained(forced, reqs):
    """Forced versions left over by a maximum matching onto requests (each explains at most one
    version created inside its window)."""
    match = {}

    def try_assign(i, seen):
        ft = forced[i][1]
        for j, (a, b, _) in enumerate(reqs):
            if j in seen or not (a <= ft <= b):
                continue
            seen.add(j)
            if j not in match or try_assign(match[j], seen):
                match[j] = i
                return True
        return False

    for i in range(len(forced)):
        try_assign(i, set())
    matched = set(match.values())
    return [f for i, f in enumerate(forced) if i not in matched]


def order_problems(name, hist, grace_us=None):
    """Versions exactly 1..n with increasing created_at; with `grace_us`, also superseded_at / expires_at."""
    out = []
    nums = [v["version"] for v in hist]
    if nums != list(range(1, len(hist) + 1)):
        out.append(f"{name}: versions {nums[:5]}..{nums[-5:]} not exactly 1..{len(hist)}")
    for a, b in zip(hist, hist[1:]):
        ca, cb = ts_us(a["created_at"]), ts_us(b["created_at"])
        if cb <= ca:
            out.append(f"{name}: v{b['version']} created_at not after v{a['version']}'s")
        if grace_us is None:
            continue
        if ts_us(a["superseded_at"]) != cb:
            out.append(f"{name}: v{a['version']} superseded_at {a['superseded_at']} != "
                       f"v{b['version']} created_at {b['created_at']}")
        if a["expires_at"] is None or ts_us(a["expires_at"]) != ts_us(a["superseded_at"]) + grace_us:
            out.append(f"{name}: v{a['version']} expires_at {a['expires_at']} != superseded + {grace_us // 10**6}s")
    if grace_us is not None and hist[-1]["superseded_at"] is not None:
        out.append(f"{name}: newest version v{hist[-1]['version']} is superseded")
    return out


def verdict(rs, t_end, bound_s, grace_s):
    ctx, api = rs.ctx, rs.api
    check, figure = ctx.check, ctx.figure
    control_doubles = 0
    lost_nonces, out_of_order, doubles, lost, lateness, model_mismatch = [], [], [], [], [], []
    n_sched = n_forced = n_versions = 0
    per_group = {"S": [0, 0], "N": [0, 0], "A": [0, 0]}

    for s in rs.secrets.values():
        name = s["vault"]
        _, db_next, hist = next_rotation_db(api, name)
        if not hist:
            lost.append(f"{name}: no version history")
            continue
        n_versions += len(hist)
        out_of_order += order_problems(name, hist, grace_s * 1_000_000)
        nums = [v["version"] for v in hist]
        created = [ts_us(v["created_at"]) for v in hist]
        # --- replay
        iv = s["interval_us"]
        bound = (bound_s + (rs.sweep if s["group"] == "A" else 0)) * 1_000_000
        nxt = schedule.first_rotation(created[0], iv, name)
        forced = []  # (version, created)
        due_set = set()
        for v, t in zip(nums[1:], created[1:]):
            scheduled, after = schedule.after_version(nxt, iv, name, t)
            if scheduled:
                n_sched += 1
                per_group[s["group"]][0] += 1
                late = t - nxt
                eff = late - rs.downtime(nxt, t)
                lateness.append(eff / 1e6)
                if eff > bound:
                    lost.append(f"{name}: slot {nxt} served by v{v} {late / 1e6:.1f}s late "
                                f"({eff / 1e6:.1f}s not counting downtime)")
                due_set.add(v)
            else:
                n_forced += 1
                per_group[s["group"]][1] += 1
                forced.append((v, t))
            nxt = after
        if db_next is None:
            model_mismatch.append(f"{name}: could not read a consistent next_rotation_at")
        elif db_next != nxt:
            model_mismatch.append(f"{name}: replayed next slot {nxt} != database {db_next}")
        pending_eff = (t_end - nxt) - rs.downtime(nxt, t_end)
        if pending_eff > bound:
            lost.append(f"{name}: slot at {nxt} still not served {pending_eff / 1e6:.1f}s (downtime excluded) later")
        # --- requests that may explain forced versions
        by_version = dict(zip(nums, created))
        api_ok = set()  # versions an API rotate acknowledged (each explains exactly its own version)
        reqs = []       # (t0, t1, label): may explain one forced version created inside [t0, t1]
        for r in (r for r in rs.api_rotations if r["name"] == name):
            if r["outcome"] == "ok":
                v = r["version"]
                if v not in by_version:
                    lost.append(f"{name}: API rotate acknowledged v{v}, which is not in the history")
                elif by_version[v] != r["created_at"]:
                    lost.append(f"{name}: API rotate acknowledged v{v} created {r['created_at']}, "
                                f"history has {by_version[v]}")
                else:
                    api_ok.add(v)
            elif r["outcome"] in ("cut", "timeout", "http", "wrong"):
                reqs.append((r["t0"], r["t1"], f"api-rotate-{r['outcome']}"))
        for n in (n for n in rs.nonces if n["name"] == name):
            reqs.append((n["t0"], n["tack"] if n["tack"] else t_end, f"nonce {n['nonce']}"))
            # lost: never acknowledged, or no version created after it was set, by its acknowledgement
            if n["tack"] is None:
                lost.append(f"{name}: nonce {n['nonce']} never acknowledged")
            elif not any(n["t0"] <= t <= n["tack"] for t in created):
                newest = max((v for v, t in zip(nums, created) if t < n["t0"]), default=None)
                how = ("an API rotate" if newest in api_ok else "the schedule" if newest in due_set
                       else "a forced rotation (an earlier nonce or a cut API rotate)")
                lost_nonces.append(how)
                lost.append(f"{name}: nonce {n['nonce']} acknowledged {(n['tack'] - n['t0']) / 1e6:.2f}s after it "
                            f"was set with no version created in between; the newest version then, v{newest}, came "
                            f"{(n['t0'] - by_version[newest]) / 1e6:.2f}s earlier from {how}")
        for v, t in unexplained([f for f in forced if f[0] not in api_ok], reqs):
            doubles.append(f"{name}: v{v} created at {t} before its slot with no request to explain it")
        # positive control: without the API rotates' acknowledgements their forced versions are unexplained
        control_doubles += len(unexplained(forced, [r for r in reqs if r[2].startswith("nonce")]))

    log = rs.requests
    outcomes = {}
    for r in log:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    n5xx = sum(1 for r in log if r["outcome"] == "http" and r["status"] >= 500)
    other_http = [r for r in log if r["outcome"] == "http" and r["status"] < 500
                  and not (r["kind"] == "rotate" and r["status"] == 409)]
    timeouts = [r for r in log if r["outcome"] == "timeout"]
    in_flight = [r for r in log if any(r["t0"] < k < r["t1"] for k in rs.api_kill_times)]
    in_flight_bad = [r for r in in_flight if r["outcome"] not in ("ok", "cut", "refused", "conflict")]
    acked, lost_writes, write_problems = durability(rs, out_of_order)
    status_mismatch = status_behind(rs)

    figure("versions_total", n_versions)
    figure("rotations_scheduled", n_sched)
    figure("rotations_forced", n_forced)
    for g in ("S", "N", "A"):
        figure(f"rotations_group_{g}_scheduled_forced", f"{per_group[g][0]} {per_group[g][1]}")
    lateness.sort()
    if lateness:
        figure("slot_lateness_seconds_median_max",
               f"{lateness[len(lateness) // 2]:.2f} {lateness[-1]:.2f} (downtime excluded)")
    figure("nonces_sent", len(rs.nonces))
    figure("nonces_acknowledged", sum(1 for n in rs.nonces if n["tack"]))
    figure("api_rotates", " ".join(f"{k}={sum(1 for r in rs.api_rotations if r['outcome'] == k)}"
                                   for k in ("ok", "cut", "refused", "conflict", "http", "timeout", "wrong")))
    figure("double_rotations", len(doubles))
    figure("lost_rotate_now", " ".join([str(len(lost_nonces))] + [
        f"after_{k.split(' (')[0].replace(' ', '_')}={lost_nonces.count(k)}" for k in sorted(set(lost_nonces))]))
    figure("lost_rotations", len(lost))
    figure("versions_out_of_order", len(out_of_order))
    figure("api_requests", len(log))
    figure("api_request_outcomes", " ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    figure("api_requests_in_flight_at_kill", len(in_flight))
    figure("api_requests_in_flight_at_kill_outcomes", " ".join(
        f"{k}={sum(1 for r in in_flight if r['outcome'] == k)}" for k in ("ok", "cut", "refused", "http", "timeout",
                                                                          "wrong")))
    figure("api_wrong_answers", len(rs.wrong))
    figure("api_5xx", n5xx)
    figure("acknowledged_writes", acked)
    figure("acknowledged_writes_lost", lost_writes)
    for p in (doubles + lost + out_of_order + model_mismatch + rs.wrong + write_problems)[:40]:
        ctx.problem(p)
    for r in (other_http + timeouts + in_flight_bad)[:20]:
        ctx.problem(f"{r['kind']} {r['name']} -> {r['outcome']} {r['status']} {r.get('detail', '')}")

    check(f"double rotations: 0 (of {n_sched} scheduled + {n_forced} forced rotations)", not doubles,
          "; ".join(doubles[:3]))
    check(f"positive control: ignoring the API rotates' answers leaves their forced versions unexplained "
          f"({control_doubles} would count as doubles)", control_doubles > 0)
    check(f"lost rotations: 0 (slots served within {bound_s:.0f}s, +{rs.sweep:.0f}s for API-owned, downtime excluded; "
          f"{len(rs.nonces)} nonces each answered by a version created after it)", not lost, "; ".join(lost[:3]))
    check("versions in order: 1..n, created_at increasing, superseded_at/expires_at consistent",
          not out_of_order, "; ".join(out_of_order[:3]))
    check("the replayed schedule ends on the database's next_rotation_at for every secret",
          not model_mismatch, "; ".join(model_mismatch[:3]))
    check(f"every acknowledged write is durable ({acked} creates/PUTs)", lost_writes == 0 and not write_problems,
          "; ".join(write_problems[:3]))
    check("every acknowledged API rotate is in the history with its version and created_at",
          not any("API rotate acknowledged" in p for p in lost))
    check(f"requests in flight at an API kill ended as connection errors or 2xx ({len(in_flight)} in flight)",
          not in_flight_bad and len(in_flight) > 0,
          "none in flight: the kill case was not exercised" if not in_flight else
          "; ".join(f"{r['kind']} {r['outcome']} {r['status']}" for r in in_flight_bad[:3]))
    check("no wrong answers (values per version consistent; a value just read verifies)", not rs.wrong,
          "; ".join(rs.wrong[:3]))
    check("no 5xx, no hung requests, no unexpected 4xx", n5xx == 0 and not timeouts and not other_http,
          f"5xx={n5xx} timeouts={len(timeouts)} 4xx={len(other_http)}")
    check(f"enough exercised: >= 60 scheduled rotations ({n_sched}), >= 10 acknowledged nonces, "
          f">= 5 acknowledged API rotates",
          n_sched >= 60 and sum(1 for n in rs.nonces if n["tack"]) >= 10
          and sum(1 for r in rs.api_rotations if r["outcome"] == "ok") >= 5)
    check("every VaultSecret's status.currentVersion catches up with the database", not status_mismatch,
          f"behind: {status_mismatch}")


def durability(rs, out_of_order):
    """(acknowledged writes, lost ones, problems): every acknowledged create / PUT is in the history."""
    acked = lost = 0
    problems = []
    for name, ops in rs.writes.items():
        acked_ops = [o for o in ops if o["outcome"] == "ok"]
        acked += len(acked_ops)
        created_ok = any(o["op"] == "create" for o in acked_ops)
        for _ in range(10):
            r = rs.api.call("GET", f"/v1/secrets/{name}", timeout=15)
            if r.status:
                break
            time.sleep(0.5)
        st, j, hist = r.status or None, r.json(), history(rs.api, name)
        if st == 404:
            if created_ok:
                lost += len(acked_ops)
                problems.append(f"{name}: create acknowledged, secret missing afterwards")
            continue
        if st != 200 or not hist:
            problems.append(f"{name}: read back {st}")
            continue
        rs.ctx.mark("restarts_write", j.get("value"))
        out_of_order += order_problems(name, hist)
        hv = [v["version"] for v in hist]
        for o in acked_ops:
            if o["version"] not in hv:
                lost += 1
                problems.append(f"{name}: {o['op']} acknowledged v{o['version']}, not in the history")
        final = j["version"]
        if acked_ops and final < max(o["version"] for o in acked_ops):
            lost += 1
            problems.append(f"{name}: current v{final} older than acknowledged v{max(o['version'] for o in acked_ops)}")
        same = [o for o in acked_ops if o["version"] == final]
        if same and same[-1]["value"] != j["value"]:
            problems.append(f"{name}: current v{final} value differs from the acknowledged write")
            lost += 1
        if not same and j["value"] not in {o["value"] for o in ops}:
            # a cut write committed after the last acknowledged one: the value must be one we sent
            problems.append(f"{name}: current v{final} value is none we sent")
            lost += 1
    return acked, lost, problems


def status_behind(rs):
    """VaultSecrets whose status.currentVersion has not caught up with the database within 20 s."""
    pending = [k for k, s in rs.secrets.items() if s["group"] in ("S", "N")]
    end = time.time() + 20
    while pending and time.time() < end:
        items = rs.kube.vaultsecrets(rs.ns) or {}
        pending = [k for k in pending if not (h := history(rs.api, rs.secrets[k]["vault"]))
                   or ((items.get(k) or {}).get("status") or {}).get("currentVersion") != h[-1]["version"]]
        if pending:
            time.sleep(1)
    return pending


def clean_up(rs):
    """Deletes what the check created and checks the instance is left healthy."""
    for s in rs.secrets.values():
        if s["group"] == "A":
            rs.api.call("DELETE", f"/v1/secrets/{s['vault']}", auth=True, timeout=15)
    for name in rs.writes:
        rs.api.call("DELETE", f"/v1/secrets/{name}", auth=True, timeout=15)
    for key, s in rs.secrets.items():
        if s["group"] in ("S", "N"):
            rs.kube.retry("DELETE", rs.kube.vaultsecrets_path(rs.ns, key))
    poll(lambda: rs.kube.vaultsecrets(rs.ns) == {}, timeout=30, every=0.5)
    rs.ctx.check("at the end the controller leads and the API is ready",
                 rs.dep.identity("controller") and rs.dep.ready("controller") and rs.dep.ready("api"))
