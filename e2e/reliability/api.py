"""The vault API as the checks talk to it: one request per connection (`Api.call`), a keep-alive
session (`Session`), raw bytes over a socket (`raw`), the /metrics page, and its timestamps.

Every request gives a `Resp` with its wall-clock start and end (`t0`, `t1`, time.time()) and its
duration in microseconds (`us`, perf_counter); a transport failure is status 0 with `kind` refused,
timeout or cut and the error text, never an exception."""
import calendar
import http.client
import json
import re
import socket
import time


class Resp:
    __slots__ = ("status", "body", "headers", "t0", "t1", "us", "error", "kind")

    def __init__(self, status, body=b"", headers=None, t0=0.0, t1=0.0, us=0.0, error="", kind=""):
        self.status, self.body, self.headers = status, body, headers or {}
        self.t0, self.t1, self.us, self.error, self.kind = t0, t1, us, error, kind

    @property
    def retry_after(self):
        return self.headers.get("retry-after")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def clean_error(self):
        """A JSON {"error": "..."} body."""
        j = self.json()
        return isinstance(j, dict) and isinstance(j.get("error"), str) and bool(j["error"])

    def __repr__(self):
        return f"{self.status} {self.error or self.body[:160]!r}"


def _send(conn, method, path, body, headers):
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    t0, p0 = time.time(), time.perf_counter_ns()
    connected = conn.sock is not None
    try:
        if not connected:
            conn.connect()
            connected = True
        conn.request(method, path, data, headers)
        r = conn.getresponse()
        out = r.read()
        t1, p1 = time.time(), time.perf_counter_ns()
        return Resp(r.status, out, {k.lower(): v for k, v in r.getheaders()}, t0, t1, (p1 - p0) / 1000)
    except Exception as e:  # noqa: BLE001 - every transport failure is a finding, judged by the caller
        conn.close()
        kind = "timeout" if isinstance(e, TimeoutError) else "cut" if connected else "refused"
        return Resp(0, b"", None, t0, time.time(), (time.perf_counter_ns() - p0) / 1000, f"{type(e).__name__}: {e}",
                    kind)


class Api:
    def __init__(self, port, admin_token, host="127.0.0.1"):
        self.port, self.admin, self.host = port, admin_token, host

    def headers(self, auth):
        return {"Authorization": "Bearer " + self.admin} if auth else {}

    def call(self, method, path, body=None, auth=False, port=None, timeout=30):
        """One request on its own connection (no keep-alive ambiguity)."""
        conn = http.client.HTTPConnection(self.host, port or self.port, timeout=timeout)
        try:
            return _send(conn, method, path, body, {"Connection": "close", **self.headers(auth)})
        finally:
            conn.close()

    def session(self, timeout=15):
        return Session(self, timeout)

    def ready(self, port=None):
        return self.call("GET", "/readyz", port=port, timeout=2).status == 200

    def metrics(self, port=None, timeout=10):
        """{sample name (with labels): value} of the /metrics page; empty if it did not answer."""
        return parse_metrics(self.call("GET", "/metrics", port=port, timeout=timeout).body)


class Session:
    """One keep-alive connection; a connection the server closed while idle is retried once on a new one."""

    def __init__(self, api, timeout):
        self.api, self.timeout, self.conn = api, timeout, None

    def req(self, method, path, body=None, auth=False):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.api.host, self.api.port, timeout=self.timeout)
            reused = self.conn.sock is not None
            r = _send(self.conn, method, path, body, self.api.headers(auth))
            if r.status:
                return r
            self.conn = None
            if not (reused and attempt == 1 and r.error.startswith(STALE)):
                return r


STALE = ("RemoteDisconnected", "BrokenPipeError", "ConnectionResetError")


def parse_metrics(text):
    """Prometheus text -> {sample name (with labels): value}."""
    out = {}
    for line in (text.decode(errors="replace") if isinstance(text, bytes) else text).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def raw(method, path, headers=(), body=b"", port=0, src="127.0.0.1", content_type="application/json", timeout=30):
    """One HTTP/1.1 request written byte for byte (path and header values may be bytes) on its own
    connection from source address `src`. The Resp's headers map lower-case names to lists of values."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    p = path if isinstance(path, bytes) else path.encode()
    req = method.encode() + b" " + p + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    hs = list(headers)
    if body and content_type:
        hs.append(("Content-Type", content_type))
    if (body or method in ("POST", "PUT")) and not any(k.lower() in ("content-length", "transfer-encoding")
                                                       for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    for k, v in hs:
        req += k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) + b"\r\n"
    data = b""
    try:
        s.sendall(req + b"\r\n" + body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer (413) and close before reading everything: read what it said
    try:
        while chunk := s.recv(65536):
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    if not data:
        return Resp(0)
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
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
    return Resp(int(lines[0].split()[1]), rest, hdrs)


TS_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def ts_us(s):
    """RFC 3339 -> integer microseconds since the epoch (exact: the store keeps µs); None stays None."""
    if s is None:
        return None
    m = TS_RE.match(s)
    if not m:
        raise ValueError(f"bad timestamp {s!r}")
    y, mo, d, h, mi, se, frac, tz = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(se), 0, 0, 0))
    if tz != "Z":
        secs -= (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return secs * 1_000_000 + int((frac or "0")[:6].ljust(6, "0"))
