#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: docker_registry_store
short_description: Create, check, prune and size-limit a hocker.registry blob store
version_added: 0.1.0
description:
  - Looks after the blob store the other modules of the collection use as O(hocker.registry.docker_registry_image#module:cache_dir) (an OCI image
    layout - C(oci-layout), C(index.json), C(blobs/sha256/) - plus an C(ingest/) folder for partial
    downloads and locks).
  - Creates it (O(state=present)) or removes it as a whole (O(state=absent)).
  - With O(verify=true), re-hashes every blob and removes those whose content does not match their digest.
  - With O(prune=true), removes the C(index.json) entries not named in O(keep) and every blob that no kept
    entry references. An entry keeps what is reachable from it - an index, the manifests of all its
    platforms (and attestations and nested indexes), their configs and layers.
  - With O(max_size), removes whole images, least recently used first, until the store fits.
  - Safe while other runs fetch into the same store - see the notes.
author:
  - hocker.registry developers (@hocker-registry)
extends_documentation_fragment:
  - hocker.registry._registry.attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be created or removed (RV(removed), RV(removed_images), RV(freed)) and
      changes nothing.
  diff_mode:
    support: full
    details: Shows the store's size, blob count and image names before and after.
  idempotent:
    support: full
    details: A second run with the same options finds nothing more to remove (unless other runs used the
      store meanwhile).
