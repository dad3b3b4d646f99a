# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Image references: parsing and normalisation the way distribution/reference does it.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import validate_user_digest
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference

DOCKER_HUB_HOST = "registry-1.docker.io"
DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = _DOMAIN_COMPONENT + r"(?:\." + _DOMAIN_COMPONENT + r")*"
_IPV6 = r"\[[a-fA-F0-9:.]+\]"
_HOST_RE = re.compile(r"^(?:" + _DOMAIN_NAME + "|" + _IPV6 + r")(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
MAX_PATH_LENGTH = 255


def is_loopback_host(host):
    """True for localhost, 127.0.0.0/8 and ::1 (``host`` may carry a port or brackets)."""
    name = split_host_port(host)[0]
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host_port(host):
    """Split ``host[:port]`` / ``[v6]:port`` into (hostname without brackets, port or None)."""
    if host.startswith("["):
        end = host.find("]")
        name = host[1:end]
        rest = host[end + 1:]
        return name, (rest[1:] if rest.startswith(":") else None)
    if ":" in host:
        name, port = host.rsplit(":", 1)
        return name, port
    return host, None


def _check_host(host, original):
    if not _HOST_RE.match(host):
        raise InvalidReference("invalid registry host %r in %r" % (host, original))
    if host.startswith("["):
        name = split_host_port(host)[0]
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise InvalidReference("invalid IPv6 address %r in %r" % (name, original))
    port = split_host_port(host)[1]
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidReference("invalid port %r in %r" % (port, original))


def _check_path(path, original):
    if not path:
        raise InvalidReference("%r names no repository" % (original,))
    for component in path.split("/"):
        if not component:
            raise InvalidReference("invalid repository name %r in %r: empty path component" % (path, original))
        if not _PATH_COMPONENT_RE.match(component):
            if component.lower() != component:
                reason = "repository names must be lowercase"
            else:
                reason = "path components may only hold a-z, 0-9 and single separators . _ __ -"
            raise InvalidReference("invalid repository name %r in %r: %s" % (path, original, reason))
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidReference("repository name in %r is longer than %d characters" % (original, MAX_PATH_LENGTH))


def _looks_like_domain(component):
    return ("." in component or ":" in component or component == "localhost"
            or component.lower() != component)


def parse_registry_url(url):
    """Parse the ``registry`` option: ``[scheme://]host[:port][/v2[/]]`` -> (scheme, host)."""
    original = url
    if not isinstance(url, str) or not url.strip():
        raise InvalidReference("registry must be a URL such as https://registry.example.com")
    url = url.strip()
    scheme = "https"
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", url)
    if match:
        scheme = match.group(1).lower()
        url = match.group(2)
        if scheme not in ("http", "https"):
            raise InvalidReference("registry URL %r: only http:// and https:// are supported" % (original,))
    host, _sep, path = url.partition("/")
    path = path.strip("/")
    if path not in ("", "v2"):
        raise InvalidReference("registry URL %r: a registry URL has no path other than /v2/" % (original,))
    if "@" in host:
        raise InvalidReference("registry URL %r: credentials do not belong in the URL; use username/password"
                               % ("<redacted>",))
    _check_host(host, original)
    if host.lower() in DOCKER_HUB_ALIASES:
        host = DOCKER_HUB_HOST
    return scheme, host


class Reference:
    """A parsed, normalised image reference."""

    def __init__(self, registry, repository, tag=None, digest=None, scheme="https", display_registry=None):
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
        self.scheme = scheme
        # the registry as users name it (docker.io for Docker Hub)
        self.display_registry = display_registry or registry

    @property
    def ref(self):
        return self.digest or self.tag or "latest"

    @property
    def is_docker_hub(self):
        return self.registry == DOCKER_HUB_HOST

    @property
    def name(self):
        return "%s/%s" % (self.registry, self.repository)

    @property
    def familiar_name(self):
        if self.is_docker_hub:
            if self.repository.startswith("library/") and self.repository.count("/") == 1:
                return self.repository[len("library/"):]
            return self.repository
        return "%s/%s" % (self.display_registry, self.repository)

    @property
    def familiar(self):
        return "%s:%s" % (self.familiar_name, self.tag or "latest")

    @property
    def containerd_name(self):
        """The fully-qualified name containerd and docker's containerd store use (docker.io/library/x:tag)."""
        domain = "docker.io" if self.is_docker_hub else self.display_registry
        name = "%s/%s" % (domain, self.repository)
        if self.tag:
            return "%s:%s" % (name, self.tag)
        if self.digest:
            return "%s@%s" % (name, self.digest)
        return name + ":latest"

    def base_urls(self):
        if self.scheme == "auto":
            return ["https://" + self.registry, "http://" + self.registry]
        return ["%s://%s" % (self.scheme, self.registry)]

    def with_digest(self, digest):
        return Reference(self.registry, self.repository, self.tag, digest, self.scheme, self.display_registry)

    def __str__(self):
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        if not self.tag and not self.digest:
            text += ":latest"
        return text

    def __repr__(self):
        return "Reference(%r)" % str(self)


def parse_reference(image, registry=None, tag=None):
    """Parse ``image`` (and the optional ``registry`` URL and ``tag``) into a Reference.

    Raises InvalidReference with the reason for every rejection.
    """
    original = image
    image, digest = _split_digest(_checked_text(image), original)
    image, ref_tag = _split_reference_tag(image, original)
    domain, path = _split_host(image, original, registry)
    host, scheme, display = _locate(domain, registry, original)
    if host == DOCKER_HUB_HOST:
        display = "docker.io"
        if "/" not in path:
            path = "library/" + path
    _check_path(path, original)
    ref_tag = _merge_tag(ref_tag, tag, original)
    if ref_tag is None and digest is None:
        ref_tag = "latest"
    return Reference(host, path, ref_tag, digest, scheme, display)


def _checked_text(image):
    """``image`` stripped; not a string, empty, with whitespace inside or with a URL scheme is refused."""
    if not isinstance(image, str) or not image.strip():
        raise InvalidReference("image must be a non-empty image reference such as library/debian:12")
    original = image
    image = image.strip()
    if any(c.isspace() for c in image):
        raise InvalidReference("invalid image reference %r: it contains whitespace" % (original,))
    if "://" in image:
        raise InvalidReference("invalid image reference %r: give the registry URL in the registry option, "
                               "not in image" % (original,))
    return image


def _split_digest(image, original):
    """(the reference without ``@digest``, the digest or None)."""
    if "@" not in image:
        return image, None
    image, digest = image.split("@", 1)
    validate_user_digest(digest, "digest in %r" % (original,))
    return image, digest


def _split_reference_tag(image, original):
    """(the reference without ``:tag``, the tag or None)."""
    last_slash = image.rfind("/")
    last_colon = image.rfind(":")
    if last_colon <= last_slash:
        return image, None
    # a ":" after the last "/" separates a tag; but "[::1]:5000" alone has no path
    if image.startswith("[") and "]" in image[last_colon:] and last_slash < 0:
        return image, None
    ref_tag = image[last_colon + 1:]
    if not _TAG_RE.match(ref_tag):
        raise InvalidReference("invalid tag %r in %r: tags are up to 128 characters of "
                               "letters, digits, _ . - and cannot start with . or -" % (ref_tag, original))
    return image[:last_colon], ref_tag


def _split_host(image, original, registry):
    """(the registry host the name starts with or None, the repository path)."""
    if not image:
        raise InvalidReference("invalid image reference %r: no repository name" % (original,))
    if _IDENTIFIER_RE.match(image) and not registry:
        raise InvalidReference("invalid image reference %r: a 64-character hex string is an image ID, "
                               "not a repository name" % (original,))
    first, sep, rest = image.partition("/")
    if sep and _looks_like_domain(first):
        return first, rest
    if not sep and (image.startswith("[") or _looks_like_domain(image) and ":" in image):
        raise InvalidReference("invalid image reference %r: it names a registry but no repository" % (original,))
    return None, image


def _locate(domain, registry, original):
    """(host, scheme, display name or None) of the registry: the registry option, the name's domain or
    Docker Hub."""
    if registry:
        if domain is not None:
            raise InvalidReference("image %r names a registry (%s) while the registry option is set; give "
                                   "only the repository path in image" % (original, domain))
        scheme, host = parse_registry_url(registry)
        return host, scheme, host
    if domain is None or domain.lower() in DOCKER_HUB_ALIASES:
        return DOCKER_HUB_HOST, "https", None
    _check_host(domain, original)
    return domain, "auto" if is_loopback_host(domain) else "https", domain


def _merge_tag(ref_tag, tag, original):
    """The tag: the ``tag`` option (which must agree with a tag in the reference) or the reference's."""
    if tag is None:
        return ref_tag
    tag = str(tag).strip()
    if not _TAG_RE.match(tag):
        raise InvalidReference("invalid tag %r: tags are up to 128 characters of letters, digits, _ . -" % (tag,))
    if ref_tag is not None and ref_tag != tag:
        raise InvalidReference("image %r carries tag %r but the tag option says %r" % (original, ref_tag, tag))
    return tag


# names as docker, containerd and the archives write them (no validation beyond splitting)
def split_tag(reference):
    """Return (name, tag, digest) of a docker reference (no validation beyond splitting)."""
    digest = None
    if "@" in reference:
        reference, digest = reference.split("@", 1)
    name, tag = reference, None
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        name, tag = reference[:colon], reference[colon + 1:]
    return name, tag, digest


def split_domain(name):
    """(domain, path) of a name without tag or digest (no validation beyond splitting): the first component
    when it looks like a registry host (a "." or ":" in it - every ``[IPv6]`` address has one - or
    ``localhost``), else ``docker.io``; Docker Hub's other host names become ``docker.io``."""
    first, sep, rest = name.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        return "docker.io", name
    if first in ("index.docker.io", "registry-1.docker.io"):
        return "docker.io", rest
    return first, rest


def normalize_name(reference):
    """``hello-world:latest`` -> ``docker.io/library/hello-world:latest`` (see the module docstring)."""
    name, tag, digest = split_tag(reference)
    domain, path = split_domain(name)
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    result = domain + "/" + path
    if tag:
        result += ":" + tag
    if digest:
        result += "@" + digest
    if not tag and not digest:
        result += ":latest"
    return result


def repo_tag(reference):
    """Return (repository, tag) of a repo tag as docker writes it in ``repositories``."""
    name, tag, _digest = split_tag(reference)
    return name, tag or "latest"
