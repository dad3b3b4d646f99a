# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Streaming, verified, resumable blob downloads, as a chain of small parts.

PRIVATE to the hocker.registry collection: may change at any time.

``download(client, descriptor, partial_path=None, sink_factory=None, cancel=None, sync=True)`` composes:

- ``Sources``: where the bytes come from: a foreign layer's URLs first (without registry credentials), then
  the registry (each attempt asks the registry URL again: a redirect target may have expired);
- ``Verifier``: the digest and size of every byte seen, checked against the descriptor;
- ``PartialFile``: the resumable copy on disk: bytes an earlier run left are re-hashed (and replayed into the
  sink) before the download continues after them; deleted when the blob does not verify;
- ``Attempts``: one body read after another: ``Range`` from the current offset, only a 206 whose
  Content-Range starts there is appended to (a 200 or another range restarts from zero), 416 handled,
  broken connections resumed with backoff within ``retries``.

Bytes go to the partial file and to the sink (``sinks.Sink``) as they arrive, hashed once. Nothing unverified
is ever left looking complete: on a mismatch the partial file is deleted and DigestMismatch raised; a partial
that came from an earlier run and fails verification gets one clean download from the start.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import stat

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, LimitExceeded, NoSpace, RegistryError, TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import NullSink
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_TAR)
from ansible_collections.hocker.registry.plugins.module_utils._registry.transport import (
    backoff_delay, safe_url, stream_errors)

READ_SIZE = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
FOREIGN_TYPES = (DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_TAR)


class Cancelled(RegistryError):
    """The download was stopped because another part of the same job failed."""


class _Interrupted(Exception):
    """A retryable failure while reading a body."""


class DownloadResult:
    def __init__(self, digest, size, resumed, fetched, sink_result=None):
        self.digest = digest
        self.size = size
        self.resumed = resumed          # bytes from an earlier attempt or run were kept
        self.fetched = fetched          # bytes received over the network
        self.sink_result = sink_result  # what the last sink's close() returned


def foreign_urls(descriptor):
    """The URLs to try first for a foreign / non-distributable layer; other layers always come from the
    registry (a manifest must not make us fetch arbitrary addresses)."""
    media_type = descriptor.get("mediaType") or ""
    if media_type in FOREIGN_TYPES or ".nondistributable." in media_type:
        return [u for u in descriptor.get("urls") or []
                if isinstance(u, str) and u.lower().startswith(("http://", "https://"))]
    return []


def _content_range_start(response):
    match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


class Sources:
    """Opens the blob at an offset: foreign URLs in order (a failing one is skipped for good), then the
    registry."""

    def __init__(self, client, descriptor):
        self.client = client
        self.digest = descriptor["digest"]
        self.urls = foreign_urls(descriptor)

    def open(self, offset):
        while self.urls:
            try:
                return self.client.open_url(self.urls[0], offset)
            except RegistryError as exc:
                self.client.warn("could not fetch %s from %s (%s); trying the next source"
                                 % (self.digest, safe_url(self.urls[0]), exc))
                self.urls.pop(0)
        try:
            return self.client.open_blob(self.digest, offset)
        except TransportError as exc:
            raise TransportError("downloading %s failed: %s" % (self.digest, exc.msg), status=exc.status,
                                 retryable=exc.retryable, tls=exc.tls)


class Verifier:
    """Hashes and counts the bytes of one blob; refuses more bytes than the descriptor's size."""

    def __init__(self, digest, size):
        self.digest = digest
        self.algorithm = digest.split(":", 1)[0]
        if self.algorithm not in ("sha256", "sha512"):
            raise RegistryError("unsupported digest algorithm in %s" % digest)
        self.size = size if isinstance(size, int) and size >= 0 else None
        self.reset()

    def reset(self):
        self.hasher = hashlib.new(self.algorithm)
        self.offset = 0

    def update(self, block):
        if self.size is not None and self.offset + len(block) > self.size:
            raise DigestMismatch("blob %s is longer than the %d bytes its descriptor says" % (self.digest, self.size))
        self.hasher.update(block)
        self.offset += len(block)

    @property
    def complete(self):
        return self.size is not None and self.offset >= self.size

    @property
    def actual(self):
        return "%s:%s" % (self.algorithm, self.hasher.hexdigest())

    def matches(self):
        return self.actual == self.digest and (self.size is None or self.offset == self.size)


class PartialFile:
    """The on-disk copy of a blob being downloaded (``path`` None: no copy is kept)."""

    def __init__(self, path, size):
        self.path = path
        self.handle = None
        if not path:
            return
        try:
            info = os.lstat(path)
        except OSError:
            return
        # only a regular file of ours is resumed: a symlink, fifo or device planted there is removed, never
        # followed (appending registry bytes to another file, or hanging on a fifo)
        if not stat.S_ISREG(info.st_mode) or (size is not None and info.st_size > size):
            os.unlink(path)

    def replay(self, verifier, sink):
        """Feed the bytes an earlier run left to ``verifier`` and ``sink``; open for appending."""
        if not self.path:
            return 0
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        self.handle = os.fdopen(fd, "r+b")
        while True:
            block = self.handle.read(READ_SIZE)
            if not block:
                break
            verifier.update(block)
            sink.write(block)
        self.handle.seek(0, os.SEEK_END)
        return verifier.offset

    def write(self, block):
        if self.handle is not None:
            self.handle.write(block)

    def flush(self):
        if self.handle is not None:
            self.handle.flush()

    def truncate(self):
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()

    def finish(self, sync):
        if self.handle is not None:
            self.handle.flush()
            if sync:
                os.fsync(self.handle.fileno())
        self.close()

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def discard(self):
        self.close()
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


