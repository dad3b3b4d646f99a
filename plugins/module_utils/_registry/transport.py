# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""HTTP transport: one requests Session, TLS options, retries with backoff, safe redirects.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import email.utils
import re
import threading
import time

from ansible_collections.hocker.registry.plugins.module_utils._registry import _compat
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import TransportError

try:
    from urllib.parse import urljoin, urlsplit
except ImportError:  # pragma: no cover
    from urlparse import urljoin, urlsplit  # type: ignore

RETRY_STATUS = (408, 429, 500, 502, 503, 504)
REQUEST_KINDS = ("head", "manifest_get", "blob_get", "token", "other")
MAX_RETRY_WAIT = 900.0   # seconds one request may spend waiting between its retries, whatever ``retries`` says
REDIRECT_STATUS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0
USER_AGENT = "hocker.registry/0.1 (+ansible)"


def origin(url):
    """scheme://host:port of a URL, with the default port made explicit."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return "%s://%s:%s" % (parts.scheme, (parts.hostname or "").lower(), port)


def safe_url(url):
    """A URL fit for messages: no query string (it may hold signatures) and no userinfo."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = "[%s]" % host
    if parts.port:
        host += ":%d" % parts.port
    return "%s://%s%s" % (parts.scheme, host, parts.path)


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (seconds or HTTP-date), clamped to [0, 60]; None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (now if now is not None else time.time())
    return max(0.0, min(MAX_RETRY_AFTER, seconds))


def classify(method, url):
    """The kind of a registry request, for the ``requests`` counters."""
    if method == "HEAD":
        return "head"
    path = urlsplit(url).path
    if method == "GET" and "/manifests/" in path:
        return "manifest_get"
    if method == "GET" and "/blobs/" in path:
        return "blob_get"
    return "other"


def backoff_delay(attempt):
    """1 s doubling to 30 s."""
    return min(MAX_BACKOFF, 1.0 * (2 ** attempt))


