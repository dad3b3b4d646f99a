# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Content digests: validation, computation, verification and hashing of files.

PRIVATE to the hocker.registry collection: may change at any time.

Two strictness levels: ``is_digest`` accepts only what this collection can verify and use in a file name
(sha256/sha512 with lowercase hex of the right length), for every digest that comes from a registry or a
file; ``validate_user_digest`` explains to a user why a digest they typed is refused.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, InvalidReference, ManifestError)

ALGORITHMS = {"sha256": 64, "sha512": 128}
READ_SIZE = 1024 * 1024

_STRICT_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_GENERAL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_BARE_HEX_RE = re.compile(r"^[a-fA-F0-9]{64}$")


def is_digest(value):
    """True for a digest this collection can verify and use in file names (sha256/sha512, lowercase hex)."""
    return isinstance(value, str) and bool(_STRICT_RE.match(value))


def validate_user_digest(digest, what="digest"):
    """Return ``digest`` when it is usable, else raise InvalidReference saying why (for user input)."""
    if not isinstance(digest, str) or not _GENERAL_RE.match(digest):
        raise InvalidReference("invalid %s %r: expected sha256:<64 hex digits>" % (what, digest))
    algorithm, hexpart = digest.split(":", 1)
    if algorithm not in ALGORITHMS:
        raise InvalidReference("unsupported digest algorithm %r in %s (sha256 and sha512 are supported)"
                               % (algorithm, what))
    if len(hexpart) != ALGORITHMS[algorithm] or hexpart != hexpart.lower():
        raise InvalidReference("invalid %s %r: %s needs %d lowercase hex digits"
                               % (what, digest, algorithm, ALGORITHMS[algorithm]))
    return digest


def parse_user_digest(text, what="digest"):
    """A digest typed by a user: ``sha256:<hex>`` or hocker's bare 64 hex digits (sha256)."""
    value = (text or "").strip() if isinstance(text, str) else text
    if isinstance(value, str) and _BARE_HEX_RE.match(value):
        value = "sha256:" + value.lower()
    return validate_user_digest(value, what)


def split(digest):
    """(algorithm, hex) of a strict digest; ManifestError for anything else."""
    if not is_digest(digest):
        raise ManifestError("invalid digest %r" % (digest,))
    algorithm, _sep, hexpart = digest.partition(":")
    return algorithm, hexpart


def hexpart(digest):
    return split(digest)[1]


def compute(data, algorithm="sha256"):
    return "%s:%s" % (algorithm, hashlib.new(algorithm, data).hexdigest())


def verify(data, expected, what):
    """Check ``data`` against ``expected``; returns the digest or raises DigestMismatch."""
    algorithm = split(expected)[0]
    actual = compute(data, algorithm)
    if actual != expected:
        raise DigestMismatch("%s does not match its digest: expected %s, got %s" % (what, expected, actual))
    return actual


def hash_stream(handle, algorithm="sha256", out=None):
    """(digest, size) of what is left to read in a binary file object; ``out``: also write it there."""
    hasher = hashlib.new(algorithm)
    size = 0
    while True:
        block = handle.read(READ_SIZE)
        if not block:
            break
        hasher.update(block)
        if out is not None:
            out.write(block)
        size += len(block)
    return "%s:%s" % (algorithm, hasher.hexdigest()), size


def hash_file(path, algorithm="sha256"):
    """(digest, size) of a file's content."""
    with open(path, "rb") as handle:
        return hash_stream(handle, algorithm)


def file_digest(path, algorithm="sha256"):
    """The digest of a regular file, or None when ``path`` is not one."""
    if not path or not os.path.isfile(path):
        return None
    return hash_file(path, algorithm)[0]