class Attempts:
    """Reads the blob's body attempt after attempt until it is complete (see the module docstring)."""

    def __init__(self, client, sources, verifier, partial, new_sink, cancel=None):
        self.client = client
        self.sources = sources
        self.verifier = verifier
        self.partial = partial
        self.new_sink = new_sink
        self.sink = new_sink()
        self.cancel = cancel
        self.failures = 0
        self.fetched = 0
        self.resumed = False
        self.read_errors = stream_errors()

    def run(self):
        while not self.verifier.complete:
            response = self.sources.open(self.verifier.offset)
            try:
                verdict = self._verdict(response)
                if verdict == "done":
                    return
                if verdict == "restart":
                    self.restart()
                elif self._read(response):
                    return
            except _Interrupted as exc:
                self._backoff(exc)
            finally:
                response.close()

    def _verdict(self, response):
        """``read`` when ``response`` continues the blob where it stands, ``restart`` when it starts again
        from zero, ``done`` when a blob of unknown size is complete (416 past its end)."""
        offset = self.verifier.offset
        if response.status_code == 416:
            return "done" if self.verifier.size is None else "restart"
        if offset and (response.status_code != 206 or _content_range_start(response) != offset):
            return "restart"
        return "read"

    def restart(self):
        """Start the blob again from byte 0 (a new sink, an empty partial file)."""
        self.resumed = False
        self.verifier.reset()
        self.partial.truncate()
        self.sink.abandon()
        self.sink = self.new_sink()

    def _read(self, response):
        """Read the body to its end; True when the blob's size is unknown (the body was all of it)."""
        raw = response.raw
        while True:
            try:
                block = raw.read(READ_SIZE, decode_content=False)
            except self.read_errors as exc:
                raise _Interrupted(_short(exc))
            if not block:
                break
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("download of %s stopped" % self.verifier.digest)
            self.verifier.update(block)
            self.partial.write(block)
            self.sink.write(block)
            self.fetched += len(block)
            self.client.add_downloaded(len(block))
        if self.verifier.size is not None and self.verifier.offset < self.verifier.size:
            raise _Interrupted("the connection closed after %d of %d bytes" % (self.verifier.offset, self.verifier.size))
        return self.verifier.size is None

    def _backoff(self, exc):
        retries = self.client.transport.retries
        if self.failures >= retries:
            raise TransportError("downloading %s failed after %d tries: %s" % (self.verifier.digest, retries + 1, exc))
        delay = backoff_delay(self.failures)
        self.failures += 1
        self.client.warn("download of %s interrupted at byte %d (%s); resuming (retry %d of %d)"
                         % (self.verifier.digest, self.verifier.offset, exc, self.failures, retries))
        self.partial.flush()
        self.resumed = self.resumed or self.verifier.offset > 0
        self.client.transport.sleep(delay)


def download(client, descriptor, partial_path=None, sink_factory=None, cancel=None, sync=True, again=True):
    """Download the blob ``descriptor``, verified, resuming where possible; returns a DownloadResult.

    ``partial_path``: the file the raw blob goes to (an existing one is resumed); None keeps no copy.
    ``sink_factory``: makes the sink that receives every byte in order (called again after a restart from
    zero; the previous one is abandoned); its ``close()`` result is the result's ``sink_result``.
    ``cancel``: a threading.Event; once set, the download stops with Cancelled at the next block.
    ``sync``: fsync the complete ``partial_path`` (off when the caller deletes it right after using it).
    """
    verifier = Verifier(descriptor["digest"], descriptor.get("size"))
    partial = PartialFile(partial_path, verifier.size)
    attempts = Attempts(client, Sources(client, descriptor), verifier, partial, sink_factory or NullSink, cancel)
    try:
        kept = partial.replay(verifier, attempts.sink)
        attempts.resumed = kept > 0
        attempts.run()
        partial.finish(sync)
    except BaseException as exc:
        partial.close()
        attempts.sink.abandon()
        if isinstance(exc, (DigestMismatch, LimitExceeded)) and not isinstance(exc, NoSpace):
            partial.discard()    # nothing worth resuming: the same bytes would fail the same way
        raise
    if not verifier.matches():
        partial.discard()
        attempts.sink.abandon()
        if again and kept and attempts.fetched < verifier.offset:
            # bytes kept from an earlier run were bad (a stale or foreign partial file): one clean download
            client.warn("blob %s did not verify after resuming a partial download; downloading it again from "
                        "the start" % verifier.digest)
            return download(client, descriptor, partial_path, sink_factory, cancel, sync, again=False)
        raise DigestMismatch("blob %s failed verification: received %d bytes hashing to %s; nothing was kept"
                             % (verifier.digest, verifier.offset, verifier.actual))
    result = attempts.sink.close()
    return DownloadResult(verifier.digest, verifier.offset, attempts.resumed, attempts.fetched, result)


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
        result = download(client, descriptor, partial, sink_factory, cancel)
        store.commit(partial, digest, verified=True)
        return store.blob_path(digest), result


def _short(exc):
    text = getattr(exc, "msg", None) or str(exc) or exc.__class__.__name__
    return text[:200]
