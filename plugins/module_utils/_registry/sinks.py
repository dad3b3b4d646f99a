# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Sinks: where the bytes of a blob go while it streams in.

PRIVATE to the hocker.registry collection: may change at any time.

Every consumer of a download speaks the ``Sink`` protocol: ``write(data)`` receives the bytes in order,
``close()`` ends a complete stream (and may return what it computed), ``abandon()`` stops a stream that will
not be completed (a restarted download, a failed job) and must leave nothing that looks complete.

``Unpacker`` decompresses what it is given (gzip, also multi-member; zstd; uncompressed) into another sink,
hashing the output (the diff_id) and optionally the input; ``InflateBounds`` stops a layer that inflates
beyond its limits (a gzip bomb) or beyond the free space of the file system it is written to.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
from typing import Protocol

from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import (
    AUTO, CHUNK_SIZE, NONE, DecompressionError, Decompressor)
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DiffIdMismatch, DigestMismatch, LimitExceeded, NoSpace)

GiB = 1024 * 1024 * 1024
CHECK_EVERY = 16 * 1024 * 1024       # bytes of output between two checks of the bounds
SPACE_RESERVE = 64 * 1024 * 1024     # inflating stops before less than this would stay free
DEFAULT_INFLATION_RATIO = 200
RATIO_FLOOR = 256 * 1024 * 1024      # the ratio is only enforced past this uncompressed size


class Sink(Protocol):
    """What a download writes into (see the module docstring)."""

    def write(self, data):
        """Take the next bytes."""

    def close(self):
        """The stream is complete; returns what the sink computed (or None)."""

    def abandon(self):
        """The stream stops here and will not be completed."""


class NullSink:
    """Discards everything (a blob that is only verified or stored)."""

    def write(self, data):
        return len(data)

    def close(self):
        return None

    def abandon(self):
        pass


class FileSink:
    """A file written from its start; fsynced on close with ``sync``; deleted when abandoned."""

    def __init__(self, path, sync=False):
        self.path = path
        self.handle = open(path, "wb")
        self.write = self.handle.write
        self.sync = sync

    def close(self):
        if not self.handle.closed:
            if self.sync:
                self.handle.flush()
                os.fdatasync(self.handle.fileno())
            self.handle.close()
        return self.path

    def abandon(self):
        if not self.handle.closed:
            self.handle.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass


class RewoundFile:
    """One attempt's view of a seekable file owned by the caller: it starts again at byte 0; ``close`` only
    flushes."""

    def __init__(self, handle):
        self.handle = handle
        handle.seek(0)
        handle.truncate()
        self.write = handle.write

    def close(self):
        self.handle.flush()

    def abandon(self):
        pass


class InflateBounds:
    """Limits for one inflating layer: at most ``max_ratio`` times its compressed size once past ``floor``
    bytes (0 disables the ratio), and never less than SPACE_RESERVE left free on the file system of
    ``space_path``."""

    def __init__(self, what, compressed_size=None, max_ratio=DEFAULT_INFLATION_RATIO, space_path=None,
                 floor=RATIO_FLOOR, reserve=SPACE_RESERVE):
        self.what = what
        self.compressed_size = compressed_size if isinstance(compressed_size, int) and compressed_size > 0 else None
        self.max_ratio = max_ratio or 0
        self.space_path = space_path
        self.floor = floor
        self.reserve = reserve

    def check(self, produced, consumed=0):
        """``produced``: bytes inflated so far; ``consumed``: compressed bytes read so far (the ratio's base
        when the descriptor gave no size)."""
        base = self.compressed_size or consumed
        if self.max_ratio and base and produced > max(self.floor, self.max_ratio * base):
            raise LimitExceeded(
                "%s inflates to more than %d times its compressed size of %d bytes (%d bytes so far): a "
                "decompression bomb or a damaged layer; raise max_inflation_ratio (now %d) if the image is "
                "trusted" % (self.what, self.max_ratio, base, produced, self.max_ratio))
        if self.space_path:
            try:
                stat = os.statvfs(self.space_path)
            except OSError:
                return
            free = stat.f_bavail * stat.f_frsize
            if free < self.reserve:
                raise NoSpace(
                    "not enough space to inflate %s in %s: %d bytes written so far and only %d bytes free"
                    % (self.what, self.space_path, produced, free))


class UnpackResult:
    """What an Unpacker saw: the compression ``kind``, the input's ``digest`` (with ``hash_input``) and
    ``size``, the output's ``diff_id`` and ``uncompressed_size``."""

    __slots__ = ("kind", "digest", "size", "diff_id", "uncompressed_size")

    def __init__(self, kind, digest, size, diff_id, uncompressed_size):
        self.kind = kind
        self.digest = digest
        self.size = size
        self.diff_id = diff_id
        self.uncompressed_size = uncompressed_size

    def as_dict(self):
        return dict((k, getattr(self, k)) for k in self.__slots__)

    def __repr__(self):
        return "UnpackResult(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


