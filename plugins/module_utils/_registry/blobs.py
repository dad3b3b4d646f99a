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

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, RegistryError, TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.transport import (
    backoff_delay, safe_url, stream_errors)

READ_SIZE = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


class DownloadResult:
    def __init__(self, digest, size, resumed, fetched):
        self.digest = digest
        self.size = size
        self.resumed = resumed      # bytes from an earlier attempt or run were kept
        self.fetched = fetched      # bytes received over the network


def _replay_partial(path, algorithm, sink):
    """Hash an existing partial file (and feed it to ``sink``) so the download can continue after it."""
    hasher = hashlib.new(algorithm)
    size = 0
    with open(path, "rb") as handle:
        while True:
            block = handle.read(READ_SIZE)
            if not block:
                break
            hasher.update(block)
            if sink is not None:
                sink.write(block)
            size += len(block)
    return hasher, size


def _range_start(response):
    match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


class _Attempt(Exception):
    """A retryable failure while reading a blob body."""


class Cancelled(RegistryError):
    """The download was stopped because another part of the same job failed."""


def download(client, descriptor, partial_path=None, sources=None, sink_factory=None, cancel=None, sync=True):
    """Download the blob ``descriptor``, verified, resuming where possible. Returns DownloadResult.

    ``partial_path``: the file the raw blob goes to (an existing one is resumed); None keeps no copy.
    ``sources``: URLs tried before the registry (foreign layers); they get no registry credentials.
    ``sink_factory``: called (again after a restart from zero) to make an object whose ``write(block)``
    receives every raw byte in order, e.g. a streaming decompressor; the caller closes the last one.
    Returns DownloadResult with ``sink`` set to the sink that saw the whole blob.
    ``cancel``: a threading.Event; once set, the download stops with Cancelled at the next block.
    ``sync``: fsync the complete ``partial_path`` (off when the caller deletes it right after using it).
    """
    digest = descriptor["digest"]
    expected_size = descriptor.get("size")
    if not isinstance(expected_size, int) or expected_size < 0:
        expected_size = None
    algorithm = digest.split(":", 1)[0]
    if algorithm not in ("sha256", "sha512"):
        raise RegistryError("unsupported digest algorithm in %s" % digest)
    read_errors = stream_errors()
    retries = client.transport.retries
    urls = [u for u in (sources or []) if isinstance(u, str) and u.lower().startswith(("http://", "https://"))]

    sink = sink_factory() if sink_factory else None
    hasher = hashlib.new(algorithm)
    offset = 0
    resumed = False
    if partial_path and os.path.exists(partial_path):
        if expected_size is not None and os.path.getsize(partial_path) > expected_size:
            os.unlink(partial_path)
        else:
            hasher, offset = _replay_partial(partial_path, algorithm, sink)
            resumed = offset > 0
    handle = open(partial_path, "ab" if offset else "wb") if partial_path else None
    fetched = 0
    failures = 0
    url_index = 0

    def restart():
        new_sink = sink_factory() if sink_factory else None
        if handle is not None:
            handle.seek(0)
            handle.truncate()
        return hashlib.new(algorithm), 0, new_sink

    try:
        while expected_size is None or offset < expected_size:
            if url_index < len(urls):
                try:
                    response = client.open_url(urls[url_index], offset)
                except RegistryError as exc:
                    client.warn("could not fetch %s from %s (%s); trying the next source"
                                % (digest, safe_url(urls[url_index]), exc))
                    url_index += 1
                    continue
            else:
                try:
                    response = client.open_blob(digest, offset)
                except TransportError as exc:
                    raise TransportError("downloading %s failed: %s" % (digest, exc.msg))
            if response.status_code == 416:
                response.close()
                if expected_size is None:
                    break
                hasher, offset, sink = restart()
                resumed = False
                continue
            if offset and (response.status_code != 206 or _range_start(response) != offset):
                # Range ignored or answered for another offset: start again from zero
                response.close()
                hasher, offset, sink = restart()
                resumed = False
                continue
            raw = response.raw
            try:
                while True:
                    try:
                        block = raw.read(READ_SIZE, decode_content=False)
                    except read_errors as exc:
                        raise _Attempt(_short(exc))
                    if not block:
                        break
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("download of %s stopped" % digest)
                    if expected_size is not None and offset + len(block) > expected_size:
                        raise DigestMismatch("blob %s is longer than the %d bytes its descriptor says"
                                             % (digest, expected_size))
                    if handle is not None:
                        handle.write(block)
                    hasher.update(block)
                    if sink is not None:
                        sink.write(block)
                    offset += len(block)
                    fetched += len(block)
                    client.add_downloaded(len(block))
                if expected_size is not None and offset < expected_size:
                    raise _Attempt("the connection closed after %d of %d bytes" % (offset, expected_size))
            except _Attempt as exc:
                if failures >= retries:
                    raise TransportError("downloading %s failed after %d retries: %s" % (digest, retries, exc))
                delay = backoff_delay(failures)
                failures += 1
                client.warn("download of %s interrupted at byte %d (%s); resuming (retry %d of %d)"
                            % (digest, offset, exc, failures, retries))
                if handle is not None:
                    handle.flush()
                client.transport.sleep(delay)
                resumed = resumed or offset > 0
                continue
            finally:
                response.close()
            break
        if handle is not None:
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
    except BaseException as exc:
        if handle is not None:
            handle.close()
            handle = None
        if isinstance(exc, DigestMismatch) and partial_path and os.path.exists(partial_path):
            os.unlink(partial_path)
        raise
    finally:
        if handle is not None:
            handle.close()
    actual = "%s:%s" % (algorithm, hasher.hexdigest())
    if actual != digest or (expected_size is not None and offset != expected_size):
        if partial_path:
            try:
                os.unlink(partial_path)
            except OSError:
                pass
        if resumed and fetched < offset:
            # bytes kept from an earlier attempt or run were bad (a stale or foreign partial file):
            # one clean download from the start, which does not resume anything
            client.warn("blob %s did not verify after resuming a partial download; downloading it again from "
                        "the start" % digest)
            return download(client, descriptor, partial_path, sources, sink_factory, cancel, sync)
        raise DigestMismatch("blob %s failed verification: received %d bytes hashing to %s; nothing was kept"
                             % (digest, offset, actual))
    result = DownloadResult(digest, offset, resumed, fetched)
    result.sink = sink
    return result


def _short(exc):
    text = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    return text[:200]


FOREIGN_TYPES = ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                 "application/vnd.docker.image.rootfs.foreign.diff.tar")


def foreign_urls(descriptor):
    """The URLs to try first for a foreign / non-distributable layer; other layers always come from the
    registry (a manifest must not make us fetch arbitrary addresses)."""
    media_type = descriptor.get("mediaType") or ""
    if media_type in FOREIGN_TYPES or ".nondistributable." in media_type:
        return descriptor.get("urls") or []
    return []


def fetch_to_store(client, store, descriptor, sink_factory=None, cancel=None):
    """Make sure ``descriptor``'s blob is in ``store`` (downloading it, resumably, under the blob's lock).

    Returns (path, DownloadResult or None when it was already there). ``sink_factory`` as for download().
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
        result = download(client, descriptor, partial, foreign_urls(descriptor), sink_factory, cancel)
        store.commit(partial, digest, verified=True)
        return store.blob_path(digest), result
