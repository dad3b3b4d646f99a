#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: store_sync
short_description: Send a host the image blobs its store lacks, from a blob store on the controller
version_added: 0.1.0
description:
  - Relays images from a blob store on the controller (O(src), filled for example by
    M(hocker.registry.docker_registry_image) with O(hocker.registry.docker_registry_image#module:cache_dir))
    to a blob store on the managed host (O(dest)), so that the host assembles them with
    M(hocker.registry.docker_registry_image) and O(hocker.registry.docker_registry_image#module:offline=true)
    without reaching a registry and without credentials.
  - The controller works out which blobs the images need (the index, nested indexes, the image manifests of
    the platforms asked for, their configs and layers); the host reports which of them its store lacks, and
    only those are sent, through the task's connection plugin (ssh, local, docker, podman, ...). Small blobs
    travel together in one uncompressed tar per batch; big blobs are streamed one file each, without a
    checksum pass on the controller (the controller's store verified them when it wrote them).
  - The host verifies the size and digest of every blob that arrives, syncs it to disk and renames it into
    its store, so an interrupted transfer leaves nothing damaged behind; the next run sends only what is
    still missing (complete blobs an interrupted run left in the connection user's temporary directory are
    verified and taken instead of being sent again).
  - A blob already in the host's store counts as present when its size matches and its file has not changed
    since it was last verified (a marker of its size, inode and times, kept in the store); otherwise it is
    hashed again, and a damaged one is replaced by a good copy.
  - Finally the host's C(index.json) names each image as in O(src), so
    M(hocker.registry.docker_registry_image) finds it by its reference.
  - This is an action plugin with a module part; the module part runs on the host and is not meant to be
    called on its own.
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry.attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: The host reports what it lacks; nothing is sent or written. RV(sent) and RV(bytes_sent) say what
      would be sent.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A second run finds every blob present, sends nothing and reports no change.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
options:
  src:
    description:
      - The blob store on the controller to send from.
      - Defaults to the value of the variable C(image_deploy_controller_cache_dir) (the
        C(hocker.registry.image_deploy) role's controller store) when that is defined.
    type: path
  dest:
    description:
      - The blob store on the managed host. It is created when it does not exist.
    type: path
    required: true
  images:
    description:
      - The images to send, as references (V(ghcr.io/owner/app:1.2), V(127.0.0.1:5000/app@sha256:<hex>), ...)
        that are named in the C(index.json) of O(src), the way M(hocker.registry.docker_registry_image) stored
        them.
      - Defaults to every image named in the C(index.json) of O(src).
    type: list
    elements: str
  platforms:
    description:
      - The platforms (V(os/arch[/variant]), for example V(linux/arm64)) to send of each multi-platform image;
        each must be in O(src), and the image manifest chosen for it is the one
        M(hocker.registry.docker_registry_image) chooses for that O(hocker.registry.docker_registry_image#module:platform).
      - A single-platform image is sent when it runs on every platform given (and is an error otherwise).
      - Defaults to every platform of each image that O(src) holds.
    type: list
    elements: str
  _hocker_sync:
    description:
      - Internal. What the action plugin found out and sends to the host (the step, the blobs, the staging
        directory). Set by the action plugin only; a task that sets it is refused.
    type: dict
notes:
  - The managed host needs Python 3.9 or newer; the C(requests) library is not needed for this module.
  - The files sent go to the connection's remote temporary directory (C(remote_tmp)) first, and are moved into
    O(dest) from there (copied when O(dest) is on another file system or the file cannot be moved).
  - Leftovers of interrupted runs in the remote temporary directories are removed after an hour.
  - Over the C(ssh) connection, when the task's C(ssh_args) ask for compression (C(-C), which Ansible's default
    C(ssh_args) do, and which OpenSSH servers grant by default), the blobs travel over a second connection to
    the host without compression (a C(ControlPath) of its own in the control path directory), since layers
    are compressed already and ssh's zlib only slows them down (several times over on a fast network).
    The module parts keep using the task's own connection.
  - The markers live in C(ingest/verified.json) inside the store. A blob is hashed again when its size, inode,
    modification or change time moved since it was verified; uses the store records move the modification
    time too, so the layers an assembly used since the last relay are hashed once more (about a quarter of a
    second per 400 MB). Damage that changes none of those (a failing disk) is not seen without a full
    verification (for example C(docker_registry_store) with C(verify=true)).
seealso:
  - module: hocker.registry.docker_registry_image
"""

EXAMPLES = r"""
- name: Fetch the image once, on the controller
  hocker.registry.docker_registry_image:
    image: ghcr.io/owner/app:1.2
    platform: linux/amd64
    cache_dir: /var/cache/hocker-controller
    dest: /var/cache/hocker-controller-app.tar
  delegate_to: localhost
  run_once: true

- name: Send each host only what its store lacks
  hocker.registry.store_sync:
    src: /var/cache/hocker-controller
    dest: /var/cache/hocker
    images:
      - ghcr.io/owner/app:1.2
    platforms:
      - linux/amd64

- name: Assemble the archive on the host, from its store alone
  hocker.registry.docker_registry_image:
    image: ghcr.io/owner/app:1.2
    cache_dir: /var/cache/hocker
    offline: true
    dest: /srv/images/app-1.2.tar

- name: Seed a new host with everything the controller's store holds
  hocker.registry.store_sync:
    src: /var/cache/hocker-controller
    dest: /var/cache/hocker
"""

RETURN = r"""
sent:
  description: How many blobs were sent (in check mode, would be sent).
  returned: success
  type: int
  sample: 3
bytes_sent:
  description: The size of the blobs sent (in check mode, that would be sent).
  returned: success
  type: int
  sample: 83886080
present:
  description: How many of the needed blobs the host's store already held (verified).
  returned: success
  type: int
  sample: 7
reused:
  description: How many blobs were taken from complete files an interrupted earlier run left on the host.
  returned: success
  type: int
  sample: 0
replaced:
  description: How many damaged blobs were found in the host's store (and replaced by good copies, except in
    check mode).
  returned: success
  type: int
  sample: 0
transfers:
  description: How many files went through the connection (tar batches of small blobs, and big blobs one each).
  returned: success
  type: int
  sample: 2
blobs:
  description: How many blobs the images need in all.
  returned: success
  type: int
  sample: 10
sent_blobs:
  description: The blobs sent (or that would be sent in check mode).
  returned: success
  type: list
  elements: dict
  contains:
    digest:
      description: The blob's digest.
      type: str
    size:
      description: The blob's size.
      type: int
images:
  description: The images relayed.
  returned: success
  type: list
  elements: dict
  contains:
    image:
      description: The name in C(index.json) (the normalised reference).
      type: str
    digest:
      description: The digest the name points to (an index or an image manifest).
      type: str
    platforms:
      description: The platforms sent.
      type: list
      elements: str
  sample:
    - image: ghcr.io/owner/app:1.2
      digest: sha256:6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c
      platforms: [linux/amd64]
recorded:
  description: The image names added to or changed in the host's C(index.json).
  returned: success
  type: list
  elements: str
src:
  description: The controller's store.
  returned: always
  type: str
dest:
  description: The host's store.
  returned: always
  type: str
changed:
  description: Whether the host's store changed (blobs added, replaced or taken over, or names recorded).
  returned: always
  type: bool
durations:
  description:
    - Seconds spent in each step - C(inspect) (the host's report of what it lacks), C(transfer) (sending
      the blobs) and C(receive) (verifying and committing them on the host); the last two only when something
      was sent.
  returned: success
  type: dict
  sample: {"inspect": 0.41, "transfer": 4.87, "receive": 1.02}
elapsed:
  description: Seconds the task took.
  returned: always
  type: float
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore
from ansible_collections.hocker.registry.plugins.module_utils._registry.sync import Receiver, check_blob_list


STEPS = ("inspect", "receive")


def _private(module):
    """The arguments the action plugin passes in ``_hocker_sync``, checked."""
    data = module.params["_hocker_sync"]
    if not isinstance(data, dict) or data.get("step") not in STEPS:
        module.fail_json(msg="store_sync works through its action plugin (hocker.registry.store_sync) and cannot "
                             "run as a bare module")
    staging = data.get("staging")
    if not isinstance(staging, str) or not os.path.isabs(staging):
        module.fail_json(msg="store_sync: invalid staging directory %r" % (staging,))
    for key in ("entries", "batches", "files"):
        if not isinstance(data.get(key, []), list):
            module.fail_json(msg="store_sync: invalid %s" % key)
    return data


def _inspect(module, data, blobs):
    dest = module.params["dest"]
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise RegistryError("dest %s exists and is not a directory (a blob store is a directory)" % dest)
    entries = data.get("entries") or []
    if module.check_mode and not os.path.isfile(os.path.join(dest, "oci-layout")):
        # nothing there yet: everything would be sent (and check mode creates nothing)
        return {"missing": list(blobs), "present": 0, "replaced": [], "reused": [], "changed": bool(blobs),
                "recorded": [e.get("name") for e in entries if isinstance(e, dict)]}
    created = not os.path.isfile(os.path.join(dest, "oci-layout"))
    store = BlobStore(dest, create=not module.check_mode)
    receiver = Receiver(store, module.check_mode)
    result = receiver.inspect(blobs, data["staging"])
    result["recorded"] = []
    if not result["missing"]:
        result["recorded"] = receiver.record(entries)
    result["changed"] = bool(created or result["reused"] or result["replaced"] or result["recorded"])
    return result


def _receive(module, data, blobs):
    if module.check_mode:
        raise RegistryError("store_sync receives nothing in check mode")
    receiver = Receiver(BlobStore(module.params["dest"]))
    partial = bool(data.get("partial"))
    added = receiver.receive(blobs, data["staging"], data.get("batches") or [], data.get("files") or [], partial)
    recorded = [] if partial else receiver.record(data.get("entries") or [])
    return {"added": added, "recorded": recorded, "changed": bool(added or recorded)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path"),
            dest=dict(type="path", required=True),
            images=dict(type="list", elements="str"),
            platforms=dict(type="list", elements="str"),
            # private: what the action plugin found out and sent (step, blobs, entries, staging, batches, files)
            _hocker_sync=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    data = _private(module)
    result = {"dest": module.params["dest"]}
    try:
        blobs = check_blob_list(data.get("blobs") or [])
        step = _inspect if data["step"] == "inspect" else _receive
        result.update(step(module, data, blobs))
    except RegistryError as exc:
        module.fail_json(msg=str(exc), **result)
    except (OSError, IOError) as exc:
        module.fail_json(msg="%s: %s" % (getattr(exc, "filename", None) or "I/O error", exc.strerror or str(exc)),
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
