"""Real registries for the tests: Debian's ``docker-registry`` (distribution 2.8) on a loopback port.

Modes
- ``anonymous``: plain http, no authentication.
- ``basic``: https (CA from :mod:`testbed.certs`) + htpasswd (bcrypt) user.
- ``token``: plain http registry, bearer tokens from :class:`testbed.tokenserver.TokenServer`
  (realm http by default, ``realm_scheme="https"`` for an https realm).
- ``mtls``: https that requires a client certificate signed by the test CA; no other authentication.

Every mode accepts foreign-layer URLs (``^https?://``), deletes and Docker schema 1 pushes
(``compatibility: schema1: enabled: true``: distribution 2.8 refuses schema 1 PUTs without it; it needs no
signing key, as it makes an ephemeral one at start when ``signingkeyfile`` is not set, and the switch changes
nothing else: GETs of schema 2 content by old clients were converted and signed before as well). A schema 1
manifest is stored as its JWS payload (no signatures) and every GET re-signs it with the registry's key, so its
bytes differ from one GET to the next while its digest (the payload's) does not.

The request log is the registry's own access log (combined log format on its stdout): ``requests()``
returns ``[{method, path, uri, status, size, user_agent}]`` in the order the registry finished them.
"""
import atexit
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from urllib.parse import urlsplit

import bcrypt
import requests

try:  # works both as package module (testbed.registry) and when cli.py runs from its folder
    from testbed.certs import make_certs
    from testbed.tokenserver import TokenServer
except ImportError:  # pragma: no cover
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from testbed.certs import make_certs
    from testbed.tokenserver import TokenServer

MODES = ("anonymous", "basic", "token", "mtls")
BINARY = "docker-registry"
SERVICE = "hocker-testbed"
ISSUER = "hocker-testbed-issuer"
SYNC_PREFIX = "/testbed-sync/"
TOKENSERVER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenserver.py")

