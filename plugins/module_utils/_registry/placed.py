# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Archives laid out before their layers exist: each layer is written once, straight into its place.

PRIVATE to the hocker.registry collection: may change at any time.

``can_place(images, format, layers, compression)`` and ``open_placed(dest, images, format, layers, repo_tags,
name, origin, workdir) -> PlacedArchive``: lay out a docker-archive or oci-archive (no compression) from the
layer sizes (``Layer.size`` for compressed layers, the expected ``Layer.uncompressed_size`` for uncompressed
ones). Headers, metadata and the end of the archive are written at once; ``writer(key)`` returns a sink
that writes the layer file named ``key`` (its digest in the archive) into its place from any thread;
``finish()`` returns what ``write_archive`` returns, byte-identical output included; a layer that turned
out bigger or smaller than its place went to a spill file and the archive is written again from the places
and spill files (``rewritten``). ``abort()`` deletes everything.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hocker.registry.plugins.module_utils._registry.layout import (
    ArchiveError, Copy, Image, Layer, OCI_MANIFEST, blob_hex, blob_name, plan)
from ansible_collections.hocker.registry.plugins.module_utils._registry.tarwriter import BLOCK, COPY_SIZE, Flusher, tar_header, write_archive


def can_place(images, format="docker-archive", layers="uncompressed", compression="none"):
    """Whether ``open_placed`` can lay out this archive before the layer files exist."""
    if format == "oci-dir" or compression != "none":
        return False
    if isinstance(images, Copy):
        return format != "docker-archive"   # every blob's size is in its descriptor
    if isinstance(images, (Image, dict)):
        images = [images]
    if layers == "compressed" and format != "docker-archive":
        # a docker manifest converted to OCI takes each layer's media type from its content
        return all(Image.coerce(i).manifest_media_type == OCI_MANIFEST for i in images)
    return True


class _Region(object):
    """Writes one layer into its place in a placed archive; what does not fit goes to a spill file."""

    def __init__(self, owner, name, offset, capacity, spill_path):
        self.owner = owner
        self.name = name
        self.offset = offset
        self.capacity = capacity
        self.spill_path = spill_path
        self.spill = None
        self.size = 0
        self.closed = False
        self.abandoned = False

    def write(self, data):
        n = len(data)
        if self.closed:
            raise ValueError("write to a closed layer region")
        if self.spill is None and self.size + n > self.capacity:
            # bigger than its place: from now on the whole layer lives in a spill file
            self.spill = open(self.spill_path, "wb")
            if self.size:
                self.owner.copy_out(self.offset, self.size, self.spill)
        if self.spill is not None:
            self.spill.write(data)
        else:
            self.owner.pwrite(data, self.offset + self.size)
        self.size += n
        return n

    def close(self):
        if not self.closed:
            self.closed = True
            if self.spill is not None:
                self.spill.close()

    def abandon(self):
        # a finished layer stays finished (the fetch abandons every sink it opened when it ends)
        if not self.closed:
            self.abandoned = True
            self.close()

    @property
    def fits(self):
        return self.closed and self.spill is None and self.size == self.capacity


