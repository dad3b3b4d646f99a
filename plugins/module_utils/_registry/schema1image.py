# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""A Docker schema 1 image made whole: the facts only its layers hold, and its schema 2 form.

PRIVATE to the hocker.registry collection: may change at any time.

A schema 1 manifest has no config blob and no layer sizes; the schema 2 config it converts to
(``schema1.Schema1.schema2_config``) needs the diff_id of every layer, so the layers are fetched and their
uncompressed content hashed. ``layer_facts(client, manifest, store)`` does that for the config module (the
blobs go through the blob store when there is one, else nowhere); the image module learns the same facts
while it fetches the layers into its archive (``pipeline``) and calls ``converted`` with them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import compute as compute_digest
from ansible_collections.hocker.registry.plugins.module_utils._registry.download import download, fetch_to_store
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    DOCKER_MANIFEST, parse_manifest)
from ansible_collections.hocker.registry.plugins.module_utils._registry.sinks import (
    DEFAULT_INFLATION_RATIO, InflateBounds, Unpacker, decompress_stream)


class Converted:
    """The schema 2 form of a schema 1 image: ``config`` bytes, ``manifest`` (a manifest.Manifest of the
    schema 2 manifest), ``config_digest``, and the layer ``pairs`` [(descriptor with size, diff_id)]."""

    def __init__(self, config, manifest, pairs):
        self.config = config
        self.manifest = manifest
        self.config_digest = compute_digest(config)
        self.pairs = pairs


def converted(manifest, facts):
    """The schema 2 form of the schema 1 ``manifest`` (a manifest.Manifest) from ``facts``: {blob digest:
    (diff_id, size)} of its layers."""
    schema1 = manifest.schema1
    if schema1 is None:
        raise ManifestError("%s is not a schema 1 manifest" % manifest.digest)
    layers = schema1.layers
    missing = [d["digest"] for d in layers if d["digest"] not in facts]
    if missing:
        raise ManifestError("layer %s of %s was not fetched" % (missing[0], manifest.digest))
    diff_ids = [facts[d["digest"]][0] for d in layers]
    sizes = [facts[d["digest"]][1] for d in layers]
    config, raw = schema1.to_schema2(diff_ids, sizes)
    schema2 = parse_manifest(raw, DOCKER_MANIFEST, None, "the schema 2 form of %s" % manifest.digest)
    return Converted(config, schema2, list(zip(schema2.layers, diff_ids)))


def layer_facts(client, manifest, store=None, max_inflation_ratio=DEFAULT_INFLATION_RATIO):
    """{blob digest: (diff_id, size)} of every layer of a schema 1 ``manifest``, each blob fetched once (from
    the blob store when it holds it) and its uncompressed content hashed, nothing else written."""
    facts = {}
    for descriptor in manifest.layers:
        digest = descriptor["digest"]
        if digest not in facts:
            facts[digest] = _facts_of(client, descriptor, store, max_inflation_ratio)
    return facts


def _facts_of(client, descriptor, store, max_inflation_ratio):
    digest = descriptor["digest"]

    def hasher():
        return Unpacker(None, digest, bounds=InflateBounds("layer %s" % digest, None, max_inflation_ratio))

    if store is None:
        result = download(client, descriptor, None, hasher, sync=False)
        return result.sink_result.diff_id, result.size
    path, result = fetch_to_store(client, store, descriptor, hasher)
    if result is not None:
        return result.sink_result.diff_id, result.size
    unpacked = decompress_stream(path, None, expected_digest=digest)
    return unpacked.diff_id, unpacked.size


__all__ = ["Converted", "converted", "layer_facts"]