def stream_errors():
    """The exceptions reading a streamed response body can raise (connection resets, timeouts, ...)."""
    requests = _compat.require_requests()
    errors = [requests.exceptions.RequestException, OSError, IOError]
    try:
        import urllib3.exceptions
        errors.append(urllib3.exceptions.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _is_plain_http_answer(exc):
    text = str(exc).lower()
    return any(marker in text for marker in (
        "wrong version number", "wrong_version_number", "record layer failure", "unknown protocol",
        "http request", "packet length too long"))


class Transport:
    """Sends requests with retries, TLS settings and redirect rules; never reads ~/.netrc."""

    def __init__(self, timeout=60, retries=3, validate_certs=True, ca_path=None, client_cert=None,
                 client_key=None, warn=None, sleep=time.sleep, tls_for_host=None):
        requests = _compat.require_requests()
        self._requests = requests
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.client_cert = client_cert
        self.client_key = client_key
        self.tls_for_host = tls_for_host
        self.warn = warn or (lambda msg: None)
        self.sleep = sleep
        self.bytes_downloaded = 0
        self.counts = dict((kind, 0) for kind in REQUEST_KINDS)
        self._count_lock = threading.Lock()
        session = requests.Session()
        # trust_env would also read ~/.netrc and send those credentials anywhere; proxies from the
        # environment are applied per request instead.
        session.trust_env = False
        session.headers["User-Agent"] = USER_AGENT
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.session = session

    def _tls(self, url):
        verify = self.validate_certs
        cert = None
        extra = self.tls_for_host(url) if self.tls_for_host else None
        if verify and self.ca_path:
            verify = self.ca_path
        elif verify and extra and extra.get("ca_path"):
            verify = extra["ca_path"]
        if self.client_cert:
            cert = (self.client_cert, self.client_key) if self.client_key else self.client_cert
        elif extra and extra.get("client_cert"):
            cert = (extra["client_cert"], extra.get("client_key")) if extra.get("client_key") else extra["client_cert"]
        return verify, cert

    def _proxies(self, url):
        try:
            return self._requests.utils.get_environ_proxies(url)
        except Exception:  # pylint: disable=broad-except
            return {}

    def speaks_tls(self, url):
        """Whether the server of an https ``url`` answers a TLS handshake: True, False (it answered like a
        plain http server), or None when that cannot be told this way (no connection, a proxy is configured
        for the URL). Nothing is verified and nothing but a ClientHello is sent: this only picks the scheme
        for a loopback registry, whose requests then go through the verified transport. It avoids loading
        the CA bundle for a handshake that fails anyway (about 15 ms)."""
        import socket
        import ssl
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or self._proxies(url):
            return None
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            limit = min(self.timeout, 10) if isinstance(self.timeout, (int, float)) else 10
            sock = socket.create_connection((parts.hostname, parts.port or 443), timeout=limit)
        except (OSError, ValueError):
            return None
        try:
            with context.wrap_socket(sock, server_hostname=parts.hostname) as tls:
                tls.version()
            return True
        except ssl.SSLError as exc:
            return False if _is_plain_http_answer(exc) else True
        except OSError:
            return None
        finally:
            sock.close()

    def _send_once(self, method, url, headers, stream, data=None):
        verify, cert = self._tls(url)
        requests = self._requests
        try:
            return self.session.request(method, url, headers=headers, stream=stream, data=data,
                                        allow_redirects=False, timeout=self.timeout, verify=verify,
                                        cert=cert, proxies=self._proxies(url))
        except requests.exceptions.SSLError as exc:
            if _is_plain_http_answer(exc):
                raise TransportError("%s does not speak TLS (is it a plain http registry? then use an "
                                     "http:// registry URL)" % safe_url(url), plain_http=True)
            reason = _tls_reason(exc)
            lowered = reason.lower()
            if "verify failed" in lowered or "certificate_verify" in lowered:
                hint = "set ca_path to the registry's CA, or validate_certs=false to skip verification"
            elif any(k in lowered for k in ("bad certificate", "certificate required", "certificate_required",
                                            "handshake failure", "unknown ca")) and cert is None:
                hint = "the registry asks for a client certificate: set client_cert and client_key"
            elif any(k in lowered for k in ("bad certificate", "unknown ca", "certificate required")):
                hint = "the registry rejected the client certificate given in client_cert"
            else:
                hint = "check ca_path, client_cert/client_key and validate_certs"
            raise TransportError("TLS error talking to %s: %s; %s" % (safe_url(url), reason, hint), tls=True)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise TransportError("cannot reach %s: %s" % (safe_url(url), _connection_reason(exc, self.timeout)),
                                 retryable=True)
        except requests.exceptions.InvalidURL as exc:
            raise TransportError("invalid URL %s: %s" % (safe_url(url), _short(exc)))
        except requests.exceptions.RequestException as exc:
            raise TransportError("request to %s failed: %s" % (safe_url(url), _short(exc)))

    def request(self, method, url, headers=None, stream=False, auth_origin=None, data=None, retry=True,
                on_redirect=None, kind=None):
        """Send a request following redirects and retrying transient failures.

        ``headers`` may include Authorization: it is sent only to ``auth_origin`` (default: the origin of
        ``url``), never to another host a redirect leads to. https -> http redirects are refused.
        Returns the final response (any status); raises TransportError when the network fails for good.
        """
        headers = dict(headers or {})
        auth_origin = auth_origin or origin(url)
        kind = kind or classify(method, url)
        attempt = 0
        waited = 0.0
        while True:
            try:
                response = self._follow(method, url, headers, stream, auth_origin, data, on_redirect, kind)
            except TransportError as exc:
                if retry and exc.retryable and attempt < self.retries and waited < MAX_RETRY_WAIT:
                    delay = min(backoff_delay(attempt), MAX_RETRY_WAIT - waited)
                    attempt += 1
                    waited += delay
                    self.warn("%s; retry %d of %d in %.0f s" % (exc.msg, attempt, self.retries, delay))
                    self.sleep(delay)
                    continue
                if attempt:
                    raise TransportError("%s (after %d tries)" % (exc.msg, attempt + 1), status=exc.status,
                                         retryable=exc.retryable, tls=exc.tls, plain_http=exc.plain_http)
                raise
            if retry and response.status_code in RETRY_STATUS and attempt < self.retries \
                    and waited < MAX_RETRY_WAIT:
                delay = parse_retry_after(response.headers.get("Retry-After"))
                if delay is None:
                    delay = backoff_delay(attempt)
                delay = min(delay, MAX_RETRY_WAIT - waited)
                attempt += 1
                waited += delay
                self.warn("%s answered HTTP %d for %s; retry %d of %d in %.0f s" % (
                    safe_url(auth_origin), response.status_code, safe_url(url), attempt, self.retries, delay))
                response.close()
                self.sleep(delay)
                continue
            response.tries = attempt + 1
            return response

    def _follow(self, method, url, headers, stream, auth_origin, data, on_redirect, kind):
        current = url
        seen = set()
        for _hop in range(MAX_REDIRECTS + 1):
            send_headers = dict(headers)
            if origin(current) != auth_origin:
                send_headers.pop("Authorization", None)
            self.count(kind)
            response = self._send_once(method, current, send_headers, stream, data)
            if response.status_code not in REDIRECT_STATUS or not response.headers.get("Location"):
                return response
            target = urljoin(current, response.headers["Location"])
            response.close()
            if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
                raise TransportError("refusing the redirect from %s to the insecure %s" % (
                    safe_url(current), safe_url(target)))
            if urlsplit(target).scheme not in ("http", "https"):
                raise TransportError("refusing a redirect to %s" % safe_url(target))
            if target in seen:
                raise TransportError("redirect loop at %s" % safe_url(target))
            seen.add(target)
            if response.status_code == 303 and method not in ("GET", "HEAD"):
                method, data = "GET", None
            if on_redirect:
                on_redirect(target)
            current = target
        raise TransportError("too many redirects (more than %d) from %s" % (MAX_REDIRECTS, safe_url(url)))

    def read_body(self, response, limit, what):
        """Read a whole (small) body, refusing more than ``limit`` bytes."""
        chunks = []
        total = 0
        try:
            for chunk in response.iter_content(65536):
                total += len(chunk)
                if total > limit:
                    response.close()
                    raise TransportError("%s is larger than the %d byte limit" % (what, limit), too_large=True)
                chunks.append(chunk)
        except self._requests.exceptions.RequestException as exc:
            raise TransportError("reading %s failed: %s" % (what, _short(exc)), retryable=True)
        self.add_downloaded(total)
        return b"".join(chunks)

    def count(self, kind):
        with self._count_lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def add_downloaded(self, count):
        with self._count_lock:
            self.bytes_downloaded += count

    def close(self):
        self.session.close()


def _causes(exc):
    """``exc`` and the exceptions it wraps (causes, contexts, and urllib3's ``reason``)."""
    seen = []
    todo = [exc]
    while todo and len(seen) < 12:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([getattr(item, "__cause__", None), getattr(item, "__context__", None),
                     getattr(item, "reason", None)])
        todo.extend(a for a in getattr(item, "args", ()) if isinstance(a, BaseException))
    return seen


def _connection_reason(exc, timeout):
    """Why a connection failed, in words, with the likely cause."""
    import socket
    text = str(exc).lower()
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError) or "connection refused" in text:
            return "connection refused (is the registry running, and listening on that host and port?)"
        if isinstance(cause, socket.gaierror) or "name or service not known" in text \
                or "failed to resolve" in text or "nodename nor servname" in text:
            return "the host name cannot be resolved (check the registry name and DNS)"
        if isinstance(cause, ConnectionResetError) or "connection reset" in text:
            return "the connection was reset by the server or a proxy"
        if isinstance(cause, (socket.timeout, TimeoutError)) or "timed out" in text:
            return "no answer within the timeout of %s seconds" % timeout
        if "network is unreachable" in text or "no route to host" in text:
            return "the network or host is unreachable"
    return _short(exc)


_SSL_REASON_RE = re.compile(r"\[SSL: [A-Z0-9_]+\][^()'\"]*|certificate verify failed[^()'\"]*")


def _tls_reason(exc):
    """The OpenSSL reason of an SSL error, without urllib3's wrapping."""
    match = _SSL_REASON_RE.search(str(exc))
    return match.group(0).strip(" .") if match else _short(exc)


def _short(exc):
    text = str(exc)
    # urllib3 messages repeat the pool object; keep them readable
    if "Caused by" in text:
        text = text.split("Caused by", 1)[1].strip(" ()'\"")
    return text[:300]
