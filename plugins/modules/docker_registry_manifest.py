#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_manifest
short_description: Fetch an image manifest from a Docker/OCI registry without a container daemon
version_added: 0.1.0
description:
  - Fetches the manifest of an image (hocker's C(hocker-manifest)) straight from the registry, selects the
    platform from a multi-platform index, and returns it parsed.
  - With O(dest), writes the exact bytes the registry served (so their sha256 is the manifest digest).
  - Docker schema 2 and OCI manifests (OCI artifacts too), Docker manifest lists and OCI indexes (nested ones
    too) are supported. Index entries that name no platform are matched by the os and architecture in their
    image config, as containerd does.
  - Docker schema 1 manifests (signed and unsigned) are returned as served, with a warning that schema 1 is
    deprecated; their digest is the digest of the signed payload, as the registry and docker compute it.
  - With O(referrers=true), also lists the artifacts (signatures, SBOMs, attestations) whose C(subject) is the
    resolved digest.
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
      - Manifests are fetched (they are needed to know whether O(dest) would change); nothing is written.
      - The config of an index entry that names no platform is fetched too when the selection needs it (it
        is the only place that entry's platform is written).
  diff_mode:
    support: full
    details: Shows the digest of O(dest) before and after.
  idempotent:
    support: full
options:
  dest:
    description:
      - Write the exact manifest bytes to this file. The file is replaced atomically, only when its content
        differs.
      - Without O(dest) nothing is written and the module only returns the manifest.
    type: path
  index:
    description:
      - Write (and return in RV(manifest)) the index or manifest list the reference names instead of the
        selected platform's manifest. For an image that has no index, this is the image manifest itself.
    type: bool
    default: false
  referrers:
    description:
      - Also return RV(referrers), the descriptors of the manifests whose C(subject) is the resolved RV(digest)
        (OCI 1.1 referrers - signatures, SBOMs, attestations).
      - They are asked of the registry's referrers API (C(/v2/<name>/referrers/<digest>)); a registry without
        it is asked for the index tagged C(sha256-<hex>) that clients pushing referrers keep (the tag schema).
      - Not available with O(offline=true).
    type: bool
    default: false
seealso:
  - module: hocker.registry.docker_registry_config
  - module: hocker.registry.docker_registry_image
"""

EXAMPLES = r"""
- name: Show the manifest of hello-world for this host's platform
  hocker.registry.docker_registry_manifest:
    image: hello-world
  register: hello

- name: Save the arm64 manifest of an image on a private registry
  hocker.registry.docker_registry_manifest:
    image: reg.example.com:8443/team/app:1.2
    platform: linux/arm64
    username: deploy
    password: "{{ registry_password }}"
    dest: /srv/images/app-1.2-arm64.manifest.json
    mode: "0644"

- name: Save the whole index of a multi-platform image
  hocker.registry.docker_registry_manifest:
    image: library/debian:12
    index: true
    dest: /srv/images/debian-12.index.json

- name: List the signatures, SBOMs and attestations that refer to an image
  hocker.registry.docker_registry_manifest:
    image: ghcr.io/example/app:1.2
    referrers: true
  register: app

- name: Show the signatures among them
  ansible.builtin.debug:
    msg: "{{ app.referrers | selectattr('artifactType', 'defined')
             | selectattr('artifactType', 'equalto', 'application/vnd.dev.cosign.artifact.sig.v1+json') | list }}"

- name: Hocker-style registry URL and separate tag
  hocker.registry.docker_registry_manifest:
    registry: http://127.0.0.1:5000/v2/
    image: library/app
    tag: v1
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
  description:
    - The digest of the selected image's config (the image ID).
    - Null for a Docker schema 1 manifest, whose config only exists once it is converted
      (M(hocker.registry.docker_registry_config) converts it).
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
  description:
    - The selected platform, V(os/arch[/variant]).
    - In check mode it is null for a single-platform image, whose platform is only written in its config
      (check mode fetches no blob).
  returned: success
  type: str
  sample: linux/amd64
manifest:
  description: The parsed manifest (the index when O(index=true)).
  returned: success
  type: dict
  sample: {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}
media_type:
  description: The media type of RV(manifest).
  returned: success
  type: str
  sample: application/vnd.oci.image.manifest.v1+json
platforms:
  description:
    - The platforms the index offers (attestations left out); an entry that names no platform is listed with
      the platform of its image config.
  returned: when the reference names an index
  type: list
  elements: str
  sample: [linux/amd64, linux/arm64/v8, linux/arm/v7]
index:
  description: The parsed index or manifest list.
  returned: when the reference names an index
  type: dict
referrers:
  description:
    - The descriptors (C(mediaType), C(digest), C(size), C(artifactType), C(annotations)) of the manifests whose
      C(subject) is RV(digest), as the registry lists them; empty when there are none.
  returned: when O(referrers=true)
  type: list
  elements: dict
  sample:
    - mediaType: application/vnd.oci.image.manifest.v1+json
      digest: sha256:3a8f0e0bd6b2d4b1c6ab1b4c3d7f6e8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e
      size: 721
      artifactType: application/vnd.dev.cosign.artifact.sig.v1+json
dest:
  description: Where the manifest was written.
  returned: when O(dest) is given
  type: str
changed:
  description: Whether O(dest) was (or in check mode would be) changed.
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

from ansible_collections.hocker.registry.plugins.module_utils._module import RegistryModule
from ansible_collections.hocker.registry.plugins.module_utils._registry.smalljobs import manifest_job


def fetch(rm):
    p = rm.params
    result = manifest_job(rm, dest=p.get("dest"), index=p["index"], follow=p["follow"], referrers=p["referrers"])
    rm.finish_job(result, p.get("dest"))


def main():
    rm = RegistryModule(
        argument_spec=dict(
            dest=dict(type="path"),
            index=dict(type="bool", default=False),
            referrers=dict(type="bool", default=False),
            follow=dict(type="bool", default=False),
        ),
        file_args=True,
    )
    rm.run(fetch)


if __name__ == "__main__":
    main()
