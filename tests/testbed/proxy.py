"""A programmable fault-injecting reverse proxy for registry tests.

``FaultProxy(upstream_url)`` listens on 127.0.0.1 (free port) and forwards every request to the upstream
registry, streaming bodies in both directions (nothing is buffered, ``Range`` and every other end-to-end
header pass through). Rules added with :meth:`FaultProxy.add_rule` change what happens to matching requests:

==================  =====================================================================================
fault               effect (parameters)
==================  =====================================================================================
``pass``            forward unchanged (use with ``set_headers`` / ``remove_headers``)
``reset``           forward, send the headers and ``after_bytes`` body bytes, wait until the peer has them
                    (plus ``grace`` seconds, default 0.25, so its application can read them: a RST
                    drops unread data), then reset the TCP connection (RST). ``after_bytes=None``:
                    reset before any response
``truncate``        forward, send the headers (declared Content-Length) and ``after_bytes`` body bytes,
                    then close the connection cleanly (FIN)
``stall``           sleep ``seconds`` before the response (``after_bytes=None``) or after ``after_bytes``
                    body bytes, then carry on normally
``content_length``  forward with a wrong ``Content-Length`` (``value`` absolute or ``delta``); a smaller
                    value cuts the body there, a larger one closes the connection after the real body
``flip``            XOR the body byte at ``offset`` (relative to this response's body) with ``mask``
``status``          answer ``status`` (429/500/502/503/408, ...) without asking upstream; optional
                    ``retry_after``, ``body`` (bytes/str; default a registry JSON error), ``headers``
``redirect``        answer ``status`` (default 307) with ``Location`` from the template ``location``
                    (``{path}`` = path+query, ``{proxy}`` = proxy URL, ``{blob}`` = blob-host URL)
``redirect_blob``   ask upstream first; if it answers 200/206, answer 307 to the blob host on 127.0.0.2
                    with a "presigned" URL instead of relaying the body (else relay upstream's answer,
                    e.g. a 401 challenge, without using up the rule's count)
``loop``            answer ``status`` (default 302) redirecting to the same path again, forever
``ignore_range``    forward without the request's ``Range`` / ``If-Range`` headers, like a server that does
                    not do ranges: upstream answers 200 with the whole body
``oversize``        answer ``status`` (default 200) with a ``size``-byte body (a JSON manifest padded with
                    an annotation, or an error JSON for status >= 400); ``chunked=True`` omits
                    Content-Length (chunked transfer encoding)
==================  =====================================================================================

Every fault also accepts ``set_headers={...}`` and ``remove_headers=[...]`` for the response.

Rules match on ``method`` (None = any), a ``path`` regex (``re.search`` on the path with its query string),
the ``server`` (``"main"`` = the proxy, ``"blob"`` = the blob host, None = both); they apply to the first
``count`` matching requests (None = all) after letting ``skip`` matching requests through. The first rule
that matches wins.

The blob host (``proxy.blob_url``, ``http://127.0.0.2:PORT``) plays object storage: it serves
``/v2/<name>/blobs/<digest>?X-Testbed-Signature=...`` by fetching the blob from upstream with the
credentials of the request that was redirected, logs the request headers it received
(:meth:`FaultProxy.blob_requests`), answers 400 when a request carries an ``Authorization`` header (as S3
does for presigned URLs; ``blob_reject_auth=False`` to allow) and strips ``Docker-*`` response headers.
"""
import contextlib
import fcntl
import http.client
import http.server
import json
import re
import secrets
import socket
import socketserver
import ssl
import struct
import sys
import termios
import threading
import time
from collections import Counter
from urllib.parse import parse_qsl, urlencode, urlsplit

CHUNK = 64 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "proxy-connection"}
SIGNATURE_PARAM = "X-Testbed-Signature"
LOOP_PARAM = "testbed-loop"

_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "DENIED", 404: "NAME_UNKNOWN",
                408: "REQUEST_TIMEOUT", 429: "TOOMANYREQUESTS", 500: "INTERNAL_ERROR", 502: "BAD_GATEWAY",
                503: "UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}

FAULTS = ("pass", "reset", "truncate", "stall", "content_length", "flip", "status", "redirect", "redirect_blob",
          "loop", "oversize", "ignore_range")


