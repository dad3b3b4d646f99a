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

``Decompressor(kind='auto', chunk_size=CHUNK_SIZE, inflater='auto')``
    ``kind`` is ``gzip``, ``zstd``, ``none`` or ``auto`` (sniffed from the first 4 bytes fed).
    ``feed(data)`` returns an iterator of output chunks, each at most ``chunk_size`` bytes, whatever the
    compression ratio (a gzip or zstd bomb never needs more memory than one chunk). Consume the iterator
    before the next ``feed``. ``finish()`` returns an iterator of the remaining output and raises
    ``DecompressionError`` for a truncated gzip stream. Multi-member gzip (eStargz, pigz) and multi-frame
    zstd with skippable frames (zstd:chunked) are decoded as one stream, like docker and containerd do.
    ``kind`` (after ``auto`` was resolved) tells what was found. ``inflater``: ``auto`` (ISA-L when
    installed) or ``zlib``.

The sink that decompresses a download (hashing both sides, bounding the output) is ``sinks.Unpacker``;
``sinks.decompress_stream`` reads a file through it.

Output chunks may be memoryviews of the input (``none``) or of internal buffers: write or hash them before
the next ``feed``/``write``. A truncated zstd stream is not detected here (zstandard's reader stops quietly):
the diff_id check catches it.

zstd needs the ``zstandard`` library; without it a zstd stream raises ``MissingLibrary``. gzip and
uncompressed data only need the standard library. When the optional ``isal`` library (python-isal, Intel's
ISA-L) is installed, gzip is inflated with it: about twice as fast as zlib on the same data, same results
(it checks the gzip CRC and length too); ``inflater='zlib'`` forces the standard library.
``inflate_backend(inflater)`` tells which one is used. zlib, isal, hashlib and file I/O
release the GIL on large buffers, so several layers can be processed in threads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import zlib

from ansible_collections.hocker.registry.plugins.module_utils._registry._compat import require_zstandard
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError

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


INFLATERS = ("auto", "zlib")
_ISAL = []   # [isal_zlib module or None] once looked for


def _isal():
    if not _ISAL:
        try:
            from isal import isal_zlib
        except ImportError:
            isal_zlib = None
        _ISAL.append(isal_zlib)
    return _ISAL[0]


def _inflater(choice="auto"):
    """(name, decompressobj factory, exception classes) of the gzip inflater: ISA-L when ``choice`` is
    ``auto`` and python-isal is installed, else zlib."""
    if choice not in INFLATERS:
        raise ValueError("unknown inflater %r (expected auto or zlib)" % (choice,))
    isal_zlib = _isal() if choice == "auto" else None
    if isal_zlib is not None:
        return "isal", isal_zlib.decompressobj, (zlib.error, isal_zlib.error)
    return "zlib", zlib.decompressobj, (zlib.error,)


def inflate_backend(choice="auto"):
    """``'isal'`` or ``'zlib'``: the library that inflates gzip layers for ``choice``."""
    return _inflater(choice)[0]


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

    def __init__(self, kind=AUTO, chunk_size=CHUNK_SIZE, inflater="auto"):
        if kind not in KINDS and kind != AUTO:
            raise ValueError("unknown compression %r" % (kind,))
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.kind = None
        self.inflater = inflater
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
            _name, self._gz_new, self._gz_errors = _inflater(self.inflater)
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
