"""A small token server speaking the distribution token protocol (GET) and its OAuth2 variant (POST).

Tokens are RS256 JWTs whose header carries an ``x5c`` chain (signing certificate + CA), which is what
distribution 2.8 verifies against ``auth.token.rootcertbundle``.

Access rules:
- anonymous requests get ``anonymous_actions`` (default: pull) on every requested repository;
- the configured user gets pull, push and delete on every repository and ``*`` on ``registry:catalog``;
- a wrong password (or an unknown user) is answered with 401.

In-process use (pytest)::

    ts = TokenServer(cert_path, key_path, ca_path, username="u", password="p")
    ts.start()            # thread; ts.url is http://127.0.0.1:PORT/token
    ...
    ts.stop()

As a process (used by the CLI): ``python tokenserver.py --cert ... --key ... --ca ... --port-file F``.
"""
import argparse
import base64
import json
import os
import secrets
import ssl
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

USER_ACTIONS = ("pull", "push", "delete")


def _der_b64(pem_bytes):
    out = []
    for block in pem_bytes.split(b"-----END CERTIFICATE-----"):
        if b"-----BEGIN CERTIFICATE-----" not in block:
            continue
        cert = x509.load_pem_x509_certificate(block + b"-----END CERTIFICATE-----\n")
        out.append(base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii"))
    return out


def parse_scope(scope):
    """``repository:name:pull,push`` -> (type, name, [actions]); None when malformed.
    The name may contain ``:`` (a registry host with a port), so type is split from the left and the
    actions from the right."""
    if scope.count(":") < 2:
        return None
    typ, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    return typ, name, [a for a in actions.split(",") if a]


class TokenServer(object):
    def __init__(self, cert_path, key_path, ca_path=None, username="testuser", password="testpass",
                 service="hocker-testbed", issuer="hocker-testbed-issuer", expires_in=300, host="127.0.0.1",
                 port=0, tls_cert=None, tls_key=None, path="/token", log_path=None):
        self.username = username
        self.password = password
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        #: when False, POST answers 404 (a token server without OAuth2 support)
        self.post_enabled = True
        #: when True, POST without client_id answers 400 (the OAuth2 spec makes it required)
        self.require_client_id = True
        #: actions granted to anonymous requests on repositories
        self.anonymous_actions = {"pull"}
        #: when False, the ``expires_in``/``issued_at`` fields are left out of responses
        self.include_expiry = True
        self.host = host
        self._port = port
        self.path = path
        self.tls = (tls_cert, tls_key) if tls_cert else None
        self.log_path = log_path
        with open(key_path, "rb") as f:
            self._key = serialization.load_pem_private_key(f.read(), password=None)
        chain = open(cert_path, "rb").read()
        if ca_path:
            chain += b"\n" + open(ca_path, "rb").read()
        self._x5c = _der_b64(chain)
        self._lock = threading.Lock()
        self._requests = []
        self.refresh_tokens = {}  # refresh token -> username
        self._httpd = None
        self._thread = None

    # ---- request log -------------------------------------------------------------------------
    @property
    def requests(self):
        """A copy of the received requests: dicts ``method, path, query (dict of lists), form (dict of
        lists, POST), headers (dict), user (Basic user name or None), status``."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def clear(self):
        with self._lock:
            del self._requests[:]

    def _record(self, entry):
        with self._lock:
            self._requests.append(entry)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    # ---- tokens ------------------------------------------------------------------------------
    def grant(self, user, scopes):
        """Return the access list for ``user`` (None = anonymous) and the requested scope strings."""
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if not parsed:
                continue
            typ, name, actions = parsed
            if typ == "repository":
                allowed = set(USER_ACTIONS) if user else set(self.anonymous_actions)
                if "*" in actions:
                    got = sorted(allowed)
                else:
                    got = [a for a in actions if a in allowed]
            elif typ == "registry" and name == "catalog":
                got = ["*"] if user and "*" in actions else []
            else:
                got = []
            # the same resource may be asked for twice (merged scopes): merge actions
            for a in access:
                if a["type"] == typ and a["name"] == name:
                    a["actions"] = sorted(set(a["actions"]) | set(got))
                    break
            else:
                access.append({"type": typ, "name": name, "actions": got})
        return access

    def make_token(self, user, scopes, service=None, expires_in=None):
        now = int(time.time())
        exp = self.expires_in if expires_in is None else expires_in
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service or self.service,
            "exp": now + exp,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": self.grant(user, scopes),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"x5c": self._x5c})

    def check_password(self, user, password):
        return user == self.username and secrets.compare_digest(password or "", self.password)

    def issue_refresh_token(self, user):
        tok = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self.refresh_tokens[tok] = user
        return tok

    def _response(self, user, scopes, service, refresh=False):
        tok = self.make_token(user, scopes, service)
        body = {"token": tok, "access_token": tok}
        if self.include_expiry:
            body["expires_in"] = self.expires_in
            body["issued_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if scopes:
            body["scope"] = " ".join(scopes)
        if refresh and user:
            body["refresh_token"] = self.issue_refresh_token(user)
        return body

    # ---- server ------------------------------------------------------------------------------
    @property
    def port(self):
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self):
        scheme = "https" if self.tls else "http"
        return "%s://%s:%d%s" % (scheme, self.host, self.port, self.path)

    def start(self):
        if self._httpd is not None:
            return self
        server = self

        class Handler(_Handler):
            ts = server

        httpd = ThreadingHTTPServer((self.host, self._port), Handler)
        httpd.daemon_threads = True
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls[0], self.tls[1])
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="tokenserver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
        self._httpd = None
        self._thread = None

    def serve_forever(self):
        self.start()
        try:
            while self._thread.is_alive():
                self._thread.join(1)
        finally:
            self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _basic_user(header):
    """(user, password) from an ``Authorization: Basic`` header, (None, None) when absent, False when
    the header is not Basic or malformed."""
    if not header:
        return None, None
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return False, None
    try:
        raw = base64.b64decode(parts[1].strip(), validate=True).decode("utf-8")
    except Exception:
        return False, None
    if ":" not in raw:
        return False, None
    user, pw = raw.split(":", 1)
    return user, pw


class _Handler(BaseHTTPRequestHandler):
    ts = None  # set by TokenServer.start
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _send(self, status, body, extra_headers=None):
        """Prepare a response; it is written by _finish after the request has been recorded (so that a
        client that got its answer always finds its request in the log)."""
        self._pending = (status, body, extra_headers or {})
        return status

    def _finish(self):
        status, body, extra_headers = self._pending
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _unauthorized(self):
        return self._send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                          {"WWW-Authenticate": 'Basic realm="hocker testbed token server"'})

    def _entry(self, method, form=None):
        u = urlsplit(self.path)
        user, _pw = _basic_user(self.headers.get("Authorization"))
        return {"method": method, "path": u.path, "query": parse_qs(u.query, keep_blank_values=True),
                "form": form, "headers": dict(self.headers.items()), "user": user or None, "status": None}

    def do_GET(self):
        ts = self.ts
        entry = self._entry("GET")
        self._pending = (500, {"error": "internal"}, {})
        try:
            entry["status"] = self._get(entry)
        finally:
            ts._record(entry)
            self._finish()

    def _get(self, entry):
        ts = self.ts
        if entry["path"] != ts.path:
            return self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        q = entry["query"]
        user, pw = _basic_user(self.headers.get("Authorization"))
        if user is False:
            return self._unauthorized()
        if user is not None and not ts.check_password(user, pw):
            return self._unauthorized()
        scopes = q.get("scope", [])
        service = (q.get("service") or [ts.service])[0]
        offline = (q.get("offline_token") or ["false"])[0].lower() == "true"
        return self._send(200, ts._response(user, scopes, service, refresh=offline))

    def do_POST(self):
        ts = self.ts
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        entry = self._entry("POST", form)
        self._pending = (500, {"error": "internal"}, {})
        try:
            entry["status"] = self._post(entry, form)
        finally:
            ts._record(entry)
            self._finish()

    def _post(self, entry, form):
        ts = self.ts
        if entry["path"] != ts.path or not ts.post_enabled:
            return self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self._send(400, {"error": "invalid_request", "error_description": "form body expected"})

        def one(name, default=None):
            v = form.get(name)
            return v[0] if v else default

        client_id = one("client_id")
        if ts.require_client_id and not client_id:
            return self._send(400, {"error": "invalid_request", "error_description": "client_id missing"})
        scopes = [s for s in (one("scope") or "").split(" ") if s]
        service = one("service", ts.service)
        grant_type = one("grant_type")
        if grant_type == "password":
            user, pw = one("username"), one("password")
            if not ts.check_password(user, pw):
                return self._send(401, {"error": "invalid_grant", "error_description": "bad credentials"})
            offline = one("access_type") == "offline"
            return self._send(200, ts._response(user, scopes, service, refresh=offline))
        if grant_type == "refresh_token":
            rt = one("refresh_token")
            with ts._lock:
                user = ts.refresh_tokens.get(rt)
            if not user:
                return self._send(401, {"error": "invalid_grant", "error_description": "unknown refresh token"})
            body = ts._response(user, scopes, service)
            body["refresh_token"] = rt
            return self._send(200, body)
        return self._send(400, {"error": "unsupported_grant_type"})


def main(argv=None):
    p = argparse.ArgumentParser(description="hocker test bed token server")
    p.add_argument("--cert", required=True, help="token signing certificate (PEM)")
    p.add_argument("--key", required=True, help="token signing key (PEM)")
    p.add_argument("--ca", help="CA certificate appended to the x5c chain")
    p.add_argument("--username", default="testuser")
    p.add_argument("--password-file", help="file holding the user's password")
    p.add_argument("--service", default="hocker-testbed")
    p.add_argument("--issuer", default="hocker-testbed-issuer")
    p.add_argument("--expires-in", type=int, default=300)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--port-file", help="write the bound port here once listening")
    p.add_argument("--log", help="append received requests as JSON lines")
    a = p.parse_args(argv)
    password = "testpass"
    if a.password_file:
        with open(a.password_file) as f:
            password = f.read().strip()
    ts = TokenServer(a.cert, a.key, a.ca, username=a.username, password=password, service=a.service,
                     issuer=a.issuer, expires_in=a.expires_in, host=a.host, port=a.port, tls_cert=a.tls_cert,
                     tls_key=a.tls_key, log_path=a.log)
    ts.start()
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(ts.port))
        os.replace(tmp, a.port_file)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        ts.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
