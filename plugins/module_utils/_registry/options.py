# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The shared options as one object, and client construction as a pure function of it.

PRIVATE to the hocker.registry collection: may change at any time.

Modules (through ``_module.RegistryModule``) and controller-side plugins (lookups, actions) turn their
options into a mapping, call ``ClientOptions.from_mapping`` (every check of values lives here, with one
clear message each) and ``build_client``. Nothing here imports Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from dataclasses import dataclass, field, fields
from typing import Optional, Tuple

from ansible_collections.hocker.registry.plugins.module_utils._registry import _compat, credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.client import RegistryClient
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import host_platform, parse_platform
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore

TIMEOUT_RANGE = (1, 3600)
RETRIES_RANGE = (0, 100)
PATH_OPTIONS = ("docker_config", "ca_path", "client_cert", "client_key", "cache_dir")


MASK = "<credentials removed>"


def _split_scheme(value):
    scheme, sep, rest = value.partition("://")
    return (scheme + sep, rest) if sep else ("", value)


def url_without_credentials(value):
    """A registry URL with any ``user:password@`` replaced by a marker, so that a password typed into it is
    never echoed; the marker makes the adapter refuse the value with a clear message. A registry URL holds
    no other ``@``: everything up to the last one is the user part (a password may hold ``@`` too)."""
    if not isinstance(value, str) or "@" not in value:
        return value
    scheme, rest = _split_scheme(value)
    return scheme + MASK + rest[rest.rfind("@"):]


def image_without_credentials(value):
    """An image reference with ``user:password@`` (typed before a registry host) masked, as above: the user
    part ends at the last ``@`` that a ``/`` follows (a digest's ``@`` has none after it)."""
    if not isinstance(value, str) or "@" not in value:
        return value
    scheme, rest = _split_scheme(value)
    ends = [i for i, char in enumerate(rest) if char == "@" and "/" in rest[i + 1:]]
    if not ends:
        return value
    return scheme + MASK + rest[ends[-1]:]


def mask_credentials(params):
    """Mask credentials typed into the URL-like options of a raw parameter mapping, in place."""
    for name in ("image", "name"):
        if name in params:
            params[name] = image_without_credentials(params[name])
    if "registry" in params:
        params["registry"] = url_without_credentials(params["registry"])
    if isinstance(params.get("registry_mirrors"), list):
        params["registry_mirrors"] = [url_without_credentials(m) for m in params["registry_mirrors"]]
    return params


def _int_in_range(name, value, bounds):
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidReference("%s must be a whole number from %d to %d, got %r" % (name, low, high, value))
    if not low <= value <= high:
        raise InvalidReference("%s must be from %d to %d, got %d" % (name, low, high, value))
    return value


def check_path(name, value):
    """A path option: None, or a non-empty string without NUL bytes."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidReference("%s must be a non-empty path" % name)
    if "\0" in value:
        raise InvalidReference("%s contains a NUL byte, which no path can hold" % name)
    return value


@dataclass(frozen=True)
class ClientOptions:
    """The options every module, the lookup and the role share (see the doc fragment)."""

    image: str = ""
    registry: Optional[str] = None
    tag: Optional[str] = None
    platform: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)
    docker_config: Optional[str] = None
    validate_certs: bool = True
    ca_path: Optional[str] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None
    timeout: int = 60
    retries: int = 3
    cache_dir: Optional[str] = None
    offline: bool = False
    registry_mirrors: Tuple[str, ...] = ()
    # not user options: where certs.d directories are looked for (None: the system and user defaults)
    certs_d_roots: Optional[Tuple[str, ...]] = None

    @classmethod
    def from_mapping(cls, mapping, **overrides):
        """Options from a mapping of option names (missing or None values take the defaults); every value is
        checked, bad ones raise InvalidReference with a clear message."""
        values = {}
        for spec in fields(cls):
            value = overrides.get(spec.name, mapping.get(spec.name))
            if value is not None:
                values[spec.name] = value
        values["timeout"] = _int_in_range("timeout", values.get("timeout", 60), TIMEOUT_RANGE)
        values["retries"] = _int_in_range("retries", values.get("retries", 3), RETRIES_RANGE)
        for name in PATH_OPTIONS:
            values[name] = check_path(name, values.get(name))
        for name in ("validate_certs", "offline"):
            if name in values:
                values[name] = bool(values[name])
        mirrors = values.get("registry_mirrors") or ()
        if isinstance(mirrors, str):
            mirrors = (mirrors,)
        values["registry_mirrors"] = tuple(mirrors)
        if values.get("certs_d_roots") is not None:
            values["certs_d_roots"] = tuple(values["certs_d_roots"])
        if bool(values.get("client_cert")) != bool(values.get("client_key")):
            raise InvalidReference("client_cert and client_key go together: give both or neither")
        if values.get("token") and (values.get("username") or values.get("password")):
            raise InvalidReference("token and username/password exclude each other: give one kind of credentials")
        if values.get("username") and values.get("password") is None:
            raise InvalidReference("username needs password")
        if values.get("offline") and not values.get("cache_dir"):
            raise InvalidReference("offline needs cache_dir (the blob store to work from)")
        return cls(**values)

    # ---------------------------------------------------------------- what the options describe
    def reference(self):
        return parse_reference(self.image, self.registry, self.tag)

    @property
    def all_platforms(self):
        return (self.platform or "").strip().lower() == "all"

    def wanted_platform(self):
        """The Platform asked for, or this host's (``all`` is for the callers that allow it)."""
        if self.platform and not self.all_platforms:
            return parse_platform(self.platform)
        return host_platform()


