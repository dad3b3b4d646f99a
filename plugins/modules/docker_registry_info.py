#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_info
short_description: Inspect an image on a Docker/OCI registry without downloading it
version_added: 0.1.0
description:
  - Tells whether an image exists on a registry, which digest its reference resolves to, which platforms it
    offers, and for each platform its manifest and config digests, compressed size and layer count, without
    downloading any layer.
  - A missing tag, image or repository is not a failure; RV(exists) is then V(false). Authentication
    failures, TLS and connection errors still fail.
  - With O(config=true), also reads each platform's config (creation time, labels, entrypoint, command,
    environment, user, working directory). With O(tags=true), lists the repository's tags.
  - Nothing is ever written, neither on the registry nor on disk. An existing O(cache_dir) blob store is
    only read (manifests and configs it holds by digest are not fetched again); it is never created or
    changed by this module.
  - "Request cost: with O(manifests=false), one HEAD request (it does not count as a pull on Docker Hub).
    Otherwise one GET of the manifest, plus for a multi-platform image one GET per platform manifest, or
    for a single-platform image one GET of its (small) config, which names its platform. With O(cache_dir),
    a HEAD first, and every manifest and config the store already holds is read from it. O(config=true)
    adds one config GET per platform (store first); O(tags=true) one GET per page of the tag list."
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry
  - hocker.registry._registry.image
  - hocker.registry._registry.attributes
  - hocker.registry._registry.actiongroup
attributes:
  check_mode:
    support: full
    details: The module only reads; it answers the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  manifests:
    description:
      - Fetch the manifest (and for an index each platform's manifest, and for a single-platform image its
        config) to return RV(platforms), RV(manifests), RV(manifest_digest) and RV(config_digest).
      - With V(false), only a HEAD request is sent and only RV(exists), RV(digest) and RV(media_type) are
        returned (as the registry reports them). V(false) is ignored when O(config=true).
    type: bool
    default: true
  config:
    description:
      - Also read each platform's image config and return RV(manifests[].created), RV(manifests[].labels),
        RV(manifests[].entrypoint), RV(manifests[].cmd), RV(manifests[].env), RV(manifests[].user) and
        RV(manifests[].working_dir), and the same fields at the top level for the selected platform.
    type: bool
    default: false
  tags:
    description:
      - Also list the repository's tags in RV(tags), following the registry's C(Link) pagination through
        every page.
      - A missing repository gives an empty list.
      - With O(offline=true), the tags the O(cache_dir) blob store holds for the repository.
    type: bool
    default: false
  limit:
    description:
      - With O(tags=true), return at most this many tags (the first ones in lexical order). Pages after the
        one that reaches the limit are not fetched.
    type: int
