# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Deterministic writers of archives: docker-archive and oci-archive tars (plain or gzip), and the
dispatch to the OCI directory writer.

PRIVATE to the hocker.registry collection: may change at any time.

``write_archive(dest, images, format, layers, repo_tags, name, origin, compression, compresslevel,
move_from)``: ``format`` docker-archive | oci-archive | oci-dir; ``dest`` a path or a writable binary file
(for oci-dir a directory path). Several images (``platform: all``) only in the OCI formats. ``repo_tags``
name the image (one ``index.json`` entry each, annotated with ``io.containerd.image.name`` and
``org.opencontainers.image.ref.name``); ``origin`` (a JSON-able dict) is stored compactly in the
``index.json`` annotation ``io.hocker.registry.origin``. ``compression='gzip'`` gzips the whole tar
(deterministic header, mtime 0). Returns ``{'format', 'layers', 'manifests', 'index_digest',
'bytes_written', 'members'}``.

docker-archive members, in this order: ``oci-layout``, ``index.json``, ``manifest.json`` (Config, RepoTags
fully qualified as skopeo writes them, Layers, LayerSources for foreign layers), ``repositories``,
``blobs/``, ``blobs/sha256/``, the config, the manifest, then each layer blob once. oci-archive: the same
without ``manifest.json`` and ``repositories``. Layers ``uncompressed``: files named by diff_id described by a
generated OCI manifest; ``compressed``: the registry blobs (an OCI manifest kept byte for byte, a docker one
kept in docker-archive and converted in the OCI formats).

Reproducible: USTAR headers (GNU only for a member of 8 GiB or more), mtime 0, uid/gid 0, empty
uname/gname, modes 0644/0755, JSON with sorted keys and compact separators.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import os
import tarfile

from ansible_collections.hocker.registry.plugins.module_utils._registry.layout import ArchiveError, COMPRESSIONS, plan

COPY_SIZE = 1024 * 1024
FLUSH_AFTER = 32 * 1024 * 1024   # start the write-back of an archive once this much more was copied
USTAR_MAX_SIZE = 0o77777777777
BLOCK = 512


def tar_header(name, size):
    info = tarfile.TarInfo(name.rstrip("/") if size is None else name)
    if size is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.size = 0
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    fmt = tarfile.USTAR_FORMAT if info.size <= USTAR_MAX_SIZE and len(name) < 100 else tarfile.GNU_FORMAT
    return info.tobuf(fmt, "utf-8", "strict")


class Counter(object):
    """Counts what goes to the output file object."""

    def __init__(self, f):
        self.f = f
        self.written = 0

    def write(self, data):
        n = self.f.write(data)
        if n is None:
            n = len(data)
        while n < len(data):
            # raw (unbuffered) files may write less
            data = memoryview(data)[n:]
            self.written += n
            n = self.f.write(data)
        self.written += n
        return len(data)

    def flush(self):
        if hasattr(self.f, "flush"):
            self.f.flush()


class Flusher(object):
    """Starts the write-back of a big archive while it is still being written.

    The module fsyncs the finished archive before renaming it into place; when the disk has been writing
    since the first layers were copied, that fsync has little left to wait for. A failed background flush
    is raised by ``finish()`` (a later fsync on another descriptor would not report it again).
    """

    def __init__(self, fd):
        self.fd = fd
        self.thread = None
        self.error = None
        self.copied = 0

    def _run(self):
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            self.error = exc

    def copied_bytes(self, n, lock=None):
        if lock is not None:
            with lock:
                self._count(n)
        else:
            self._count(n)

    def _count(self, n):
        self.copied += n
        if self.copied >= FLUSH_AFTER and (self.thread is None or not self.thread.is_alive()):
            import threading
            self.copied = 0
            self.thread = threading.Thread(target=self._run, name="archive-flush")
            self.thread.daemon = True
            self.thread.start()

    def finish(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise ArchiveError("writing the archive failed: %s" % self.error)


class CopySink(object):
    """Sequential writer; copies files with copy_file_range when ``fd`` is an unbuffered plain file."""

    def __init__(self, out, fd=None, flusher=None):
        self.out = out
        self.fd = fd
        self.flusher = flusher
        self._buf = None

    def write(self, data):
        self.out.write(data)

    def copy_file(self, path, size):
        """Copy ``size`` bytes of ``path`` (or of a ``(path, offset)`` pair: a region of a bigger file)."""
        start = 0
        if isinstance(path, tuple):
            path, start = path
        with open(path, "rb", buffering=0) as src:
            if start:
                src.seek(start)
            remaining = size
            if self.fd is not None and hasattr(os, "copy_file_range"):
                try:
                    while remaining:
                        n = os.copy_file_range(src.fileno(), self.fd, min(remaining, 1 << 30))
                        if not n:
                            break
                        remaining -= n
                        if isinstance(self.out, Counter):
                            self.out.written += n
                except OSError:
                    # e.g. EXDEV or ENOSYS: continue with plain copying from where we are
                    src.seek(start + size - remaining)
            if remaining:
                if self._buf is None:
                    self._buf = bytearray(COPY_SIZE)
                view = memoryview(self._buf)
                while remaining:
                    n = src.readinto(view[:min(remaining, COPY_SIZE)])
                    if not n:
                        break
                    self.write(view[:n])
                    remaining -= n
            if remaining or (not start and src.read(1)):
                raise ArchiveError("layer file %s changed size while it was copied" % path)
        if self.flusher is not None:
            self.flusher.copied_bytes(size)


def write_tar(sink, members):
    for name, data, path, size in members:
        sink.write(tar_header(name, size))
        if size is None:
            continue
        if data is not None:
            sink.write(data)
        else:
            sink.copy_file(path, size)
        pad = -size % BLOCK
        if pad:
            sink.write(b"\0" * pad)
    sink.write(b"\0" * (2 * BLOCK))


def write_archive(dest, images, format="docker-archive", layers="uncompressed", repo_tags=(), name=None,
                  origin=None, compression="none", compresslevel=6, move_from=None):
    """Write an archive or an oci-dir (see the module docstring)."""
    if compression not in COMPRESSIONS:
        raise ArchiveError("unknown compression %r (expected none or gzip)" % (compression,))
    p = plan(images, format=format, layers=layers, repo_tags=repo_tags, name=name, origin=origin)
    if format == "oci-dir":
        if compression != "none":
            raise ArchiveError("compression applies to archives, not to oci-dir")
        if not isinstance(dest, str):
            raise ArchiveError("oci-dir needs a directory path")
        from ansible_collections.hocker.registry.plugins.module_utils._registry.ocidir import write_dir
        written = write_dir(dest, p.members, move_from)
    else:
        own = isinstance(dest, str)
        raw = open(dest, "wb", buffering=0) if own else dest
        try:
            counter = Counter(raw)
            if compression == "gzip":
                gz = gzip.GzipFile(filename="", mode="wb", fileobj=counter, mtime=0, compresslevel=compresslevel)
                write_tar(CopySink(gz), p.members)
                gz.close()
            else:
                # copy_file_range only when we own an unbuffered plain file
                flusher = Flusher(raw.fileno()) if own else None
                try:
                    write_tar(CopySink(counter, raw.fileno() if own else None, flusher), p.members)
                finally:
                    if flusher is not None:
                        flusher.finish()
            if hasattr(raw, "flush"):
                raw.flush()
            written = counter.written
        finally:
            if own:
                raw.close()
    return {
        "format": format,
        "layers": p.layers,
        "manifests": p.manifests,
        "index_digest": p.index_digest,
        "bytes_written": written,
        "members": [m[0] for m in p.members],
    }
