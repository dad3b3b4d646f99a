# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Errors raised by the registry client.

PRIVATE to the hocker.registry collection: may change at any time.

``str(error)`` is the message shown to users. It never contains credentials.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class RegistryError(Exception):
    """Base class of every error raised by the client. ``status``: the HTTP status behind it, if any."""

    def __init__(self, msg, status=None):
        super(RegistryError, self).__init__(msg)
        self.msg = msg
        self.status = status

    def __str__(self):
        return self.msg


class InvalidReference(RegistryError):
    """An image reference, registry URL, tag, digest or platform that cannot be used."""


class NotFound(RegistryError):
    """The repository, tag, manifest or blob does not exist (or is hidden from these credentials)."""


class AuthenticationError(RegistryError):
    """Credentials missing, wrong, or not allowed to pull."""


class RateLimited(RegistryError):
    """The registry kept answering 429 after every retry."""


class TransportError(RegistryError):
    """Connection, TLS, timeout, redirect or protocol failure.

    ``retryable``: a transient failure (connection reset, timeout) worth another attempt; ``tls``: the TLS
    handshake failed; ``plain_http``: the server answered a TLS handshake like a plain http server;
    ``too_large``: a body exceeded its size limit.
    """

    def __init__(self, msg, status=None, retryable=False, tls=False, plain_http=False, too_large=False):
        super(TransportError, self).__init__(msg, status=status)
        self.retryable = retryable
        self.tls = tls
        self.plain_http = plain_http
        self.too_large = too_large


class DigestMismatch(RegistryError):
    """Content did not hash to the digest it was requested by."""


class DiffIdMismatch(DigestMismatch):
    """A blob that matched its digest decompressed to a tar other than the config's diff_id says: the image
    itself is inconsistent (nothing fetched again can fix it)."""


class PlatformError(RegistryError):
    """No manifest for the requested platform."""


class ManifestError(RegistryError):
    """A manifest or config that is invalid, too large or of an unsupported kind."""


class OfflineError(RegistryError):
    """Offline mode and the blob store lacks something."""


class DestinationError(RegistryError):
    """A destination (``dest``, a work directory, the blob store) that cannot be read or written as asked:
    a missing directory, a non-regular file, a symlink, a full disk, no permission."""


class LimitExceeded(RegistryError):
    """A bound that protects the host was reached (a layer inflating beyond its limit, not enough space)."""


class NoSpace(LimitExceeded):
    """Not enough space left on a file system: the run may be resumed once there is (unlike a bomb)."""


class MissingLibrary(RegistryError):
    """A Python library needed for this operation is not installed."""

    def __init__(self, library, import_error=None, reason=None):
        msg = "the Python library %s is required%s" % (library, (" " + reason) if reason else "")
        super(MissingLibrary, self).__init__(msg)
        self.library = library
        self.import_error = import_error
