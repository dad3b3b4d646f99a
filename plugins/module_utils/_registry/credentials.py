# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Stored credentials and per-host TLS material.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Credentials


def lookup(reference, docker_config=None, warn=None):
    """Credentials for ``reference`` from the user's credential stores (none yet: anonymous)."""
    return Credentials()


def tls_for_url(url):
    """Per-host CA / client certificate found in certs.d directories (none yet)."""
    return None