_LOG_RE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<uri>\S+) (?P<proto>[^"]*)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-)(?: "(?P<referer>[^"]*)" "(?P<ua>[^"]*)")?')

_live = weakref.WeakSet()


@atexit.register
def _stop_all():  # never leave registries behind when a test run ends abruptly
    for reg in list(_live):
        try:
            reg.stop()
        except Exception:
            pass


def free_port(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def parse_www_authenticate(value):
    """Parse one ``WWW-Authenticate`` value into ``[(scheme_lower, {param: value})]`` (quoted strings may
    hold commas)."""
    out = []
    pos = 0
    token = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)')
    param = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
    while pos < len(value):
        m = token.match(value, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params = {}
        while True:
            pm = param.match(value, pos)
            if not pm:
                break
            # a following "Scheme param=" has no "=" right after the first token: stop there
            v = pm.group(2)
            if v.startswith('"'):
                v = re.sub(r'\\(.)', r'\1', v[1:-1])
            params[pm.group(1).lower()] = v
            pos = pm.end()
        out.append((scheme, params))
        while pos < len(value) and value[pos] in ", ":
            pos += 1
    return out


_REPO_RE = re.compile(r'^/v2/(.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)')


class ChallengeAuth(requests.auth.AuthBase):
    """requests auth that answers 401 challenges: Basic with the credentials, Bearer by fetching a token
    from the realm (with Basic credentials when given) for the challenged scope plus ``pull,push`` on the
    repository.  Tokens are cached per repository.  Request bodies must be bytes (they are re-sent)."""

    def __init__(self, username=None, password=None, verify=True, actions=("pull", "push")):
        self.username = username
        self.password = password
        self.verify = verify
        self.actions = actions
        self.tokens = {}  # repository (or "") -> token
        self.token_requests = 0

    def _repo(self, url):
        m = _REPO_RE.match(urlsplit(url).path)
        return m.group(1) if m else ""

    def __call__(self, r):
        tok = self.tokens.get(self._repo(r.url))
        if tok:
            r.headers["Authorization"] = "Bearer " + tok
        r.register_hook("response", self._on_response)
        return r

    def _fetch_token(self, params):
        realm = params["realm"]
        scopes = []
        if params.get("scope"):
            for s in params["scope"].split(" "):
                parts = s.rsplit(":", 1)
                if s.startswith("repository:") and len(parts) == 2:
                    acts = [a for a in parts[1].split(",") if a]
                    for a in self.actions:
                        if a not in acts:
                            acts.append(a)
                    s = parts[0] + ":" + ",".join(acts)
                scopes.append(s)
        q = [("service", params.get("service", ""))] + [("scope", s) for s in scopes]
        auth = (self.username, self.password) if self.username else None
        resp = requests.get(realm, params=q, auth=auth, verify=self.verify, timeout=30)
        self.token_requests += 1
        resp.raise_for_status()
        body = resp.json()
        return body.get("access_token") or body.get("token")

    def _on_response(self, r, **kwargs):
        if r.status_code != 401 or getattr(r.request, "_testbed_retried", False):
            return r
        challenges = parse_www_authenticate(r.headers.get("WWW-Authenticate", ""))
        new = r.request.copy()
        new._testbed_retried = True
        for scheme, params in challenges:
            if scheme == "bearer" and params.get("realm"):
                tok = self._fetch_token(params)
                self.tokens[self._repo(r.request.url)] = tok
                new.headers["Authorization"] = "Bearer " + tok
                break
            if scheme == "basic" and self.username:
                new.prepare_auth((self.username, self.password))
                break
        else:
            return r
        r.content  # noqa: B018 - drain so the connection can be reused
        r.close()
        out = r.connection.send(new, **kwargs)
        out.history.append(r)
        out.request = new
        return out


class Registry(object):
    """One docker-registry process (plus its token server in ``token`` mode).

    ``Registry(mode, workdir=None, *, bind="127.0.0.1", port=0, username="testuser", password=None,
    realm_scheme="http", token_expires_in=300, detach=False, config_overrides=None)``

    ``config_overrides`` is deep-merged into the generated docker-registry configuration (e.g.
    ``{"http": {"relativeurls": True}}``).

    ``detach=True`` starts the processes in their own session (they survive this Python process; used by
    the CLI); otherwise everything is a child of this process and is stopped at exit at the latest.
    """

    def __init__(self, mode, workdir=None, bind="127.0.0.1", port=0, username="testuser", password=None,
                 realm_scheme="http", token_expires_in=300, detach=False, config_overrides=None):
        if mode not in MODES:
            raise ValueError("unknown registry mode %r (one of %s)" % (mode, ", ".join(MODES)))
        if realm_scheme not in ("http", "https"):
            raise ValueError("realm_scheme must be http or https")
        self.mode = mode
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(workdir) if workdir else None
        self.bind = bind
        self._want_port = port
        self.port = None
        self.detach = detach
        self.realm_scheme = realm_scheme
        self.token_expires_in = token_expires_in
        self.config_overrides = config_overrides or {}
        self.service = SERVICE if mode == "token" else None
        self.issuer = ISSUER if mode == "token" else None
        if mode in ("basic", "token"):
            self.username = username
            self.password = password or ("pw-" + secrets.token_hex(8))
        else:
            self.username = None
            self.password = None
        self.ca_path = None
        self.client_cert = None
        self.client_key = None
        self.certs = None
        self.realm = None
        self.token_server = None  # TokenServer (in-process) in token mode when not detached
        self._token_proc = None
        self._proc = None
        self._log_offset = 0
        self._lock = threading.Lock()
        self._attached_pids = None

    # ---- derived attributes ------------------------------------------------------------------
    @property
    def scheme(self):
        return "https" if self.mode in ("basic", "mtls") else "http"

    @property
    def host(self):
        return "%s:%d" % (self.bind, self.port) if self.port else None

    @property
    def url(self):
        return "%s://%s" % (self.scheme, self.host) if self.port else None

    @property
    def access_log(self):
        return os.path.join(self.workdir, "access.log") if self.workdir else None

    @property
    def error_log(self):
        return os.path.join(self.workdir, "registry.log") if self.workdir else None

    @property
    def token_log(self):
        return os.path.join(self.workdir, "token-requests.jsonl") if self.workdir else None

    @property
    def running(self):
        if self._attached_pids is not None:
            return all(_pid_alive(p) for p in self._attached_pids)
        return self._proc is not None and self._proc.poll() is None

    @property
    def pids(self):
        if self._attached_pids is not None:
            return list(self._attached_pids)
        out = []
        if self._proc is not None:
            out.append(self._proc.pid)
        if self._token_proc is not None:
            out.append(self._token_proc.pid)
        return out

    def verify(self):
        """The ``verify`` value for requests (the CA for https, True otherwise)."""
        return self.ca_path if self.scheme == "https" else True

    def client_options(self):
        """Keyword arguments for the collection's ``RegistryClient`` (auth + TLS)."""
        opts = {"username": self.username, "password": self.password, "ca_path": self.ca_path}
        if self.mode == "mtls":
            opts.update(client_cert=self.client_cert, client_key=self.client_key)
        return opts

    # ---- life cycle --------------------------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<Registry %s %s%s>" % (self.mode, self.url, "" if self.running else " (stopped)")

    def start(self):
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            if self.workdir is None:
                self.workdir = tempfile.mkdtemp(prefix="hocker-registry-%s-" % self.mode)
            os.makedirs(self.workdir, exist_ok=True)
            try:
                self._start()
            except BaseException:
                self._stop()
                raise
            if not self.detach:
                _live.add(self)
            return self

    def _start(self):
        self.certs = make_certs(os.path.join(self.workdir, "certs"))
        self.ca_path = self.certs.ca_cert
        self.client_cert = self.certs.client_cert
        self.client_key = self.certs.client_key
        os.makedirs(os.path.join(self.workdir, "storage"), exist_ok=True)
        if self.mode == "basic":
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            with open(os.path.join(self.workdir, "htpasswd"), "w") as f:
                f.write("%s:%s\n" % (self.username, hashed))
        if self.mode == "token":
            self._start_token_server()
        last_err = None
        for _attempt in range(5):
            self.port = self._want_port or free_port(self.bind)
            self._write_config()
            self._spawn()
            try:
                self._wait_ready()
                self.clear_log()  # the readiness probes are not part of what tests look at
                return
            except _PortInUse as e:
                last_err = e
                if self._want_port:
                    break
                continue
        raise RuntimeError("docker-registry (%s) did not start: %s" % (self.mode, last_err))

    def _start_token_server(self):
        c = self.certs
        tls_cert = c.server_cert if self.realm_scheme == "https" else None
        tls_key = c.server_key if self.realm_scheme == "https" else None
        if not self.detach:
            self.token_server = TokenServer(c.token_cert, c.token_key, c.ca_cert, username=self.username,
                                            password=self.password, service=SERVICE, issuer=ISSUER,
                                            expires_in=self.token_expires_in, host=self.bind,
                                            tls_cert=tls_cert, tls_key=tls_key).start()
            self.realm = self.token_server.url
            return
        pwfile = os.path.join(self.workdir, "token-password")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password)
        portfile = os.path.join(self.workdir, "tokenserver.port")
        if os.path.exists(portfile):
            os.unlink(portfile)
        cmd = [sys.executable, TOKENSERVER_SCRIPT, "--cert", c.token_cert, "--key", c.token_key, "--ca", c.ca_cert,
               "--username", self.username, "--password-file", pwfile, "--service", SERVICE, "--issuer", ISSUER,
               "--expires-in", str(self.token_expires_in), "--host", self.bind, "--port-file", portfile,
               "--log", self.token_log]
        if tls_cert:
            cmd += ["--tls-cert", tls_cert, "--tls-key", tls_key]
        errf = open(os.path.join(self.workdir, "tokenserver.log"), "ab")
        try:
            self._token_proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                                start_new_session=True, close_fds=True)
        finally:
            errf.close()
        deadline = time.monotonic() + 30
        while not os.path.exists(portfile):
            if self._token_proc.poll() is not None:
                raise RuntimeError("token server exited with %s: %s" % (
                    self._token_proc.returncode, _tail(os.path.join(self.workdir, "tokenserver.log"))))
            if time.monotonic() > deadline:
                raise RuntimeError("token server did not start")
            time.sleep(0.05)
        with open(portfile) as f:
            port = int(f.read().strip())
        self.realm = "%s://%s:%d/token" % (self.realm_scheme, self.bind, port)

    def config(self):
        """The docker-registry configuration (a dict; written as JSON, which YAML accepts)."""
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False},
                    "fields": {"service": "registry", "mode": self.mode}},
            "storage": {
                "filesystem": {"rootdirectory": os.path.join(self.workdir, "storage")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": "%s:%d" % (self.bind, self.port), "secret": secrets.token_hex(16),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "validation": {"manifests": {"urls": {"allow": ["^https?://"]}}},
            "compatibility": {"schema1": {"enabled": True}},
        }
        c = self.certs
        if self.mode in ("basic", "mtls"):
            cfg["http"]["tls"] = {"certificate": c.server_cert, "key": c.server_key}
        if self.mode == "mtls":
            cfg["http"]["tls"]["clientcas"] = [c.ca_cert]
        if self.mode == "basic":
            cfg["auth"] = {"htpasswd": {"realm": "hocker-testbed", "path": os.path.join(self.workdir, "htpasswd")}}
        if self.mode == "token":
            cfg["auth"] = {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                                     "rootcertbundle": c.ca_cert}}
        _merge(cfg, self.config_overrides)
        return cfg

    def _write_config(self):
        with open(os.path.join(self.workdir, "config.yml"), "w") as f:
            json.dump(self.config(), f, indent=2)

    def _spawn(self):
        exe = shutil.which(BINARY)
        if not exe:
            raise RuntimeError("%s not found on PATH (apt-get install docker-registry)" % BINARY)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        out = open(self.access_log, "ab")
        err = open(self.error_log, "ab")
        self._err_offset = err.tell()
        try:
            self._log_offset = out.tell()
            self._proc = subprocess.Popen([exe, "serve", os.path.join(self.workdir, "config.yml")],
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                          cwd=self.workdir, close_fds=True, start_new_session=self.detach)
        finally:
            out.close()
            err.close()

    def _wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        s = self._raw_session()
        try:
            while True:
                rc = self._proc.poll()
                if rc is not None:
                    tail = _tail(self.error_log, self._err_offset)
                    self._proc = None
                    if "address already in use" in tail:
                        raise _PortInUse(tail)
                    raise RuntimeError("docker-registry exited with %s:\n%s" % (rc, tail))
                try:
                    r = s.get(self.url + "/v2/", timeout=2)
                    if r.status_code in (200, 401):
                        return
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not answer on %s:\n%s" % (
                        self.url, _tail(self.error_log, self._err_offset)))
                time.sleep(0.05)
        finally:
            s.close()

    def remove_storage(self):
        """Delete the stored images (call after ``stop()`` to free disk space; logs are kept)."""
        if self.workdir:
            shutil.rmtree(os.path.join(self.workdir, "storage"), ignore_errors=True)

    def stop(self):
        with self._lock:
            self._stop()
            _live.discard(self)

    def _stop(self):
        if self._attached_pids is not None:
            return  # attached to processes owned by someone else (the CLI): stop those with `cli.py down`
        for proc in (self._proc, self._token_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        self._proc = None
        self._token_proc = None
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None
        if self._own_workdir and self.workdir and not self.detach:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # ---- state (CLI) -------------------------------------------------------------------------
    def state(self):
        return {
            "mode": self.mode, "url": self.url, "host": self.host, "scheme": self.scheme,
            "ca_path": self.ca_path, "client_cert": self.client_cert, "client_key": self.client_key,
            "username": self.username, "password": self.password, "realm": self.realm,
            "service": self.service, "workdir": self.workdir, "access_log": self.access_log,
            "token_log": self.token_log if self.mode == "token" else None, "pids": self.pids,
        }

    @classmethod
    def from_state(cls, st):
        """A Registry object describing a registry started elsewhere (e.g. by ``cli.py up``).  Logs and
        sessions work; ``stop()`` does nothing."""
        reg = cls(st["mode"], st["workdir"], bind=st["host"].rsplit(":", 1)[0],
                  port=int(st["host"].rsplit(":", 1)[1]), username=st.get("username") or "testuser",
                  password=st.get("password"))
        reg.port = reg._want_port
        reg.username = st.get("username")
        reg.password = st.get("password")
        reg.ca_path = st.get("ca_path")
        reg.client_cert = st.get("client_cert")
        reg.client_key = st.get("client_key")
        reg.realm = st.get("realm")
        reg.service = st.get("service")
        reg._attached_pids = list(st.get("pids") or [])
        reg._own_workdir = False
        return reg

    # ---- sessions ----------------------------------------------------------------------------
    def _raw_session(self):
        s = requests.Session()
        # the environment's REQUESTS_CA_BUNDLE would silently replace a Session-level ``verify``
        s.trust_env = False
        s.verify = self.verify()
        if self.mode == "mtls":
            s.cert = (self.client_cert, self.client_key)
        return s

    def session(self, credentials=True):
        """A requests.Session with TLS set up; with ``credentials`` also the mode's authentication
        (Basic for ``basic``; challenge-answering bearer auth for ``token``)."""
        s = self._raw_session()
        if self.mode == "basic" and credentials:
            s.auth = (self.username, self.password)
        elif self.mode == "token":
            s.auth = ChallengeAuth(self.username if credentials else None, self.password if credentials else None,
                                   verify=self.ca_path if self.realm_scheme == "https" else True,
                                   actions=("pull", "push") if credentials else ("pull",))
        return s

    def push_session(self):
        """A requests.Session able to push and pull (credentials, CA, client certificate, tokens)."""
        return self.session(credentials=True)

    def get_token(self, scopes, credentials=True):
        """A bearer token from the token server for ``scopes`` (token mode)."""
        if self.mode != "token":
            raise ValueError("no token server in mode %s" % self.mode)
        auth = (self.username, self.password) if credentials else None
        r = requests.get(self.realm, params=[("service", self.service)] + [("scope", s) for s in scopes],
                         auth=auth, verify=self.ca_path if self.realm_scheme == "https" else True, timeout=30)
        r.raise_for_status()
        return r.json()["access_token"]

    # ---- small push / pull helpers -----------------------------------------------------------
    def put_blob(self, repo, data, session=None):
        """Upload ``data`` (bytes) as a blob of ``repo`` (monolithic POST+PUT); returns its digest."""
        s = session or self.push_session()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = s.head("%s/v2/%s/blobs/%s" % (self.url, repo, digest))
        if r.status_code == 200:
            return digest
        r = s.post("%s/v2/%s/blobs/uploads/" % (self.url, repo), data=b"")
        if r.status_code != 202:
            raise RuntimeError("upload start failed: %s %s" % (r.status_code, r.text[:500]))
        loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = self.url + loc
        sep = "&" if "?" in loc else "?"
        r = s.put(loc + sep + "digest=" + digest, data=data,
                  headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise RuntimeError("blob upload failed: %s %s" % (r.status_code, r.text[:500]))
        return digest

    def put_manifest(self, repo, ref, data, media_type, session=None):
        """PUT manifest bytes under ``ref`` (tag or digest); returns the digest of ``data``."""
        s = session or self.push_session()
        if not isinstance(data, bytes):
            data = json.dumps(data).encode()
        r = s.put("%s/v2/%s/manifests/%s" % (self.url, repo, ref), data=data,
                  headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise RuntimeError("manifest push failed: %s %s" % (r.status_code, r.text[:500]))
        return "sha256:" + hashlib.sha256(data).hexdigest()

    # ---- access log --------------------------------------------------------------------------
    def _sync_log(self, timeout=10):
        """Make sure every request answered so far is in the access log: send a marker request and wait
        for its line (the registry logs a request after its handler returned)."""
        marker = SYNC_PREFIX + secrets.token_hex(8)
        s = self._raw_session()
        try:
            s.get(self.url + marker, timeout=10)
        except requests.RequestException:
            return  # registry gone: read what is there
        finally:
            s.close()
        deadline = time.monotonic() + timeout
        needle = (" " + marker + " ").encode()
        while time.monotonic() < deadline:
            with open(self.access_log, "rb") as f:
                f.seek(self._log_offset)
                if needle in f.read():
                    return
            time.sleep(0.02)

    def requests(self, sync=True):
        """Requests the registry answered since start (or ``clear_log()``), in order:
        ``[{method, path, uri, status, size, user_agent}]`` (``path`` without the query string)."""
        if not self.access_log or not os.path.exists(self.access_log):
            return []
        if sync and self.running:
            self._sync_log()
        with open(self.access_log, "rb") as f:
            f.seek(self._log_offset)
            raw = f.read().decode("utf-8", "replace")
        out = []
        for line in raw.splitlines():
            m = _LOG_RE.match(line)
            if not m:
                continue
            uri = m.group("uri")
            path = uri.split("?", 1)[0]
            if path.startswith(SYNC_PREFIX):
                continue
            size = m.group("size")
            out.append({"method": m.group("method"), "path": path, "uri": uri, "status": int(m.group("status")),
                        "size": 0 if size == "-" else int(size), "user_agent": m.group("ua")})
        return out

    def count(self, method=None, path_regex=None, status=None):
        """How many logged requests match ``method`` (None = any), ``path_regex`` (``re.search`` on the
        path; None = any) and ``status`` (None = any)."""
        rx = re.compile(path_regex) if path_regex else None
        n = 0
        for r in self.requests():
            if method and r["method"].upper() != method.upper():
                continue
            if rx and not rx.search(r["path"]):
                continue
            if status is not None and r["status"] != status:
                continue
            n += 1
        return n

    def clear_log(self):
        """Forget the requests logged so far (the file is kept; reading starts after its current end)."""
        if self.access_log and os.path.exists(self.access_log):
            if self.running:
                self._sync_log()
            self._log_offset = os.path.getsize(self.access_log)
        if self.token_server is not None:
            self.token_server.clear()

    def token_requests(self):
        """Requests received by the token server (token mode): dicts as ``TokenServer.requests``."""
        if self.token_server is not None:
            return self.token_server.requests
        if self.token_log and os.path.exists(self.token_log):
            with open(self.token_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        return []


def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


class _PortInUse(Exception):
    pass


def _tail(path, offset=0, limit=4000):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def basic_auth_header(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


__all__ = ["Registry", "MODES", "ChallengeAuth", "parse_www_authenticate", "free_port", "basic_auth_header"]
