# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The registry client: manifests, configs and blobs from one repository.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import threading

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Authenticator, Credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import is_digest
from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import verify as verify_digest
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    AuthenticationError, DigestMismatch, ManifestError, NotFound, OfflineError, PlatformError, RateLimited,
    TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    ACCEPT, IMAGE_TYPES, INDEX_TYPES, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, OCI_INDEX, SCHEMA1_WARNING, check_descriptor,
    parse_config, parse_manifest)
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import (
    Platform, descriptor_platform, host_platform, is_attestation, select)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_registry_url
from ansible_collections.hocker.registry.plugins.module_utils._registry.transport import (
    Transport, origin, safe_url, stream_errors)

try:
    from urllib.parse import urljoin, urlsplit
except ImportError:  # pragma: no cover
    from urlparse import urljoin, urlsplit  # type: ignore

MAX_ERROR_BODY = 1024 * 1024
MAX_INDEX_DEPTH = 4
_WARNING_RE = re.compile(r'^\s*299\s+\S+\s+"((?:[^"\\]|\\.)*)"')
_NOT_FOUND_CODES = ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN")
MAX_TAG_PAGE = 1000
MAX_TAG_PAGES = 10000
MAX_TAG_LIST_SIZE = 16 * 1024 * 1024
_NO_REFERRERS_API = (400, 404, 405, 406, 501)   # what registries without the referrers API answer


class Resolved:
    """What a reference resolved to for one platform."""

    def __init__(self, top, image, platform, leaves=None):
        self.top = top              # the manifest the reference names (index or image)
        self.image = image          # the selected image manifest
        self.platform = platform    # "os/arch[/variant]" of the selection
        self.leaves = leaves or []  # [(Platform, descriptor)] of every image in the index
        self.config_bytes = None

    @property
    def digest(self):
        return self.top.digest

    @property
    def manifest_digest(self):
        return self.image.digest

    @property
    def config_digest(self):
        return self.image.config.get("digest")

    @property
    def platforms(self):
        return [str(p) for p, _d in self.leaves]


def _try_select(candidates, want):
    """select()'s choice, or None when nothing matches."""
    try:
        return select(candidates, want)
    except PlatformError:
        return None