class PlacedArchive(object):
    """An archive laid out before its layers exist: see ``open_placed``."""

    def __init__(self, path, images, plan_, options, workdir):
        import threading
        self.path = path
        self.images = images
        self.plan = plan_
        self.options = options
        self.workdir = workdir
        self.regions = {}          # member name -> (offset, capacity)
        self.writers = {}          # member name -> the latest _Region
        self._lock = threading.Lock()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.flusher = Flusher(self.fd)
        try:
            self.total = self._lay_out()
        except (ValueError, OverflowError, OSError) as exc:
            # sizes no file system or tar header can hold (a manifest that lies): nothing was fetched yet
            self.abort()
            raise ArchiveError("cannot lay out the archive: %s" % exc)
        except BaseException:
            self.abort()
            raise

    def _lay_out(self):
        offset = 0
        for name, data, _path, size in self.plan.members:
            header = tar_header(name, size)
            self.pwrite(header, offset)
            offset += len(header)
            if size is None:
                continue
            if data is not None:
                self.pwrite(data, offset)
            else:
                self.regions[name] = (offset, size)
            offset += size + (-size % BLOCK)
        offset += 2 * BLOCK
        os.ftruncate(self.fd, offset)   # padding and the end-of-archive blocks are zeros
        return offset

    def pwrite(self, data, offset):
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n
        self.flusher.copied_bytes(len(data), self._lock)

    def copy_out(self, offset, size, handle):
        while size:
            block = os.pread(self.fd, min(size, COPY_SIZE), offset)
            if not block:
                raise ArchiveError("the archive %s is shorter than expected" % self.path)
            handle.write(block)
            offset += len(block)
            size -= len(block)

    def writer(self, key):
        """A sink (``write``/``close``/``abandon``) for the layer file named by ``key`` (its digest in the
        archive: the diff_id for uncompressed layers, the blob digest for compressed ones). A new writer for
        the same key starts the layer again from its first byte."""
        name = blob_name(key)
        if name not in self.regions:
            raise ArchiveError("no layer %s in this archive" % key)
        offset, capacity = self.regions[name]
        with self._lock:
            old = self.writers.get(name)
            region = _Region(self, name, offset, capacity, os.path.join(self.workdir, blob_hex(key) + ".spill"))
            self.writers[name] = region
        if old is not None:
            old.abandon()
            if old.spill is not None and os.path.exists(old.spill_path):
                os.unlink(old.spill_path)
        return region

    def finish(self):
        """Check that every layer filled its place exactly; returns what ``write_archive`` returns. When a
        size was guessed wrong, the archive is written again from the places and spill files."""
        self.flusher.finish()
        missing = [name for name in self.regions
                   if name not in self.writers or not self.writers[name].closed or self.writers[name].abandoned]
        if missing:
            raise ArchiveError("layer %s was never written" % missing[0])
        if self.options["layers"] == "compressed":
            # blob sizes come from the manifest: another size is an error, never a reason to rewrite
            for name, region in self.writers.items():
                if not region.fits:
                    raise ArchiveError("layer %s has %d bytes, the manifest says %d"
                                       % (name.rsplit("/", 1)[-1], region.size, region.capacity))
        if all(w.fits for w in self.writers.values()):
            os.close(self.fd)
            self.fd = None
            return {"format": self.options["format"], "layers": self.plan.layers, "manifests": self.plan.manifests,
                    "index_digest": self.plan.index_digest, "bytes_written": self.total,
                    "members": [m[0] for m in self.plan.members], "rewritten": False}
        result = self._rewrite()
        result["rewritten"] = True
        return result

    def _rewrite(self):
        sources = {}
        for name, region in self.writers.items():
            if region.spill is not None:
                sources[name] = (region.spill_path, 0, region.size)
            else:
                sources[name] = (self.path, region.offset, region.size)
        layers_mode = self.options["layers"]
        images = []
        for image in self.images:
            layers = []
            for layer in image.layers:
                key = layer.diff_id if layers_mode == "uncompressed" else layer.digest
                path, offset, size = sources[blob_name(key)]
                layers.append(Layer(layer.digest, layer.diff_id, layer.size, layer.media_type, path,
                                    uncompressed_size=size, urls=layer.urls, offset=offset))
            images.append(Image(image.config, image.manifest, layers, manifest_media_type=image.manifest_media_type))
        second = self.path + ".rewrite"
        try:
            result = write_archive(second, images, **self.options)
            os.close(self.fd)
            self.fd = None
            os.rename(second, self.path)
        except BaseException:
            if os.path.exists(second):
                os.unlink(second)
            raise
        for path, _offset, _size in sources.values():
            if path != self.path:
                os.unlink(path)
        return result

    def abort(self):
        """Close and delete the partial archive (after a failed fetch)."""
        try:
            self.flusher.finish()
        except ArchiveError:
            pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        for region in list(self.writers.values()):
            region.close()
            if region.spill is not None and os.path.exists(region.spill_path):
                os.unlink(region.spill_path)
        if os.path.exists(self.path):
            os.unlink(self.path)


def open_placed(dest, images, format="docker-archive", layers="uncompressed", repo_tags=(), name=None,
                origin=None, workdir=None):
    """Lay out an uncompressed-tar archive at ``dest`` before its layers exist (see the module docstring)."""
    if isinstance(images, Copy):
        layers = "compressed"   # registry content is kept as it is
    else:
        images = [Image.coerce(i) for i in ([images] if isinstance(images, (Image, dict)) else images)]
    if not can_place(images, format, layers):
        raise ArchiveError("this archive cannot be laid out before its layers are fetched")
    if layers == "uncompressed" and not all(isinstance(layer.uncompressed_size, int)
                                            for image in images for layer in image.layers):
        raise ArchiveError("placing uncompressed layers needs their (expected) sizes")
    options = {"format": format, "layers": layers, "repo_tags": list(repo_tags or ()), "name": name,
               "origin": origin, "compression": "none"}
    p = plan(images, format=format, layers=layers, repo_tags=repo_tags, name=name, origin=origin)
    return PlacedArchive(dest, images, p, options, workdir or os.path.dirname(os.path.abspath(dest)))
