# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Registry authentication: WWW-Authenticate challenges, bearer tokens, basic credentials.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import datetime
import re
import threading
import time

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    AuthenticationError, RegistryError, TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.transport import origin, safe_url

try:
    from urllib.parse import urlencode, urlsplit
except ImportError:  # pragma: no cover
    from urllib import urlencode  # type: ignore
    from urlparse import urlsplit  # type: ignore

MAX_TOKEN_BODY = 1024 * 1024
MIN_TOKEN_LIFETIME = 60
CLIENT_ID = "hocker.registry"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def parse_challenges(header):
    """Parse a WWW-Authenticate value (RFC 7235) into [(scheme_lowercase, {param: value})].

    Handles several challenges in one header, quoted strings holding commas and escapes, and
    case-insensitive schemes and parameter names.
    """
    reader = _ChallengeReader(header or "")
    challenges = []
    while not reader.done():
        reader.skip(", \t")
        scheme = reader.token()
        if scheme is None:
            break
        challenges.append((scheme.lower(), reader.params()))
    return challenges


class _ChallengeReader:
    """A position in a WWW-Authenticate value, moving forward as parse_challenges reads it."""

    def __init__(self, text):
        self.text = text
        self.pos = 0

    def done(self):
        return self.pos >= len(self.text)

    def _char(self, pos):
        return self.text[pos] if pos < len(self.text) else None

    def _skip_from(self, pos, chars):
        while pos < len(self.text) and self.text[pos] in chars:
            pos += 1
        return pos

    def skip(self, chars):
        self.pos = self._skip_from(self.pos, chars)

    def token(self):
        """The RFC 7230 token here (the position moves past it), or None."""
        match = _TOKEN_RE.match(self.text, self.pos)
        if not match:
            return None
        self.pos = match.end()
        return match.group(0)

    def params(self):
        """The parameters of one challenge: ``key=value`` pairs, or a lone token68 (under the key "")."""
        params = {}
        while True:
            save = self.pos
            self.skip(", \t")
            key = self.token()
            if key is None:
                return params
            after = self._skip_from(self.pos, " \t")
            if self._char(after) == "=":
                self.pos = after + 1
                params[key.lower()] = self.value()
            elif not params and _TOKEN68_RE.fullmatch(key) and self._char(after) in (None, ","):
                params[""] = key
                self.pos = after
            else:
                self.pos = save     # a new challenge starts here
                return params

    def value(self):
        """A parameter's value: a quoted string (backslash escapes) or a token; "" when neither is there."""
        self.skip(" \t")
        if self._char(self.pos) != '"':
            return self.token() or ""
        chars = []
        pos = self.pos + 1
        while pos < len(self.text) and self.text[pos] != '"':
            if self.text[pos] == "\\" and pos + 1 < len(self.text):
                pos += 1
            chars.append(self.text[pos])
            pos += 1
        self.pos = pos + 1
        return "".join(chars)


def _parse_time(value):
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    # Python < 3.11 rejects fractional seconds with other than 3 or 6 digits
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def token_expiry(body, now=None):
    """Expiry time of a token response: issued_at (or now) + max(expires_in, 60)."""
    now = time.time() if now is None else now
    try:
        lifetime = int(body.get("expires_in") or 0)
    except (TypeError, ValueError):
        lifetime = 0
    lifetime = max(lifetime, MIN_TOKEN_LIFETIME)
    issued = _parse_time(body.get("issued_at"))
    if issued is None or issued > now + 300:
        issued = now
    return issued + lifetime


class Credentials:
    """What the user gave us (or what was found in a credential store)."""

    def __init__(self, username=None, password=None, token=None, identity_token=None, registry_token=None,
                 source=None):
        self.username = username
        self.password = password
        self.token = token                      # static bearer token sent to the registry
        self.identity_token = identity_token    # OAuth2 refresh token, sent only to the realm
        self.registry_token = registry_token    # docker config "registrytoken", a bearer for the registry
        self.source = source                    # where these came from, for messages (never the secret)

    @property
    def has_basic(self):
        return bool(self.username) and self.password is not None

    @property
    def empty(self):
        return not (self.has_basic or self.token or self.identity_token or self.registry_token)

    def secrets(self):
        return [s for s in (self.password, self.token, self.identity_token, self.registry_token) if s]


