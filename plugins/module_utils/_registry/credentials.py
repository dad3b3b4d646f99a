# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Stored credentials (docker config.json, credential helpers, podman auth.json) and per-host TLS
material (certs.d directories).

PRIVATE to the hocker.registry collection: may change at any time.

Nothing here puts a secret into a message: warnings and ``Credentials.source`` name files and helper
programs, never their contents or output.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import base64
import binascii
import glob
import os
import shutil
import signal
import subprocess
import tempfile

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import DOCKER_HUB_ALIASES

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    from urlparse import urlsplit  # type: ignore

#: the key docker uses for Docker Hub in config.json and the server URL it gives credential helpers
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB = "docker.io"
#: seconds a credential helper may take
HELPER_TIMEOUT = 30
#: a credential helper's answer larger than this is refused
MAX_HELPER_OUTPUT = 1024 * 1024
#: a config file larger than this is refused
MAX_CONFIG_SIZE = 16 * 1024 * 1024
#: the username a credential helper reports when the secret is an identity (refresh) token
IDENTITY_TOKEN_USER = "<token>"

#: system certs.d roots (docker, then podman/containers); the per-user ~/.config/containers/certs.d follows
CERTS_D_ROOTS = ["/etc/docker/certs.d", "/etc/containers/certs.d"]


def _noop(_msg):
    pass


# ------------------------------------------------------------------------------------------ key matching
def normalize_host(key):
    """The registry host a config key names, lowercased: ``https://host:port/v1/`` -> ``host:port``.

    Every Docker Hub spelling (``https://index.docker.io/v1/``, ``docker.io``, ``index.docker.io``,
    ``registry-1.docker.io``) becomes ``docker.io``.
    """
    host, _path = _split_key(key)
    return host


def _split_key(key):
    """(normalised host, namespace path or "") of a config key.

    URL-form keys (with a scheme) are legacy docker keys whose path (``/v1/``) means nothing; a key
    without a scheme may carry a repository namespace (``quay.io/org``, containers-auth.json style).
    """
    text = (key or "").strip()
    path = ""
    if "://" in text:
        text = text.split("://", 1)[1]
        text = text.split("/", 1)[0]
    else:
        text, _sep, path = text.partition("/")
        path = path.strip("/")
    host = text.lower()
    if host in DOCKER_HUB_ALIASES:
        host = _HUB
    return host, path


def reference_hosts(reference):
    """The normalised host names under which credentials for ``reference`` may be stored."""
    if reference.is_docker_hub:
        return [_HUB]
    hosts = []
    for name in (reference.display_registry, reference.registry):
        name = (name or "").lower()
        if name and name not in hosts:
            hosts.append(name)
    return hosts


def match_key(keys, reference):
    """The best key of ``keys`` for ``reference`` (None if none matches).

    A namespaced key (``host/org``) that covers the repository wins over the host alone (the longest
    namespace wins); among keys for the host alone an exact spelling of the registry name wins over
    URL-form and alias spellings; otherwise the first in file order.
    """
    hosts = reference_hosts(reference)
    repository = reference.repository
    exact = set(hosts)
    canonical = DOCKER_HUB_KEY if reference.is_docker_hub else hosts[0]
    best = None
    best_rank = None
    for position, key in enumerate(keys):
        if not isinstance(key, str):
            continue
        host, path = _split_key(key)
        if host not in hosts:
            continue
        if path:
            if not (repository == path or repository.startswith(path + "/")):
                continue
            rank = (3, len(path), -position)
        else:
            spelling = key.strip().lower()
            rank = (2 if spelling == canonical else 1 if spelling in exact else 0, 0, -position)
        if best_rank is None or rank > best_rank:
            best, best_rank = key, rank
    return best


def helper_server_url(reference):
    """What a credential helper gets on stdin: Docker Hub's legacy key, else the registry host."""
    if reference.is_docker_hub:
        return DOCKER_HUB_KEY
    return reference.display_registry


