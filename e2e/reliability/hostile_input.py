#!/usr/bin/env python3
"""Hostile input against a running API (issue 8, "Hostile input"; DESIGN.md §7).

Usage: hostile_input.py            (reads HV_RUN_DIR, HV_API_PORT; HV_RUN_DIR/env for the rest)

Sends raw HTTP/1.1 over sockets (so bodies, paths and header bytes are exactly what we say) and
checks: oversized bodies -> 413 JSON; deep JSON nesting, invalid UTF-8, path traversal names ->
4xx JSON and never another secret's value; X-Forwarded-For garbage is ignored without
VAULT_TRUST_PROXY; spoofing X-Forwarded-For cannot make a non-allowlisted client allowlisted (a
second API process with VAULT_ALLOWED_IPS=10.9.9.9, plus a positive control with proxy trust on,
proving the header *would* work if trusted); token brute force -> 429 lockout that also holds for
the right token from that client, while other clients are unaffected; a request body that is
declared but never sent neither goes unanswered (Content-Length over the limit -> 413) nor holds an
audit-queue slot for 30 s (a fourth API process with the smallest queue). Every error body must be
JSON {"error": ...} — including what hyper itself refuses while parsing (control bytes or non-ASCII in
the request line or a header value, over 100 headers): 400/431 before any route runs, no request id,
counted as `http_level_rejections_json_body` (`..._empty_body` if the body is empty, which fails); a
client trickling its request head, or sending nothing, is cut after the header read timeout (~10 s);
5xx must be 0; every API process must still be alive at the end.

Brute-force and spoof traffic comes from random 127.x.y.z source addresses (all loopback on
Linux), so lockouts (900 s, stored in PostgreSQL, shared by replicas) never hit 127.0.0.1 that the
other suites use, and a re-run on the same instance starts unlocked.

Ends with `hostile input: N passed, M failed`; figures as `FIGURE <name> <value>` lines.
"""
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import time

from suite import ADMIN, ENV, PORT, RUN_DIR, load_env

load_env()
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/hyperion-vault/target")),
                   "debug", "hyperion-vault-api")

passed = failed = 0
stats = {"requests": 0, "5xx": 0, "non_json_errors": 0, "protocol_rejections": 0, "protocol_rejections_json": 0}
problems = []


def ok(what):
    global passed
    passed += 1
    print(f"ok   - {what}")


def ko(what):
    global failed
    failed += 1
    print(f"FAIL - {what}")


def check(what, cond, detail=""):
    (ok if cond else ko)(what + ("" if cond or not detail else f"  [{detail}]"))
    return cond


class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        try:
            return json.loads(self.body)
        except Exception:
            return None

    def __repr__(self):
        return f"{self.status} {self.body[:160]!r}"


