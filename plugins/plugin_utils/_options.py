# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Build a registry client from the shared option names, for plugins that run on the controller.

Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

A stand-in until the option adapter ``module_utils/_registry/options.py`` (``ClientOptions.from_mapping``,
``build_client``) is on the main branch: same inputs, same outputs, so switching is a two-line change.

``build_client(mapping, warn=None, secret=None) -> (reference, client)``
    ``mapping`` holds the shared option names (``image``, ``registry``, ``tag``, ``username``, ``password``,
    ``token``, ``docker_config``, ``validate_certs``, ``ca_path``, ``client_cert``, ``client_key``,
    ``timeout``, ``retries``, ``registry_mirrors``); missing keys take the modules' defaults. Bad values raise
    ``InvalidReference`` (a ``RegistryError``) with a clear message. ``secret(value)`` is called for every
    secret that will be used (given or found in the credential stores), so the caller can hide it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry import _compat, credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.client import RegistryClient
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference

DEFAULTS = {"validate_certs": True, "timeout": 60, "retries": 3}


def _get(mapping, key):
    value = mapping.get(key)
    return DEFAULTS.get(key) if value is None else value


def build_client(mapping, warn=None, secret=None):
    """(reference, RegistryClient) for ``mapping`` (see the module docstring)."""
    secret = secret or (lambda value: None)
    for key in ("password", "token"):
        if mapping.get(key):
            secret(mapping[key])
    timeout, retries = _get(mapping, "timeout"), _get(mapping, "retries")
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise InvalidReference("timeout must be a whole number of seconds from 1 to 3600, got %r" % (timeout,))
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidReference("retries must be a whole number of 0 or more, got %r" % (retries,))
    if bool(mapping.get("client_cert")) != bool(mapping.get("client_key")):
        raise InvalidReference("client_cert and client_key go together: give both or neither")
    if mapping.get("token") and (mapping.get("username") or mapping.get("password")):
        raise InvalidReference("token cannot be combined with username and password")
    if bool(mapping.get("username")) != bool(mapping.get("password")):
        raise InvalidReference("username and password go together: give both or neither")
    mirrors = mapping.get("registry_mirrors")
    if mirrors is not None and (not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors)):
        raise InvalidReference("registry_mirrors must be a list of URLs")

    reference = parse_reference(mapping.get("image"), mapping.get("registry") or None, mapping.get("tag") or None)
    if mapping.get("username") or mapping.get("token"):
        creds = Credentials(username=mapping.get("username"), password=mapping.get("password"),
                            token=mapping.get("token"), source="the lookup options")
    else:
        creds = credentials.lookup(reference, mapping.get("docker_config"), warn)
        for value in creds.secrets():
            secret(value)
    _compat.require_requests()
    client = RegistryClient(
        reference, credentials=creds, validate_certs=bool(_get(mapping, "validate_certs")),
        ca_path=mapping.get("ca_path"), client_cert=mapping.get("client_cert"), client_key=mapping.get("client_key"),
        timeout=timeout, retries=retries, warn=warn, tls_for_host=credentials.tls_for_url, mirrors=mirrors)
    return reference, client
