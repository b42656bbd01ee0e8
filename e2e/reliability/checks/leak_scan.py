"""Leak scan (issue 8): no plaintext secret value may be at rest anywhere but where the user put it.

  1. writes secrets with unique marker values through every path: API create (manual), API PUT,
     API create automatic + API rotate (generated values, captured from the responses), a wrong
     value presented to verify, a VaultSecret Automatic + rotate-now annotation, a VaultSecret
     Manual fed from a Kubernetes Secret (valueFrom) whose key then changes, and an API PUT of a
     manual value onto a VaultSecret-owned secret;
  2. finds which PostgreSQL node is the primary (after a failover the roles may have moved) and
     forces CHECKPOINT on it and, once they have replayed everything, on the standbys (so heap
     pages, not only WAL, are on disk); the values the other checks used come from HV_LEAK_MARKERS
     (`label value scope` lines; the runner runs this check last);
  3. scans, as raw bytes, every file under the run dir — every PostgreSQL data dir incl. pg_wal
     (the live primary and standby, and any data dir `testenv pg-rejoin` moved aside), the etcd
     data dir (bbolt + WAL), every process log (testenv logs/ and run/*.log) — plus all Kubernetes
     events, every VaultSecret object, the audit trail (GET /v1/audit) and both /metrics pages, for
     every marker in raw, hex and base64 (std + url alphabets, all 3 byte alignments, so a marker
     embedded in a longer base64 string is found too).

The Kubernetes Secret referenced by valueFrom legitimately holds its value in etcd (the user put it
there; the API server stores Secrets unencrypted unless an EncryptionConfiguration is set), so those
two markers get scope not-etcd and are excluded from the etcd data dir only. Everywhere else — logs,
events, VaultSecret status, PostgreSQL — they must not appear either.

Positive controls prove the scan can fail: a marker inserted in plaintext into a PostgreSQL table
(must be found in the primary's and the standby's data/WAL), one stored in a ConfigMap (must be found
in etcd), and one written raw and one base64-embedded into a log file under run/ (must be found).
Every PostgreSQL data dir found under the run dir must hold at least one control marker: the live
ones hold this check's row; a moved-aside one must hold a control row written before the failover
(checks/failover.py inserts one, scope `control`).
"""
import base64
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time

from ..api import Api
from ..load import poll, rnd

LABEL = "leak scan"