options:
  path:
    description:
      - The store's directory, as given to the other modules' O(hocker.registry.docker_registry_image#module:cache_dir).
    type: path
    required: true
  state:
    description:
      - V(present) creates the store when it does not exist (an existing directory that is not a store gets
        the layout added).
      - V(absent) removes the whole directory, but only when it is a store (it holds an C(oci-layout) file);
        anything else fails and is left alone. No other option may be combined with V(absent).
      - A store that is a mount point cannot be removed; its content is removed instead (except
        C(lost+found)) and the empty directory stays, with a warning. An empty directory counts as absent.
    type: str
    choices: [present, absent]
    default: present
  verify:
    description:
      - Re-hash every blob; a blob that does not match its digest is removed, and so is every C(index.json)
        entry whose top manifest is then missing.
      - An image that only lost a layer keeps its entry; the next run that needs it fetches that layer
        again.
      - This reads the whole store.
    type: bool
    default: false
  prune:
    description:
      - Remove the C(index.json) entries not matched by O(keep) (all are kept without O(keep)), the blobs
        they alone referenced, and the blobs no entry references at all that were not written or used for
        O(min_age).
      - Partial downloads and temporary files of the C(ingest/) folder not written for O(min_age) are
        removed too, and at once those of a blob the store already holds.
    type: bool
    default: false
  keep:
    description:
      - The images to keep, as image references like the other modules take them in O(hocker.registry.docker_registry_image#module:image)
        (V(ghcr.io/owner/app:1.2), V(debian:12), V(localhost:5000/app@sha256:...)). They are normalised
        the same way and matched against the names the store records (for example V(debian:12) matches
        C(registry-1.docker.io/library/debian:12)). A reference with a digest also matches the entries of the
        same repository whose manifest has that digest, whatever their tag.
      - With O(prune=true), every other entry is removed. An empty list removes every entry.
      - With O(max_size), these images are never evicted.
      - Needs O(prune=true) or O(max_size).
    type: list
    elements: str
  max_size:
    description:
      - The most the store may hold, in bytes or with a unit - V(500M), V(20G), V(1.5T) (powers of 1024).
        Counted is the size of every blob and partial download.
      - When the store is larger, first the unreferenced blobs and partial downloads older than O(min_age)
        are removed (as O(prune=true) does), then whole images, least recently used first, until it fits.
        An image is used when a module fetches it or reads its manifest or config from the store; layers
        another image shares stay as long as that image stays.
      - When it still does not fit (the rest is kept by O(keep), in use, or too recent), RV(fits) is
        V(false) and a warning says so; that is not a failure.
    type: raw
  min_age:
    description:
      - How long an unreferenced blob, a partial download or a temporary file must have been left alone
        before O(prune) or O(max_size) removes it, as seconds or with a unit - V(90s), V(30m), V(1h), V(2d),
        V(1w).
      - This protects the files of runs fetching into the store at the same time (a run stores an image's
        manifest just before it records the image in C(index.json)) and partial downloads a later run can
        resume. V(0) is only safe when no other run uses the store.
    type: raw
    default: 1h
notes:
  - "Concurrent runs: the store's locks are honoured. The C(index.json) lock is held while entries are
    decided and removed, so no run records an image meanwhile; a blob or partial download whose lock a
    downloading run holds is never removed (it is listed in RV(busy)); and the new C(index.json) is written
    before the blobs of removed entries are deleted, so an interruption leaves unreferenced blobs (removed by
    the next prune), never an entry without its blobs."
  - A run fetching an image that O(prune) or O(max_size) removes at the same moment may fail to find a
    blob it has just checked; run it again.
  - The C(ingest/*.lock) files are left in place (they are empty); a lock file cannot be removed safely while
    another run may open it.
seealso:
  - module: hocker.registry.docker_registry_image
  - module: hocker.registry.docker_registry_info
"""

EXAMPLES = r"""
- name: Create the host's blob store
  hocker.registry.docker_registry_store:
    path: /var/cache/hocker

- name: Keep only what this host deploys, and at most 20 GiB
  hocker.registry.docker_registry_store:
    path: /var/cache/hocker
    prune: true
    keep:
      - ghcr.io/owner/app:1.2
      - library/debian:12
    max_size: 20G

- name: Check every blob (weekly)
  hocker.registry.docker_registry_store:
    path: /var/cache/hocker
    verify: true
  register: store

- name: Report corrupt blobs
  ansible.builtin.debug:
    msg: "{{ store.corrupt | length }} corrupt blob(s) removed; the next fetch downloads them again"
  when: store.corrupt | length > 0

- name: What would a prune remove?
  hocker.registry.docker_registry_store:
    path: /var/cache/hocker
    prune: true
    keep: "{{ deployed_images }}"
  check_mode: true
  register: would

- name: Remove the store
  hocker.registry.docker_registry_store:
    path: /var/cache/hocker
    state: absent
"""

RETURN = r"""
removed:
  description: The digests of the blobs removed (or that would be, in check mode), sorted.
  returned: when O(state=present)
  type: list
  elements: str
  sample: [sha256:0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5db1b8a4b1f2f6e1c9b1bc]
removed_images:
  description:
    - The C(index.json) entries removed, each with its C(name) (the reference it was fetched as),
      C(digest) and C(reason) - V(not_kept) (O(prune) and O(keep)), V(evicted) (O(max_size)) or
      V(missing_manifest) (O(verify) found its manifest missing or corrupt).
  returned: when O(state=present)
  type: list
  elements: dict
  sample: [{name: "registry-1.docker.io/library/debian:11", digest: "sha256:6f0e...", reason: not_kept}]
removed_partials:
  description: The file names of partial downloads and temporary files removed from C(ingest/).
  returned: when O(state=present)
  type: list
  elements: str
corrupt:
  description: The digests of the blobs O(verify) found corrupt (they are in RV(removed) too).
  returned: when O(state=present)
  type: list
  elements: str
busy:
  description: Blobs and partial downloads that would have been removed but were being written by another
    run (their lock was held); they were left alone.
  returned: when O(state=present)
  type: list
  elements: str
freed:
  description: Bytes removed (or that would be).
  returned: when O(state=present)
  type: int
size:
  description: Bytes the store holds afterwards (blobs and partial downloads).
  returned: when O(state=present)
  type: int
  sample: 734003200
size_before:
  description: Bytes the store held before.
  returned: when O(state=present)
  type: int
blobs:
  description: The number of blobs the store holds afterwards.
  returned: when O(state=present)
  type: int
images:
  description:
    - The C(index.json) entries kept, each with C(name), C(digest), C(media_type), C(size) (the bytes of
      the blobs it references that the store holds, shared layers counted in every image) and C(last_used)
      (UTC, ISO 8601 - when a module last fetched it or read its manifests or config from the store).
  returned: when O(state=present)
  type: list
  elements: dict
  sample:
    - name: registry-1.docker.io/library/debian:12
      digest: sha256:b1b8a4b1f2f6e1c9b1bc0e17a7d1f3a2f9c6f0e8a2b3d4c5e6f708192a3b4c5d
      media_type: application/vnd.oci.image.index.v1+json
      size: 49283715
      last_used: "2024-05-01T10:00:00Z"
verified:
  description: The number of blobs O(verify) hashed.
  returned: when O(verify=true)
  type: int
max_size:
  description: O(max_size) in bytes.
  returned: when O(max_size) is given
  type: int
fits:
  description: Whether the store is now at most O(max_size).
  returned: when O(max_size) is given
  type: bool
changed:
  description: Whether the store was (or in check mode would be) created, removed or changed.
  returned: always
  type: bool
elapsed:
  description: Seconds the module ran.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.storejob import StoreRequest, store_job


def manage(module):
    p = module.params
    request = StoreRequest(path=p["path"], state=p["state"], verify=p["verify"], prune=p["prune"], keep=p["keep"],
                           max_size=p["max_size"], min_age=p["min_age"], check_mode=module.check_mode,
                           diff=module._diff)
    return store_job(request, warn=module.warn)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            verify=dict(type="bool", default=False),
            prune=dict(type="bool", default=False),
            keep=dict(type="list", elements="str"),
            max_size=dict(type="raw"),
            min_age=dict(type="raw", default="1h"),
        ),
        supports_check_mode=True,
    )
    started = time.time()
    try:
        result = manage(module)
    except RegistryError as exc:
        module.fail_json(msg=str(exc))
    except (OSError, IOError) as exc:
        module.fail_json(msg="%s: %s" % (getattr(exc, "filename", None) or "I/O error", exc.strerror or str(exc)))
    result["elapsed"] = round(time.time() - started, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
