# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Build a registry client from the shared option names, for plugins that run on the controller.

Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

The controller-side adapter of the option adapter ``module_utils/_registry/options.py``: the same checks and
the same client construction as the modules, from a plain mapping (a lookup's or an action's options).

``build_client(mapping, warn=None, secret=None) -> (reference, client)``
    ``mapping`` holds the shared option names (``image``, ``registry``, ``tag``, ``username``, ``password``,
    ``token``, ``docker_config``, ``validate_certs``, ``ca_path``, ``client_cert``, ``client_key``,
    ``timeout``, ``retries``, ``registry_mirrors``); missing keys take the modules' defaults. Bad values raise
    ``InvalidReference`` (a ``RegistryError``) with a clear message. ``secret(value)`` is called for every
    secret that will be used (given or found in the credential stores), so the caller can hide it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry import options as adapter
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import InvalidReference


def build_client(mapping, warn=None, secret=None):
    """(reference, RegistryClient) for ``mapping`` (see the module docstring); no blob store is opened."""
    secret = secret or (lambda value: None)
    for key in ("password", "token"):
        if mapping.get(key):
            secret(mapping[key])
    values = adapter.mask_credentials(dict(mapping))
    for name in ("image", "registry"):
        if adapter.MASK in str(values.get(name) or ""):
            raise InvalidReference("%s must not contain credentials (user:password@); give username and password "
                                   "(or token) instead" % name)
    options = adapter.ClientOptions.from_mapping(values)
    return adapter.build_client(options, warn=warn, secret=secret, store=None)
