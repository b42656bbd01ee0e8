"""Hostile input against the running API (issue 8, "Hostile input"; DESIGN.md §7).

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
other checks use, and a re-run on the same instance starts unlocked.
"""
import json
import random
import secrets
import socket
import threading
import time

from .. import api
from ..load import poll

LABEL = "hostile input"


def rand_src():
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def json_error(r):
    j = r.json()
    return isinstance(j, dict) and isinstance(j.get("error"), str)


class Hostile:
    """The requests of this check, counted and judged as they go (5xx, error bodies, hyper's refusals)."""

    def __init__(self, ctx):
        self.ctx, self.port, self.auth = ctx, ctx.deployment.api_port, ("Authorization", "Bearer " + ctx.api.admin)
        self.stats = {"requests": 0, "5xx": 0, "non_json_errors": 0, "protocol_rejections": 0,
                      "protocol_rejections_json": 0}
        tag = secrets.token_hex(4)
        self.tag, self.name, self.value = tag, f"rel/hostile-{tag}/target", "hostile-" + secrets.token_hex(16)

    def raw(self, method, path, headers=(), body=b"", port=None, src="127.0.0.1", content_type="application/json",
            timeout=30, count5xx=True, judge=True):
        r = api.raw(method, path, headers, body, port or self.port, src, content_type, timeout)
        self.stats["requests"] += 1
        p = path if isinstance(path, bytes) else path.encode()
        if not r.status or not judge:
            return r
        if r.status >= 500 and count5xx:
            self.stats["5xx"] += 1
            self.ctx.problem(f"5xx: {method} {p[:120]!r} -> {r}")
        if r.status >= 400 and "x-request-id" not in r.headers and json_error(r):
            # Refused by hyper while parsing, before any route ran; the API answers these with the JSON
            # error body too (api/src/protocol.rs), just without a request id.
            self.stats["protocol_rejections_json"] += 1
        elif r.status >= 400 and "x-request-id" not in r.headers:
            self.stats["protocol_rejections"] += 1
            self.ctx.problem(f"HTTP-level rejection (hyper, empty body): {method} {p[:60]!r} -> {r.status}")
        elif r.status >= 400 and not json_error(r):
            self.stats["non_json_errors"] += 1
            self.ctx.problem(f"non-JSON error body: {method} {p[:120]!r} -> {r}")
        return r

    def json(self, method, path, obj=None, port=None, src="127.0.0.1", auth=True):
        return self.raw(method, path, [self.auth] if auth else [], json.dumps(obj).encode() if obj is not None else b"",
                        port=port, src=src)

    def target_intact(self):
        r = self.raw("GET", "/v1/secrets/" + self.name)
        return r.status == 200 and (r.json() or {}).get("value") == self.value and (r.json() or {}).get("version") == 1


def audit(ctx):
    m = ctx.api.metrics()
    return {k: m.get("hyperion_vault_api_" + k) for k in ("audit_write_failures_total", "audit_queue_depth")}


