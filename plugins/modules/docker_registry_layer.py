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
  - hocker.registry._registry.image
  - hocker.registry._registry.attributes
  - hocker.registry._registry.actiongroup
  - hocker.registry._registry.dest
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    details:
      - Only manifests are fetched, and no layer is downloaded; nothing is written.
      - With O(decompress=true) the small image config is fetched too, because the diff_id that O(dest) is
        compared with is only found there.
      - RV(platform) is null for a single-platform image (its platform is only written in its config) and
        RV(diff_id) is null without O(decompress=true).
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
      - A blob of an OCI artifact is decompressed if it is compressed and checked against a diff_id only when
        the artifact's config lists them; a layer of a Docker schema 1 image is checked against its blob
        digest only (schema 1 has no diff_ids). RV(diff_id) then is the digest of what was written.
    type: bool
    default: false
  force:
    description:
      - Download and write the layer even when O(dest) already holds it.
    type: bool
    default: false
  max_inflation_ratio:
    description:
      - With O(decompress=true), stop a layer that inflates to more than this many times its compressed size
        once it is past 256 MiB (a decompression bomb); V(0) removes the bound. Inflating always stops before
        the file system of O(dest) has less than 64 MiB free.
    type: int
    default: 200
notes:
  - Any blob of an OCI artifact (an SBOM, a signature, a Helm chart) is fetched like a layer, by O(index) among
    the artifact's layers or by O(layer) digest.
  - For a Docker schema 1 image (deprecated; a warning says so), O(index) counts the layers base first without
    the empty steps (C(throwaway) history entries), as its schema 2 form lists them.
  - When O(dest) already holds the layer asked for by digest (O(layer), without O(decompress)), the module
    hashes it and asks the registry nothing, so a converged host does not need the registry; the image fields
    (RV(digest), RV(manifest_digest), RV(config_digest), RV(platform)) are then returned only if the record
    this module keeps on O(dest) (an extended attribute) has them.
  - Otherwise an unchanged re-run asks the registry one HEAD request (none for a digest reference) when the
    record on O(dest) still names what the reference resolves to; with O(cache_dir), manifests and configs
    come from the blob store by digest.
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
  description:
    - The digest of the uncompressed layer tar, from the image config.
    - For what has no diff_ids to give (a schema 1 image, an artifact whose config lists none), the digest of
      the decompressed content with O(decompress=true), else null.
  returned: success (null in check mode without O(decompress=true), where the config is not fetched)
  type: str
  sample: sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef
size:
  description:
    - The size of the layer blob in bytes, as the manifest gives it (also with O(decompress=true)); for a schema
      1 image, whose manifest gives no sizes, as the blob turned out (null in check mode).
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

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule
from ansible_collections.hocker.registry.plugins.module_utils._registry.layerjob import LayerJob, LayerRequest


def fetch(rm):
    p = rm.params
    request = LayerRequest(dest=p["dest"], layer=p["layer"], index=p["index"], decompress=p["decompress"],
                           force=p["force"], follow=p["follow"], check_mode=rm.check_mode,
                           max_inflation_ratio=p["max_inflation_ratio"])
    rm.finish_job(LayerJob(lambda: rm.client, rm.reference, rm.store, request, rm.options, rm.warn).run(), p["dest"])


def main():
    rm = RegistryModule(
        argument_spec=dict(
            layer=dict(type="str"),
            index=dict(type="int"),
            dest=dict(type="path", required=True),
            decompress=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
            follow=dict(type="bool", default=False),
            max_inflation_ratio=dict(type="int", default=200),
        ),
        file_args=True,
        mutually_exclusive=[["layer", "index"]],
        required_one_of=[["layer", "index"]],
        keep_results=("size",),
    )
    if rm.params["max_inflation_ratio"] < 0:
        rm.module.fail_json(msg="max_inflation_ratio must be 0 (no bound) or more")
    rm.run(fetch)


if __name__ == "__main__":
    main()
