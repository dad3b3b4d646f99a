# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Guarded imports of third-party libraries.

PRIVATE to the hocker.registry collection: may change at any time.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import MissingLibrary

try:
    import requests  # noqa: F401
    import requests.adapters  # noqa: F401
    import requests.exceptions  # noqa: F401
    REQUESTS_IMPORT_ERROR = None
    HAS_REQUESTS = True
except ImportError:
    requests = None
    REQUESTS_IMPORT_ERROR = traceback.format_exc()
    HAS_REQUESTS = False


def require_requests():
    """Return the requests module or raise MissingLibrary."""
    if not HAS_REQUESTS:
        raise MissingLibrary("requests", REQUESTS_IMPORT_ERROR)
    return requests


def require_zstandard():
    """Import zstandard lazily (only zstd layers need it)."""
    try:
        import zstandard
    except ImportError:
        raise MissingLibrary("zstandard", traceback.format_exc(), reason="to read zstd-compressed layers")
    return zstandard
