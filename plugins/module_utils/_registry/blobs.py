# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Streaming, verified, resumable blob downloads.

PRIVATE to the hocker.registry collection: may change at any time.

``download(client, descriptor, partial_path)`` streams a blob into ``partial_path`` in large reads with
constant memory, hashing the raw bytes as they arrive (``Accept-Encoding: identity``, never decoded),
resuming with ``Range`` after a broken connection (within ``retries``) and from an existing partial file
left by an earlier run (its bytes are re-hashed first). Only a 206 whose Content-Range starts at the offset is
appended to; a 200 restarts from zero. Each attempt re-requests the registry URL (a redirect target may have
expired). When the size and digest match, the partial file is complete; otherwise it is deleted and
DigestMismatch raised, so nothing unverified is ever used.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re

from ansible_collections.hocker.registry.plugins.module_utils._registry import _compat
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, NotFound, RegistryError, TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.transport import backoff_delay, safe_url

READ_SIZE = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


class DownloadResult:
    def __init__(self, digest, size, resumed, fetched):
        self.digest = digest
        self.size = size
        self.resumed = resumed      # bytes from an earlier attempt or run were kept
        self.fetched = fetched      # bytes received over the network


def _stream_errors():
    requests = _compat.require_requests()
    errors = [requests.exceptions.RequestException, OSError, IOError]
    try:
        import urllib3.exceptions
        errors.append(urllib3.exceptions.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _hash_existing(path, algorithm):
    hasher = hashlib.new(algorithm)
    size = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(READ_SIZE)
            if not block:
                break
            hasher.update(block)
            size += len(block)
    return hasher, size


def _range_start(response):
    match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def download(client, descriptor, partial_path, sources=None):
    """Download the blob ``descriptor`` into ``partial_path`` (resuming it). Returns DownloadResult.

    ``sources``: URLs to try before the registry (foreign layers); they get no registry credentials.
    """
    digest = descriptor["digest"]
    expected_size = descriptor.get("size")
    if not isinstance(expected_size, int) or expected_size < 0:
        expected_size = None
    algorithm = digest.split(":", 1)[0]
    if algorithm not in ("sha256", "sha512"):
        raise RegistryError("unsupported digest algorithm in %s" % digest)
    stream_errors = _stream_errors()
    retries = client.transport.retries
    urls = [u for u in (sources or []) if isinstance(u, str) and u.lower().startswith(("http://", "https://"))]

    hasher = hashlib.new(algorithm)
    offset = 0
    resumed = False
    if os.path.exists(partial_path):
        if expected_size is not None and os.path.getsize(partial_path) > expected_size:
            os.unlink(partial_path)
        else:
            hasher, offset = _hash_existing(partial_path, algorithm)
            resumed = offset > 0
    fetched = 0
    failures = 0
    url_index = 0
    while True:
        if expected_size is not None and offset == expected_size:
            break
        try:
            if url_index < len(urls):
                try:
                    response = client.open_url(urls[url_index], offset)
                except RegistryError as exc:
                    client.warn("could not fetch %s from %s (%s); trying the next source"
                                % (digest, safe_url(urls[url_index]), exc))
                    url_index += 1
                    continue
            else:
                response = client.open_blob(digest, offset)
        except NotFound:
            raise
        except TransportError as exc:
            raise TransportError("downloading %s failed: %s" % (digest, exc.msg))
        try:
            if response.status_code == 416:
                # the server says the range is not satisfiable: the partial file may be complete or bad
                response.close()
                if expected_size is None or offset >= expected_size:
                    break
                hasher, offset, resumed = hashlib.new(algorithm), 0, False
                _truncate(partial_path)
                continue
            if offset and response.status_code == 206 and _range_start(response) != offset:
                response.close()
                response = None
            if offset and (response is None or response.status_code == 200):
                # Range ignored (or answered for another offset): start again from zero
                if response is None:
                    response = client.open_blob(digest, 0) if url_index >= len(urls) else \
                        client.open_url(urls[url_index], 0)
                hasher, offset, resumed = hashlib.new(algorithm), 0, False
                _truncate(partial_path)
            mode = "ab" if offset else "wb"
            with open(partial_path, mode) as handle:
                raw = response.raw
                while True:
                    block = raw.read(READ_SIZE, decode_content=False)
                    if not block:
                        break
                    if expected_size is not None and offset + len(block) > expected_size:
                        response.close()
                        handle.close()
                        os.unlink(partial_path)
                        raise DigestMismatch("blob %s is longer than the %d bytes its descriptor says"
                                             % (digest, expected_size))
                    handle.write(block)
                    hasher.update(block)
                    offset += len(block)
                    fetched += len(block)
                    client.add_downloaded(len(block))
                handle.flush()
                os.fsync(handle.fileno())
            response.close()
            if expected_size is None or offset == expected_size:
                break
            raise TransportError("the connection closed after %d of %d bytes" % (offset, expected_size),
                                 retryable=True)
        except stream_errors + (TransportError,) as exc:
            if isinstance(exc, TransportError) and not exc.details.get("retryable"):
                raise
            try:
                response.close()
            except Exception:  # pylint: disable=broad-except
                pass
            if failures >= retries:
                raise TransportError("downloading %s failed after %d retries: %s" % (digest, retries, _short(exc)))
            delay = backoff_delay(failures)
            failures += 1
            client.warn("download of %s interrupted at byte %d (%s); resuming (retry %d of %d)"
                        % (digest, offset, _short(exc), failures, retries))
            client.transport.sleep(delay)
            if os.path.exists(partial_path):
                hasher, offset = _hash_existing(partial_path, algorithm)
            resumed = resumed or offset > 0
    actual = "%s:%s" % (algorithm, hasher.hexdigest())
    if actual != digest or (expected_size is not None and offset != expected_size):
        try:
            os.unlink(partial_path)
        except OSError:
            pass
        raise DigestMismatch("blob %s failed verification: received %d bytes hashing to %s; nothing was kept"
                             % (digest, offset, actual))
    return DownloadResult(digest, offset, resumed, fetched)


def _truncate(path):
    with open(path, "wb"):
        pass


def _short(exc):
    text = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    return text[:200]


def fetch_to_store(client, store, descriptor):
    """Make sure ``descriptor``'s blob is in ``store`` (downloading it, resumably, under the blob's lock).

    Returns (path, DownloadResult or None when it was already there).
    """
    digest = descriptor["digest"]
    size = descriptor.get("size")
    if store.has(digest, size):
        store.touch(digest)
        return store.blob_path(digest), None
    with store.lock(digest):
        if store.has(digest, size):
            return store.blob_path(digest), None
        partial = store.partial_path(digest)
        result = download(client, descriptor, partial, descriptor.get("urls"))
        store.commit(partial, digest, verified=True)
        return store.blob_path(digest), result