def rand_src():
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def raw(method, path, headers=(), body=b"", port=None, src="127.0.0.1", content_type="application/json",
        timeout=30, count5xx=True):
    """One request on its own connection. `path` and header values may be bytes (sent verbatim)."""
    port = port or PORT
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    p = path if isinstance(path, bytes) else path.encode()
    req = method.encode() + b" " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    hs = list(headers)
    if body and content_type:
        hs.append(("Content-Type", content_type))
    if (body or method in ("POST", "PUT")) and not any(k.lower() == "content-length" for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    for k, v in hs:
        req += k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) + b"\r\n"
    req += b"\r\n"
    data = b""
    try:
        s.sendall(req + body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer (413) and close before reading everything: read what it said
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    stats["requests"] += 1
    if not data:
        return Resp(0, {}, b"")
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        hdrs.setdefault(k.strip().lower().decode("latin-1"), []).append(v.strip().decode("latin-1"))
    if "chunked" in ",".join(hdrs.get("transfer-encoding", [])):
        out, buf = b"", rest
        while buf:
            size_line, _, buf = buf.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out, buf = out + buf[:n], buf[n + 2:]
        rest = out
    r = Resp(status, hdrs, rest)
    if status >= 500 and count5xx:
        stats["5xx"] += 1
        problems.append(f"5xx: {method} {p[:120]!r} -> {r}")
    if status >= 400 and "x-request-id" not in hdrs and is_json_error(r):
        # Refused by hyper while parsing, before any route ran; the API answers these with the JSON
        # error body too (api/src/protocol.rs), just without a request id.
        stats["protocol_rejections_json"] += 1
    elif status >= 400 and "x-request-id" not in hdrs:
        # Refused by hyper while parsing (invalid bytes in the request line or a header value, too many
        # headers) before any product code ran: hyper answers 400/431 with an empty body and closes.
        stats["protocol_rejections"] += 1
        problems.append(f"HTTP-level rejection (hyper, empty body): {method} {p[:60]!r} -> {status}")
    elif status >= 400:
        j = r.json()
        if not (isinstance(j, dict) and isinstance(j.get("error"), str)):
            stats["non_json_errors"] += 1
            problems.append(f"non-JSON error body: {method} {p[:120]!r} -> {r}")
    return r


def is_json_error(r):
    j = r.json()
    return isinstance(j, dict) and isinstance(j.get("error"), str)


AUTH = ("Authorization", "Bearer " + ADMIN)


def api_json(method, path, obj=None, port=None, src="127.0.0.1", auth=True):
    body = json.dumps(obj).encode() if obj is not None else b""
    return raw(method, path, [AUTH] if auth else [], body, port=port, src=src)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- setup
tag = secrets.token_hex(4)
NAME = f"rel/hostile-{tag}/target"
VALUE = "hostile-" + secrets.token_hex(16)
r = api_json("POST", "/v1/secrets", {"name": NAME, "kind": "manual", "value": VALUE})
if not check("setup: create the target secret", r.status == 201, repr(r)):
    print(f"hostile input: {passed} passed, {failed} failed")
    sys.exit(1)
SIBLING = f"rel/hostile-{tag}/other"
SIBLING_VALUE = "sibling-" + secrets.token_hex(16)
api_json("POST", "/v1/secrets", {"name": SIBLING, "kind": "manual", "value": SIBLING_VALUE})
if os.environ.get("HV_LEAK_MARKERS"):  # plaintext values used here, for leak_scan.sh to look for
    with open(os.environ["HV_LEAK_MARKERS"], "a") as f:
        f.write(f"hostile_target {VALUE} all\nhostile_sibling {SIBLING_VALUE} all\n")


def target_intact():
    r = raw("GET", "/v1/secrets/" + NAME)
    return r.status == 200 and (r.json() or {}).get("value") == VALUE and (r.json() or {}).get("version") == 1


# ---------------------------------------------------------------- oversized bodies
big = b'{"value":"' + b"A" * (2 * 1024 * 1024) + b'"}'
for method, path, hdr in [("POST", "/v1/secrets", [AUTH]), ("PUT", "/v1/secrets/" + NAME, [AUTH]),
                          ("POST", f"/v1/secrets/{NAME}/verify", []), ("POST", "/v1/batch/secrets", []),
                          ("POST", "/v1/roles", [AUTH]), ("POST", "/v1/tokens", [AUTH])]:
    r = raw(method, path, hdr, big)
    check(f"2 MiB body {method} {path} -> 413 JSON", r.status == 413 and is_json_error(r), repr(r))
# Declared over the limit, body never sent: §7 says over 1 MiB is 413. The API only counts bytes as
# they arrive (axum DefaultBodyLimit) and has no body-read timeout, so today it never answers and holds
# the connection (and the request's task) for as long as the client likes. Reported as a product bug.
t0 = time.time()
r = raw("POST", f"/v1/secrets/{NAME}/verify", [("Content-Length", "10737418240"), ("Content-Type", "application/json")],
        b"", timeout=10)
check("Content-Length: 10 GiB with no body -> 413 JSON up front (not: connection held open)",
      r.status == 413 and is_json_error(r), f"{r!r} after {time.time() - t0:.0f} s" if r.status else
      f"no answer within {time.time() - t0:.0f} s, connection still open")
# chunked, over the limit
s = socket.socket()
s.settimeout(30)
s.connect(("127.0.0.1", PORT))
s.sendall(f"POST /v1/secrets/{NAME}/verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
          "Transfer-Encoding: chunked\r\n\r\n".encode())
resp = b""
try:
    for _ in range(40):
        s.sendall(b"10000\r\n" + b"B" * 0x10000 + b"\r\n")
    s.sendall(b"0\r\n\r\n")
except (BrokenPipeError, ConnectionResetError):
    pass
try:
    while True:
        c = s.recv(65536)
        if not c:
            break
        resp += c
except (ConnectionResetError, socket.timeout):
    pass
stats["requests"] += 1
check("2.5 MiB chunked body -> 413", resp.startswith(b"HTTP/1.1 413"), resp[:80])
# value over 64 KiB inside a small body
r = api_json("PUT", "/v1/secrets/" + NAME, {"value": "v" * (64 * 1024 + 1)})
check("value of 64 KiB + 1 -> 4xx JSON, no new version", 400 <= r.status < 500 and is_json_error(r) and target_intact(), repr(r))

# ---------------------------------------------------------------- deep JSON
for label, body in [("100k '['", b"[" * 100_000), ("100k '[' closed", b"[" * 100_000 + b"]" * 100_000),
                    ("100k '{\"a\":'", b'{"a":' * 100_000), ("value: 100k '['", b'{"value":' + b"[" * 100_000),
                    ("names: deep", b'{"names":' + b"[" * 50_000 + b"]" * 50_000 + b"}")]:
    for method, path, hdr in [("POST", f"/v1/secrets/{NAME}/verify", []), ("POST", "/v1/batch/secrets", []),
                              ("POST", "/v1/secrets", [AUTH]), ("PUT", "/v1/secrets/" + NAME, [AUTH])]:
        r = raw(method, path, hdr, body)
        check(f"deep JSON {label} {method} {path.replace(NAME, '{name}')} -> 400 JSON",
              r.status == 400 and is_json_error(r), repr(r))

# ---------------------------------------------------------------- invalid UTF-8
bad_utf8 = [b'{"value":"\xff\xfe\xfd"}', b'{"value":"\xc0\xaf"}', b'{"value":"\xed\xa0\x80"}',
            b'{"val\xffue":"x"}', b'\xef\xbb\xbf{"value":"x"}', b'{"value":"\\ud800"}']
for b in bad_utf8:
    r = raw("POST", f"/v1/secrets/{NAME}/verify", [], b)
    check(f"invalid UTF-8 verify body {b[:24]!r} -> 400 JSON or valid=false",
          (r.status == 400 and is_json_error(r)) or (r.status == 200 and (r.json() or {}).get("valid") is False), repr(r))
    r = raw("PUT", "/v1/secrets/" + NAME, [AUTH], b)
    check(f"invalid UTF-8 PUT body {b[:24]!r} -> 400 JSON", r.status == 400 and is_json_error(r), repr(r))
r = raw("POST", "/v1/secrets", [AUTH], b'{"name":"rel/\xff\xfe","kind":"manual","value":"x"}')
check("invalid UTF-8 in a created name -> 400 JSON", r.status == 400 and is_json_error(r), repr(r))
for p in [b"/v1/secrets/%ff%fe", b"/v1/secrets/rel/%c0%ae%c0%ae/x", b"/v1/secrets/\xff\xfe",
          b"/v1/secrets/%00", b"/v1/secrets/a%00b"]:
    r = raw("GET", p)
    check(f"bad bytes in path GET {p!r} -> 4xx JSON (or HTTP-level 400)", 400 <= r.status < 500
          and (is_json_error(r) or "x-request-id" not in r.headers), repr(r))
check("target intact after invalid UTF-8", target_intact())

# ---------------------------------------------------------------- path traversal
parent = NAME.rsplit("/", 1)[0]
trav = ["..", "%2e%2e", "%2E%2E", ".", "%2e", f"{parent}/x/../target", f"{parent}/x/%2e%2e/target",
        f"{parent}/x%2F..%2Ftarget", f"{parent}/x%2f%2e%2e%2ftarget", f"{parent}//target", f"{parent}%2F%2Ftarget",
        f"/{NAME}", f"{NAME}/", f"{NAME}%2F", f"./{NAME}", f"%2e/{NAME}", f"{parent}/./target",
        "../../../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2f..%2fetc%2fpasswd", "..\\..\\etc\\passwd",
        f"{parent}/other/../target", "a/" + "../" * 200 + "etc/passwd"]
for t in trav:
    r = raw("GET", "/v1/secrets/" + t)
    leaked = VALUE.encode() in r.body
    check(f"traversal GET /v1/secrets/{t[:60]} -> 4xx JSON, no value", 400 <= r.status < 500 and is_json_error(r)
          and not leaked, repr(r))
    r = raw("POST", f"/v1/secrets/{t}/verify", [], json.dumps({"value": VALUE}).encode())
    check(f"traversal verify {t[:60]} -> not valid", (r.status == 200 and (r.json() or {}).get("valid") is False)
          or (400 <= r.status < 500 and is_json_error(r)), repr(r))
    r = raw("PUT", "/v1/secrets/" + t, [AUTH], b'{"value":"overwritten"}')
    check(f"traversal PUT {t[:60]} -> 4xx JSON", 400 <= r.status < 500 and is_json_error(r), repr(r))
    r = raw("DELETE", "/v1/secrets/" + t, [AUTH])
    check(f"traversal DELETE {t[:60]} -> 4xx JSON", 400 <= r.status < 500 and is_json_error(r), repr(r))
for n in ["..", "../x", "a/../b", "a//b", "/a", "a/", "a/./b", ".", "%2e%2e", "a\\..\\b", "a/\x00/b", "x" * 254,
          "a/verify", "a/rotate", "a/versions", ""]:
    r = api_json("POST", "/v1/secrets", {"name": n, "kind": "manual", "value": "x"})
    check(f"create name {n[:40]!r} -> 400 JSON", r.status == 400 and is_json_error(r), repr(r))
r = raw("POST", "/v1/batch/secrets", [], json.dumps({"names": ["..", f"{parent}/x/../target", f"{parent}//target",
                                                                "%2e%2e", NAME + "/"]}).encode())
check("batch with traversal names -> no value returned", VALUE.encode() not in r.body and r.status < 500, repr(r))
check("target intact after traversal", target_intact())
r = raw("GET", "/v1/secrets/" + NAME.replace("/", "%2F"))
check("control: percent-encoded real name still reads", r.status == 200 and (r.json() or {}).get("value") == VALUE, repr(r))

# ---------------------------------------------------------------- header garbage / injection (trust off)
garbage = [b"10.9.9.9", b"10.9.9.9, 127.0.0.1", b"<script>alert(1)</script>", b"\x01\x02\x7f", b"\xff\xfe\xfd",
           b"1" * 8000, b", , ,", b"[::1]:99999", b"999.999.999.999", b"unknown", b"127.0.0.1\tX-Evil: 1"]
for g in garbage:
    r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", g)])
    hyper_refused = r.status == 400 and "x-request-id" not in r.headers and any(c < 0x20 and c != 9 or c == 0x7f for c in g)
    check(f"X-Forwarded-For {g[:30]!r} ignored: read from 127.0.0.1 still 200 (control bytes: HTTP-level 400)",
          hyper_refused or (r.status == 200 and (r.json() or {}).get("value") == VALUE), repr(r))
r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", "10.0.0.%d" % i) for i in range(90)])
check("90 X-Forwarded-For lines ignored", r.status == 200, repr(r))
r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", "10.0.0.%d" % i) for i in range(200)])
check("200 X-Forwarded-For lines -> 431 (hyper's header limit), no crash", r.status == 431, repr(r))
r = raw("GET", "/v1/secrets/" + NAME + "%0d%0aSet-Cookie:%20evil=1")
check("CRLF in path not reflected as a header", "set-cookie" not in r.headers and 400 <= r.status < 500, repr(r))
r = raw("GET", "/v1/secrets/" + NAME, [("X-Request-Id", "evil\x0bid")])
check("garbage X-Request-Id accepted or refused cleanly", r.status in (200, 400), repr(r))
for size in (200_000, 2_000_000):
    r = raw("GET", "/v1/secrets/" + NAME, [("X-Huge", "h" * size)])
    check(f"{size // 1000} KB header -> answered or refused (200/400/431/closed), no 5xx", r.status in (0, 200, 400, 431),
          repr(r))

# ---------------------------------------------------------------- spoofed proxy headers: a second API process
procs = []
crashes = panics = 0


def start_api(extra, log):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    p = port.getsockname()[1]
    port.close()
    env = {k: v for k, v in os.environ.items()}
    env.update(SECOND_ENV)
    env.update(extra)
    env["VAULT_API_LISTEN"] = f"127.0.0.1:{p}"
    env["RUST_LOG"] = "info"
    proc = subprocess.Popen([BIN], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    procs.append(proc)
    for _ in range(120):
        try:
            socket.create_connection(("127.0.0.1", p), timeout=1).close()
            r = raw("GET", "/readyz", port=p)
            if r.status == 200:
                return proc, p
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    print(open(log).read()[-2000:])
    return proc, None


# own database role for the extra processes (the run.sh role's password is not kept anywhere)
role_pw = secrets.token_hex(16)
psql = [os.path.join(ENV["PG_BIN_DIR"], "psql"), "-qtA", "-v", "ON_ERROR_STOP=1", "-h", ENV["PG_HOST"], "-p",
        ENV["PG_PRIMARY_PORT"], "-U", ENV["PG_SUPERUSER"], "-d", ENV["PG_DATABASE"]]
sql = (f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='vault_api_rel') THEN CREATE ROLE vault_api_rel "
       f"LOGIN; END IF; END $$; ALTER ROLE vault_api_rel PASSWORD '{role_pw}'; "
       f"SELECT vault.grant_service_role('vault_api_rel');")
subprocess.run(psql + ["-c", sql], env={**os.environ, "PGPASSWORD": ENV["PG_SUPERPASSWORD"],
                                        "PGOPTIONS": "-c client_min_messages=warning"}, check=True, stdout=subprocess.DEVNULL)
SECOND_ENV = {
    "VAULT_PG_HOSTS": f"{ENV['PG_HOST']}:{ENV['PG_PRIMARY_PORT']},{ENV['PG_HOST']}:{ENV['PG_STANDBY_PORT']}",
    "VAULT_PG_DBNAME": ENV["PG_DATABASE"], "VAULT_PG_SSLMODE": "disable", "VAULT_KMS_MODE": "aws",
    "VAULT_KMS_KEY_ID": ENV["VAULT_KMS_KEY_ID"], "VAULT_KMS_ENDPOINT": ENV["VAULT_KMS_ENDPOINT"],
    "VAULT_PG_USER": "vault_api_rel", "VAULT_PG_PASSWORD": role_pw,
    "AWS_ACCESS_KEY_ID": ENV.get("AWS_ACCESS_KEY_ID", "testing"),
    "AWS_SECRET_ACCESS_KEY": ENV.get("AWS_SECRET_ACCESS_KEY", "testing"), "AWS_REGION": ENV.get("AWS_REGION", "us-east-1"),
}
logdir = os.path.join(RUN_DIR, "run")
try:
    spoof, sport = start_api({"VAULT_ALLOWED_IPS": "10.9.9.9"}, os.path.join(logdir, "api-spoof.log"))
    trusted, tport = start_api({"VAULT_ALLOWED_IPS": "10.9.9.9", "VAULT_TRUST_PROXY": "true",
                                "VAULT_TRUSTED_PROXIES": "127.0.0.0/8"}, os.path.join(logdir, "api-trusted.log"))
    if check("second API (VAULT_ALLOWED_IPS=10.9.9.9, no proxy trust) started", sport is not None) and \
            check("third API (same, VAULT_TRUST_PROXY=true, trusted 127.0.0.0/8) started", tport is not None):
        src = rand_src()
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", "10.9.9.9")], port=tport, src=src)
        check("control: with proxy trust, X-Forwarded-For: 10.9.9.9 is believed (200)",
              r.status == 200 and (r.json() or {}).get("value") == VALUE, repr(r))
        spoofs = [[("X-Forwarded-For", "10.9.9.9")], [("X-Forwarded-For", "10.9.9.9, 10.9.9.9")],
                  [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "10.9.9.9")], [("X-Real-IP", "10.9.9.9")],
                  [("Forwarded", "for=10.9.9.9")], [("X-Client-IP", "10.9.9.9")], [("True-Client-IP", "10.9.9.9")],
                  [("X-Forwarded-For", "10.9.9.9:443")]]
        for h in spoofs:
            src = rand_src()  # fresh client each: allowlist denials count towards a lockout
            r = raw("GET", "/v1/secrets/" + NAME, h, port=sport, src=src)
            check(f"spoof {h} without proxy trust -> 403 JSON, no value",
                  r.status == 403 and is_json_error(r) and VALUE.encode() not in r.body, repr(r))
            r = raw("POST", f"/v1/secrets/{NAME}/verify", h, json.dumps({"value": VALUE}).encode(), port=sport, src=src)
            check(f"spoof {h} verify -> 403 JSON", r.status == 403 and is_json_error(r), repr(r))
        # with trust on, the left-most (client-written) hops are never believed
        src = rand_src()
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", "10.9.9.9, 192.0.2.7")], port=tport, src=src)
        check("with proxy trust, a client-written left hop 10.9.9.9 is not believed (403)", r.status == 403, repr(r))
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", b"\xff\xfe")], port=tport, src=rand_src())
        check("with proxy trust, malformed X-Forwarded-For -> 4xx JSON", 400 <= r.status < 500 and is_json_error(r),
              repr(r))

    # ------------------------------------------------------------ slow request heads (slowloris)
    # A client that trickles its request head one byte a second, and one that connects and sends
    # nothing, must be cut after the header read timeout (api/src/protocol.rs HEADER_READ_TIMEOUT,
    # 10 s), not held for as long as they like. Runs in the background during the 30 s wait below.
    slow_results = {}

    def slow_head(label, head, seconds=30):
        c = socket.create_connection(("127.0.0.1", PORT))
        c.settimeout(1)
        t0 = time.time()
        try:
            if head:
                c.sendall(head)
            while time.time() - t0 < seconds:
                if head:
                    c.sendall(b"a")
                try:
                    data = c.recv(4096)
                    slow_results[label] = ("closed", time.time() - t0, data[:80])
                    return
                except socket.timeout:
                    pass
            slow_results[label] = ("open", time.time() - t0, b"")
        except OSError as e:
            slow_results[label] = ("closed", time.time() - t0, repr(e).encode())
        finally:
            c.close()

    import threading
    slow_threads = [threading.Thread(target=slow_head, args=(label, head), daemon=True) for label, head in
                    [("trickled header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "),
                     ("trickled request line", b"GET /v1/secrets/"), ("nothing sent", b"")]]
    for t in slow_threads:
        t.start()

    # ------------------------------------------------------------ stalled request bodies vs the audit queue
    # Every audited call reserves an audit-queue slot before its body is read (api/README.md "Audit"),
    # and nothing times out a body that never comes: an allowlisted client that starts POST verify
    # bodies and stalls holds slots until it hangs up; with the queue full every audited call of every
    # client answers 503. Shown with a small queue (the minimum, 16) on a fourth process.
    small, smport = start_api({"VAULT_ALLOWED_IPS": "127.0.0.1", "VAULT_AUDIT_QUEUE_CAPACITY": "16"},
                              os.path.join(logdir, "api-smallqueue.log"))
    if check("fourth API (VAULT_AUDIT_QUEUE_CAPACITY=16) started", smport is not None):
        stalled = []
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", smport))
            c.sendall(f"POST /v1/secrets/{NAME}/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: 100\r\n\r\n{".encode())
            stalled.append(c)
        time.sleep(1)
        during = raw("GET", "/v1/secrets/" + NAME, port=smport, count5xx=False).status  # 503 here is by design
        print(f"FIGURE read_status_with_20_stalled_bodies {during}")
        time.sleep(30)
        after30 = raw("GET", "/v1/secrets/" + NAME, port=smport, count5xx=False)  # judged below
        print(f"FIGURE read_status_30s_after_20_stalled_bodies {after30.status}")
        check("20 stalled request bodies do not hold the audit queue for 30 s (read -> 200)", after30.status == 200,
              repr(after30))
        for c in stalled:
            c.close()
        time.sleep(1)
        r = raw("GET", "/v1/secrets/" + NAME, port=smport)
        check("after the stalled clients hang up, reads answer 200 again", r.status == 200, repr(r))

    for t in slow_threads:
        t.join(40)
    for label in ("trickled header", "trickled request line", "nothing sent"):
        state, held, data = slow_results.get(label, ("unknown", 0, b""))
        print(f"FIGURE slow_head_{label.replace(' ', '_')}_held_s {held:.1f}")
        check(f"slow client ({label}) cut by the header read timeout (~10 s), not held", state == "closed"
              and 8 <= held <= 20 and not data.startswith(b"HTTP/1.1 2"),
              f"{state} after {held:.1f} s, got {data!r}")

    # ------------------------------------------------------------ token brute force
    src = rand_src()
    codes = []
    for i in range(40):
        r = raw("GET", "/v1/secrets", [("Authorization", "Bearer hvt_" + secrets.token_urlsafe(32))], src=src)
        codes.append(r.status)
    first429 = codes.index(429) + 1 if 429 in codes else None
    print(f"FIGURE brute_force_first_429_at {first429}")
    check("brute force: 401 then 429 after <= 10 bad tokens", first429 is not None and first429 <= 11
          and all(c == 401 for c in codes[:first429 - 1]), str(codes))
    check("brute force: every attempt after the lockout is 429", first429 is not None
          and all(c == 429 for c in codes[first429 - 1:]), str(codes))
    r = raw("GET", "/v1/secrets", [AUTH], src=src)
    check("lockout holds for the right admin token from that client (429 + Retry-After)",
          r.status == 429 and "retry-after" in r.headers and is_json_error(r), repr(r))
    r = raw("POST", "/v1/secrets", [AUTH], json.dumps({"name": f"rel/hostile-{tag}/locked", "kind": "manual",
                                                         "value": "x"}).encode(), src=src)
    check("locked-out client cannot create with the right token", r.status == 429, repr(r))
    if sport:
        r = raw("GET", "/v1/secrets", [AUTH], port=sport, src=src)
        check("lockout is shared by replicas (other API process also 429)", r.status == 429, repr(r))
    r = raw("GET", "/v1/secrets", [AUTH])
    check("another client (127.0.0.1) with the right token is unaffected", r.status == 200, repr(r))
    src2 = rand_src()
    for label, v in [("empty", b"Bearer "), ("basic", b"Basic YWRtaW46YWRtaW4="), ("non-ascii", b"Bearer \xff\xfe"),
                     ("long", b"Bearer " + b"a" * 60000), ("no scheme", ADMIN.encode()),
                     ("two tokens", b"Bearer " + ADMIN.encode() + b" x"), ("lower", b"bearer x")]:
        r = raw("GET", "/v1/secrets", [("Authorization", v)], src=src2)
        check(f"malformed Authorization ({label}) -> 401/429/400/431 JSON", r.status in (400, 401, 429, 431)
              and (is_json_error(r) or r.status == 431), repr(r))

    # ------------------------------------------------------------ misc protocol errors are JSON
    for method, path, hdr, body, ct in [("GET", "/nope", [], b"", None), ("PATCH", "/v1/secrets/" + NAME, [AUTH], b"{}", "application/json"),
                                        ("POST", f"/v1/secrets/{NAME}/verify", [], b'{"value":"x"}', "text/plain"),
                                        ("POST", f"/v1/secrets/{NAME}/verify", [], b'{"value":', "application/json"),
                                        ("POST", f"/v1/secrets/{NAME}/verify", [], b'{"value":1}', "application/json"),
                                        ("POST", f"/v1/secrets/{NAME}/verify", [], b'', "application/json")]:
        r = raw(method, path, hdr, body, content_type=ct)
        check(f"{method} {path.replace(NAME, '{name}')} ct={ct} body={body[:12]!r} -> 4xx JSON",
              400 <= r.status < 500 and is_json_error(r), repr(r))

    # ------------------------------------------------------------ the end: nothing crashed
    crashes = 0
    for f in ("api.pid", "controller.pid"):
        pid = int(open(os.path.join(logdir, f)).read())
        if not pid_alive(pid):
            crashes += 1
            problems.append(f"{f} {pid} is gone")
    for p in procs:
        if p.poll() is not None:
            crashes += 1
            problems.append(f"extra API {p.args} exited {p.returncode}")
    panics = sum(open(os.path.join(logdir, f), errors="replace").read().count("panicked")
                 for f in os.listdir(logdir) if f.endswith(".log"))
    check("target intact at the end", target_intact())

    # ------------------------------------------------------------ the audit trail still flows
    # Hostile names (NUL and control bytes in the path) are audited too; a row PostgreSQL refuses
    # would stall the audit writer, which retries a batch until it is written.
    def audit_metrics():
        text = raw("GET", "/metrics").body.decode(errors="replace")
        vals = {}
        for line in text.splitlines():
            for k in ("audit_write_failures_total", "audit_queue_depth"):
                if line.startswith("hyperion_vault_api_" + k + " "):
                    vals[k] = float(line.split()[1])
        return vals
    for _ in range(50):
        am = audit_metrics()
        if am.get("audit_queue_depth") == 0:
            break
        time.sleep(0.2)
    print(f"FIGURE audit_write_failures {am.get('audit_write_failures_total')}")
    check("audit trail still written after the hostile input (0 failed batch writes, queue drained)",
          am.get("audit_write_failures_total") == 0 and am.get("audit_queue_depth") == 0, str(am))
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()

for pr in problems:
    print("  problem:", pr)
print(f"FIGURE requests_sent {stats['requests']}")
print(f"FIGURE 5xx_seen {stats['5xx']}")
print(f"FIGURE non_json_error_bodies {stats['non_json_errors']}")
print(f"FIGURE http_level_rejections_empty_body {stats['protocol_rejections']}")
print(f"FIGURE http_level_rejections_json_body {stats['protocol_rejections_json']}")
print(f"FIGURE crashes {crashes}")
print(f"FIGURE panics_in_logs {panics}")
check("5xx seen: 0", stats["5xx"] == 0, str(stats["5xx"]))
check("every error body is JSON {\"error\": ...}", stats["non_json_errors"] == 0, str(stats["non_json_errors"]))
check("hyper's own refusals (bad bytes, too many headers) have the JSON error body too",
      stats["protocol_rejections"] == 0 and stats["protocol_rejections_json"] > 0,
      f"{stats['protocol_rejections']} empty, {stats['protocol_rejections_json']} JSON")
check("crashes: 0 (API, controller and extra API processes alive)", crashes == 0, str(crashes))
check("no panic in any process log", panics == 0, str(panics))
print(f"hostile input: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
