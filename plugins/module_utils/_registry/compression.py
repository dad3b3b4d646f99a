# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Streaming decompression of layer blobs with bounded output.

PRIVATE to the hocker.registry collection: may change at any time.

API
---
``detect(first_bytes) -> 'gzip' | 'zstd' | 'none'``
    Sniff the compression from the first bytes of a blob (gzip ``1f 8b``; zstd frame ``28 b5 2f fd`` or a
    skippable frame ``5? 2a 4d 18``; anything else is ``none``). Media types are not trusted for this.

``Decompressor(kind='auto', chunk_size=CHUNK_SIZE)``
    ``kind`` is ``gzip``, ``zstd``, ``none`` or ``auto`` (sniffed from the first 4 bytes fed).
    ``feed(data)`` returns an iterator of output chunks, each at most ``chunk_size`` bytes, whatever the
    compression ratio (a gzip or zstd bomb never needs more memory than one chunk). Consume the iterator
    before the next ``feed``. ``finish()`` returns an iterator of the remaining output and raises
    ``DecompressionError`` for a truncated gzip stream. Multi-member gzip (eStargz, pigz) and multi-frame
    zstd with skippable frames (zstd:chunked) are decoded as one stream, like docker and containerd do.
    ``kind`` (after ``auto`` was resolved) tells what was found.

``decompress_stream(src, dst, kind='auto', read_size=READ_SIZE, expected_digest=None, expected_diff_id=None)``
    Read ``src`` (a path or a binary file object) to its end, write the decompressed bytes to ``dst`` (a path
    or a binary file object, may be ``None`` to only hash) and hash both sides in the same pass. Returns a
    ``DecompressResult`` with ``kind``, ``digest`` and ``size`` (compressed input), ``diff_id`` and
    ``uncompressed_size`` (output). With ``expected_digest`` / ``expected_diff_id`` a mismatch raises
    ``DigestMismatch``.

``DecompressWriter(out=None, kind='auto', raw=None, chunk_size=CHUNK_SIZE)``
    The same as a file-like sink for a download loop: ``write(chunk)`` takes compressed bytes as they arrive
    (also copied to ``raw`` when given, e.g. the blob store file), decompressed bytes go to ``out``;
    ``close()`` returns the ``DecompressResult``. ``decompress_stream`` is built on it.

