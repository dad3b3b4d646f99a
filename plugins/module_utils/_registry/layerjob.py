# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The single-layer job behind ``docker_registry_layer``.

PRIVATE to the hocker.registry collection: may change at any time.

A ``dest`` that already holds the layer is proven by hashing it; when it was given by digest, or when the
record kept on ``dest`` (``destination.write_record``) names the manifest the reference still resolves to
(one HEAD request; none for a digest reference), nothing else is asked of the registry. Otherwise the
layer is resolved (manifests and configs from the blob store by digest where it has them) and written
through the blob store (copied or decompressed from it) or downloaded beside ``dest`` into a resumable
``.<name>.part`` file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from dataclasses import dataclass
from typing import Optional

from ansible_collections.hocker.registry.plugins.module_utils._registry import digest as digests
from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import DecompressionError
from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.destination import (
    check_dest, install, known_output, read_record, remember_output, safe_write)
from ansible_collections.hocker.registry.plugins.module_utils._registry.download import download, fetch_to_store
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DiffIdMismatch, DigestMismatch, LimitExceeded, ManifestError, NoSpace, NotFound)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import config_diff_ids
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import (
    DEFAULT_INFLATION_RATIO, InflateBounds, RewoundFile, Unpacker, decompress_stream)

RECORD_VERSION = 1
_RESULT_KEYS = ("digest", "manifest_digest", "config_digest", "platform", "layer_digest", "diff_id", "size",
                "media_type")


@dataclass
class LayerRequest:
    dest: str
    layer: Optional[str] = None
    index: Optional[int] = None
    decompress: bool = False
    force: bool = False
    follow: bool = False
    check_mode: bool = False
    inflater: str = "auto"
    max_inflation_ratio: int = DEFAULT_INFLATION_RATIO


def layer_position(layers, digest, index, image):
    """The position of the wanted layer in a manifest's layer list."""
    if digest is not None:
        for position, descriptor in enumerate(layers):
            if descriptor.get("digest") == digest:
                return position
        raise NotFound("%s has no layer %s (it has %d layers)" % (image, digest, len(layers)))
    if not -len(layers) <= index < len(layers):
        raise NotFound("%s has %d layers; index %d is out of range" % (image, len(layers), index))
    return index % len(layers)