notes:
  - O(platform) (default this host's) only selects which platform's digests fill the top-level
    RV(manifest_digest), RV(config_digest) and RV(platform); RV(manifests) always lists every platform.
    When the image has nothing for that platform, those fields are null (not a failure).
  - RV(digest) with O(manifests=false) is the C(Docker-Content-Digest) the registry announces; with a
    manifest fetched it is computed from the bytes received.
  - Docker Hub answers HTTP 401 for a repository that does not exist (it cannot tell it from a private one),
    so there a missing repository fails as an authentication error instead of giving RV(exists=false).
  - With O(offline=true), the O(cache_dir) blob store alone answers, and RV(exists) tells whether the store
    holds the image.
seealso:
  - module: hocker.registry.docker_registry_manifest
  - module: hocker.registry.docker_registry_config
  - module: hocker.registry.docker_registry_store
"""

EXAMPLES = r"""
- name: Does the tag exist, and which digest does it name? (one HEAD request)
  hocker.registry.docker_registry_info:
    image: ghcr.io/owner/app:1.2
    manifests: false
  register: app

- name: Fail early when the release is not pushed yet
  ansible.builtin.assert:
    that: app.exists
    fail_msg: ghcr.io/owner/app:1.2 is not on the registry

- name: Platforms, sizes and labels of a multi-platform image
  hocker.registry.docker_registry_info:
    image: library/debian:12
    config: true
  register: debian

- name: Show the compressed size of each platform
  ansible.builtin.debug:
    msg: "{{ debian.manifests | items2dict(key_name='platform', value_name='size') }}"

- name: The last 20 tags (lexically) of a repository on a private registry
  hocker.registry.docker_registry_info:
    image: reg.example.com:8443/team/app
    username: deploy
    password: "{{ registry_password }}"
    manifests: false
    tags: true
  register: app_tags

# ad hoc:
# ansible localhost -m hocker.registry.docker_registry_info -a 'image=localhost:5000/app tags=true'
"""

RETURN = r"""
image:
  description: The normalised image reference.
  returned: always
  type: str
  sample: registry-1.docker.io/library/debian:12
exists:
  description:
    - Whether the registry has the image the reference names (the tag, or the digest).
    - V(false) for a missing tag, manifest or repository; the other image fields are then null or empty.
  returned: success
  type: bool
  sample: true
digest:
  description: The digest the reference resolves to (the index's digest when the tag names an index).
  returned: success
  type: str
  sample: sha256:b1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5d
media_type:
  description: The media type of what the reference names (an index, a manifest list or an image manifest).
  returned: success
  type: str
  sample: application/vnd.oci.image.index.v1+json
platforms:
  description:
    - The platforms the image offers (attestations left out), in index order.
    - For a single-platform image, the platform its config names.
    - Empty with O(manifests=false).
  returned: success
  type: list
  elements: str
  sample: [linux/amd64, linux/arm64/v8]
manifests:
  description:
    - One entry per platform image, in index order (one entry for a single-platform image). Empty with
      O(manifests=false).
  returned: success
  type: list
  elements: dict
  contains:
    platform:
      description: V(os/arch[/variant]); null for a single-platform image whose config names none.
      type: str
      sample: linux/arm64/v8
    manifest_digest:
      description: The digest of the platform's image manifest.
      type: str
    media_type:
      description: The media type of that manifest.
      type: str
    config_digest:
      description: The digest of its config (the image ID).
      type: str
    size:
      description:
        - The compressed size of the image in bytes, the sum of the sizes of its layers as they are
          downloaded. The config and the manifest are not counted.
      type: int
      sample: 29150387
    layers:
      description: The number of layers.
      type: int
      sample: 3
    created:
      description: The creation time the config records (O(config=true)).
      type: str
      sample: "2024-01-01T00:00:00Z"
    labels:
      description: The config's labels (O(config=true); empty when there are none).
      type: dict
    entrypoint:
      description: The config's entrypoint (O(config=true); null when unset).
      type: list
      elements: str
    cmd:
      description: The config's command (O(config=true); null when unset).
      type: list
      elements: str
    env:
      description: The config's environment, V(NAME=value) strings (O(config=true)).
      type: list
      elements: str
    user:
      description: The config's user (O(config=true)).
      type: str
    working_dir:
      description: The config's working directory (O(config=true)).
      type: str
  sample:
    - platform: linux/amd64
      manifest_digest: sha256:6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c
      media_type: application/vnd.oci.image.manifest.v1+json
      config_digest: sha256:0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc
      size: 29150387
      layers: 1
attestations:
  description:
    - The attestation manifests of an index (build provenance, SBOMs), which are not platforms.
    - Each has C(digest), C(media_type), C(size) and C(subject) (the digest of the platform manifest it is
      about).
  returned: when the index has attestation entries
  type: list
  elements: dict
manifest_digest:
  description: The manifest digest of the selected platform (O(platform), default this host's); null when
    the image has nothing for it.
  returned: success
  type: str
config_digest:
  description: The config digest of the selected platform; null when the image has nothing for it.
  returned: success
  type: str
platform:
  description: The selected platform; null when the image has nothing for it.
  returned: success
  type: str
  sample: linux/amd64
created:
  description: The selected platform's creation time.
  returned: when O(config=true) and a platform was selected
  type: str
labels:
  description: The selected platform's labels.
  returned: when O(config=true) and a platform was selected
  type: dict
entrypoint:
  description: The selected platform's entrypoint.
  returned: when O(config=true) and a platform was selected
  type: list
  elements: str
cmd:
  description: The selected platform's command.
  returned: when O(config=true) and a platform was selected
  type: list
  elements: str
env:
  description: The selected platform's environment.
  returned: when O(config=true) and a platform was selected
  type: list
  elements: str
user:
  description: The selected platform's user.
  returned: when O(config=true) and a platform was selected
  type: str
working_dir:
  description: The selected platform's working directory.
  returned: when O(config=true) and a platform was selected
  type: str
tags:
  description: The repository's tags, sorted, at most O(limit).
  returned: when O(tags=true)
  type: list
  elements: str
  sample: ["1.0", "1.1", latest]
source:
  description: The registry (or mirror) base URL that answered, or the O(cache_dir) path with O(offline=true).
  returned: success
  type: str
changed:
  description: Always V(false); the module changes nothing.
  returned: always
  type: bool
bytes_downloaded:
  description: Body bytes received from the registry.
  returned: always
  type: int
elapsed:
  description: Seconds the module ran.
  returned: always
  type: float
"""

import os

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.inspect import (
    ReadOnlyStore, inspect_image, list_tags)


class InfoModule(RegistryModule):
    """A RegistryModule whose blob store is only read, in check mode too (the module writes nothing)."""

    @property
    def store(self):
        path = self.params.get("cache_dir")
        if self._store is None and path and (self.params.get("offline")
                                             or os.path.isfile(os.path.join(path, "oci-layout"))):
            self._store = ReadOnlyStore(path)
        return self._store


def inspect(rm):
    p = rm.params
    if p.get("limit") is not None and p["limit"] < 1:
        raise RegistryError("limit must be 1 or more")
    client = rm.client
    found = inspect_image(client, rm.wanted_platform(), manifests=p["manifests"], config=p["config"])
    rm.result["image"] = str(rm.reference)
    rm.result.update(found.result())
    if p["tags"]:
        rm.result["tags"] = list_tags(client, p.get("limit"))
    rm.result["source"] = client.store.path if client.offline else client.source


def main():
    rm = InfoModule(
        argument_spec=dict(
            manifests=dict(type="bool", default=True),
            config=dict(type="bool", default=False),
            tags=dict(type="bool", default=False),
            limit=dict(type="int"),
        ),
    )
    rm.run(inspect)


if __name__ == "__main__":
    main()