Output chunks may be memoryviews of the input (``none``) or of internal buffers: write or hash them before
the next ``feed``/``write``. A truncated zstd stream is not detected here (zstandard's reader stops quietly):
the diff_id check catches it.

zstd needs the ``zstandard`` library; without it a zstd stream raises ``MissingLibrary``. gzip and
uncompressed data only need the standard library. When the optional ``isal`` library (python-isal, Intel's
ISA-L) is installed, gzip is inflated with it: about twice as fast as zlib on the same data, same results
(it checks the gzip CRC and length too). The environment variable ``HOCKER_REGISTRY_INFLATE=zlib`` forces
the standard library. ``inflate_backend()`` tells which one is used. zlib, isal, hashlib and file I/O
release the GIL on large buffers, so several layers can be processed in threads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import zlib

from ansible_collections.hocker.registry.plugins.module_utils._registry._compat import require_zstandard
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch, RegistryError

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"
AUTO = "auto"
KINDS = (GZIP, ZSTD, NONE)

CHUNK_SIZE = 1024 * 1024       # largest output chunk yielded by Decompressor
READ_SIZE = 1024 * 1024        # read size of decompress_stream
_GZIP_SLICE = 64 * 1024        # input given to zlib per call

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class DecompressionError(RegistryError):
    """Corrupt or truncated compressed data."""


_INFLATE = []   # [(name, decompressobj, error classes)] once chosen


def _inflater():
    """Return (name, decompressobj factory, exception classes) of the gzip inflater to use."""
    if not _INFLATE:
        choice = ("zlib", zlib.decompressobj, (zlib.error,))
        if os.environ.get("HOCKER_REGISTRY_INFLATE", "auto").lower() != "zlib":
            try:
                from isal import isal_zlib
            except ImportError:
                pass
            else:
                choice = ("isal", isal_zlib.decompressobj, (zlib.error, isal_zlib.error))
        _INFLATE.append(choice)
    return _INFLATE[0]


def inflate_backend():
    """``'isal'`` or ``'zlib'``: the library that inflates gzip layers in this process."""
    return _inflater()[0]


def detect(first_bytes):
    """Return ``'gzip'``, ``'zstd'`` or ``'none'`` for a blob that starts with ``first_bytes``."""
    head = bytes(first_bytes[:4])
    if head[:2] == _GZIP_MAGIC:
        return GZIP
    if head == _ZSTD_MAGIC:
        return ZSTD
    # skippable frames: magic 0x184D2A50..0x184D2A5F, little endian
    if len(head) == 4 and head[1:] == b"\x2a\x4d\x18" and (head[0] & 0xF0) == 0x50:
        return ZSTD
    return NONE


class _Starved(Exception):
    """Raised by _FeedSource when the zstd reader needs more input than was fed."""


class _FeedSource(object):
    """File-like source for zstandard's stream reader that is filled by ``feed``.

    Between feeds it raises ``_Starved`` instead of returning EOF. The reader's ``read1`` asks its source
    only while it has produced no output in that call, so nothing is lost when the exception escapes.
    """

    def __init__(self):
        self.pending = None
        self.eof = False

    def read(self, size=-1):
        data = self.pending
        if data is None:
            if self.eof:
                return b""
            raise _Starved()
        self.pending = None
        return data


class Decompressor(object):
    """Push-style decompressor with bounded output chunks (see the module docstring)."""

    def __init__(self, kind=AUTO, chunk_size=CHUNK_SIZE):
        if kind not in KINDS and kind != AUTO:
            raise ValueError("unknown compression %r" % (kind,))
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.kind = None
        self.chunk_size = chunk_size
        self.bytes_in = 0
        self.bytes_out = 0
        self._head = b""           # bytes kept while sniffing for kind=auto
        self._finished = False
        self._gz = None
        self._gz_new = None
        self._gz_errors = ()
        self._gz_members = 0
        self._gz_padding = False
        self._gz_fed = False
        self._zsrc = None
        self._zreader = None
        if kind != AUTO:
            self._start(kind)

    # -- set-up ------------------------------------------------------------------------------------------
    def _start(self, kind):
        self.kind = kind
        if kind == GZIP:
            _name, self._gz_new, self._gz_errors = _inflater()
            self._gz = self._gz_new(31)
        elif kind == ZSTD:
            zstandard = require_zstandard()
            self._zsrc = _FeedSource()
            self._zreader = zstandard.ZstdDecompressor().stream_reader(
                self._zsrc, read_size=READ_SIZE, read_across_frames=True)

    # -- public ------------------------------------------------------------------------------------------
    def feed(self, data):
        """Decompress ``data``; return an iterator of output chunks (each <= chunk_size)."""
        if self._finished:
            raise ValueError("feed() after finish()")
        if not data:
            return iter(())
        self.bytes_in += len(data)
        if self.kind is None:
            self._head += bytes(data)
            if len(self._head) < 4:
                return iter(())
            self._start(detect(self._head))
            data, self._head = self._head, b""
        return self._feed(data)

    def finish(self):
        """Signal the end of input; return an iterator of the remaining output."""
        if self._finished:
            return iter(())
        self._finished = True
        return self._finish()

    # -- internals ---------------------------------------------------------------------------------------
    def _count(self, chunk):
        self.bytes_out += len(chunk)
        return chunk

    def _feed(self, data):
        if self.kind == NONE:
            return self._feed_none(data)
        if self.kind == GZIP:
            return self._feed_gzip(data)
        return self._feed_zstd(data)

    def _feed_none(self, data):
        view = memoryview(data)
        size = self.chunk_size
        for start in range(0, len(view), size):
            yield self._count(view[start:start + size])

    def _new_member(self, rest, count=True):
        """Called at the end of a gzip member with the bytes that followed it."""
        if count:
            self._gz_members += 1
            self._gz = self._gz_new(31)
            self._gz_fed = False
        if rest and bytes(rest[:2]) != _GZIP_MAGIC[:len(rest[:2])]:
            self._gz_padding = True

    def _feed_gzip(self, data):
        # Large inputs go to zlib in slices: when the output limit stops zlib early it copies the rest of
        # its input into ``unconsumed_tail``, and with big inputs those copies (and the page faults of
        # their fresh allocations) cost as much as inflating.
        if len(data) <= _GZIP_SLICE:
            yield from self._feed_gzip_slice(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), _GZIP_SLICE):
            yield from self._feed_gzip_slice(view[start:start + _GZIP_SLICE])

    def _feed_gzip_slice(self, data):
        limit = self.chunk_size
        if data and self._gz_members and not self._gz_fed and not self._gz_padding:
            # a member ended exactly where the previous input ended: what follows decides
            self._new_member(data, count=False)
        while True:
            if self._gz_padding:
                # after the last member only NUL padding is tolerated (like GNU gzip)
                if bytes(data).strip(b"\0"):
                    raise DecompressionError("unexpected data after the end of a gzip stream")
                return
            gz = self._gz
            if data:
                self._gz_fed = True
            try:
                out = gz.decompress(data, limit)
            except self._gz_errors as exc:
                raise DecompressionError("invalid gzip data: %s" % exc)
            if out:
                yield self._count(out)
            if gz.eof:
                data = gz.unused_data
                self._new_member(data)
                if not data:
                    return
                continue
            data = gz.unconsumed_tail
            if not data and len(out) < limit:
                # all input taken and the output was not capped: nothing more until the next feed
                return

    def _feed_zstd(self, data):
        self._zsrc.pending = data
        return self._drain_zstd()

    def _drain_zstd(self):
        reader = self._zreader
        limit = self.chunk_size
        while True:
            try:
                out = reader.read1(limit)
            except _Starved:
                return
            except Exception as exc:   # zstandard.ZstdError
                raise DecompressionError("invalid zstd data: %s" % exc)
            if not out:
                return
            yield self._count(out)

    def _finish(self):
        if self.kind is None:
            # fewer than 4 bytes in total
            self._start(detect(self._head) if self._head else NONE)
            head, self._head = self._head, b""
            if head:
                yield from self._feed(head)
        if self.kind == GZIP:
            if not self._gz_padding and (self._gz_fed or self._gz_members == 0):
                raise DecompressionError("truncated gzip stream")
        elif self.kind == ZSTD:
            self._zsrc.eof = True
            yield from self._drain_zstd()


