#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_layer
short_description: Fetch one layer of an image from a Docker/OCI registry, verified and resumable
version_added: 0.1.0
description:
  - Fetches a single layer blob of an image (hocker's C(hocker-layer)) for granular deployments where
    C(docker pull) cannot run.
  - The download streams to disk in constant memory, is verified against the layer digest (and, with
    O(decompress=true), the uncompressed tar against the config's diff_id) before it lands, and replaces O(dest)
    atomically. A failed or corrupt download never replaces a good O(dest).
  - An interrupted download resumes with HTTP range requests, within the same run (see O(retries)) and across
    runs from the partial file (kept in O(cache_dir), or beside O(dest) as C(.<name>.part)).
  - With O(cache_dir), a layer already in the blob store is never downloaded again, also for other images
    sharing it.
  - Foreign (non-distributable) layers are fetched from the URLs in their descriptor without registry
    credentials, falling back to the registry.
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry
  - hocker.registry._registry.attributes
  - hocker.registry._registry.actiongroup
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details:
      - Only manifests are fetched, and no layer is downloaded; nothing is written.
      - With O(decompress=true) the small image config is fetched too, because the diff_id that O(dest) is
        compared with is only found there.
  diff_mode:
    support: full
    details: Shows the digest of O(dest) before and after.
  idempotent:
    support: full
    details: When O(dest) already holds the layer (checked by hashing it), nothing is downloaded.
options:
  layer:
    description:
      - The digest of the layer, V(sha256:<hex>) or hocker's bare 64 hex digits.
      - Exactly one of O(layer) and O(index) is required.
    type: str
  index:
    description:
      - The position of the layer in the manifest's layer list, starting at V(0) for the base layer; negative
        values count from the top (V(-1) is the topmost layer).
    type: int
  dest:
    description:
      - The file to write the layer to.
    type: path
    required: true
  decompress:
    description:
      - Write the uncompressed tar instead of the blob as stored in the registry. gzip (also multi-member),
        zstd and uncompressed layers are handled; the result is verified against the diff_id in the image config.
    type: bool
    default: false
  force:
    description:
      - Download and write the layer even when O(dest) already holds it.
    type: bool
    default: false
seealso:
  - module: hocker.registry.docker_registry_image
  - module: hocker.registry.docker_registry_manifest
"""

EXAMPLES = r"""
- name: Fetch the top layer of an image
  hocker.registry.docker_registry_layer:
    image: ghcr.io/owner/app:1.2
    index: -1
    dest: /srv/layers/app-top.tar.gz

- name: Read the manifest to know the layers
  hocker.registry.docker_registry_manifest:
    image: reg.example.com/team/app:1.2
    platform: linux/arm64
  register: app

- name: Fetch every layer, uncompressed, sharing a blob store with other images
  hocker.registry.docker_registry_layer:
    image: reg.example.com/team/app:1.2
    platform: linux/arm64
    layer: "{{ item.digest }}"
    decompress: true
    cache_dir: /var/cache/hocker
    dest: "/srv/layers/{{ item.digest | replace('sha256:', '') }}.tar"
  loop: "{{ app.manifest.layers }}"

- name: Same layer on a host without network, from the blob store
  hocker.registry.docker_registry_layer:
    image: reg.example.com/team/app:1.2
    platform: linux/arm64
    layer: "{{ app.manifest.layers[0].digest }}"
    cache_dir: /var/cache/hocker
    offline: true
    dest: /srv/layers/base.tar.gz
"""

RETURN = r"""
image:
  description: The normalised image reference.
  returned: always
  type: str
  sample: registry-1.docker.io/library/debian:12
digest:
  description: The digest the reference resolves to (the index's digest when the tag names an index).
  returned: success
  type: str
  sample: sha256:b1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5d
manifest_digest:
  description: The digest of the selected platform's image manifest.
  returned: success
  type: str
  sample: sha256:6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c
config_digest:
  description: The digest of the image config (the image ID).
  returned: success
  type: str
  sample: sha256:0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc
source:
  description:
    - Where the image came from - the registry's base URL, the O(registry_mirrors) entry that served it, or
      the O(cache_dir) path with O(offline=true).
  returned: success
  type: str
  sample: https://registry-1.docker.io
platform:
  description: The selected platform.
  returned: success
  type: str
  sample: linux/amd64
layer_digest:
  description: The registry digest of the layer blob.
  returned: success
  type: str
  sample: sha256:cd0a524342efac6edff500c17e625735bbe479c926439b263bbe3c8518a0849c
diff_id:
  description: The digest of the uncompressed layer tar, from the image config.
  returned: success (null in check mode without O(decompress=true), where the config is not fetched)
  type: str
  sample: sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
size:
  description: The size of the layer blob in bytes, as the manifest gives it.
  returned: success
  type: int
  sample: 52550276
media_type:
  description: The media type of the layer blob.
  returned: success
  type: str
  sample: application/vnd.docker.image.rootfs.diff.tar.gzip
dest:
  description: Where the layer was written.
  returned: success
  type: str
  sample: /srv/layers/app-top.tar.gz
resumed:
  description: Whether the download continued bytes received earlier (an earlier run or a broken connection).
  returned: success
  type: bool
  sample: false
changed:
  description: Whether O(dest) was (or in check mode would be) changed.
  returned: always
  type: bool
bytes_downloaded:
  description: Body bytes received from the registry (0 when nothing was fetched).
  returned: always
  type: int
elapsed:
  description: Seconds the module ran.
  returned: always
  type: float
"""

import os
import re

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule, file_sha256
from ansible_collections.hocker.registry.plugins.module_utils._registry.blobs import (
    download, fetch_to_store, foreign_urls)
from ansible_collections.hocker.registry.plugins.module_utils._registry.compression import (
    DecompressionError, decompress_stream)
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, InvalidReference, NotFound)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import config_diff_ids
from ansible_collections.hocker.registry.plugins.module_utils._registry.pipeline import download_unpacked


def _layer_position(layers, layer, index, image):
    if layer is not None:
        wanted = layer.strip().lower()
        if re.match(r"^[a-f0-9]{64}$", wanted):
            wanted = "sha256:" + wanted
        if not re.match(r"^sha256:[a-f0-9]{64}$", wanted):
            raise InvalidReference("layer must be a digest such as sha256:<64 hex digits>, got %r" % layer)
        for position, descriptor in enumerate(layers):
            if descriptor.get("digest") == wanted:
                return position
        raise NotFound("%s has no layer %s (it has %d layers)" % (image, wanted, len(layers)))
    if not -len(layers) <= index < len(layers):
        raise NotFound("%s has %d layers; index %d is out of range" % (image, len(layers), index))
    return index % len(layers)


def fetch(rm):
    p = rm.params
    client = rm.client
    resolved = client.resolve(rm.wanted_platform(), check_config=not rm.check_mode)
    rm.describe(resolved)
    layers = resolved.image.layers
    if not layers:
        raise NotFound("%s has no layers" % rm.reference)
    position = _layer_position(layers, p.get("layer"), p.get("index"), rm.reference)
    descriptor = layers[position]
    diff_id = None
    if p["decompress"] or not rm.check_mode:
        # the diff_id lives only in the config; check mode fetches it only when it must compare against it
        diff_ids = config_diff_ids(client.get_config(resolved), len(layers), "the config of %s" % rm.reference)
        diff_id = diff_ids[position]
    dest = p["dest"]
    rm.result.update(layer_digest=descriptor.get("digest"), diff_id=diff_id, size=descriptor.get("size"),
                     media_type=descriptor.get("mediaType"), dest=dest, resumed=False)
    want = diff_id if p["decompress"] else descriptor["digest"]
    if os.path.isdir(dest):
        raise InvalidReference("dest %s is a directory; give a file name" % dest)
    current = file_sha256(dest)
    current = ("sha256:" + current) if current else None
    if rm.diff_mode:
        rm.result["diff"] = {"before": {"dest": dest, "digest": current}, "after": {"dest": dest, "digest": want}}
    if current == want and not p["force"]:
        rm.result["changed"] = rm.apply_file_attributes(dest, False)
        return
    if rm.check_mode:
        rm.result["changed"] = True
        return
    _place(rm, client, descriptor, diff_id, dest)
    rm.result["changed"] = rm.apply_file_attributes(dest, True)


def _place(rm, client, descriptor, diff_id, dest):
    if rm.store is not None:
        _place_from_store(rm, client, descriptor, diff_id, dest)
        return
    decompress = rm.params["decompress"]
    directory, name = os.path.split(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise NotFound("the directory of dest %s does not exist" % dest)
    partial = os.path.join(directory, ".%s.part" % name)
    if decompress:
        # one pass: the blob goes to the partial file (a broken download resumes from it on the next run)
        # while its tar goes to a temp file that becomes dest; the temp file has a fixed name, so a run that
        # is killed leaves nothing the next run does not replace
        unpacking = os.path.join(directory, ".%s.unpacking" % name)
        try:
            fd = os.open(unpacking, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w+b") as handle:
                rm.result["resumed"] = download_unpacked(client, descriptor, diff_id, partial, handle).resumed
                handle.flush()
                os.fsync(handle.fileno())
            rm.module.atomic_move(unpacking, dest)
        except (DigestMismatch, DecompressionError):
            # a verified blob whose content is wrong: nothing to resume from
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        finally:
            if os.path.exists(unpacking):
                os.unlink(unpacking)
        os.unlink(partial)
        return
    result = download(client, descriptor, partial, foreign_urls(descriptor))
    rm.result["resumed"] = result.resumed
    rm.module.atomic_move(partial, dest)


def _place_from_store(rm, client, descriptor, diff_id, dest):
    """Fetch the blob into the blob store (unless it is there) and copy or decompress it to ``dest``."""
    store = rm.store
    decompress = rm.params["decompress"]
    for attempt in (1, 2):
        source, result = fetch_to_store(client, store, descriptor)
        if result is not None:
            rm.result["resumed"] = result.resumed
        try:
            if decompress:
                rm.atomic_write(dest, lambda fh: decompress_stream(source, fh, expected_digest=descriptor["digest"],
                                                                   expected_diff_id=diff_id))
            else:
                # a plain copy, verified on the way (the stored blob may have rotted)
                rm.atomic_write(dest, lambda fh: decompress_stream(source, fh, kind="none",
                                                                   expected_digest=descriptor["digest"]))
            return
        except DigestMismatch:
            # a blob that rotted in the store: drop it and download it once more
            store.remove_blob(descriptor["digest"])
            if attempt == 2 or result is not None:
                raise


def main():
    rm = RegistryModule(
        argument_spec=dict(
            layer=dict(type="str"),
            index=dict(type="int"),
            dest=dict(type="path", required=True),
            decompress=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
        ),
        file_args=True,
        mutually_exclusive=[["layer", "index"]],
        required_one_of=[["layer", "index"]],
    )
    rm.run(fetch)


if __name__ == "__main__":
    main()
