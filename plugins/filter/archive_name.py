# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: archive_name
short_description: The file name the image_deploy role gives an image's archive
version_added: 0.1.0
description:
  - Turns an image reference into the file name under which the C(hocker.registry.image_deploy) role keeps its
    archive - the familiar name docker shows (V(hello-world:latest), V(ghcr.io/o/app:1.2),
    V(localhost:5000/app:1.2)) with every C(/) and C(:) replaced by C(_), plus C(.tar).
  - A reference without a tag gets V(latest); a reference given only by digest keeps its digest
    (V(app@sha256_<hex>.tar)); with a tag and a digest, the tag names the file.
  - The reference is parsed the way the modules parse O(_input) (Docker Hub names lose C(docker.io/) and
    C(library/)); an invalid reference is an error.
author:
  - hocker.registry developers (@hocker-registry)
positional: _input
options:
  _input:
    description: An image reference, as the O(hocker.registry.docker_registry_image#module:image) option takes it.
    type: str
    required: true
  registry:
    description:
      - A registry base URL, as the modules' O(hocker.registry.docker_registry_image#module:registry) option;
        O(_input) is then a repository path on it.
    type: str
  tag:
    description: A separate tag, as the modules' O(hocker.registry.docker_registry_image#module:tag) option.
    type: str
seealso:
  - module: hocker.registry.docker_registry_image
  - module: hocker.registry.image_load
"""

EXAMPLES = r"""
- name: Where the image_deploy role puts an image's archive
  ansible.builtin.debug:
    msg: "{{ '/var/lib/hocker/images/' ~ ('ghcr.io/owner/app:1.2' | hocker.registry.archive_name) }}"
  # /var/lib/hocker/images/ghcr.io_owner_app_1.2.tar

- name: Docker Hub names are short
  ansible.builtin.assert:
    that:
      - "'library/debian' | hocker.registry.archive_name == 'debian_latest.tar'"
      - "'team/app' | hocker.registry.archive_name(registry='https://reg.example.com:8443', tag='2')
         == 'reg.example.com_8443_team_app_2.tar'"
"""

RETURN = r"""
_value:
  description: The file name (no directory).
  type: str
  sample: ghcr.io_owner_app_1.2.tar
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference


def archive_name(image, registry=None, tag=None):
    try:
        ref = parse_reference(image, registry or None, tag or None)
    except RegistryError as exc:
        raise AnsibleFilterError("hocker.registry.archive_name: %s" % exc)
    if ref.tag:
        familiar = "%s:%s" % (ref.familiar_name, ref.tag)
    elif ref.digest:
        familiar = "%s@%s" % (ref.familiar_name, ref.digest)
    else:
        familiar = ref.familiar_name + ":latest"
    return familiar.replace("/", "_").replace(":", "_") + ".tar"


class FilterModule(object):
    def filters(self):
        return {"archive_name": archive_name}