# ------------------------------------------------------------------------------------------ config files
def docker_config_path(docker_config=None):
    """The docker config.json to read: the option (a file or a directory), $DOCKER_CONFIG, ~/.docker."""
    if docker_config:
        path = os.path.expanduser(docker_config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        return path
    directory = os.environ.get("DOCKER_CONFIG")
    if directory:
        return os.path.join(os.path.expanduser(directory), "config.json")
    return os.path.join(os.path.expanduser("~"), ".docker", "config.json")


def containers_auth_paths():
    """podman / containers-auth.json locations, in the order they are consulted."""
    paths = []
    env_file = os.environ.get("REGISTRY_AUTH_FILE")
    if env_file:
        paths.append(("REGISTRY_AUTH_FILE", os.path.expanduser(env_file)))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(("podman auth file", os.path.join(runtime, "containers", "auth.json")))
    else:
        paths.append(("podman auth file", "/run/containers/%d/auth.json" % os.getuid()))
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    paths.append(("podman auth file", os.path.join(config_home, "containers", "auth.json")))
    return paths


def read_config(path, what, warn, required=False):
    """The JSON object in ``path``; None (after a warning when the file exists) if it cannot be used."""
    try:
        size = os.path.getsize(path)
    except OSError:
        if required:
            warn("%s %s does not exist; no stored credentials are used from it" % (what, path))
        return None
    if not os.path.isfile(path):
        warn("%s %s is not a regular file; ignoring it" % (what, path))
        return None
    if size > MAX_CONFIG_SIZE:
        warn("%s %s is larger than %d MiB; ignoring it" % (what, path, MAX_CONFIG_SIZE // (1024 * 1024)))
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except (IOError, OSError) as exc:
        warn("cannot read %s %s (%s); ignoring it" % (what, path, exc.strerror or type(exc).__name__))
        return None
    if not raw.strip():
        return None
    try:
        # the parser's own message names a position only, never the file's content (it holds secrets)
        return jsonutil.loads(raw, "%s %s" % (what, path), error=ValueError, limit=MAX_CONFIG_SIZE)
    except ValueError as exc:
        warn("%s; ignoring it" % exc)
        return None


def _decode_auth(value):
    """(username, password) from a base64 ``user:password``; None when malformed."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        return None
    if ":" not in decoded:
        return None
    user, password = decoded.split(":", 1)
    return user, password


def _text(entry, key):
    value = entry.get(key)
    return value if isinstance(value, str) else None


def credentials_from_entry(entry, source, warn, key, path):
    """Credentials from one ``auths`` entry (None when it holds nothing usable)."""
    if not isinstance(entry, dict):
        return None
    username, password = _text(entry, "username"), _text(entry, "password")
    if entry.get("auth"):
        pair = _decode_auth(entry["auth"])
        if pair is None:
            warn("the auth value for %s in %s is not base64 of user:password; ignoring it" % (key, path))
        else:
            username, password = pair
    identity = _text(entry, "identitytoken")
    registry_token = _text(entry, "registrytoken")
    if identity:
        # docker login keeps the user name beside an identity token and an empty password
        password = password or None
        username = None if username == IDENTITY_TOKEN_USER else username
    if not username:
        username = password = None
    creds = Credentials(username=username, password=password, identity_token=identity or None,
                        registry_token=registry_token or None, source=source)
    return None if creds.empty else creds


# ------------------------------------------------------------------------------------------ helpers
def _helper_name_ok(name):
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def run_helper(name, server_url, registry, warn, timeout=None):
    """Ask ``docker-credential-<name>`` for the credentials of ``server_url``.

    Returns Credentials, or None when the helper has none ("credentials not found": silent) or fails
    (warning naming the helper and the registry, never its output).
    """
    program = "docker-credential-%s" % name
    if not _helper_name_ok(name):
        warn("ignoring the credential helper name %r configured for %s: it is not a plain program name"
             % (name, registry))
        return None
    executable = shutil.which(program)
    if not executable:
        warn("the credential helper %s configured for %s was not found on PATH; continuing without its "
             "credentials" % (program, registry))
        return None
    output = _ask_helper(executable, program, server_url, registry, warn, timeout or HELPER_TIMEOUT)
    if output is None:
        return None
    return _helper_credentials(output, program, registry, warn)


def _ask_helper(executable, program, server_url, registry, warn, limit):
    """The answer of ``<executable> get`` for ``server_url``; None when it has none, fails, or says too much."""
    try:
        # own process group: on a timeout the helper and anything it started are killed together
        proc = subprocess.Popen([executable, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, close_fds=True, start_new_session=True)
    except (OSError, ValueError) as exc:
        warn("the credential helper %s could not be run for %s (%s); continuing without its credentials"
             % (program, registry, getattr(exc, "strerror", None) or type(exc).__name__))
        return None
    try:
        output, errors = proc.communicate(server_url.encode("utf-8"), timeout=limit)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        warn("the credential helper %s did not answer for %s within %d seconds; continuing without its "
             "credentials" % (program, registry, limit))
        return None
    output = output or b""
    if proc.returncode != 0:
        text = (output + b"\n" + (errors or b"")).decode("utf-8", "replace").lower()
        if "credentials not found" not in text:
            warn("the credential helper %s failed for %s (exit status %d); continuing without its credentials"
                 % (program, registry, proc.returncode))
        return None
    if not output.strip():
        return None
    if len(output) > MAX_HELPER_OUTPUT:
        warn("the credential helper %s answered more than %d bytes for %s; ignoring its answer"
             % (program, MAX_HELPER_OUTPUT, registry))
        return None
    return output


def _helper_credentials(output, program, registry, warn):
    """Credentials from a helper's answer (``{"Username": ..., "Secret": ...}``), or None."""
    try:
        data = jsonutil.loads(output, "the answer", error=ValueError, limit=MAX_HELPER_OUTPUT)
    except ValueError:
        # never the answer itself in the message: it holds the secret
        warn("the credential helper %s answered something that is not a JSON object for %s; ignoring its answer"
             % (program, registry))
        return None
    username = data.get("Username")
    secret = data.get("Secret")
    if not isinstance(secret, str) or not secret:
        return None
    source = "credential helper %s" % program
    if username == IDENTITY_TOKEN_USER:
        return Credentials(identity_token=secret, source=source)
    if not isinstance(username, str) or not username:
        warn("the credential helper %s answered for %s without a user name; ignoring its answer"
             % (program, registry))
        return None
    return Credentials(username=username, password=secret, source=source)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass


# ------------------------------------------------------------------------------------------ lookup
def _from_config(data, path, what, reference, warn):
    """Credentials for ``reference`` from one parsed config file (credHelpers > credsStore > auths)."""
    registry = reference.display_registry
    server_url = helper_server_url(reference)
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict):
        key = match_key(list(helpers), reference)
        if key is not None:
            creds = run_helper(helpers[key], server_url, registry, warn)
            if creds is not None:
                return creds
    store = data.get("credsStore")
    if store:
        creds = run_helper(store, server_url, registry, warn)
        if creds is not None:
            return creds
    auths = data.get("auths")
    if isinstance(auths, dict):
        key = match_key(list(auths), reference)
        if key is not None:
            return credentials_from_entry(auths[key], "%s %s" % (what, path), warn, key, path)
    return None


def sources(docker_config=None):
    """[(description, path, must_exist)] in lookup order, without duplicates."""
    out = [("docker config", docker_config_path(docker_config), bool(docker_config))]
    for what, path in containers_auth_paths():
        out.append((what, path, False))
    seen = set()
    unique = []
    for what, path, required in out:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        unique.append((what, path, required))
    return unique


def lookup(reference, docker_config=None, warn=None):
    """Credentials for ``reference`` from the user's credential stores; anonymous Credentials if none.

    Order: the docker config (``docker_config`` option, ``$DOCKER_CONFIG/config.json``,
    ``~/.docker/config.json``) with ``credHelpers[host]``, ``credsStore``, then ``auths[host]``; then
    ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
    ``$XDG_CONFIG_HOME/containers/auth.json``. Unusable files and failing helpers warn and are skipped.
    """
    warn = warn if warn is not None else _noop
    for what, path, required in sources(docker_config):
        data = read_config(path, what, warn, required=required)
        if data is None:
            continue
        creds = _from_config(data, path, what, reference, warn)
        if creds is not None:
            return creds
    return Credentials()


# ------------------------------------------------------------------------------------------ certs.d
_bundles = {}       # tuple of CA files (+ mtimes) -> bundle path
_tls_cache = {}     # (roots, host) -> dict or None


def certs_d_roots():
    """The certs.d roots consulted by default: CERTS_D_ROOTS and ~/.config/containers/certs.d."""
    roots = list(CERTS_D_ROOTS)
    roots.append(os.path.join(os.path.expanduser("~"), ".config", "containers", "certs.d"))
    return roots


def _host_dirs(url):
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return []
    name = parts.hostname.lower()
    if ":" in name:
        name = "[%s]" % name
    try:
        port = parts.port
    except ValueError:
        return []
    names = []
    if port:
        names.append("%s:%d" % (name, port))
    if not port or port == 443:
        names.append(name)
    return names


def _default_ca_bundle():
    try:
        import certifi  # requests' own CA bundle
        return certifi.where()
    except ImportError:
        import ssl
        return ssl.get_default_verify_paths().cafile


def _remove_bundles():
    for path in list(_bundles.values()):
        try:
            os.unlink(path)
        except OSError:
            pass
    _bundles.clear()


def _bundle(ca_files):
    """One CA file for requests: the certs.d CAs plus the default trust store (like docker)."""
    key = []
    for path in ca_files:
        try:
            key.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            pass
    key = tuple(key)
    if not key:
        return None
    existing = _bundles.get(key)
    if existing and os.path.exists(existing):
        return existing
    chunks = []
    for path, _mtime in key:
        try:
            with open(path, "rb") as handle:
                chunks.append(handle.read().strip() + b"\n")
        except (IOError, OSError):
            continue
    default = _default_ca_bundle()
    if default and os.path.isfile(default):
        try:
            with open(default, "rb") as handle:
                chunks.append(handle.read().strip() + b"\n")
        except (IOError, OSError):
            pass
    if not _bundles:
        atexit.register(_remove_bundles)
    fd, bundle = tempfile.mkstemp(prefix="hocker-certs-d-", suffix=".pem")
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"".join(chunks))
    _bundles[key] = bundle
    return bundle


def _scan(roots, dirnames):
    cas = []
    client = None
    for root in roots:
        for dirname in dirnames:
            directory = os.path.join(root, dirname)
            if not os.path.isdir(directory):
                continue
            cas.extend(sorted(p for p in glob.glob(os.path.join(glob.escape(directory), "*.crt")) if os.path.isfile(p)))
            if client is None:
                pair = _client_pair(directory)
                if pair:
                    client = pair
    return cas, client


def _client_pair(directory):
    cert = os.path.join(directory, "client.cert")
    key = os.path.join(directory, "client.key")
    if os.path.isfile(cert) and os.path.isfile(key):
        return cert, key
    for cert in sorted(glob.glob(os.path.join(glob.escape(directory), "*.cert"))):
        key = cert[:-len(".cert")] + ".key"
        if os.path.isfile(cert) and os.path.isfile(key):
            return cert, key
    return None


def tls_from_directory(directory):
    """TLS material from one certs.d-style directory given as ``ca_path``: its ``*.crt`` files as one CA bundle
    (with the default trust store, as docker and skopeo's --cert-dir do) and a ``*.cert`` + ``*.key`` client
    pair. Returns ``{"ca_path", "client_cert", "client_key"}`` (values None when absent)."""
    cas = sorted(p for p in glob.glob(os.path.join(glob.escape(directory), "*.crt")) if os.path.isfile(p))
    client = _client_pair(directory)
    return {"ca_path": _bundle(cas) if cas else None,
            "client_cert": client[0] if client else None,
            "client_key": client[1] if client else None}


def tls_for_url(url, roots=None):
    """Per-host TLS material from certs.d directories for an https ``url``, or None.

    Returns ``{"ca_path": bundle or None, "client_cert": path or None, "client_key": path or None}``:
    ``*.crt`` files of ``<root>/<host[:port]>/`` become one CA bundle (with the default trust store),
    ``client.cert`` + ``client.key`` (or another ``X.cert`` + ``X.key`` pair) a client certificate.
    Explicit ``ca_path`` / ``client_cert`` options win (the transport prefers them). ``roots``: the certs.d
    roots to search (default ``certs_d_roots()``).
    """
    dirnames = _host_dirs(url)
    if not dirnames:
        return None
    roots = tuple(certs_d_roots() if roots is None else roots)
    cache_key = (roots, tuple(dirnames))
    if cache_key in _tls_cache:
        cached = _tls_cache[cache_key]
        if cached is None or not cached.get("ca_path") or os.path.exists(cached["ca_path"]):
            return cached
    cas, client = _scan(roots, dirnames)
    result = None
    if cas or client:
        result = {"ca_path": _bundle(cas) if cas else None,
                  "client_cert": client[0] if client else None,
                  "client_key": client[1] if client else None}
    _tls_cache[cache_key] = result
    return result


__all__ = ["lookup", "tls_for_url", "match_key", "normalize_host", "run_helper", "docker_config_path",
           "containers_auth_paths", "certs_d_roots", "tls_from_directory", "CERTS_D_ROOTS", "DOCKER_HUB_KEY"]