def basic_header(username, password):
    raw = ("%s:%s" % (username, password)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Authenticator:
    """Holds the authentication state for one registry.

    ``header(scope)`` gives the Authorization value to send; ``challenge(response, scope)`` reacts to a
    401 and tells whether a retry makes sense.
    """

    def __init__(self, transport, registry_url, credentials=None):
        self.transport = transport
        self.registry_url = registry_url
        self.registry_origin = origin(registry_url)
        self.credentials = credentials or Credentials()
        self.scheme = None          # "basic" or "bearer" once a challenge was seen
        self.challenge_params = {}
        self.tokens = {}            # scope -> (token, expiry)
        self._lock = threading.RLock()   # parallel layer downloads share one authenticator
        self.refresh_token = self.credentials.identity_token
        self.oauth_unsupported = False  # the realm answered 404 to the OAuth2 POST
        static = self.credentials.token or self.credentials.registry_token
        if static:
            self.scheme = "static"
        self.static = static

    def header(self, scope):
        with self._lock:
            return self._header(scope)

    def _header(self, scope):
        if self.scheme == "static":
            return "Bearer " + self.static
        if self.scheme == "basic" and self.credentials.has_basic:
            return basic_header(self.credentials.username, self.credentials.password)
        if self.scheme == "bearer":
            cached = self.tokens.get(scope)
            if cached and cached[1] > time.time() + 5:
                return "Bearer " + cached[0]
            if cached or self.challenge_params:
                token = self._fetch_token(scope)
                return "Bearer " + token
        return None

    def challenge(self, response, scope, had_header):
        """Handle a 401 answer. Returns True when the request should be retried with ``header(scope)``."""
        with self._lock:
            return self._challenge(response, scope, had_header)

    def _challenge(self, response, scope, had_header):
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        by_scheme = dict((s, p) for s, p in reversed(challenges))
        if self.scheme == "static":
            return False
        if "bearer" in by_scheme and by_scheme["bearer"].get("realm"):
            params = by_scheme["bearer"]
            self.scheme = "bearer"
            self.challenge_params = params
            # the token we sent was refused (expired, revoked, or too narrow): drop it and fetch a fresh one;
            # the caller bounds the number of attempts
            self.tokens.pop(scope, None)
            return True
        if "basic" in by_scheme:
            if self.credentials.has_basic and (self.scheme != "basic" or not had_header):
                self.scheme = "basic"
                return True
            return False
        return False

    def _fetch_token(self, scope):
        params = self.challenge_params
        realm = params.get("realm")
        scopes = self._token_scopes(scope, params)
        self._check_realm(realm)
        body = None
        if self.refresh_token and not self.oauth_unsupported:
            body = self._post_token(realm, params.get("service"), scopes)
            self.oauth_unsupported = body is None
        if body is None:
            body = self._get_token(realm, params.get("service"), scopes)
        token = body.get("access_token") or body.get("token")
        if not token or not isinstance(token, str):
            raise AuthenticationError("the token service %s answered without a token" % safe_url(realm))
        if body.get("refresh_token") and self.refresh_token:
            self.refresh_token = body["refresh_token"]
        self.tokens[scope] = (token, token_expiry(body))
        return token

    @staticmethod
    def _token_scopes(scope, params):
        """The scopes to ask for: ``scope``, after those an ``insufficient_scope`` challenge names."""
        scopes = [scope]
        challenge_scope = params.get("scope")
        if challenge_scope and params.get("error") == "insufficient_scope":
            for extra in challenge_scope.split(" "):
                if extra and extra not in scopes:
                    scopes.insert(0, extra)
        return scopes

    def _check_realm(self, realm):
        """Refuse a realm that is not http(s), and sending credentials to one on another origin over plain
        http when the registry uses https."""
        realm_parts = urlsplit(realm)
        if realm_parts.scheme not in ("http", "https"):
            raise AuthenticationError("the registry %s names an unusable token realm %s"
                                      % (safe_url(self.registry_url), safe_url(realm)))
        send_secrets = not (realm_parts.scheme != "https" and origin(realm) != self.registry_origin
                            and urlsplit(self.registry_url).scheme == "https")
        if not send_secrets and (self.credentials.has_basic or self.refresh_token):
            raise AuthenticationError("refusing to send credentials for %s to the plain-http token service %s; "
                                      "the realm must use https" % (safe_url(self.registry_url), safe_url(realm)))

    def _read_token_response(self, response, realm):
        data = self.transport.read_body(response, MAX_TOKEN_BODY, "the token service's answer")
        if response.status_code in (401, 403):
            raise AuthenticationError("the token service %s rejected the credentials%s (HTTP %d)" % (
                safe_url(realm), (" from " + self.credentials.source) if self.credentials.source else "",
                response.status_code))
        if response.status_code != 200:
            raise AuthenticationError("the token service %s answered HTTP %d" % (safe_url(realm),
                                                                                 response.status_code))
        return jsonutil.loads(data, "the answer of the token service %s" % safe_url(realm), error=AuthenticationError,
                              limit=MAX_TOKEN_BODY)

    def _get_token(self, realm, service, scopes):
        query = []
        if service:
            query.append(("service", service))
        for s in scopes:
            query.append(("scope", s))
        headers = {"Accept": "application/json"}
        creds = self.credentials
        if creds.has_basic:
            headers["Authorization"] = basic_header(creds.username, creds.password)
            query.append(("account", creds.username))
        elif self.refresh_token:
            # the realm has no OAuth2 endpoint (POST answered 404): present the identity token as the
            # password of a basic login (user name "<token>" when none is known), as the realm is the
            # only party that ever sees it
            headers["Authorization"] = basic_header(creds.username or "<token>", self.refresh_token)
            if creds.username:
                query.append(("account", creds.username))
        separator = "&" if urlsplit(realm).query else "?"
        url = realm + (separator + urlencode(query) if query else "")
        response = self.transport.request("GET", url, headers=headers, auth_origin=origin(realm), kind="token")
        return self._read_token_response(response, realm)

    def _post_token(self, realm, service, scopes):
        form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token, "client_id": CLIENT_ID,
                "scope": " ".join(scopes)}
        if service:
            form["service"] = service
        response = self.transport.request(
            "POST", realm, headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            data=urlencode(form), auth_origin=origin(realm), kind="token")
        if response.status_code == 404:
            response.close()
            return None
        return self._read_token_response(response, realm)


__all__ = ["parse_challenges", "token_expiry", "Credentials", "Authenticator", "basic_header",
           "AuthenticationError", "RegistryError", "TransportError"]
