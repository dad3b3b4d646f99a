# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Registry content kept byte for byte: everything below a manifest, for an OCI layout.

PRIVATE to the hocker.registry collection: may change at any time.

``platform: all`` copies the registry's index into an OCI layout as it is (so the layout's digest is the
digest the reference resolves to, and signatures and attestations that name it still apply), and an OCI
artifact is copied as it is whatever the layers mode. ``walk(client, top)`` fetches every manifest below
``top`` (index entries of every kind: images, attestations, artifacts, nested indexes) and returns a
``Tree``: the manifests, the config descriptors, the other blobs (each once), every manifest layer for the
module's ``layers`` result, and the first runnable image (the first entry that is neither an attestation nor
an artifact) that names the result's ``manifest_digest`` and ``config_digest``. Only manifests are fetched:
check mode can walk too. ``artifact_refusal(manifest, what)`` is the error for an artifact asked for as an
image.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import MAX_CONFIG_SIZE, config_diff_ids
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import is_attestation

MAX_DEPTH = 4
MAX_MANIFESTS = 1000


class Tree:
    """Everything below ``top`` (see the module docstring)."""

    def __init__(self, top):
        self.top = top
        self.manifests = []     # Manifest objects, top first, each once
        self.configs = []       # config descriptors, each once
        self.blobs = []         # descriptors of the other blobs, each once, in order
        self.layers = []        # (layer descriptor, config digest, position, count) of every manifest layer
        self.first_image = None
        self._seen = set()

    def top_descriptor(self):
        """The descriptor index.json names: the top manifest's, with its artifactType when it has one."""
        descriptor = {"mediaType": self.top.media_type, "digest": self.top.digest, "size": self.top.size}
        artifact_type = self.top.data.get("artifactType")
        if isinstance(artifact_type, str) and artifact_type:
            descriptor["artifactType"] = artifact_type
        return descriptor

    def metadata(self, configs):
        """``[(digest, bytes)]`` of the manifests and of ``configs`` ({digest: bytes})."""
        return [(m.digest, m.raw) for m in self.manifests] + [(d["digest"], configs[d["digest"]]) for d in self.configs]

    def layer_blobs(self):
        """The blobs that are neither manifests nor configs (an empty descriptor can be both a config and a
        layer: it is kept once, with the configs)."""
        small = set(m.digest for m in self.manifests) | set(d["digest"] for d in self.configs)
        return [d for d in self.blobs if d["digest"] not in small]

    def layer_report(self, configs=None):
        """One ``{digest, diff_id, size, media_type}`` per manifest layer, in order, repeats included; the
        diff_id from the image config when ``configs`` ({digest: bytes}) holds one that lists them."""
        diff_ids = {}
        report = []
        for descriptor, config_digest, position, count in self.layers:
            if (config_digest, count) not in diff_ids:
                diff_ids[(config_digest, count)] = _diff_ids(configs, config_digest, count)
            found = diff_ids[(config_digest, count)]
            report.append({"digest": descriptor["digest"], "diff_id": found[position] if found else None,
                           "size": descriptor.get("size"), "media_type": descriptor.get("mediaType")})
        return report

    def add(self, manifest, runnable):
        if manifest.digest in self._seen:
            return False
        if len(self.manifests) >= MAX_MANIFESTS:
            raise ManifestError("%s names more than %d manifests" % (self.top.digest, MAX_MANIFESTS))
        self._seen.add(manifest.digest)
        self.manifests.append(manifest)
        if manifest.is_index:
            return True
        config = manifest.config
        if config.get("digest") not in self._seen:
            self._seen.add(config.get("digest"))
            self.configs.append(config)
        for position, layer in enumerate(manifest.layers):
            self.layers.append((layer, config.get("digest"), position, len(manifest.layers)))
            if layer["digest"] not in self._seen:
                self._seen.add(layer["digest"])
                self.blobs.append(layer)
        if runnable and self.first_image is None and not manifest.is_artifact:
            self.first_image = manifest
        return True


def _diff_ids(configs, config_digest, count):
    raw = (configs or {}).get(config_digest)
    if raw is None:
        return None
    try:
        return config_diff_ids(jsonutil.loads(raw, "config %s" % config_digest, limit=MAX_CONFIG_SIZE), count)
    except ManifestError:
        return None


def walk(client, top):
    """The Tree of everything below ``top`` (a Manifest; see the module docstring)."""
    tree = Tree(top)
    _visit(client, tree, top, 0, True)
    return tree


def _visit(client, tree, manifest, depth, runnable):
    if manifest.is_schema1:
        raise ManifestError("%s is a Docker schema 1 manifest, which an OCI layout cannot keep as it is"
                            % manifest.digest)
    if not tree.add(manifest, runnable) or not manifest.is_index:
        return
    if depth >= MAX_DEPTH:
        raise ManifestError("image indexes are nested more than %d deep" % MAX_DEPTH)
    for entry in manifest.manifests:
        digest = entry["digest"]
        child = client.manifest_by_digest(digest, "entry %s of %s" % (digest, manifest.digest))
        _visit(client, tree, child, depth + 1, runnable and not is_attestation(entry))


def fetch_configs(client, tree):
    """{digest: bytes} of every config of ``tree`` (from the blob store when it holds them)."""
    return dict((d["digest"], client.get_blob_bytes(d, MAX_CONFIG_SIZE, "config")) for d in tree.configs)


def artifact_refusal(manifest, what):
    """The error for an OCI artifact asked for as an image (a docker-archive)."""
    return ManifestError("%s is an OCI artifact (artifactType %s), not an image: a docker-archive cannot hold it; "
                         "use format oci-archive or oci-dir, which keep it byte for byte"
                         % (what, manifest.artifact_type))


__all__ = ["Tree", "artifact_refusal", "fetch_configs", "walk"]
