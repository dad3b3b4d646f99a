#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_config
short_description: Fetch an image's config from a Docker/OCI registry without a container daemon
version_added: 0.1.0
description:
  - Fetches the config blob of an image (hocker's C(hocker-config)) for the selected platform, verifies it
    against its digest (the image ID), and returns it parsed.
  - With O(dest), writes the exact bytes, so the file's sha256 is the image ID.
  - The config of an OCI artifact is returned as it is (V({}) for the empty config).
  - A Docker schema 1 image (deprecated; a warning says so) has no config blob. Its config is made the way
    containers/image (skopeo, podman) converts the image to schema 2, byte for byte, so RV(config_digest) is
    the image ID they show; that needs the diff_ids of its layers, so its layers are fetched and hashed
    (through O(cache_dir) when given) - not in check mode, where RV(config) is then null.
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
      - Manifests and the (small) config are fetched to know whether O(dest) would change; nothing is written.
      - For a Docker schema 1 image the layers would have to be fetched to compute the config, so RV(config) is
        null and O(dest) is reported as changed unless it provably holds the config already.
  diff_mode:
    support: full
    details: Shows the digest of O(dest) before and after.
  idempotent:
    support: full
options:
  dest:
    description:
      - Write the exact config bytes to this file, atomically and only when the content differs.
    type: path
seealso:
  - module: hocker.registry.docker_registry_manifest
"""

EXAMPLES = r"""
- name: Read the config of an image and show what it runs
  hocker.registry.docker_registry_config:
    image: ghcr.io/owner/app:1.2
  register: cfg

- name: Print the entrypoint and command (an image may set either, or both)
  ansible.builtin.debug:
    msg: "{{ cfg.config.config.Entrypoint | default([]) + cfg.config.config.Cmd | default([]) }}"

- name: Save the arm/v7 config next to the layers of an image
  hocker.registry.docker_registry_config:
    image: localhost:5000/app:v1
    platform: linux/arm/v7
    dest: /srv/images/app/config.json
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
  description: The digest of the config (the image ID).
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
  description: The selected platform, V(os/arch[/variant]).
  returned: success
  type: str
  sample: linux/amd64
config:
  description: The parsed image config.
  returned: success
  type: dict
  sample: {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]}, "rootfs": {"type": "layers", "diff_ids": []}}
dest:
  description: Where the config was written.
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
from ansible_collections.hocker.registry.plugins.module_utils._registry.smalljobs import config_job


def fetch(rm):
    p = rm.params
    rm.finish_job(config_job(rm, dest=p.get("dest"), follow=p["follow"]), p.get("dest"))


def main():
    rm = RegistryModule(argument_spec=dict(dest=dict(type="path"), follow=dict(type="bool", default=False)),
                        file_args=True)
    rm.run(fetch)


if __name__ == "__main__":
    main()