class RegistryClient:
    """Talks to one repository of one registry."""

    def __init__(self, reference, credentials=None, validate_certs=True, ca_path=None, client_cert=None,
                 client_key=None, timeout=60, retries=3, warn=None, transport=None, tls_for_host=None,
                 store=None, offline=False, mirrors=None):
        self.reference = reference
        self.store = store
        self.offline = offline
        if offline and store is None:
            raise OfflineError("offline mode needs cache_dir (the blob store to work from)")
        self.warnings = []
        self._warned = set()
        self._user_warn = warn
        self.credentials = credentials or Credentials()
        self.transport = transport or Transport(
            timeout=timeout, retries=retries, validate_certs=validate_certs, ca_path=ca_path,
            client_cert=client_cert, client_key=client_key, warn=self.warn, tls_for_host=tls_for_host)
        self._base_url = None
        self._auth = None
        self._base_lock = threading.Lock()
        self.source = None
        # registry mirrors serve Docker Hub content only; each gets its own (anonymous) authentication state
        self._mirrors = []
        if mirrors and reference.is_docker_hub:
            for url in mirrors:
                scheme, host = parse_registry_url(url)
                base = "%s://%s" % (scheme, host)
                self._mirrors.append([base, Authenticator(self.transport, base, Credentials()), True])
        self.scope = "repository:%s:pull" % reference.repository
        self._heads = {}
        self._by_digest = {}     # manifests fetched in this run
        self._probed = {}        # digest of a platform-less index entry -> (Platform or None, config bytes)

    # ------------------------------------------------------------------ plumbing
    def warn(self, message):
        if message in self._warned:
            return
        self._warned.add(message)
        self.warnings.append(message)
        if self._user_warn:
            self._user_warn(message)

    @property
    def bytes_downloaded(self):
        return self.transport.bytes_downloaded

    def request_counts(self):
        """Requests sent so far by kind (head, manifest_get, blob_get, token, other)."""
        return dict(self.transport.counts)

    def add_downloaded(self, count):
        self.transport.add_downloaded(count)

    @property
    def base_url(self):
        with self._base_lock:
            return self._base()

    def _base(self):
        if self._base_url is None:
            self._base_url = self._discover_base_url()
            self._auth = Authenticator(self.transport, self._base_url, self.credentials)
        return self._base_url

    def _discover_base_url(self):
        candidates = self.reference.base_urls()
        if len(candidates) == 1:
            return candidates[0]
        # loopback registry named in the image: https first, then plain http, like docker
        first, fallback = candidates
        verdict = self.transport.speaks_tls(first)
        if verdict is False:
            return fallback
        try:
            response = self.transport.request("GET", first + "/v2/", retry=False)
            response.close()
            return first
        except TransportError as exc:
            if exc.tls and not exc.plain_http:
                raise
            return fallback

    def _request(self, method, path, headers=None, stream=True, retry=True):
        """Send a request to the registry (mirrors first for Docker Hub), handling authentication."""
        for mirror in self._mirrors:
            base, auth, alive = mirror
            if not alive:
                continue
            try:
                response = self._send(base, auth, method, path, headers, stream, retry)
            except TransportError as exc:
                mirror[2] = False
                self.warn("registry mirror %s is not usable (%s); not trying it again" % (base, exc.msg))
                continue
            if response.status_code in (200, 206, 416):
                self.source = base
                return response
            response.close()
        base = self.base_url
        response = self._send(base, self._auth, method, path, headers, stream, retry)
        self.source = base
        return response

    def _send(self, base, auth, method, path, headers, stream, retry=True):
        url = base + path
        auth_origin = origin(base)
        response = None
        for _attempt in range(3):
            send = dict(headers or {})
            value = auth.header(self.scope)
            if value:
                send["Authorization"] = value
            response = self.transport.request(method, url, headers=send, stream=stream, auth_origin=auth_origin,
                                              retry=retry)
            self._collect_warnings(response)
            if response.status_code == 401:
                self._refuse_foreign_challenge(response, auth_origin)
                if auth.challenge(response, self.scope, bool(value)):
                    response.close()
                    continue
            break
        return response

    def _refuse_foreign_challenge(self, response, auth_origin):
        """A 401 from another origin than the registry's (a redirect target: object storage, an open
        redirect) never changes the registry's authentication state nor receives its credentials."""
        answered = origin(response.url) if getattr(response, "url", None) else auth_origin
        if answered != auth_origin:
            response.close()
            raise AuthenticationError(
                "%s redirected the request to %s, which asks for credentials (HTTP 401); the credentials for %s "
                "are never sent to another host" % (self.reference.display_registry, safe_url(response.url),
                                                    self.reference.display_registry), status=401)

    def _collect_warnings(self, response):
        for value in response.headers.get("Warning", "").split(","):
            match = _WARNING_RE.match(value) if value else None
            if match:
                self.warn("registry warning: %s" % match.group(1).replace('\\"', '"'))

    def _error(self, response, what):
        """Turn a failed response into the right RegistryError."""
        status = response.status_code
        body = self._error_body(response)
        response.close()
        if status == 400 and b"HTTP request to an HTTPS server" in body:
            return TransportError("%s speaks https, not http: use an https:// registry URL (or leave the "
                                  "scheme out)" % self.reference.display_registry, status=status)
        codes, suffix = self._error_summary(body)
        registry = self.reference.display_registry
        repo = self.reference.repository
        if status == 404 or not codes.isdisjoint(_NOT_FOUND_CODES):
            return NotFound("%s not found in %s on %s%s" % (what, repo, registry, suffix), status=status)
        if status == 429 or "TOOMANYREQUESTS" in codes:
            return self._rate_limited(response, what, suffix)
        if status == 401 or "UNAUTHORIZED" in codes:
            return self._unauthorized(status, suffix)
        if status == 403 or "DENIED" in codes:
            return AuthenticationError("%s denied access to %s%s" % (registry, repo, suffix), status=status)
        return self._http_error(response, what, suffix)

    def _error_body(self, response):
        """The (capped) body of an error answer; empty for a HEAD or when it cannot be read."""
        if response.request is None or response.request.method == "HEAD":
            return b""
        try:
            return self.transport.read_body(response, MAX_ERROR_BODY, "the error answer")
        except TransportError:
            return b""

    @classmethod
    def _error_summary(cls, body):
        """(the upper-cased error codes, `` (message)`` or "") of an error answer's body."""
        errors, message = cls._error_details(body)
        return set(str(e.get("code", "")).upper() for e in errors), (" (%s)" % message[:500]) if message else ""

    @staticmethod
    def _error_details(body):
        """(the error objects of a registry's error answer, its message): ``{"errors": [{code, message}]}``
        (the message then joins them) or ``{"message": ...}``; ([], "") for anything else."""
        if not body:
            return [], ""
        try:
            data = jsonutil.loads(body, "the error answer", limit=MAX_ERROR_BODY)
        except ManifestError:
            return [], ""
        errors = [e for e in jsonutil.get_list(data, "errors") if isinstance(e, dict)]
        if errors:
            return errors, "; ".join("%s: %s" % (e.get("code", "?"), e.get("message", "")) for e in errors)
        message = data.get("message")
        return [], message if isinstance(message, str) else ""

    def _http_error(self, response, what, suffix):
        tries = getattr(response, "tries", 1)
        after = (" (after %d tries)" % tries) if tries > 1 else ""
        return TransportError("%s answered HTTP %d for %s%s%s" % (self.reference.display_registry, response.status_code,
                                                                  what, after, suffix), status=response.status_code)

    def _rate_limited(self, response, what, suffix):
        limits = ["%s: %s" % (header, response.headers[header])
                  for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
                  if response.headers.get(header)]
        return RateLimited("%s is rate limiting requests for %s (HTTP 429, still after %d retries)%s%s" % (
            self.reference.display_registry, what, self.transport.retries, suffix,
            (" [" + ", ".join(limits) + "]") if limits else ""))

    def _unauthorized(self, status, suffix):
        registry = self.reference.display_registry
        repo = self.reference.repository
        if self.credentials.empty:
            return AuthenticationError(
                "%s requires authentication to pull %s (or the repository does not exist); give username "
                "and password or token, or log in with docker login%s" % (registry, repo, suffix), status=status)
        source = (" from " + self.credentials.source) if self.credentials.source else ""
        return AuthenticationError("%s rejected the credentials%s for %s (or the repository does not "
                                   "exist)%s" % (registry, source, repo, suffix), status=status)

    def _fetch_small(self, path, headers, limit, what):
        """GET a small body, retrying transient failures of the body too."""
        attempt = 0
        while True:
            response = self._request("GET", path, headers=headers)
            if response.status_code != 200:
                raise self._error(response, what)
            try:
                return response, self.transport.read_body(response, limit, what)
            except TransportError as exc:
                if exc.too_large:
                    raise ManifestError("%s is larger than the %d MiB limit" % (what, limit // (1024 * 1024)))
                if not exc.retryable or attempt >= self.transport.retries:
                    raise
                attempt += 1
                self.warn("%s; retrying" % exc.msg)

    # ------------------------------------------------------------------ manifests
    def head_manifest(self, ref=None):
        """(digest, media_type, size) from a HEAD request, or None when the registry does not say."""
        ref = ref or self.reference.ref
        if self.offline:
            return None
        if ref not in self._heads:
            self._heads[ref] = self._head(ref)
        return self._heads[ref]

    def _head(self, ref):
        response = self._request("HEAD", "/v2/%s/manifests/%s" % (self.reference.repository, ref),
                                 headers={"Accept": ACCEPT})
        if response.status_code in (404, 401, 403, 429):
            raise self._error(response, "manifest %s" % ref)
        response.close()
        digest = response.headers.get("Docker-Content-Digest")
        if response.status_code != 200 or not is_digest(digest) or (":" in ref and digest != ref):
            return None
        ctype = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        try:
            size = int(response.headers.get("Content-Length", "-1"))
        except ValueError:
            size = -1
        return digest, ctype, size

    def get_manifest(self, ref=None, what=None):
        """Fetch and verify a manifest (tag or digest)."""
        ref = ref or self.reference.ref
        what = what or "manifest %s" % ref
        if self.store is not None:
            stored = self._stored_manifest(ref, what)
            if stored is None and ":" not in ref and not self.offline:
                stored = self._stored_by_head(ref, what)
            if stored is not None:
                return self._noted(stored, what)
        response, raw = self._fetch_small("/v2/%s/manifests/%s" % (self.reference.repository, ref),
                                          {"Accept": ACCEPT}, MAX_MANIFEST_SIZE, what)
        expected = ref if ":" in ref else None
        manifest = parse_manifest(raw, response.headers.get("Content-Type"), expected, what)
        header = response.headers.get("Docker-Content-Digest")
        if not expected and header and header != manifest.digest:
            self.warn("the registry announced digest %s for %s but the bytes received hash to %s; using %s"
                      % (header, what, manifest.digest, manifest.digest))
        if self.store is not None:
            self.store.put_bytes(manifest.stored_bytes, manifest.digest)
            if ref == self.reference.ref:
                self.store.record_image(self._store_name(ref), manifest.descriptor())
        return self._noted(manifest, what)

    def _noted(self, manifest, what):
        """Warn about a schema 1 manifest (once per run) and keep it for the run by digest."""
        if manifest.is_schema1:
            self.warn(SCHEMA1_WARNING % ("%s (%s)" % (self.reference, what)))
        self._by_digest[manifest.digest] = manifest
        return manifest

    def _store_name(self, ref):
        if ":" in ref:
            return "%s@%s" % (self.reference.name, ref)
        return "%s:%s" % (self.reference.name, ref)

    def _stored_by_head(self, tag, what):
        """The manifest a tag names now (a HEAD request) when the store holds it: no GET."""
        head = self.head_manifest(tag)
        if head is None:
            return None
        stored = self._stored_manifest(head[0], what, head[1])
        if stored is not None and tag == self.reference.ref:
            self.store.record_image(self._store_name(tag), stored.descriptor())
        return stored

    def _stored_manifest(self, ref, what, media_type=None):
        """A manifest from the store: by digest always, by tag only offline (a tag can move)."""
        digest = ref if ":" in ref else None
        if digest is None:
            if not self.offline:
                return None
            entry = self.store.lookup_image(self._store_name(ref))
            if entry is None:
                raise OfflineError("offline: %s is not in the blob store %s; fetch it once with offline=false"
                                   % (self.reference, self.store.path))
            digest, media_type = entry.get("digest"), entry.get("mediaType")
        raw = self.store.read_bytes(digest, MAX_MANIFEST_SIZE)
        if raw is None:
            if self.offline:
                raise OfflineError("offline: %s (%s) is missing from the blob store %s" % (what, digest,
                                                                                           self.store.path))
            return None
        return parse_manifest(raw, media_type, digest, what)

    def index_entries(self, index, depth=0):
        """[(Platform or None, descriptor)] of every image entry of an index, in order, nested indexes followed;
        attestations and platform-less artifacts are left out; None: the entry names no platform."""
        found = []
        for descriptor in index.manifests:
            if not isinstance(descriptor, dict) or is_attestation(descriptor):
                continue
            media_type = descriptor.get("mediaType")
            if media_type in INDEX_TYPES:
                found.extend(self.index_entries(self._nested_index(descriptor, depth), depth + 1))
            elif media_type in IMAGE_TYPES or media_type is None:
                plat = descriptor_platform(descriptor)
                if plat is None and descriptor.get("artifactType"):
                    continue
                found.append((plat, descriptor))
        return found

    def _nested_index(self, descriptor, depth):
        if depth >= MAX_INDEX_DEPTH:
            raise ManifestError("image indexes are nested more than %d deep" % MAX_INDEX_DEPTH)
        nested = self.manifest_by_digest(descriptor.get("digest"), "nested index %s" % descriptor.get("digest"))
        if not nested.is_index:
            raise ManifestError("index entry %s is not an index" % descriptor.get("digest"))
        return nested

    def manifest_by_digest(self, digest, what=None):
        """A manifest by digest, fetched at most once per run."""
        found = self._by_digest.get(digest)
        return found if found is not None else self.get_manifest(digest, what)

    def entry_platform(self, descriptor):
        """The platform of an index entry that names none, read from its image's config as containerd does
        (None for an artifact, an index, or a config without os/architecture); fetched once per run."""
        digest = descriptor["digest"]
        if digest not in self._probed:
            self._probed[digest] = self._probe(digest)
        return self._probed[digest][0]

    def _probe(self, digest):
        manifest = self.manifest_by_digest(digest, "manifest %s (an index entry without platform)" % digest)
        if manifest.is_schema1:
            return Platform.from_dict(manifest.schema1.platform), None
        if not manifest.is_image or manifest.is_artifact or not manifest.config.get("digest"):
            return None, None
        config_bytes = self.get_blob_bytes(manifest.config, MAX_CONFIG_SIZE, "config")
        plat = Platform.from_dict(parse_config(config_bytes, "config %s" % manifest.config["digest"]))
        return (plat if plat.os and plat.architecture else None), config_bytes

    def leaves(self, index, until=None):
        """[(Platform, descriptor)] of every runnable image of an index, in order; entries without platform
        get their config's. With ``until`` (a wanted Platform), configs are read only until one matches it
        exactly (the entries after it are left out)."""
        found = []
        for plat, descriptor in self.index_entries(index):
            if plat is None:
                plat = self.entry_platform(descriptor)
                if plat is not None and until is not None and until.rank(plat) == 0:
                    found.append((plat, descriptor))
                    break
            if plat is not None:
                found.append((plat, descriptor))
        return found

    def resolve(self, platform=None, check_config=True, list_platforms=False):
        """Resolve the reference to one image manifest for ``platform`` (a Platform; default: this host).

        Index entries that name no platform are matched by their config's, read only when no entry that
        names one matches, or when ``list_platforms`` asks for every platform (``Resolved.platforms``).
        For a single-platform image the config is fetched to check its os/architecture, unless
        ``check_config`` is false (check mode fetches no blob); a schema 1 manifest names its platform itself.
        """
        want = platform or host_platform()
        top = self.get_manifest()
        if top.is_index:
            return self._resolve_index(top, want, list_platforms)
        resolved = Resolved(top, top, None)
        if top.is_schema1:
            self._single_platform(resolved, Platform.from_dict(top.schema1.platform), want)
            return resolved
        if not check_config or top.is_artifact:
            return resolved
        self._single_platform(resolved, Platform.from_dict(self.get_config(resolved)), want)
        return resolved

    def _single_platform(self, resolved, plat, want):
        if plat.os and plat.architecture:
            resolved.platform = str(plat)
            resolved.leaves = [(plat, resolved.top.descriptor())]
            if want.rank(plat) is None:
                raise PlatformError("the image %s is for %s only, not for %s; set platform to %s to fetch it anyway"
                                    % (self.reference, plat, want, plat))

    def _resolve_index(self, top, want, list_platforms):
        entries = self.index_entries(top)
        leaves = [(plat, descriptor) for plat, descriptor in entries if plat is not None]
        chosen = _try_select(leaves, want)
        if len(leaves) < len(entries) and (chosen is None or list_platforms):
            leaves = self.leaves(top, until=None if list_platforms else want)
            chosen = chosen or _try_select(leaves, want)
        plat, descriptor = chosen or select(leaves, want)   # select raises, listing what is on offer
        digest = descriptor["digest"]
        image = self.manifest_by_digest(digest, "manifest %s (%s)" % (digest, plat))
        if image.is_index:
            raise ManifestError("index entry %s is itself an index" % digest)
        resolved = Resolved(top, image, str(plat), leaves)
        resolved.config_bytes = self._probed.get(digest, (None, None))[1]
        return resolved

    def resolve_all(self, top=None):
        """Every image of the reference (or of ``top``, its manifest when already fetched): [(platform text,
        image Manifest)] plus the top manifest. An artifact has no platform (None)."""
        top = top or self.get_manifest()
        if not top.is_index:
            if top.is_schema1:
                return top, [(str(Platform.from_dict(top.schema1.platform)), top)]
            if top.is_artifact:
                return top, [(None, top)]
            config = parse_config(self.get_blob_bytes(top.config, MAX_CONFIG_SIZE, "config"),
                                  "config %s" % top.config.get("digest"))
            return top, [(str(Platform.from_dict(config)), top)]
        images = []
        for plat, descriptor in self.leaves(top):
            images.append((str(plat), self.manifest_by_digest(descriptor["digest"])))
        return top, images

    # ------------------------------------------------------------------ referrers
    def referrers(self, digest):
        """The descriptors of the manifests whose ``subject`` is ``digest`` (OCI 1.1: signatures, SBOMs,
        attestations): from the referrers API, else (a registry without it) from the index tagged
        ``<algorithm>-<hex>`` that clients pushing referrers keep; [] when there are none."""
        if self.offline:
            raise OfflineError("offline: the referrers of %s cannot be looked up in the blob store" % digest)
        found = self._referrers_api(digest)
        if found is None:
            found = self._referrers_tag(digest)
        return [check_descriptor(entry, "referrer %d of %s" % (position, digest))
                for position, entry in enumerate(found)]

    def _referrers_api(self, digest):
        """The referrers API's answer (every page), or None when the registry does not offer the API."""
        what = "the referrers of %s" % digest
        path = "/v2/%s/referrers/%s" % (self.reference.repository, digest)
        found = []
        seen = set()
        while path and path not in seen:
            seen.add(path)
            response = self._request("GET", path, headers={"Accept": OCI_INDEX})
            if response.status_code in _NO_REFERRERS_API and not found:
                response.close()
                return None
            if response.status_code != 200:
                raise self._error(response, what)
            data = jsonutil.loads(self.transport.read_body(response, MAX_MANIFEST_SIZE, what), what,
                                  limit=MAX_MANIFEST_SIZE)
            found.extend(jsonutil.get_list(data, "manifests"))
            path = self._next_page(response, path)
        return found

    def _referrers_tag(self, digest):
        algorithm, _sep, encoded = digest.partition(":")
        tag = "%s-%s" % (algorithm[:32], encoded[:64])
        try:
            index = self.get_manifest(tag, "the referrers tag %s" % tag)
        except NotFound:
            return []
        if not index.is_index:
            raise ManifestError("the referrers tag %s of %s names a %s, not an index" % (tag, digest, index.media_type))
        return index.manifests

    # ------------------------------------------------------------------ blobs
    def get_blob_bytes(self, descriptor, limit=MAX_CONFIG_SIZE, what="blob"):
        """Fetch a small blob (a config) and verify its digest and size."""
        digest = descriptor["digest"] if isinstance(descriptor, dict) else descriptor
        size = descriptor.get("size") if isinstance(descriptor, dict) else None
        if isinstance(size, int) and size > limit:
            raise ManifestError("%s %s is larger than the %d MiB limit" % (what, digest, limit // (1024 * 1024)))
        if self.store is not None:
            data = self.store.read_bytes(digest, limit)
            if data is not None:
                return data
            if self.offline:
                raise OfflineError("offline: %s %s is missing from the blob store %s" % (what, digest, self.store.path))
        _response, data = self._fetch_small("/v2/%s/blobs/%s" % (self.reference.repository, digest),
                                            {"Accept-Encoding": "identity"}, limit, "%s %s" % (what, digest))
        verify_digest(data, digest, "%s %s" % (what, digest))
        if isinstance(size, int) and size != len(data):
            raise DigestMismatch("%s %s has %d bytes, its descriptor says %d" % (what, digest, len(data), size))
        if self.store is not None:
            self.store.put_bytes(data, digest)
        return data

    def get_config(self, resolved):
        """The config JSON (parsed) of a resolved image; the bytes stay in ``resolved.config_bytes``."""
        if resolved.config_bytes is None:
            config_descriptor = resolved.image.config
            if not config_descriptor.get("digest"):
                raise ManifestError("manifest %s has no config digest" % resolved.image.digest)
            resolved.config_bytes = self.get_blob_bytes(config_descriptor, MAX_CONFIG_SIZE, "config")
        return parse_config(resolved.config_bytes, "config %s" % resolved.config_digest)

    def open_blob(self, digest, offset=0):
        """Start streaming a blob (raw bytes, no content decoding). Returns the response (200 or 206)."""
        if self.offline:
            raise OfflineError("offline: blob %s is missing from the blob store %s" % (digest, self.store.path))
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = "bytes=%d-" % offset
        response = self._request("GET", "/v2/%s/blobs/%s" % (self.reference.repository, digest), headers=headers)
        if response.status_code in (200, 206):
            return response
        if response.status_code == 416 and offset:
            response.close()
            return response
        raise self._error(response, "blob %s" % digest)

    def blob_range(self, digest, start, end):
        """Bytes ``start``..``end`` (inclusive) of a blob, or None when the registry does not answer the range
        exactly (no 206, another Content-Range, a short body, a broken connection while reading it). Sent
        once, without retries; an error answer raises like ``open_blob``. A 200 with the whole blob is closed
        unread."""
        if self.offline:
            return None
        want = end - start + 1
        headers = {"Accept-Encoding": "identity", "Range": "bytes=%d-%d" % (start, end)}
        response = self._request("GET", "/v2/%s/blobs/%s" % (self.reference.repository, digest), headers=headers,
                                 retry=False)
        try:
            if response.status_code not in (200, 206, 416):
                raise self._error(response, "blob %s" % digest)
            content_range = (response.headers.get("Content-Range") or "").strip()
            if response.status_code != 206 or not content_range.startswith("bytes %d-%d/" % (start, end)):
                return None
            try:
                data = response.raw.read(want + 1, decode_content=False)
            except stream_errors():
                return None
            return data if len(data) == want else None
        finally:
            response.close()

    def open_url(self, url, offset=0):
        """Stream a blob from a foreign URL, never with registry credentials."""
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = "bytes=%d-" % offset
        response = self.transport.request("GET", url, headers=headers, stream=True, auth_origin="none:")
        if response.status_code in (200, 206):
            return response
        response.close()
        raise TransportError("%s answered HTTP %d" % (safe_url(url), response.status_code))

    def list_tags(self, limit=None):
        """The repository's tags, sorted, at most ``limit`` (None: all).

        Follows ``Link: <...>; rel="next"`` pagination (relative links, and absolute ones on the origin that
        served the page). With ``limit`` the first page is asked for with ``n=limit`` (at most 1000) and no
        further page is fetched once ``limit`` tags are in; a registry that rejects ``n`` (HTTP 400) is asked
        again without it. Registries that do not paginate (distribution 2.8 ignores ``n`` and ``last`` and
        answers every tag, unsorted) give everything in one answer; sorting before the cap makes both kinds
        return the same tags (paginating registries answer in lexical order).
        """
        base = "/v2/%s/tags/list" % self.reference.repository
        path = base + ("?n=%d" % min(limit, MAX_TAG_PAGE) if limit else "")
        tags = []
        seen = set()
        while path and path not in seen and len(seen) < MAX_TAG_PAGES:
            seen.add(path)
            try:
                response, raw = self._fetch_small(path, {"Accept": "application/json"}, MAX_TAG_LIST_SIZE,
                                                  "tag list")
            except TransportError as exc:
                if exc.status == 400 and path != base and len(seen) == 1:
                    path = base   # the registry does not take this page size: ask for its default pages
                    continue
                raise
            data = jsonutil.loads(raw, "the tag list of %s" % self.reference.repository, limit=MAX_TAG_LIST_SIZE)
            tags.extend(t for t in jsonutil.get_list(data, "tags") if isinstance(t, str))
            if limit and len(tags) >= limit:
                break
            path = self._next_page(response, path)
        tags = sorted(set(tags))
        return tags[:limit] if limit else tags

    def _next_page(self, response, current):
        """The path (with query) of the next tag list page from a ``Link`` header, or None."""
        for part in response.headers.get("Link", "").split(","):
            match = re.match(r'\s*<([^>]*)>(.*)$', part)
            if not match or not re.search(r'(?i);\s*rel\s*=\s*"?next"?', match.group(2)):
                continue
            target = urljoin((self.source or self.base_url) + current, match.group(1).strip())
            served = origin(self.source or self.base_url)
            if origin(target) != served:
                self.warn("the tag list links its next page on another host (%s); stopping there"
                          % safe_url(target))
                return None
            parts = urlsplit(target)
            if not parts.path.startswith("/v2/"):
                return None
            return parts.path + ("?" + parts.query if parts.query else "")
        return None

    def close(self):
        self.transport.close()