class LayerJob:
    """One run of docker_registry_layer (see the module docstring)."""

    def __init__(self, client_factory, reference, store, request, options, warn=None):
        self.client_factory = client_factory
        self.reference = reference
        self.store = store
        self.request = request
        self.options = options
        self.warn = warn or (lambda message: None)
        self.wanted = digests.parse_user_digest(request.layer, "layer") if request.layer is not None else None
        self.result = {"dest": request.dest, "resumed": False, "changed": False}
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def _request_key(self):
        req = self.request
        return {"platform": str(self.options.wanted_platform()), "layer": self.wanted, "index": req.index,
                "decompress": req.decompress}

    def run(self):
        req = self.request
        target = check_dest(req.dest, "file", req.follow)
        current = digests.file_digest(target)
        if not req.force and current is not None and self._known_locally(target, current):
            same = {"dest": req.dest, "digest": current}
            self.result["diff"] = {"before": dict(same), "after": dict(same)}
            return self.result
        resolved, descriptor, diff_id = self._select()
        want = diff_id if req.decompress else descriptor["digest"]
        self.result["diff"] = {"before": {"dest": req.dest, "digest": current},
                               "after": {"dest": req.dest, "digest": want}}
        if want is None or current != want or req.force:
            if req.check_mode:
                self.result["changed"] = True
                return self.result
            self._place(target, descriptor, diff_id)
            self.result["changed"] = self._changed(target, current, want)
        if not req.check_mode:
            remember_output(target, self.reference, self._request_key(), resolved.digest,
                            dict((k, self.result.get(k)) for k in _RESULT_KEYS), RECORD_VERSION)
        return self.result

    def _changed(self, target, before, want):
        """Whether placing the layer changed ``dest``: a decompressed layer whose diff_id nothing gave
        beforehand (schema 1, an artifact) may be what was there."""
        return want is not None or self.request.force or digests.file_digest(target) != before

    def _current_top(self):
        if self.options.offline:
            return None
        head = self.client.head_manifest()
        return head[0] if head else None

    # ---------------------------------------------------------------- without the registry
    def _known_locally(self, target, current):
        """True when ``dest`` provably holds the layer: its record names what the reference resolves to now,
        or it was asked for by digest (and is not decompressed) and hashes to it."""
        if self.wanted is not None and not self.request.decompress and current == self.wanted:
            # asked for by digest and already there: nothing to ask the registry (it may be down)
            self.result.update(self._recorded(read_record(target)))
            self.result.update(image=str(self.reference), layer_digest=self.wanted, size=os.path.getsize(target))
            return True
        current_top = self._current_top
        if self.wanted is not None:
            # a layer named by digest decompresses to one tar whatever the tag names now: a record of this
            # request whose output is still on dest proves it without asking the registry
            recorded = jsonutil.get_dict({"r": read_record(target)}, "r")

            def recorded_top():
                return recorded.get("top")
            current_top = recorded_top
        record = known_output(target, self.reference, self._request_key(), current_top, RECORD_VERSION)
        if record is not None:
            self.result.update(self._recorded(record))
            self.result["image"] = str(self.reference)
            return True
        return False

    def _recorded(self, record):
        """The result fields a record kept on dest by this request holds (none from another request)."""
        if not isinstance(record, dict) or record.get("request") != self._request_key():
            return {}
        return dict((k, v) for k, v in jsonutil.get_dict(record, "result").items() if k in _RESULT_KEYS)

    # ---------------------------------------------------------------- from the registry (or the store)
    def _select(self):
        req = self.request
        client = self.client
        resolved = client.resolve(self.options.wanted_platform(), check_config=not req.check_mode)
        layers = resolved.image.layers
        if not layers:
            raise NotFound("%s has no layers" % self.reference)
        position = layer_position(layers, self.wanted, req.index, self.reference)
        descriptor = layers[position]
        diff_id = None
        if req.decompress or not req.check_mode:
            # the diff_id lives only in the config; check mode fetches it only when it must compare against it
            diff_id = self._config_diff_id(resolved, position, len(layers))
        self.result.update(image=str(self.reference), digest=resolved.digest, manifest_digest=resolved.manifest_digest,
                           config_digest=resolved.config_digest, platform=resolved.platform,
                           layer_digest=descriptor.get("digest"), diff_id=diff_id, size=descriptor.get("size"),
                           media_type=descriptor.get("mediaType"))
        return resolved, descriptor, diff_id

    def _config_diff_id(self, resolved, position, count):
        """The layer's diff_id from the image config, or None where there is none to check against: a schema 1
        image (its config is computed from its layers) and an artifact (its config is read only for
        ``decompress``, and used only when it lists one diff_id per layer)."""
        image = resolved.image
        if image.is_schema1:
            return None
        if not image.is_artifact:
            return config_diff_ids(self.client.get_config(resolved), count, "the config of %s" % self.reference)[position]
        if not self.request.decompress:
            return None
        try:
            return config_diff_ids(self.client.get_config(resolved), count)[position]
        except ManifestError:
            return None

    def _placed(self, blob_size, diff_id):
        """What placing the layer taught: the blob's size (schema 1 manifests give none) and, decompressed,
        its diff_id."""
        if self.result.get("size") is None:
            self.result["size"] = blob_size
        if self.request.decompress and self.result.get("diff_id") is None:
            self.result["diff_id"] = diff_id

    def _bounds(self, descriptor, target):
        return InflateBounds("layer %s" % descriptor["digest"], descriptor.get("size"),
                             self.request.max_inflation_ratio, os.path.dirname(os.path.abspath(target)))

    def _place(self, target, descriptor, diff_id):
        if self.store is not None:
            self._from_store(target, descriptor, diff_id)
        elif self.request.decompress:
            self._download_unpacked(target, descriptor, diff_id)
        else:
            partial = _beside(target, "part")
            result = download(self.client, descriptor, partial)
            self.result["resumed"] = result.resumed
            install(partial, target)
            self._placed(result.size, None)

    def _download_unpacked(self, target, descriptor, diff_id):
        """One pass: the blob goes to the resumable .part file while its tar goes to a fixed-name temp file
        that becomes ``dest`` (a killed run leaves nothing the next run does not replace)."""
        partial = _beside(target, "part")
        unpacking = _beside(target, "unpacking")
        try:
            fd = os.open(unpacking, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w+b") as handle:
                def sink_factory():
                    return Unpacker(RewoundFile(handle), descriptor["digest"], bounds=self._bounds(descriptor, target),
                                    inflater=self.request.inflater)
                result = download(self.client, descriptor, partial, sink_factory, sync=False)
                if diff_id is not None and result.sink_result.diff_id != diff_id:
                    raise DiffIdMismatch("uncompressed layer does not match its diff_id: expected %s, got %s"
                                         % (diff_id, result.sink_result.diff_id))
                handle.flush()
                os.fsync(handle.fileno())
            self.result["resumed"] = result.resumed
            install(unpacking, target)
            self._placed(result.size, result.sink_result.diff_id)
        except NoSpace:
            raise              # the .part file is kept: the next run, with room made, resumes it
        except (DigestMismatch, DecompressionError, LimitExceeded):
            _remove(partial)   # a verified blob whose content is wrong or too big: nothing to resume from
            raise
        finally:
            _remove(unpacking)
        _remove(partial)

    def _from_store(self, target, descriptor, diff_id):
        """Fetch the blob into the store (unless it is there) and copy or decompress it to ``dest``, verified
        on the way (a blob that rotted in the store is dropped and downloaded once more)."""
        store = self.store
        digest = descriptor["digest"]
        for attempt in (1, 2):
            source, result = fetch_to_store(self.client, store, descriptor)
            if result is not None:
                self.result["resumed"] = result.resumed
            expected = diff_id if self.request.decompress else None
            kind = "auto" if self.request.decompress else "none"
            bounds = self._bounds(descriptor, target) if self.request.decompress else None
            unpacked = []
            try:
                safe_write(target, lambda handle: unpacked.append(decompress_stream(
                    source, handle, kind=kind, expected_digest=digest, expected_diff_id=expected,
                    inflater=self.request.inflater, bounds=bounds)))
                self._placed(unpacked[0].size, unpacked[0].diff_id)
                return
            except DiffIdMismatch:
                raise          # the blob is what its digest says; the image is inconsistent, the store is not
            except (DigestMismatch, DecompressionError):
                if result is not None or attempt == 2 or digests.file_digest(source) == digest:
                    raise      # just downloaded and verified, or intact in the store: nothing to fetch again
                store.remove_blob(digest)   # rotted in the store: drop it and download it once more


def _beside(target, suffix):
    directory, name = os.path.split(os.path.abspath(target))
    return os.path.join(directory, ".%s.%s" % (name, suffix))


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["LayerJob", "LayerRequest", "layer_position"]