def lookup_credentials(options, reference, warn=None, secret=None):
    """The credentials to use: the options', else those stored for the registry (docker config, helpers)."""
    if options.username or options.token:
        return Credentials(username=options.username, password=options.password, token=options.token,
                           source="the module options")
    found = credentials.lookup(reference, options.docker_config, warn)
    if secret is not None:
        for value in found.secrets():
            secret(value)
    return found


def open_store(options, check_mode=False, warn=None):
    """The blob store of ``cache_dir`` (None without one; check mode writes nothing, so it uses none unless
    offline, where the store is only read)."""
    if not options.cache_dir or (check_mode and not options.offline):
        return None
    return BlobStore(options.cache_dir, create=not options.offline, warn=warn)


_OPEN = object()


def tls_settings(options):
    """(ca_path, client_cert, client_key) for the transport; a certs.d-style directory given as ca_path
    becomes a CA bundle and, unless client_cert is set, the client pair it holds."""
    ca_path, cert, key = options.ca_path, options.client_cert, options.client_key
    if ca_path and os.path.isdir(ca_path):
        found = credentials.tls_from_directory(ca_path)
        if not found["ca_path"] and not found["client_cert"]:
            raise InvalidReference("ca_path %s is a directory without *.crt CA files or *.cert/*.key client pairs"
                                   % ca_path)
        ca_path = found["ca_path"]
        if not cert and found["client_cert"]:
            cert, key = found["client_cert"], found["client_key"]
    elif ca_path and not os.path.exists(ca_path):
        raise InvalidReference("ca_path %s does not exist (give a CA bundle file or a certs.d-style directory)"
                               % ca_path)
    return ca_path, cert, key


def build_client(options, warn=None, secret=None, check_mode=False, store=_OPEN):
    """(reference, RegistryClient) for ``options``.

    ``warn(message)`` receives warnings; ``secret(value)`` every secret found in credential stores (so the
    caller can hide it); ``store``: the blob store to use (None: none; default: ``open_store``).
    """
    _compat.require_requests()
    reference = options.reference()
    if store is _OPEN:
        store = open_store(options, check_mode, warn)
    creds = None if options.offline else lookup_credentials(options, reference, warn, secret)
    ca_path, cert, key = tls_settings(options)
    roots = options.certs_d_roots

    def tls_for_host(url):
        return credentials.tls_for_url(url, roots)

    client = RegistryClient(
        reference, credentials=creds, store=store, offline=options.offline,
        validate_certs=options.validate_certs, ca_path=ca_path, client_cert=cert, client_key=key,
        timeout=options.timeout, retries=options.retries, warn=warn, tls_for_host=tls_for_host,
        mirrors=list(options.registry_mirrors) or None)
    return reference, client


__all__ = ["ClientOptions", "build_client", "open_store", "lookup_credentials", "tls_settings", "check_path"]