class Rule:
    """A fault rule; see the module docstring. ``hits`` counts the requests it was applied to."""

    def __init__(self, fault, method=None, path=None, count=None, server="main", skip=0, **params):
        if fault not in FAULTS:
            raise ValueError("unknown fault %r (known: %s)" % (fault, ", ".join(FAULTS)))
        if server not in ("main", "blob", None):
            raise ValueError("server must be 'main', 'blob' or None")
        self.fault = fault
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path else None
        self.count = count
        self.server = server
        self.skip = skip
        self.params = params
        self.hits = 0
        self.seen = 0

    def matches(self, server, method, path):
        if self.server is not None and self.server != server:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.path is not None and not self.path.search(path):
            return False
        return True

    @property
    def exhausted(self):
        return self.count is not None and self.hits >= self.count

    def get(self, name, default=None):
        return self.params.get(name, default)

    def __repr__(self):
        return "Rule(%s %s %s count=%s hits=%d)" % (self.fault, self.method or "*",
                                                    self.path.pattern if self.path else "*", self.count, self.hits)


class _Aborted(Exception):
    """The connection was deliberately reset/closed; stop handling it."""


def _server_context(tls):
    cert, key = tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, proxy, role, ssl_ctx):
        self.proxy = proxy
        self.role = role
        self.ssl_ctx = ssl_ctx
        http.server.HTTPServer.__init__(self, addr, _Handler)

    def finish_request(self, request, client_address):
        sock = request
        if self.ssl_ctx is not None:
            try:
                request.settimeout(30)
                sock = self.ssl_ctx.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                with contextlib.suppress(OSError):
                    request.close()
                return
        self.proxy._track(sock, True)
        try:
            self.RequestHandlerClass(sock, client_address, self)
        finally:
            self.proxy._track(sock, False)
            if sock is not request:
                with contextlib.suppress(OSError):
                    sock.close()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError, _Aborted, http.client.HTTPException)):
            return
        http.server.HTTPServer.handle_error(self, request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120

    def log_message(self, *args):  # quiet
        pass

    # every method goes through the same code
    def do_GET(self):
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # ---- helpers -------------------------------------------------------------------------------------
    @property
    def proxy(self):
        return self.server.proxy

    @property
    def role(self):
        return self.server.role

    def _write(self, data):
        self.wfile.write(data)

    def _start(self, status, headers, reason=None):
        self.send_response_only(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()

    def _request_body_iter(self):
        """Yield the request body in chunks (Content-Length or chunked)."""
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                left = size
                while left:
                    data = self.rfile.read(min(CHUNK, left))
                    if not data:
                        raise _Aborted()
                    left -= len(data)
                    yield data
                self.rfile.readline(3)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(CHUNK, left))
                if not data:
                    raise _Aborted()
                left -= len(data)
                yield data

    def _drain(self):
        for _chunk in self._request_body_iter():
            pass

    def _reset(self, grace=0.0):
        """Abort with a TCP RST, after letting already-written bytes reach the peer (a RST makes the peer's
        kernel drop data its application has not read yet, hence the ``grace`` period)."""
        sock = self.connection
        deadline = time.monotonic() + 10
        with contextlib.suppress(OSError, ValueError):
            while time.monotonic() < deadline:
                pending = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
                if pending == 0:
                    break
                time.sleep(0.005)
        if grace:
            self.proxy._stopping.wait(grace)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.close()
        self.close_connection = True
        raise _Aborted()

    def _close(self):
        """Close cleanly (FIN) in the middle of a response."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
        self.close_connection = True
        raise _Aborted()

    def _sleep(self, seconds):
        """Sleep, but give up the connection at once when the proxy is being stopped."""
        if self.proxy._stopping.wait(float(seconds)):
            self._close()

    # ---- main entry ----------------------------------------------------------------------------------
    def _handle(self):
        method = self.command
        full_path = self.path
        if full_path.startswith("http://") or full_path.startswith("https://"):
            parts = urlsplit(full_path)
            full_path = parts.path + ("?" + parts.query if parts.query else "")
        split = urlsplit(full_path)
        entry = {"server": self.role, "method": method, "path": split.path, "query": split.query,
                 "headers": dict(self.headers.items()), "status": None, "bytes_sent": 0, "fault": None,
                 "time": time.time()}
        self.proxy._log(entry)
        self._entry = entry
        try:
            if self.role == "blob":
                full_path, auth = self._blob_gate(split)
                if full_path is None:
                    return
            else:
                auth = None
            rule = self.proxy._match(self.role, method, full_path)
            if rule is not None:
                entry["fault"] = rule.fault
            self._apply(rule, method, full_path, auth)
        except _Aborted:
            self.close_connection = True
        except (OSError, http.client.HTTPException) as exc:
            self.close_connection = True
            if entry["status"] is None:
                entry["error"] = repr(exc)
                with contextlib.suppress(Exception):
                    body = ("testbed proxy: upstream error %r" % (exc,)).encode()
                    self._start(502, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                                      ("Connection", "close")])
                    self._write(body)
                    entry["status"] = 502

    def _blob_gate(self, split):
        """Blob-host checks; returns ``(upstream_path, authorization)`` or ``(None, None)`` if answered."""
        params = parse_qsl(split.query, keep_blank_values=True)
        sig = dict(params).get(SIGNATURE_PARAM)
        rest = [(k, v) for k, v in params if k != SIGNATURE_PARAM]
        path = split.path + ("?" + urlencode(rest) if rest else "")
        if self.proxy.blob_reject_auth and self.headers.get("Authorization"):
            self._drain()
            self._local(400, b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>'
                             b"<Message>testbed blob host: a presigned URL must not also carry an "
                             b"Authorization header</Message></Error>", "application/xml")
            return None, None
        with self.proxy._lock:
            known = sig is not None and sig in self.proxy._presigned
            auth = self.proxy._presigned.get(sig)
        if not known:
            self._drain()
            self._local(403, b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                             b"<Message>testbed blob host: missing or unknown signature</Message></Error>",
                        "application/xml")
            return None, None
        return path, auth

    def _local(self, status, body, content_type="application/json", headers=(), chunked=False,
               close=False):
        """Answer locally with ``body`` (bytes or an iterable of bytes chunks when ``chunked``)."""
        hdrs = [("Content-Type", content_type)] if content_type else []
        hdrs += list(headers)
        if chunked:
            hdrs.append(("Transfer-Encoding", "chunked"))
        else:
            hdrs.append(("Content-Length", str(len(body))))
        if close:
            hdrs.append(("Connection", "close"))
            self.close_connection = True
        self._start(status, hdrs)
        self._entry["status"] = status
        if self.command == "HEAD":
            return
        if chunked:
            for part in body:
                self._write(b"%x\r\n" % len(part) + part + b"\r\n")
                self.proxy._sent(self._entry, len(part))
            self._write(b"0\r\n\r\n")
        else:
            self._write(body)
            self.proxy._sent(self._entry, len(body))

    def _apply(self, rule, method, full_path, auth):
        fault = rule.fault if rule else "pass"
        p = rule.params if rule else {}
        extra_headers = list((p.get("set_headers") or {}).items())
        if fault == "reset" and p.get("after_bytes") is None:
            self._reset()
        if fault == "stall" and p.get("after_bytes") is None:
            self._sleep(p.get("seconds", 5))
        if fault == "status":
            self._drain()
            status = int(p.get("status", 503))
            headers = list(extra_headers)
            if p.get("retry_after") is not None:
                headers.append(("Retry-After", str(p["retry_after"])))
            for k, v in (p.get("headers") or {}).items():
                headers.append((k, v))
            body = p.get("body")
            ctype = p.get("content_type", "application/json")
            if body is None:
                body = json.dumps({"errors": [{"code": _ERROR_CODES.get(status, "UNKNOWN"),
                                               "message": "testbed fault %d" % status, "detail": None}]})
            if isinstance(body, str):
                body = body.encode("utf-8")
            self._local(status, body, ctype, headers)
            return
        if fault == "redirect_blob":
            # like a registry in front of object storage: authorise (ask upstream) first, redirect on success
            self._forward(rule, method, full_path, auth, redirect=True)
            return
        if fault in ("redirect", "loop"):
            self._drain()
            if fault == "loop":
                status = int(p.get("status", 302))
                split = urlsplit(full_path)
                params = [(k, v) for k, v in parse_qsl(split.query, keep_blank_values=True) if k != LOOP_PARAM]
                n = int(dict(parse_qsl(split.query)).get(LOOP_PARAM, "0")) + 1
                params.append((LOOP_PARAM, str(n)))
                location = self._base() + split.path + "?" + urlencode(params)
            else:
                status = int(p.get("status", 307))
                location = p["location"].format(path=full_path, proxy=self.proxy.url, blob=self.proxy.blob_url)
            self._local(status, b"", None, [("Location", location)] + extra_headers)
            return
        if fault == "oversize":
            self._drain()
            self._oversize(p, extra_headers)
            return
        self._forward(rule, method, full_path, auth)

    def _base(self):
        return self.proxy.url if self.role == "main" else self.proxy.blob_url

    def _oversize(self, p, extra_headers):
        status = int(p.get("status", 200))
        size = int(p.get("size", 5 * 1024 * 1024))
        if status >= 400:
            ctype = p.get("content_type", "application/json")
            head = b'{"errors":[{"code":"' + _ERROR_CODES.get(status, "UNKNOWN").encode() + \
                   b'","message":"testbed oversized error","detail":"'
            tail = b'"}]}'
        else:
            ctype = p.get("content_type", "application/vnd.oci.image.manifest.v1+json")
            head = (b'{"schemaVersion":2,"mediaType":"' + ctype.encode() +
                    b'","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,'
                    b'"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},'
                    b'"layers":[],"annotations":{"pad":"')
            tail = b'"}}'
        pad = max(0, size - len(head) - len(tail))

        def chunks():
            yield head
            left = pad
            block = b"a" * CHUNK
            while left:
                n = min(left, CHUNK)
                yield block[:n]
                left -= n
            yield tail

        if p.get("chunked"):
            self._local(status, chunks(), ctype, extra_headers, chunked=True)
        else:
            total = len(head) + pad + len(tail)
            self._start(status, [("Content-Type", ctype), ("Content-Length", str(total))] + extra_headers)
            self._entry["status"] = status
            if self.command != "HEAD":
                for part in chunks():
                    self._write(part)
                    self.proxy._sent(self._entry, len(part))

    # ---- forwarding ----------------------------------------------------------------------------------
    def _redirect_to_blob_host(self, rule, full_path, extra_headers):
        p = rule.params
        token = secrets.token_hex(12)
        with self.proxy._lock:
            self.proxy._presigned[token] = self.headers.get("Authorization")
        sep = "&" if "?" in full_path else "?"
        location = "%s%s%s%s=%s" % (self.proxy.blob_url, full_path, sep, SIGNATURE_PARAM, token)
        self._local(int(p.get("status", 307)), b"", None, [("Location", location)] + extra_headers)

    def _forward(self, rule, method, full_path, auth, redirect=False):
        proxy = self.proxy
        conn = proxy._upstream_connection()
        try:
            conn.putrequest(method, full_path, skip_host=True, skip_accept_encoding=True)
            if self.role == "main":
                conn.putheader("Host", self.headers.get("Host") or proxy.host)
                conn.putheader("X-Forwarded-Proto", proxy.scheme)
            else:
                conn.putheader("Host", proxy.upstream_host)
            te_chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            for k, v in self.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk in ("host", "x-forwarded-proto", "content-length"):
                    continue
                if self.role == "blob" and lk == "authorization":
                    continue
                if rule is not None and rule.fault == "ignore_range" and lk in ("range", "if-range"):
                    continue
                conn.putheader(k, v)
            if auth:
                conn.putheader("Authorization", auth)
            has_body = te_chunked or self.headers.get("Content-Length") is not None
            if te_chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif has_body:
                conn.putheader("Content-Length", self.headers.get("Content-Length"))
            conn.endheaders()
            if has_body:
                for data in self._request_body_iter():
                    conn.send(b"%x\r\n%s\r\n" % (len(data), data) if te_chunked else data)
                if te_chunked:
                    conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
            if redirect:
                if resp.status in (200, 206):
                    self._redirect_to_blob_host(rule, full_path, list((rule.get("set_headers") or {}).items()))
                    return
                with self.proxy._lock:  # not redirected: does not use up the rule's count
                    rule.hits -= 1
                self._entry["fault"] = None
                rule = None
            self._relay(rule, resp)
        finally:
            conn.close()

    def _relay(self, rule, resp):
        proxy = self.proxy
        fault = rule.fault if rule else "pass"
        p = rule.params if rule else {}
        status = resp.status
        body_allowed = self.command != "HEAD" and status >= 200 and status not in (204, 304)
        headers = []
        length = None
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "content-length":
                length = int(v)
                continue
            if self.role == "blob" and lk.startswith("docker-"):
                continue
            if lk == "location" and self.role == "main" and v.startswith(proxy.upstream_url):
                v = proxy.url + v[len(proxy.upstream_url):]
            headers.append((k, v))
        remove = {h.lower() for h in (p.get("remove_headers") or ())}
        sets = p.get("set_headers") or {}
        headers = [(k, v) for k, v in headers if k.lower() not in remove and k.lower() not in
                   {s.lower() for s in sets}]
        headers += list(sets.items())

        cut, action, close_after = None, None, False
        declared = length
        if fault == "content_length" and length is not None:
            declared = int(p["value"]) if p.get("value") is not None else length + int(p.get("delta", 1))
            if declared < length:
                cut, action = declared, "truncate"
            elif declared > length:
                close_after = True
        elif fault in ("reset", "truncate", "stall") and p.get("after_bytes") is not None:
            cut, action = int(p["after_bytes"]), fault
        if declared is not None:
            headers.append(("Content-Length", str(declared)))
        elif body_allowed:
            close_after = True
        if close_after:
            headers.append(("Connection", "close"))
            self.close_connection = True
        self._start(status, headers, resp.reason)
        self._entry["status"] = status
        if not body_allowed:
            resp.read()
            return
        flip_at = int(p.get("offset", 0)) if fault == "flip" else None
        mask = int(p.get("mask", 0xFF))
        sent = 0
        while True:
            want = CHUNK
            if cut is not None:
                if sent >= cut:
                    if action == "stall":
                        self._sleep(p.get("seconds", 5))
                        cut = action = None
                        continue
                    if action == "reset":
                        self._reset(float(p.get("grace", 0.25)))
                    self._close()
                want = min(want, cut - sent)
            data = resp.read(want)
            if not data:
                break
            if flip_at is not None and sent <= flip_at < sent + len(data):
                b = bytearray(data)
                b[flip_at - sent] ^= mask
                data = bytes(b)
            self._write(data)
            sent += len(data)
            proxy._sent(self._entry, len(data))
        if close_after:
            self._close()


class FaultProxy:
    """Reverse proxy with programmable faults in front of ``upstream_url`` (see the module docstring).

    ``upstream_url`` may also be a testbed ``Registry``: its URL, CA and (mtls) client certificate are used.

    ``upstream_ca``: CA bundle to verify an https upstream (``False`` = do not verify);
    ``upstream_client_cert``: ``(cert, key)`` for an mTLS upstream; ``tls``: ``(cert, key)`` to serve https
    on the proxy; ``blob_tls``: the same for the blob host (plain http by default)."""

    def __init__(self, upstream_url, upstream_ca=None, tls=None, blob_tls=None, host="127.0.0.1",
                 blob_host="127.0.0.2", blob_reject_auth=True, upstream_client_cert=None, timeout=60,
                 start=True):
        if hasattr(upstream_url, "url"):  # a testbed Registry: take its URL, CA and client certificate
            reg = upstream_url
            upstream_url = reg.url
            if upstream_ca is None and reg.url.startswith("https://"):
                upstream_ca = getattr(reg, "ca_path", None)
            if upstream_client_cert is None and getattr(reg, "mode", None) == "mtls":
                upstream_client_cert = (reg.client_cert, reg.client_key)
        self.upstream_url = upstream_url.rstrip("/")
        u = urlsplit(self.upstream_url)
        self._up_scheme = u.scheme
        self._up_host = u.hostname
        self._up_port = u.port or (443 if u.scheme == "https" else 80)
        self.upstream_host = u.netloc
        self._up_ctx = None
        if u.scheme == "https":
            if upstream_ca is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=upstream_ca)
            if upstream_client_cert:
                ctx.load_cert_chain(*upstream_client_cert)
            self._up_ctx = ctx
        self.timeout = timeout
        self.blob_reject_auth = blob_reject_auth
        self._tls = tls
        self._blob_tls = blob_tls
        self._bind = host
        self._blob_bind = blob_host
        self._lock = threading.Lock()
        self._rules = []
        self._log_entries = []
        self._presigned = {}
        self._sockets = set()
        self._stopping = threading.Event()
        self._servers = []
        self._threads = []
        self.url = self.blob_url = None
        if start:
            self.start()

    # ---- life cycle ----------------------------------------------------------------------------------
    def start(self):
        if self._servers:
            return self
        self._stopping.clear()
        main = _Server((self._bind, 0), self, "main", _server_context(self._tls) if self._tls else None)
        blob = _Server((self._blob_bind, 0), self, "blob", _server_context(self._blob_tls) if self._blob_tls else None)
        self._servers = [main, blob]
        self.scheme = "https" if self._tls else "http"
        self.port = main.server_address[1]
        self.host = "%s:%d" % (self._bind, self.port)
        self.url = "%s://%s" % (self.scheme, self.host)
        self.blob_port = blob.server_address[1]
        self.blob_url = "%s://%s:%d" % ("https" if self._blob_tls else "http", self._blob_bind, self.blob_port)
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        if not self._servers:
            return
        self._stopping.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        self._servers, self._threads = [], []

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _track(self, sock, add):
        with self._lock:
            (self._sockets.add if add else self._sockets.discard)(sock)

    def _upstream_connection(self):
        if self._up_ctx is not None:
            return http.client.HTTPSConnection(self._up_host, self._up_port, timeout=self.timeout,
                                               context=self._up_ctx)
        return http.client.HTTPConnection(self._up_host, self._up_port, timeout=self.timeout)

    # ---- rules ---------------------------------------------------------------------------------------
    def add_rule(self, fault, method=None, path=None, count=None, server="main", skip=0, **params):
        """Add a fault rule (see the module docstring); returns the :class:`Rule`."""
        rule = Rule(fault, method, path, count, server, skip, **params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule):
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear_rules(self):
        with self._lock:
            self._rules = []

    def reset_stats(self):
        with self._lock:
            self._log_entries = []

    def clear(self):
        """Remove all rules and forget the request log."""
        with self._lock:
            self._rules = []
            self._log_entries = []
            self._presigned = {}

    @property
    def rules(self):
        with self._lock:
            return list(self._rules)

    def _match(self, server, method, path):
        with self._lock:
            for rule in self._rules:
                if rule.exhausted or not rule.matches(server, method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.hits += 1
                return rule
        return None

    # ---- stats ---------------------------------------------------------------------------------------
    def _log(self, entry):
        with self._lock:
            self._log_entries.append(entry)

    def _sent(self, entry, n):
        with self._lock:
            entry["bytes_sent"] += n

    def requests(self, server="main"):
        """Copies of the logged requests (dicts: server, method, path, query, headers, status, bytes_sent,
        fault, time); ``server=None`` for both servers."""
        with self._lock:
            return [dict(e) for e in self._log_entries if server is None or e["server"] == server]

    def blob_requests(self):
        """Requests the blob host received, with the headers it got."""
        return self.requests("blob")

    def count(self, method=None, path=None, server="main"):
        """Number of requests matching ``method`` and the ``path`` regex (searched in the path)."""
        rx = re.compile(path) if path else None
        return sum(1 for e in self.requests(server)
                   if (method is None or e["method"] == method.upper()) and (rx is None or rx.search(e["path"])))

    def bytes_sent(self, path=None, server="main"):
        """Body bytes sent to clients for requests whose path matches the ``path`` regex."""
        rx = re.compile(path) if path else None
        return sum(e["bytes_sent"] for e in self.requests(server) if rx is None or rx.search(e["path"]))

    @property
    def stats(self):
        """``{"requests": Counter((method, path)), "bytes_sent": Counter(path)}`` for the main server."""
        reqs, sent = Counter(), Counter()
        for e in self.requests("main"):
            reqs[(e["method"], e["path"])] += 1
            sent[e["path"]] += e["bytes_sent"]
        return {"requests": reqs, "bytes_sent": sent}