def run(ctx):
    h = Hostile(ctx)
    audit_failures_before = audit(ctx)["audit_write_failures_total"]
    check, raw, AUTH, NAME, VALUE = ctx.check, h.raw, h.auth, h.name, h.value
    r = h.json("POST", "/v1/secrets", {"name": NAME, "kind": "manual", "value": VALUE})
    ctx.require("setup: create the target secret", r.status == 201, repr(r))
    sibling_value = "sibling-" + secrets.token_hex(16)
    h.json("POST", "/v1/secrets", {"name": f"rel/hostile-{h.tag}/other", "kind": "manual", "value": sibling_value})
    ctx.mark("hostile_target", VALUE)
    ctx.mark("hostile_sibling", sibling_value)

    # ------------------------------------------------------------ oversized bodies
    big = b'{"value":"' + b"A" * (2 * 1024 * 1024) + b'"}'
    for method, path, hdr in [("POST", "/v1/secrets", [AUTH]), ("PUT", "/v1/secrets/" + NAME, [AUTH]),
                              ("POST", f"/v1/secrets/{NAME}/verify", []), ("POST", "/v1/batch/secrets", []),
                              ("POST", "/v1/roles", [AUTH]), ("POST", "/v1/tokens", [AUTH])]:
        r = raw(method, path, hdr, big)
        check(f"2 MiB body {method} {path} -> 413 JSON", r.status == 413 and json_error(r), repr(r))
    # Declared over the limit, body never sent: §7 says over 1 MiB is 413 (not: the connection held
    # open for as long as the client likes).
    t0 = time.time()
    r = raw("POST", f"/v1/secrets/{NAME}/verify", [("Content-Length", "10737418240"),
                                                   ("Content-Type", "application/json")], b"", timeout=10)
    check("Content-Length: 10 GiB with no body -> 413 JSON up front (not: connection held open)",
          r.status == 413 and json_error(r), f"{r!r} after {time.time() - t0:.0f} s" if r.status else
          f"no answer within {time.time() - t0:.0f} s, connection still open")
    chunks = b"".join(b"10000\r\n" + b"B" * 0x10000 + b"\r\n" for _ in range(40)) + b"0\r\n\r\n"
    r = raw("POST", f"/v1/secrets/{NAME}/verify", [("Transfer-Encoding", "chunked")], chunks, judge=False)
    check("2.5 MiB chunked body -> 413", r.status == 413, repr(r))
    r = h.json("PUT", "/v1/secrets/" + NAME, {"value": "v" * (64 * 1024 + 1)})
    check("value of 64 KiB + 1 -> 4xx JSON, no new version", 400 <= r.status < 500 and json_error(r)
          and h.target_intact(), repr(r))

    # ------------------------------------------------------------ deep JSON
    for label, body in [("100k '['", b"[" * 100_000), ("100k '[' closed", b"[" * 100_000 + b"]" * 100_000),
                        ("100k '{\"a\":'", b'{"a":' * 100_000), ("value: 100k '['", b'{"value":' + b"[" * 100_000),
                        ("names: deep", b'{"names":' + b"[" * 50_000 + b"]" * 50_000 + b"}")]:
        for method, path, hdr in [("POST", f"/v1/secrets/{NAME}/verify", []), ("POST", "/v1/batch/secrets", []),
                                  ("POST", "/v1/secrets", [AUTH]), ("PUT", "/v1/secrets/" + NAME, [AUTH])]:
            r = raw(method, path, hdr, body)
            check(f"deep JSON {label} {method} {path.replace(NAME, '{name}')} -> 400 JSON",
                  r.status == 400 and json_error(r), repr(r))

    # ------------------------------------------------------------ invalid UTF-8
    for b in [b'{"value":"\xff\xfe\xfd"}', b'{"value":"\xc0\xaf"}', b'{"value":"\xed\xa0\x80"}',
              b'{"val\xffue":"x"}', b'\xef\xbb\xbf{"value":"x"}', b'{"value":"\\ud800"}']:
        r = raw("POST", f"/v1/secrets/{NAME}/verify", [], b)
        check(f"invalid UTF-8 verify body {b[:24]!r} -> 400 JSON or valid=false", (r.status == 400 and json_error(r))
              or (r.status == 200 and (r.json() or {}).get("valid") is False), repr(r))
        r = raw("PUT", "/v1/secrets/" + NAME, [AUTH], b)
        check(f"invalid UTF-8 PUT body {b[:24]!r} -> 400 JSON", r.status == 400 and json_error(r), repr(r))
    r = raw("POST", "/v1/secrets", [AUTH], b'{"name":"rel/\xff\xfe","kind":"manual","value":"x"}')
    check("invalid UTF-8 in a created name -> 400 JSON", r.status == 400 and json_error(r), repr(r))
    for p in [b"/v1/secrets/%ff%fe", b"/v1/secrets/rel/%c0%ae%c0%ae/x", b"/v1/secrets/\xff\xfe",
              b"/v1/secrets/%00", b"/v1/secrets/a%00b"]:
        r = raw("GET", p)
        check(f"bad bytes in path GET {p!r} -> 4xx JSON (or HTTP-level 400)", 400 <= r.status < 500
              and (json_error(r) or "x-request-id" not in r.headers), repr(r))
    check("target intact after invalid UTF-8", h.target_intact())

    # ------------------------------------------------------------ path traversal
    parent = NAME.rsplit("/", 1)[0]
    for t in ["..", "%2e%2e", "%2E%2E", ".", "%2e", f"{parent}/x/../target", f"{parent}/x/%2e%2e/target",
              f"{parent}/x%2F..%2Ftarget", f"{parent}/x%2f%2e%2e%2ftarget", f"{parent}//target",
              f"{parent}%2F%2Ftarget", f"/{NAME}", f"{NAME}/", f"{NAME}%2F", f"./{NAME}", f"%2e/{NAME}",
              f"{parent}/./target", "../../../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2f..%2fetc%2fpasswd",
              "..\\..\\etc\\passwd", f"{parent}/other/../target", "a/" + "../" * 200 + "etc/passwd"]:
        r = raw("GET", "/v1/secrets/" + t)
        check(f"traversal GET /v1/secrets/{t[:60]} -> 4xx JSON, no value", 400 <= r.status < 500 and json_error(r)
              and VALUE.encode() not in r.body, repr(r))
        r = raw("POST", f"/v1/secrets/{t}/verify", [], json.dumps({"value": VALUE}).encode())
        check(f"traversal verify {t[:60]} -> not valid", (r.status == 200 and (r.json() or {}).get("valid") is False)
              or (400 <= r.status < 500 and json_error(r)), repr(r))
        r = raw("PUT", "/v1/secrets/" + t, [AUTH], b'{"value":"overwritten"}')
        check(f"traversal PUT {t[:60]} -> 4xx JSON", 400 <= r.status < 500 and json_error(r), repr(r))
        r = raw("DELETE", "/v1/secrets/" + t, [AUTH])
        check(f"traversal DELETE {t[:60]} -> 4xx JSON", 400 <= r.status < 500 and json_error(r), repr(r))
    for n in ["..", "../x", "a/../b", "a//b", "/a", "a/", "a/./b", ".", "%2e%2e", "a\\..\\b", "a/\x00/b", "x" * 254,
              "a/verify", "a/rotate", "a/versions", ""]:
        r = h.json("POST", "/v1/secrets", {"name": n, "kind": "manual", "value": "x"})
        check(f"create name {n[:40]!r} -> 400 JSON", r.status == 400 and json_error(r), repr(r))
    r = raw("POST", "/v1/batch/secrets", [], json.dumps({"names": ["..", f"{parent}/x/../target", f"{parent}//target",
                                                                    "%2e%2e", NAME + "/"]}).encode())
    check("batch with traversal names -> no value returned", VALUE.encode() not in r.body and r.status < 500, repr(r))
    check("target intact after traversal", h.target_intact())
    r = raw("GET", "/v1/secrets/" + NAME.replace("/", "%2F"))
    check("control: percent-encoded real name still reads", r.status == 200 and (r.json() or {}).get("value") == VALUE,
          repr(r))

    # ------------------------------------------------------------ header garbage / injection (trust off)
    for g in [b"10.9.9.9", b"10.9.9.9, 127.0.0.1", b"<script>alert(1)</script>", b"\x01\x02\x7f", b"\xff\xfe\xfd",
              b"1" * 8000, b", , ,", b"[::1]:99999", b"999.999.999.999", b"unknown", b"127.0.0.1\tX-Evil: 1"]:
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", g)])
        hyper_refused = r.status == 400 and "x-request-id" not in r.headers and any(
            c < 0x20 and c != 9 or c == 0x7f for c in g)
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
        check(f"{size // 1000} KB header -> answered or refused (200/400/431/closed), no 5xx",
              r.status in (0, 200, 400, 431), repr(r))

    extras = []
    try:
        with_extra_apis(ctx, h, extras, audit_failures_before)
    finally:
        for e in extras:
            e.stop()

    s = h.stats
    ctx.figure("requests_sent", s["requests"])
    ctx.figure("5xx_seen", s["5xx"])
    ctx.figure("non_json_error_bodies", s["non_json_errors"])
    ctx.figure("http_level_rejections_empty_body", s["protocol_rejections"])
    ctx.figure("http_level_rejections_json_body", s["protocol_rejections_json"])
    check("5xx seen: 0", s["5xx"] == 0, str(s["5xx"]))
    check("every error body is JSON {\"error\": ...}", s["non_json_errors"] == 0, str(s["non_json_errors"]))
    check("hyper's own refusals (bad bytes, too many headers) have the JSON error body too",
          s["protocol_rejections"] == 0 and s["protocol_rejections_json"] > 0,
          f"{s['protocol_rejections']} empty, {s['protocol_rejections_json']} JSON")


