# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The whole-image job behind ``docker_registry_image``: from a reference to an archive or OCI layout.

PRIVATE to the hocker.registry collection: may change at any time.

``ImageJob(client_factory, reference, store, request, warn).run() -> dict`` (the module's results):

1. check the request and ``dest`` (``destination.check_dest``);
2. an unchanged ``dest`` (its origin record names the same inputs: normalised repository, the digest the
   reference resolves to now, platform, format, layers, compression, repo_tags) is proven intact (structure,
   stamps; everything re-hashed with ``verify``) and left alone, at the cost of one HEAD request (none for
   a digest reference or offline); a damaged one is written again;
3. resolve the platform(s), fetch the configs (check mode stops here);
4. in the locked work directory: open the destination (``imagedest``), fetch the layers into it
   (``pipeline``), commit.

Registry content that is kept byte for byte - the registry's index with ``platform: all``, an OCI artifact -
is walked (``kept.walk``) and copied as it is (``imagedest.CopySpec``), whatever ``layers`` says; an artifact
as a docker-archive is refused. A Docker schema 1 image has no config until its layers are fetched: the fetch
computes their diff_ids, and ``schema1image.converted`` makes its schema 2 form before the commit.

Nothing here imports Ansible: the module maps its options to an ``ImageRequest`` and the returned dict to
its result; tests and benchmarks call it in-process with the placement and inflater options.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
from dataclasses import dataclass
from typing import List, Optional

from ansible_collections.hocker.registry.plugins.module_utils._registry import kept, readback, schema1image
from ansible_collections.hocker.registry.plugins.module_utils._registry.destination import WorkDir, check_dest
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DestinationError, InvalidReference, ManifestError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.imagedest import (
    CopySpec, ImageSpec, check_space, open_destination)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import config_diff_ids, parse_config
from ansible_collections.hocker.registry.plugins.module_utils._registry.pipeline import (
    FetchOptions, expected_sizes, fetch_layers)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import DEFAULT_INFLATION_RATIO

RECORD_VERSION = 2


@dataclass
class ImageRequest:
    """What to write (see the module's options). ``placement``: auto|always|never (see imagedest);
    ``inflater``: auto|zlib."""

    dest: str
    format: str = "docker-archive"
    layers: str = "uncompressed"
    compression: str = "none"
    repo_tags: Optional[List[str]] = None
    max_workers: int = 4
    force: bool = False
    verify: bool = False
    follow: bool = False
    check_mode: bool = False
    placement: str = "auto"
    inflater: str = "auto"
    max_inflation_ratio: int = DEFAULT_INFLATION_RATIO


def check_repo_tags(tags):
    for tag in tags:
        ref = parse_reference(tag) if isinstance(tag, str) else None
        if ref is None or ref.digest or ":" not in tag.rsplit("/", 1)[-1]:
            raise InvalidReference("repo_tags entries must look like name:tag, got %r" % (tag,))


class ImageJob:
    """One run of docker_registry_image (see the module docstring)."""

    def __init__(self, client_factory, reference, store, request, options, warn=None):
        self.client_factory = client_factory     # () -> RegistryClient, built only when needed
        self.reference = reference
        self.store = store
        self.request = request
        self.options = options                   # ClientOptions (platform, offline)
        self.warn = warn or (lambda message: None)
        self.all_platforms = options.all_platforms
        self.platform_text = "all" if self.all_platforms else str(options.wanted_platform())
        self.repo_tags = request.repo_tags if request.repo_tags is not None else (
            [reference.familiar] if reference.tag else [])
        self.result = {"dest": request.dest, "format": request.format, "repo_tags": self.repo_tags,
                       "cache_hits": 0, "changed": False}
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    # ---------------------------------------------------------------- the steps
    def run(self):
        target = self._check_request()
        old = self._read_record(target)
        if old is not None and not self.request.force:
            source = self._source_digest()
            if old.get("inputs") == self._inputs(source) and self._intact(target, old):
                self._unchanged(old, source)
                return self.result
        top, selected = self._resolve()
        self._diff(old, top.digest)
        tree = self._kept_tree(top, selected)
        if self.request.check_mode:
            self._predict(tree, selected)
        elif tree is not None:
            self._write_kept(target, tree)
        else:
            self._write(target, top, self._images(selected))
        return self.result

    def _check_request(self):
        req = self.request
        if self.all_platforms and req.format == "docker-archive":
            raise InvalidReference("platform=all needs format oci-archive or oci-dir; a docker-archive holds one "
                                   "platform")
        if req.compression != "none" and req.format == "oci-dir":
            raise InvalidReference("compression applies to archives, not to format oci-dir")
        check_repo_tags(self.repo_tags)
        target = check_dest(req.dest, "dir" if req.format == "oci-dir" else "file", req.follow)
        if req.format == "oci-dir" and os.path.isdir(target) and os.listdir(target) \
                and readback.read_origin(target) is None:
            raise DestinationError("dest %s is a directory this module did not write; it is not replaced (give an "
                                   "empty or new directory)" % req.dest)
        return target

    def _inputs(self, source_digest):
        req = self.request
        inputs = {"version": RECORD_VERSION, "repository": self.reference.name, "source": source_digest,
                  "platform": self.platform_text, "format": req.format, "layers": req.layers,
                  "compression": req.compression, "repo_tags": list(self.repo_tags)}
        if self.all_platforms:
            inputs["index"] = "registry"   # the registry's index kept (earlier versions wrote their own)
        return inputs

    @staticmethod
    def _read_record(target):
        if not os.path.exists(target):
            return None
        index_bytes = readback.read_index_bytes(target)
        index = readback.parse_index(index_bytes) if index_bytes is not None else None
        record = readback.origin_of(index) if index else None
        if record is None or not isinstance(record.get("inputs"), dict):
            return None
        record["index_bytes"] = index_bytes
        return record

    def _source_digest(self):
        """The digest the reference names now: the reference's own, the store's (offline), a HEAD, a GET."""
        if self.reference.digest:
            return self.reference.digest
        head = self.client.head_manifest()
        if head is not None:
            return head[0]
        return self.client.get_manifest().digest

    def _intact(self, target, old):
        reason = readback.check_output(target, self.request.format, self.request.compression, old["index_bytes"],
                                       old, full=self.request.verify, restamp=not self.request.check_mode)
        if reason is not None:
            self.warn("dest %s was damaged (%s); it is written again" % (self.request.dest, reason))
            self.result["repaired"] = reason
        return reason is None

    def _unchanged(self, old, source):
        self.result.update(old.get("outputs") or {})
        self.result.update(image=str(self.reference), digest=source)
        self._diff(old, source)

    def _diff(self, old, source):
        self.result["diff"] = {"before": _diff_view((old or {}).get("inputs")), "after": _diff_view(self._inputs(source))}

    def _resolve(self):
        client = self.client
        if self.all_platforms:
            top = client.get_manifest()
            # an index is kept as it is (_kept_tree); a single image is that image
            manifests = client.resolve_all(top)[1] if not top.is_index else []
            first = manifests[0][1] if manifests else None
            self.result.update(image=str(self.reference), digest=top.digest, platform="all",
                               manifest_digest=first.digest if first else None,
                               config_digest=first.config.get("digest") if first else None)
            return top, [(plat, manifest, None) for plat, manifest in manifests]
        resolved = client.resolve(self.options.wanted_platform(), check_config=not self.request.check_mode)
        self.result.update(image=str(self.reference), digest=resolved.digest,
                           manifest_digest=resolved.manifest_digest, config_digest=resolved.config_digest,
                           platform=resolved.platform)
        return resolved.top, [(resolved.platform, resolved.image, resolved.config_bytes)]

    def _kept_tree(self, top, selected):
        """The kept.Tree of what is copied byte for byte (the registry's index with platform all, an OCI
        artifact), else None; an artifact asked for as a docker-archive is refused."""
        if self.all_platforms and top.is_index:
            tree = kept.walk(self.client, top)
            first = tree.first_image
            self.result.update(manifest_digest=first.digest if first else None,
                               config_digest=first.config.get("digest") if first else None)
            return tree
        artifacts = [manifest for _plat, manifest, _config in selected if manifest.is_artifact]
        if not artifacts:
            return None
        if self.request.format == "docker-archive":
            raise kept.artifact_refusal(artifacts[0], "%s (%s)" % (self.reference, artifacts[0].digest))
        return kept.walk(self.client, artifacts[0])

    def _predict(self, tree, selected):
        if tree is not None:
            self.result["layers"] = tree.layer_report()
        else:
            self.result["layers"] = [{"digest": d.get("digest"), "size": d.get("size"),
                                      "media_type": d.get("mediaType"), "diff_id": None}
                                     for _p, m, _c in selected for d in m.layers]
        self.result["changed"] = True

    def _images(self, selected):
        """[(manifest, config bytes, [(descriptor, diff_id)])] of the selected images; a schema 1 image's
        config and diff_ids are made while its layers are fetched (None until then)."""
        images = []
        for _plat, manifest, config_bytes in selected:
            if manifest.is_schema1:
                images.append((manifest, None, [(descriptor, None) for descriptor in manifest.layers]))
                continue
            config_bytes = config_bytes or self.client.get_blob_bytes(manifest.config, what="config")
            config = parse_config(config_bytes, "config %s" % manifest.config.get("digest"))
            diff_ids = config_diff_ids(config, len(manifest.layers), "the config of %s" % manifest.digest)
            images.append((manifest, config_bytes, list(zip(manifest.layers, diff_ids))))
        _check_one_diff_id_per_blob(images)
        return images

    # ---------------------------------------------------------------- writing
    def _outputs(self, layer_list):
        return {"manifest_digest": self.result.get("manifest_digest"), "config_digest": self.result.get("config_digest"),
                "platform": self.result.get("platform"), "layers": layer_list}

    def _write(self, target, top, images):
        req = self.request
        pairs = [pair for _m, _c, image_pairs in images for pair in image_pairs]
        self._warn_zstd(pairs)
        self.result["layers"] = _layer_list(pairs)
        spec = ImageSpec(images, req.format, req.layers, req.compression, self.repo_tags, self.reference.containerd_name,
                         {"inputs": self._inputs(top.digest), "outputs": self._outputs(self.result["layers"])})
        schema1 = any(manifest.is_schema1 for manifest, _c, _p in images)
        self._check_space(target, pairs)
        with WorkDir(target) as work:
            written = self._fetch_and_commit(target, spec, work, pairs, self._converter(spec) if schema1 else None)
            work.done()
        self.result.update(bytes_written=written["bytes_written"], changed=True)

    def _write_kept(self, target, tree):
        """Copy ``tree`` (kept.Tree) byte for byte into the OCI layout at ``target``."""
        req = self.request
        configs = kept.fetch_configs(self.client, tree)
        self.result["layers"] = tree.layer_report(configs)
        spec = CopySpec(tree.top_descriptor(), tree.metadata(configs), tree.layer_blobs(), req.format,
                        req.compression, self.repo_tags, self.reference.containerd_name,
                        {"inputs": self._inputs(self.result["digest"]), "outputs": self._outputs(self.result["layers"])})
        pairs = [(descriptor, None) for descriptor in spec.blobs]
        self._check_space(target, pairs, compressed=True)
        with WorkDir(target) as work:
            written = self._fetch_and_commit(target, spec, work, pairs)
            work.done()
        self.result.update(bytes_written=written["bytes_written"], changed=True)

    def _converter(self, spec):
        """What turns a fetched schema 1 image into its schema 2 form before the archive is written: the config
        from the diff_ids the fetch computed, each uncompressed layer file handed over under its diff_id."""
        def convert(fetched, destination):
            manifest = spec.images[0][0]
            facts = dict((digest, (layer.diff_id, layer.size)) for digest, layer in fetched.items())
            converted = schema1image.converted(manifest, facts)
            if spec.uncompressed:
                for digest, (diff_id, _size) in facts.items():
                    destination.add_file(diff_id, destination.path_of(digest))
            spec.images = [(converted.manifest, converted.config, converted.pairs)]
            self.result.update(config_digest=converted.config_digest, layers=_layer_list(converted.pairs))
            spec.write_args["origin"]["outputs"] = self._outputs(self.result["layers"])
        return convert

    def _fetch_and_commit(self, target, spec, work, pairs, before_commit=None):
        req = self.request
        client = self.client
        store = self.store

        def size_probe():
            return expected_sizes(client, pairs, store=store, max_workers=req.max_workers)

        placement = "never" if before_commit is not None else req.placement   # nothing to lay out beforehand
        destination = open_destination(target, spec, work, placement, size_probe,
                                       store.has if store is not None else None)
        try:
            fetched = fetch_layers(client, pairs, destination, work, spec.uncompressed, store=store,
                                   options=FetchOptions(req.max_workers, req.inflater, req.max_inflation_ratio,
                                                        compute_diff_ids=before_commit is not None))
            self.result["cache_hits"] = sum(1 for f in fetched.values() if f.from_cache)
            if before_commit is not None:
                before_commit(fetched, destination)
            return destination.commit()
        except BaseException:
            destination.abort()
            raise

    def _check_space(self, target, pairs, compressed=False):
        """Fail before fetching when the blobs that must be downloaded cannot fit (their sizes are known; the
        uncompressed sizes are not, and are bounded while inflating)."""
        unique = dict((d["digest"], d.get("size")) for d, _diff_id in pairs)
        missing = sum(size for digest, size in unique.items() if isinstance(size, int)
                      and (self.store is None or not self.store.has(digest, size)))
        if self.store is not None:
            check_space(self.store.path, missing, "the blob store")
            missing = 0
        archive = sum(size for size in unique.values() if isinstance(size, int)) \
            if compressed or self.request.layers == "compressed" else 0
        check_space(os.path.dirname(os.path.abspath(target)) or ".", missing + archive,
                    "writing %s" % self.request.dest)

    def _warn_zstd(self, pairs):
        if self.request.format == "docker-archive" and self.request.layers == "compressed" and any(
                "zstd" in (d.get("mediaType") or "") for d, _diff_id in pairs):
            self.warn("this image has zstd-compressed layers, which docker engines before 23.0 cannot load from a "
                      "docker-archive with layers=compressed (podman and containerd can); use layers=uncompressed "
                      "for older docker engines")


def _check_one_diff_id_per_blob(images):
    """A blob decompresses to one tar: configs that give one layer blob two diff_ids describe no image (the
    layer would be fetched once and checked against only one of them)."""
    seen = {}
    for _manifest, _config, pairs in images:
        for descriptor, diff_id in pairs:
            digest = descriptor.get("digest")
            if diff_id is None:
                continue
            if seen.setdefault(digest, diff_id) != diff_id:
                raise ManifestError("layer %s is given two diff_ids (%s and %s) by the image's configs: the image "
                                    "is inconsistent" % (digest, seen[digest], diff_id))


def _layer_list(pairs):
    """The ``layers`` result: one entry per manifest layer, in order, repeats included."""
    return [{"digest": d["digest"], "diff_id": diff_id, "size": d.get("size"), "media_type": d.get("mediaType")}
            for d, diff_id in pairs]


def _diff_view(inputs):
    """What ``dest`` is made from, as the diff shows it (source_digest: the digest the reference named)."""
    view = dict(inputs or {})
    view.pop("version", None)
    view["source_digest"] = view.pop("source", None)
    return view


__all__ = ["ImageJob", "ImageRequest", "check_repo_tags"]
