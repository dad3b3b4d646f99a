"""A tiny in-process registry for what a real one cannot be made to do (hostile answers), and for fast unit
tests of the client (standard library only: it runs in the unit-test venv).

``FakeRegistry()`` listens on 127.0.0.1 (free port) in a thread; ``.url`` is its base URL. Content:

- ``add_blob(repo, data) -> digest`` and ``add_manifest(repo, ref, data, media_type) -> digest`` serve
  blobs (with ``Range`` support: 206 / 416) and manifests (GET and HEAD, ``Docker-Content-Digest``);
- ``answer(method, path_regex, status=200, body=b"", headers=None, count=None)`` makes matching requests get a
  canned answer instead (the first matching rule wins; ``count`` limits how often);
- ``challenge(realm, service="fake")`` requires a bearer token for /v2/ requests; ``token(body)`` is what the
  token endpoint ``/token`` answers (default a valid token); ``basic(user, password)`` requires basic auth.

``requests`` lists what was asked: dicts with ``method``, ``path``, ``headers``, ``status``.
"""
import hashlib
import http.server
import json
import re
import socketserver
import threading


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeRegistry:
    def __init__(self):
        self.blobs = {}          # (repo, digest) -> bytes
        self.manifests = {}      # (repo, ref) -> (bytes, media type)
        self.rules = []
        self.requests = []
        self.bearer = None       # (realm, service) when a token is required
        self.token_body = None
        self.basic_pair = None
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        self.url = None

    # ------------------------------------------------------------------ content
    def add_blob(self, repo, data):
        digest = digest_of(data)
        self.blobs[(repo, digest)] = data
        return digest

    def add_manifest(self, repo, ref, data, media_type="application/vnd.oci.image.manifest.v1+json"):
        if isinstance(data, (dict, list)):
            data = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        digest = digest_of(data)
        self.manifests[(repo, ref)] = (data, media_type)
        self.manifests[(repo, digest)] = (data, media_type)
        return digest

    def answer(self, method, path, status=200, body=b"", headers=None, count=None):
        rule = {"method": method, "path": re.compile(path), "status": status,
                "body": body.encode() if isinstance(body, str) else body, "headers": dict(headers or {}),
                "count": count, "hits": 0}
        with self._lock:
            self.rules.append(rule)
        return rule

    def challenge(self, realm=None, service="fake"):
        self.bearer = (realm or self.url + "/token", service)

    def token(self, body):
        self.token_body = body.encode() if isinstance(body, str) else body

    def basic(self, user, password):
        import base64
        self.basic_pair = "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()

    # ------------------------------------------------------------------ server
    def start(self):
        handler = _make_handler(self)
        self._server = _Server(("127.0.0.1", 0), handler)
        self.url = "http://127.0.0.1:%d" % self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def host(self):
        return self.url.split("://", 1)[1]

    def _rule_for(self, method, path):
        with self._lock:
            for rule in self.rules:
                if rule["method"] not in (None, method) or not rule["path"].search(path):
                    continue
                if rule["count"] is not None and rule["hits"] >= rule["count"]:
                    continue
                rule["hits"] += 1
                return rule
        return None


def _make_handler(reg):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self._serve("GET")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._serve("POST")

        def _send(self, status, body=b"", headers=None, method="GET"):
            reg.requests.append({"method": method, "path": self.path, "headers": dict(self.headers),
                                 "status": status})
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD" and body:
                self.wfile.write(body)

        def _serve(self, method):
            path = self.path
            rule = reg._rule_for(method, path)
            if rule is not None:
                return self._send(rule["status"], rule["body"], rule["headers"], method)
            if path.startswith("/token"):
                body = reg.token_body if reg.token_body is not None else b'{"token":"fake-token","expires_in":300}'
                return self._send(200, body, {"Content-Type": "application/json"}, method)
            if not self._authorized():
                return None
            match = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/?]+)$", path.split("?", 1)[0])
            if path.split("?", 1)[0] in ("/v2/", "/v2"):
                return self._send(200, b"{}", {"Content-Type": "application/json"}, method)
            if not match:
                return self._send(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}', {}, method)
            repo, kind, ref = match.groups()
            if kind == "manifests":
                return self._manifest(repo, ref, method)
            return self._blob(repo, ref, method)

        def _authorized(self):
            given = self.headers.get("Authorization")
            if reg.bearer is not None and given != "Bearer fake-token":
                realm, service = reg.bearer
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}',
                           {"WWW-Authenticate": 'Bearer realm="%s",service="%s"' % (realm, service)})
                return False
            if reg.basic_pair is not None and given != reg.basic_pair:
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}',
                           {"WWW-Authenticate": 'Basic realm="fake"'})
                return False
            return True

        def _manifest(self, repo, ref, method):
            found = reg.manifests.get((repo, ref))
            if found is None:
                return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}', {}, method)
            data, media_type = found
            return self._send(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest_of(data)},
                              method)

        def _blob(self, repo, digest, method):
            data = reg.blobs.get((repo, digest))
            if data is None:
                return self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}', {}, method)
            wanted = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
            if not wanted:
                return self._send(200, data, {"Docker-Content-Digest": digest}, method)
            start = int(wanted.group(1))
            end = int(wanted.group(2)) if wanted.group(2) else len(data) - 1
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": "bytes */%d" % len(data)}, method)
            end = min(end, len(data) - 1)
            return self._send(206, data[start:end + 1], {"Content-Range": "bytes %d-%d/%d" % (start, end, len(data))},
                              method)

    return Handler