def forms(m):
    """A marker as it could be stored: raw, hex, and base64 (std and url) at each byte alignment."""
    b = m.encode()
    out = {"raw": b, "hex": b.hex().encode()}
    for k in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            out[f"{name}{k}"] = enc(b"\0" * k + b)[-(-4 * k // 3):(4 * (k + len(b))) // 3]
    return out


def scan(markers, roots, etcd, pgdirs, work):
    """(areas {area: (files, bytes)}, found [(kind, label, form, area, path)]) over every file under
    `roots` and `work`."""
    pats = {}
    for label, value, scope in markers:
        for fname, p in forms(value).items():
            pats.setdefault(p, (label, fname, scope))
    patfile = os.path.join(work, "patterns")
    with open(patfile, "wb") as f:
        f.write(b"".join(p + b"\n" for p in pats))

    def area(path):
        for name, root in [("etcd", etcd)] + pgdirs:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return name
        return "k8s_objects_audit_metrics" if path.startswith(work) else "logs" if path.endswith(".log") \
            else "other_run_dir"

    files = {}
    for root in roots + [work]:
        for dp, _, fn in os.walk(root):
            for p in (os.path.join(dp, n) for n in fn):
                if p != patfile and not os.path.islink(p) and os.path.isfile(p):
                    try:
                        files[p] = os.path.getsize(p)
                    except OSError:
                        pass
    areas = {}
    for p, s in files.items():
        n, b = areas.get(area(p), (0, 0))
        areas[area(p)] = (n + 1, b + s)
    listing = os.path.join(work, "files")
    with open(listing, "wb") as f:
        f.write(b"\0".join(p.encode() for p in files) + b"\0")
    res = subprocess.run(f"xargs -0 grep -FoaH -f {patfile} -- < {listing}", shell=True, capture_output=True,
                         env={**os.environ, "LC_ALL": "C"})
    found = set()
    for line in res.stdout.split(b"\n"):
        path, _, match = line.partition(b":")  # the path never contains ':' here
        if match in pats:
            label, fname, scope = pats[match]
            a = area(path.decode())
            kind = "CONTROL" if scope == "control" else "EXCLUDED" if scope == "not-etcd" and a == "etcd" else "HIT"
            found.add((kind, label, fname, a, path.decode()))
    return areas, sorted(found)


def run(ctx):
    work = tempfile.mkdtemp(prefix="hv-leak-")
    log_control = os.path.join(os.path.dirname(ctx.deployment.log("api")), "leak-positive-control.log")
    try:
        leak_scan(ctx, os.path.realpath(work), log_control)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if os.path.exists(log_control):
            os.unlink(log_control)


def leak_scan(ctx, work, log_control):
    check, api, kube, env, dep = ctx.check, ctx.api, ctx.kube, ctx.env, ctx.deployment
    own = []  # (label, value, scope) of this check

    def mark(label, value, scope="all"):
        own.append((label, value, scope))
        return value

    tag = secrets.token_hex(3)
    ns, name = f"leak-{tag}", f"rel/leak-{tag}/manual"

    # ------------------------------------------------------------ 1. write through every path
    r = api.call("POST", "/v1/secrets", {"name": name, "kind": "manual", "value": mark("api_create", rnd("LKapicreate"))},
                 auth=True)
    check("API create manual (201)", r.status == 201)
    v = mark("api_put", rnd("LKapiput"))
    check("API PUT manual (200)", api.call("PUT", f"/v1/secrets/{name}", {"value": v}, auth=True).status == 200)
    r = api.call("POST", f"/v1/secrets/{name}/verify", {"value": v})
    check("verify the PUT value (valid)", (r.json() or {}).get("valid") is True)
    api.call("POST", f"/v1/secrets/{name}/verify", {"value": mark("verify_wrong", rnd("LKverifywrong"))})
    auto = f"rel/leak-{tag}/auto"
    r = api.call("POST", "/v1/secrets", {"name": auto, "kind": "automatic", "rotation_interval_secs": 86400,
                                         "grace_period_secs": 3600}, auth=True)
    check("API create automatic returns a generated value", mark("api_auto_v1", (r.json() or {}).get("value")))
    for i in (1, 2):
        r = api.call("POST", f"/v1/secrets/{auto}/rotate", auth=True)
        check(f"API rotate {i} returns a new value", mark(f"api_auto_rotated_{i}", (r.json() or {}).get("value")))

    def served(n):
        return (api.call("GET", f"/v1/secrets/{ns}/{n}").json() or {}).get("value")

    kube.create_namespace(ns)
    kube.create_vaultsecret(ns, "auto", {"kind": "Automatic", "rotationInterval": "24h", "gracePeriod": "1h"})
    check("VaultSecret Automatic Ready", kube.wait_ready(ns, ["auto"]) == {"auto"})
    mark("vs_auto_v1", served("auto"))
    kube.rotate_now(ns, "auto", "leak-1")
    check("VaultSecret rotate-now gives version 2", poll(lambda: (
        ((kube.vaultsecrets(ns) or {}).get("auto") or {}).get("status") or {}).get("currentVersion") == 2, timeout=30,
                                                         every=1))
    mark("vs_auto_v2", served("auto"))

    def secret(value):
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "src"}, "stringData": {"password": value}}

    k8s1 = mark("k8s_secret_v1", rnd("LKk8sref"), "not-etcd")
    kube.retry("POST", f"/api/v1/namespaces/{ns}/secrets", secret(k8s1))
    kube.create_vaultsecret(ns, "fromref", {"kind": "Manual", "gracePeriod": "10m",
                                            "valueFrom": {"secretKeyRef": {"name": "src", "key": "password"}}})
    check("VaultSecret Manual valueFrom Ready", kube.wait_ready(ns, ["fromref"]) == {"fromref"})
    check("valueFrom value served by the API", served("fromref") == k8s1)
    k8s2 = mark("k8s_secret_v2", rnd("LKk8sref2"), "not-etcd")
    kube.retry("PUT", f"/api/v1/namespaces/{ns}/secrets/src", secret(k8s2))
    check("changing the referenced Secret gives a new version", poll(lambda: served("fromref") == k8s2, timeout=30,
                                                                      every=1))
    kube.create_vaultsecret(ns, "manual", {"kind": "Manual"})
    v = mark("vs_manual_put", rnd("LKvsput"))
    time.sleep(2)
    check("API PUT onto a VaultSecret-owned Manual secret (200)",
          api.call("PUT", f"/v1/secrets/{ns}/manual", {"value": v}, auth=True).status == 200)
    check("that VaultSecret becomes Ready", kube.wait_ready(ns, ["manual"]) == {"manual"})
    time.sleep(3)  # let the controller write its status/events for the last changes

    # ------------------------------------------------------------ positive controls
    pg_ctl = mark("control_pg", rnd("LKcontrolpg"), "control")
    cm_ctl = mark("control_etcd", rnd("LKcontroletcd"), "control")
    log_ctl = mark("control_log", rnd("LKcontrollog"), "control")
    b64_ctl = mark("control_b64", rnd("LKcontrolb64"), "control")
    roles = {p: env.in_recovery(p) for p in env.ports()}  # a failover may have swapped them: ask each node
    primaries = [p for p, standby in roles.items() if standby is False]
    standbys = [p for p, standby in roles.items() if standby is True]
    check(f"exactly one PostgreSQL primary (pg_is_in_recovery): {primaries or 'none'}; standbys: {standbys or 'none'}",
          len(primaries) == 1 and standbys)
    primary = primaries[0] if primaries else int(env["PG_PRIMARY_PORT"])
    env.psql(primary, f"CREATE TABLE IF NOT EXISTS leak_control(v text); INSERT INTO leak_control VALUES ('{pg_ctl}')",
             db="postgres")
    kube.retry("POST", f"/api/v1/namespaces/{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                                               "metadata": {"name": "leak-control"},
                                                               "data": {"v": cm_ctl}})
    with open(log_control, "w") as f:
        f.write(f"positive control: {log_ctl}\n{base64.b64encode(b'x' + b64_ctl.encode()).decode()}\n")

    # ------------------------------------------------------------ 2. checkpoint
    time.sleep(1)
    env.psql(primary, "CHECKPOINT", db="postgres")
    lag = poll(lambda: env.psql(primary, "SELECT coalesce(max(coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                         "replay_lsn), 1)), 1) FROM pg_stat_replication", db="postgres")[1],
               lambda lag: lag == "0", 15, 0.5)  # every standby has replayed everything the primary wrote
    ckpt = sum(env.psql(p, "CHECKPOINT", db="postgres")[0] == 0 for p in standbys)
    check(f"CHECKPOINT on the primary ({primary}) and {len(standbys)} standby(s) (replay lag {lag or '?'} bytes)",
          ckpt == len(standbys) and lag == "0")
    # Every PostgreSQL data dir under the run dir, named by role: the live nodes by what they answer
    # (SHOW data_directory), anything else (moved aside by pg-rejoin, or stopped) is pg_retired.
    pgdirs = []
    for p in [primary] + standbys:
        rc, d, _ = env.psql(p, "SHOW data_directory", db="postgres")
        if rc == 0 and d:
            pgdirs.append(("pg_primary" if p == primary else "pg_standby", os.path.realpath(d)))
    for dp, _, fn in sorted(os.walk(env.dir)):
        d = os.path.realpath(dp)
        if "PG_VERSION" in fn and os.path.isfile(os.path.join(dp, "global", "pg_control")) and \
                d not in [x for _, x in pgdirs]:
            pgdirs.append(("pg_retired", d))
    for a, d in pgdirs:
        ctx.report.say(f"  data dir: {a} {d}")

    # ------------------------------------------------------------ 3. API-visible surfaces, then scan
    for fname, body in [("events.json", kube.retry("GET", "/api/v1/events")[1]),
                        ("vaultsecrets.json", kube.retry("GET", "/apis/vault.hyperiondb.io/v1alpha1/vaultsecrets")[1])]:
        with open(os.path.join(work, fname), "w") as f:
            json.dump(body, f, indent=1)
        ctx.note(f"{fname}: {len((body or {}).get('items', []))} items")
    for fname, r in [("audit.json", api.call("GET", "/v1/audit?limit=1000", auth=True)),
                     ("api-metrics.txt", api.call("GET", "/metrics")),
                     ("controller-metrics.txt", Api(dep.metrics_port, "").call("GET", "/metrics"))]:
        with open(os.path.join(work, fname), "wb") as f:
            f.write(r.body)
    others = []
    if os.environ.get("HV_LEAK_MARKERS") and os.path.exists(os.environ["HV_LEAK_MARKERS"]):
        others = [tuple(line.split()) for line in open(os.environ["HV_LEAK_MARKERS"]) if len(line.split()) == 3]
    markers = others + [m for m in own if m[1]]
    roots = {os.path.realpath(d) for d in [env.dir] + [os.path.dirname(f) for f in dep.logs()]}
    roots = [r for r in roots if not any(r.startswith(o + "/") for o in roots)]  # the product's logs: in it today
    areas, found = scan(markers, roots, os.path.realpath(env["ETCD_DATA_DIR"]), pgdirs, work)
    for kind, label, fname, a, path in found:
        (ctx.problem if kind == "HIT" else ctx.report.say)(f"{kind} {label} {fname} {a} {path}")
    nfiles, nbytes = sum(n for n, _ in areas.values()), sum(b for _, b in areas.values())
    hits = sum(1 for f in found if f[0] == "HIT")
    excluded = sum(1 for f in found if f[0] == "EXCLUDED")
    nmarkers = sum(1 for m in markers if m[2] != "control")
    for a, (n, b) in sorted(areas.items()):
        ctx.figure(f"files_scanned_{a}", n)
        ctx.figure(f"bytes_scanned_{a}", b)
    for fig, value in [("markers", nmarkers), ("files_scanned", nfiles), ("bytes_scanned", nbytes), ("hits", hits),
                       ("excluded_k8s_secret_in_etcd", excluded)]:
        ctx.figure(fig, value)

    def control(label, form, area):
        return any(f[:4] == ("CONTROL", label, form, area) for f in found)

    check("positive control: plaintext row found in the primary's data dir", control("control_pg", "raw", "pg_primary"))
    check("positive control: plaintext row found in the standby's data dir", control("control_pg", "raw", "pg_standby"))
    with_control = [d for a, d in pgdirs if any(f[0] == "CONTROL" and f[2] == "raw" and f[3] == a
                                                and f[4].startswith(d + "/") for f in found)]
    for a, d in pgdirs:
        if d not in with_control:
            ctx.report.say(f"  no control marker found in {a} {d}")
    retired = sum(1 for a, _ in pgdirs if a == "pg_retired")
    ctx.figure("pg_data_dirs", len(pgdirs))
    ctx.figure("pg_data_dirs_retired", retired)
    check(f"positive control: a plaintext control row found in each of the {len(pgdirs)} PostgreSQL data dirs "
          f"({retired} moved aside)", len(with_control) == len(pgdirs) >= 2)
    check("positive control: ConfigMap value found in etcd", control("control_etcd", "raw", "etcd"))
    check("positive control: raw marker found in a log", control("control_log", "raw", "logs"))
    check("positive control: base64-embedded marker (alignment 1) found in a log",
          any(control("control_b64", f"b64{k}", "logs") for k in range(3)))
    check("the referenced Kubernetes Secret's value is in etcd (why it is excluded there)", excluded > 0)
    check("scanned something substantial (> 50 MB)", nbytes > 50_000_000)
    check(f"hits: 0 for {nmarkers} markers in {nfiles} files / {nbytes} bytes", hits == 0)
    env.psql(primary, "DROP TABLE leak_control", db="postgres")
    kube.delete_namespace(ns)