class Unpacker:
    """A sink that decompresses into ``out`` (a sink, or None to only hash) and returns an UnpackResult.

    ``digest``: the blob's digest, used in messages and, for an uncompressed blob whose digest the download
    verifies (``input_verified``), as its diff_id without hashing the same bytes twice. ``hash_input``: also
    hash what is written (the result's ``digest``). ``bounds``: an InflateBounds. Corrupt compressed data
    stops the decompression but not the stream, so that a blob damaged in transit is reported by its
    digest check; ``close`` raises the DecompressionError for a blob that is intact yet does not decompress.
    A bound that is exceeded raises at once.
    """

    def __init__(self, out=None, digest=None, kind=AUTO, hash_input=False, input_verified=True, bounds=None,
                 inflater="auto", chunk_size=CHUNK_SIZE):
        self.out = out
        self.digest = digest
        self.error = None
        self.decompressor = Decompressor(kind, chunk_size=chunk_size, inflater=inflater)
        self.out_hash = hashlib.sha256()
        self.in_hash = hashlib.sha256() if hash_input else None
        self.input_verified = input_verified and not hash_input
        self.bounds = bounds
        self.size = 0
        self.produced = 0
        self._next_check = CHECK_EVERY
        self._hash_out = True

    def _emit(self, chunks):
        if self._hash_out and self.decompressor.kind == NONE and (self.input_verified or self.in_hash):
            self._hash_out = False      # an uncompressed blob is its own tar: its digest is the diff_id
        write = self.out.write if self.out is not None else None
        update = self.out_hash.update if self._hash_out else None
        for chunk in chunks:
            if update is not None:
                update(chunk)
            if write is not None:
                write(chunk)
            self.produced += len(chunk)
            if self.produced >= self._next_check and self.bounds is not None:
                self._next_check = self.produced + CHECK_EVERY
                self.bounds.check(self.produced, self.size)

    def write(self, data):
        self.size += len(data)
        if self.in_hash is not None:
            self.in_hash.update(data)
        if self.error is None:
            try:
                self._emit(self.decompressor.feed(data))
            except DecompressionError as exc:
                self.error = exc
        return len(data)

    def close(self):
        try:
            if self.error is None:
                self._emit(self.decompressor.finish())
        except DecompressionError as exc:
            self.error = exc
        finally:
            if self.out is not None:
                self.out.close()
        if self.error is not None:
            raise DecompressionError("layer %s cannot be decompressed: %s" % (self.digest or "", self.error))
        digest = "sha256:" + self.in_hash.hexdigest() if self.in_hash is not None else self.digest
        diff_id = ("sha256:" + self.out_hash.hexdigest()) if self._hash_out else digest
        return UnpackResult(self.decompressor.kind, digest, self.size, diff_id, self.produced)

    def abandon(self):
        if self.out is not None:
            self.out.abandon()


def copy_into(path, sink, read_size=CHUNK_SIZE):
    """Feed a whole file to ``sink`` and close it; returns what ``close`` returns (abandons it on errors)."""
    try:
        with open(path, "rb") as handle:
            while True:
                block = handle.read(read_size)
                if not block:
                    break
                sink.write(block)
    except BaseException:
        sink.abandon()
        raise
    return sink.close()


def decompress_stream(src, dst, kind=AUTO, expected_digest=None, expected_diff_id=None, inflater="auto",
                      bounds=None, read_size=CHUNK_SIZE):
    """Read ``src`` (a path or a binary file) to its end, decompressing into ``dst`` (a path, a binary file,
    or None to only hash), hashing both sides in one pass; returns the UnpackResult. A mismatch with
    ``expected_digest`` / ``expected_diff_id`` raises DigestMismatch."""
    own_src = isinstance(src, str)
    own_dst = isinstance(dst, str)
    source = open(src, "rb") if own_src else src
    try:
        target = open(dst, "wb") if own_dst else dst
        try:
            out = _WriteOnly(target) if target is not None else None
            unpacker = Unpacker(out, kind=kind, hash_input=True, bounds=bounds, inflater=inflater,
                                chunk_size=max(read_size, CHUNK_SIZE))
            while True:
                block = source.read(read_size)
                if not block:
                    break
                unpacker.write(block)
            result = unpacker.close()
        finally:
            if own_dst:
                target.close()
    finally:
        if own_src:
            source.close()
    if expected_digest is not None and result.digest != expected_digest:
        raise DigestMismatch("blob does not match its digest: expected %s, got %s" % (expected_digest, result.digest))
    if expected_diff_id is not None and result.diff_id != expected_diff_id:
        raise DiffIdMismatch("uncompressed layer does not match its diff_id: expected %s, got %s"
                             % (expected_diff_id, result.diff_id))
    return result


class _WriteOnly:
    """A file object seen as a sink whose ``close`` leaves the file open (its owner closes it)."""

    def __init__(self, handle):
        self.write = handle.write

    def close(self):
        pass

    def abandon(self):
        pass