def slow_head(port, results, label, head, seconds=30):
    """A client trickling its request head one byte a second (or sending nothing): when was it cut?"""
    c = socket.create_connection(("127.0.0.1", port))
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
                results[label] = ("closed", time.time() - t0, data[:80])
                return
            except socket.timeout:
                pass
        results[label] = ("open", time.time() - t0, b"")
    except OSError as e:
        results[label] = ("closed", time.time() - t0, repr(e).encode())
    finally:
        c.close()


def with_extra_apis(ctx, h, extras, audit_failures_before):
    """Spoofed proxy headers, slow heads, stalled bodies, brute force: with more API processes."""
    check, raw, AUTH, NAME, VALUE = ctx.check, h.raw, h.auth, h.name, h.value
    dep = ctx.deployment
    spoof = dep.extra_api({"VAULT_ALLOWED_IPS": "10.9.9.9"}, "spoof")
    trusted = dep.extra_api({"VAULT_ALLOWED_IPS": "10.9.9.9", "VAULT_TRUST_PROXY": "true",
                             "VAULT_TRUSTED_PROXIES": "127.0.0.0/8"}, "trusted")
    extras += [spoof, trusted]
    sport, tport = spoof.port, trusted.port
    if check("second API (VAULT_ALLOWED_IPS=10.9.9.9, no proxy trust) started", sport is not None) and \
            check("third API (same, VAULT_TRUST_PROXY=true, trusted 127.0.0.0/8) started", tport is not None):
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", "10.9.9.9")], port=tport, src=rand_src())
        check("control: with proxy trust, X-Forwarded-For: 10.9.9.9 is believed (200)",
              r.status == 200 and (r.json() or {}).get("value") == VALUE, repr(r))
        for hs in [[("X-Forwarded-For", "10.9.9.9")], [("X-Forwarded-For", "10.9.9.9, 10.9.9.9")],
                   [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "10.9.9.9")], [("X-Real-IP", "10.9.9.9")],
                   [("Forwarded", "for=10.9.9.9")], [("X-Client-IP", "10.9.9.9")], [("True-Client-IP", "10.9.9.9")],
                   [("X-Forwarded-For", "10.9.9.9:443")]]:
            src = rand_src()  # fresh client each: allowlist denials count towards a lockout
            r = raw("GET", "/v1/secrets/" + NAME, hs, port=sport, src=src)
            check(f"spoof {hs} without proxy trust -> 403 JSON, no value",
                  r.status == 403 and json_error(r) and VALUE.encode() not in r.body, repr(r))
            r = raw("POST", f"/v1/secrets/{NAME}/verify", hs, json.dumps({"value": VALUE}).encode(), port=sport, src=src)
            check(f"spoof {hs} verify -> 403 JSON", r.status == 403 and json_error(r), repr(r))
        # with trust on, the left-most (client-written) hops are never believed
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", "10.9.9.9, 192.0.2.7")], port=tport, src=rand_src())
        check("with proxy trust, a client-written left hop 10.9.9.9 is not believed (403)", r.status == 403, repr(r))
        r = raw("GET", "/v1/secrets/" + NAME, [("X-Forwarded-For", b"\xff\xfe")], port=tport, src=rand_src())
        check("with proxy trust, malformed X-Forwarded-For -> 4xx JSON", 400 <= r.status < 500 and json_error(r),
              repr(r))

    # ------------------------------------------------------------ slow request heads (slowloris)
    # Must be cut after the header read timeout (api/src/protocol.rs HEADER_READ_TIMEOUT, 10 s), not
    # held for as long as the client likes. Runs in the background during the 30 s wait below.
    slow = {}
    heads = [("trickled header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "),
             ("trickled request line", b"GET /v1/secrets/"), ("nothing sent", b"")]
    threads = [threading.Thread(target=slow_head, args=(dep.api_port, slow, label, head), daemon=True)
               for label, head in heads]
    for t in threads:
        t.start()

    # ------------------------------------------------------------ stalled request bodies vs the audit queue
    # Every audited call reserves an audit-queue slot before its body is read (api/README.md "Audit"):
    # an allowlisted client that starts POST verify bodies and stalls must not hold slots (with the
    # queue full every audited call of every client answers 503). The smallest queue (16), a fourth process.
    small = dep.extra_api({"VAULT_ALLOWED_IPS": "127.0.0.1", "VAULT_AUDIT_QUEUE_CAPACITY": "16"}, "smallqueue")
    extras.append(small)
    if check("fourth API (VAULT_AUDIT_QUEUE_CAPACITY=16) started", small.port is not None):
        stalled = []
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", small.port))
            c.sendall(f"POST /v1/secrets/{NAME}/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      "Content-Length: 100\r\n\r\n{".encode())
            stalled.append(c)
        time.sleep(1)
        ctx.figure("read_status_with_20_stalled_bodies",  # 503 here is by design
                   raw("GET", "/v1/secrets/" + NAME, port=small.port, count5xx=False).status)
        time.sleep(30)
        after30 = raw("GET", "/v1/secrets/" + NAME, port=small.port, count5xx=False)  # judged below
        ctx.figure("read_status_30s_after_20_stalled_bodies", after30.status)
        check("20 stalled request bodies do not hold the audit queue for 30 s (read -> 200)", after30.status == 200,
              repr(after30))
        for c in stalled:
            c.close()
        time.sleep(1)
        r = raw("GET", "/v1/secrets/" + NAME, port=small.port)
        check("after the stalled clients hang up, reads answer 200 again", r.status == 200, repr(r))

    for t in threads:
        t.join(40)
    for label, _ in heads:
        state, held, data = slow.get(label, ("unknown", 0, b""))
        ctx.figure(f"slow_head_{label.replace(' ', '_')}_held_s", f"{held:.1f}")
        check(f"slow client ({label}) cut by the header read timeout (~10 s), not held", state == "closed"
              and 8 <= held <= 20 and not data.startswith(b"HTTP/1.1 2"), f"{state} after {held:.1f} s, got {data!r}")

    # ------------------------------------------------------------ token brute force
    src = rand_src()
    codes = [raw("GET", "/v1/secrets", [("Authorization", "Bearer hvt_" + secrets.token_urlsafe(32))], src=src).status
             for _ in range(40)]
    first429 = codes.index(429) + 1 if 429 in codes else None
    ctx.figure("brute_force_first_429_at", first429)
    check("brute force: 401 then 429 after <= 10 bad tokens", first429 is not None and first429 <= 11
          and all(c == 401 for c in codes[:first429 - 1]), str(codes))
    check("brute force: every attempt after the lockout is 429", first429 is not None
          and all(c == 429 for c in codes[first429 - 1:]), str(codes))
    r = raw("GET", "/v1/secrets", [AUTH], src=src)
    check("lockout holds for the right admin token from that client (429 + Retry-After)",
          r.status == 429 and "retry-after" in r.headers and json_error(r), repr(r))
    r = raw("POST", "/v1/secrets", [AUTH], json.dumps({"name": f"rel/hostile-{h.tag}/locked", "kind": "manual",
                                                         "value": "x"}).encode(), src=src)
    check("locked-out client cannot create with the right token", r.status == 429, repr(r))
    if sport:
        r = raw("GET", "/v1/secrets", [AUTH], port=sport, src=src)
        check("lockout is shared by replicas (other API process also 429)", r.status == 429, repr(r))
    r = raw("GET", "/v1/secrets", [AUTH])
    check("another client (127.0.0.1) with the right token is unaffected", r.status == 200, repr(r))
    src2 = rand_src()
    for label, v in [("empty", b"Bearer "), ("basic", b"Basic YWRtaW46YWRtaW4="), ("non-ascii", b"Bearer \xff\xfe"),
                     ("long", b"Bearer " + b"a" * 60000), ("no scheme", ctx.api.admin.encode()),
                     ("two tokens", b"Bearer " + ctx.api.admin.encode() + b" x"), ("lower", b"bearer x")]:
        r = raw("GET", "/v1/secrets", [("Authorization", v)], src=src2)
        check(f"malformed Authorization ({label}) -> 401/429/400/431 JSON", r.status in (400, 401, 429, 431)
              and (json_error(r) or r.status == 431), repr(r))

    # ------------------------------------------------------------ misc protocol errors are JSON
    verify = f"/v1/secrets/{NAME}/verify"
    for method, path, hdr, body, ct in [("GET", "/nope", [], b"", None),
                                        ("PATCH", "/v1/secrets/" + NAME, [AUTH], b"{}", "application/json"),
                                        ("POST", verify, [], b'{"value":"x"}', "text/plain"),
                                        ("POST", verify, [], b'{"value":', "application/json"),
                                        ("POST", verify, [], b'{"value":1}', "application/json"),
                                        ("POST", verify, [], b'', "application/json")]:
        r = raw(method, path, hdr, body, content_type=ct)
        check(f"{method} {path.replace(NAME, '{name}')} ct={ct} body={body[:12]!r} -> 4xx JSON",
              400 <= r.status < 500 and json_error(r), repr(r))

    # ------------------------------------------------------------ the end: nothing crashed
    crashes = [c for c in ("api", "controller") if not dep.identity(c)]
    crashes += [f"extra API {e.log} exited {e.proc.returncode}" for e in extras if not e.alive()]
    for c in crashes:
        ctx.problem(f"{c} is gone")
    panics = sum(open(f, errors="replace").read().count("panicked") for f in dep.logs())
    check("target intact at the end", h.target_intact())

    # ------------------------------------------------------------ the audit trail still flows
    # Hostile names (NUL and control bytes in the path) are audited too; a row PostgreSQL refuses
    # would stall the audit writer, which retries a batch until it is written. Counted from the
    # start of this check (0 there on a fresh instance), so a re-run judges only its own traffic.
    am = poll(lambda: audit(ctx), lambda am: am["audit_queue_depth"] == 0, 10, 0.2)
    failures = (am["audit_write_failures_total"] or 0) - (audit_failures_before or 0)
    ctx.figure("audit_write_failures", failures)
    check("audit trail still written after the hostile input (0 failed batch writes, queue drained)",
          am["audit_write_failures_total"] is not None and failures == 0 and am["audit_queue_depth"] == 0,
          f"{am}, {audit_failures_before} before")
    ctx.figure("crashes", len(crashes))
    ctx.figure("panics_in_logs", panics)
    check("crashes: 0 (API, controller and extra API processes alive)", not crashes, str(len(crashes)))
    check("no panic in any process log", panics == 0, str(panics))