class DecompressResult(object):
    """Outcome of ``decompress_stream``."""

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
        return "DecompressResult(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)


def decompress_stream(src, dst, kind=AUTO, read_size=READ_SIZE, expected_digest=None, expected_diff_id=None):
    """Decompress ``src`` into ``dst`` hashing both sides in one pass (see the module docstring)."""
    own_src = own_dst = False
    if isinstance(src, (str, bytes)):
        src = open(src, "rb")
        own_src = True
    try:
        if isinstance(dst, (str, bytes)):
            dst = open(dst, "wb")
            own_dst = True
        try:
            result = _decompress(src, dst, kind, read_size)
        finally:
            if own_dst:
                dst.close()
    finally:
        if own_src:
            src.close()
    if expected_digest is not None and result.digest != expected_digest:
        raise DigestMismatch("blob does not match its digest: expected %s, got %s"
                             % (expected_digest, result.digest))
    if expected_diff_id is not None and result.diff_id != expected_diff_id:
        raise DigestMismatch("uncompressed layer does not match its diff_id: expected %s, got %s"
                             % (expected_diff_id, result.diff_id))
    return result


class DecompressWriter(object):
    """Push-style sink for one blob: see the module docstring."""

    def __init__(self, out=None, kind=AUTO, raw=None, chunk_size=CHUNK_SIZE):
        self._out = out.write if out is not None else None
        self._raw = raw.write if raw is not None else None
        self._dec = Decompressor(kind, chunk_size=chunk_size)
        self._in_hash = hashlib.sha256()
        self._out_hash = hashlib.sha256()
        self.size = 0
        self.uncompressed_size = 0
        self.result = None

    def write(self, data):
        """Take the next compressed bytes; return len(data)."""
        if self.result is not None:
            raise ValueError("write() after close()")
        n = len(data)
        if not n:
            return 0
        self.size += n
        self._in_hash.update(data)
        if self._raw is not None:
            self._raw(data)
        self._emit(self._dec.feed(data))
        return n

    def _emit(self, chunks):
        out = self._out
        identity = self._dec.kind == NONE
        for chunk in chunks:
            self.uncompressed_size += len(chunk)
            if not identity:
                self._out_hash.update(chunk)
            if out is not None:
                out(chunk)

    def close(self):
        """End of the blob: flush the decompressor and return the DecompressResult."""
        if self.result is None:
            self._emit(self._dec.finish())
            digest = "sha256:" + self._in_hash.hexdigest()
            diff_id = digest if self._dec.kind == NONE else "sha256:" + self._out_hash.hexdigest()
            self.result = DecompressResult(self._dec.kind, digest, self.size, diff_id, self.uncompressed_size)
        return self.result


def _decompress(src, dst, kind, read_size):
    buf = bytearray(read_size)
    view = memoryview(buf)
    readinto = getattr(src, "readinto", None)
    sink = DecompressWriter(dst, kind, chunk_size=max(read_size, CHUNK_SIZE))
    while True:
        n, chunk = _read(src, readinto, view, read_size)
        if not n:
            break
        sink.write(chunk)
    return sink.close()


def _read(src, readinto, view, read_size):
    """Read up to read_size bytes; return (n, bytes-like) with n == 0 at EOF."""
    if readinto is not None:
        n = readinto(view)
        if not n:
            return 0, None
        return n, view[:n]
    data = src.read(read_size)
    if not data:
        return 0, None
    return len(data), data
