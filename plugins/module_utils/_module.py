# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The Ansible adapter shared by every module: argument spec, client construction, errors, safe writes.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import gc
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hocker.registry.plugins.module_utils._registry import _compat, credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import Credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.client import RegistryClient
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import MissingLibrary, RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import host_platform, parse_platform
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore, hash_file

COMMON_ARGS = dict(
    image=dict(type="str", required=True),
    registry=dict(type="str"),
    tag=dict(type="str"),
    platform=dict(type="str"),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    token=dict(type="str", no_log=True),
    docker_config=dict(type="path"),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    timeout=dict(type="int", default=60),
    retries=dict(type="int", default=3),
    cache_dir=dict(type="path"),
    offline=dict(type="bool", default=False),
    registry_mirrors=dict(type="list", elements="str"),
)

COMMON_REQUIRED_TOGETHER = [["client_cert", "client_key"], ["username", "password"]]
COMMON_MUTUALLY_EXCLUSIVE = [["token", "username"], ["token", "password"]]


class RegistryModule:
    """An AnsibleModule with the shared options, plus helpers that every module of the collection uses."""

    def __init__(self, argument_spec=None, supports_check_mode=True, file_args=False, mutually_exclusive=None,
                 required_if=None, required_one_of=None):
        spec = dict(COMMON_ARGS)
        spec.update(argument_spec or {})
        self.module = AnsibleModule(
            argument_spec=spec,
            supports_check_mode=supports_check_mode,
            add_file_common_args=file_args,
            required_together=COMMON_REQUIRED_TOGETHER,
            mutually_exclusive=COMMON_MUTUALLY_EXCLUSIVE + list(mutually_exclusive or []),
            required_if=required_if,
            required_one_of=required_one_of,
        )
        self.params = self.module.params
        self.started = time.time()
        self.result = {"changed": False, "bytes_downloaded": 0}
        self._client = None
        self._reference = None
        self._store = None

    # ---------------------------------------------------------------- pieces built from the options
    @property
    def check_mode(self):
        return self.module.check_mode

    @property
    def diff_mode(self):
        return self.module._diff

    def warn(self, message):
        self.module.warn(message)

    @property
    def reference(self):
        if self._reference is None:
            self._reference = parse_reference(self.params["image"], self.params.get("registry"),
                                              self.params.get("tag"))
        return self._reference

    def wanted_platform(self):
        """The Platform asked for (or this host's); ``all`` is handled by the modules that allow it."""
        value = self.params.get("platform")
        if value:
            return parse_platform(value)
        return host_platform()

    def credentials(self):
        params = self.params
        if params.get("username") or params.get("token"):
            return Credentials(username=params.get("username"), password=params.get("password"),
                               token=params.get("token"), source="the module options")
        found = credentials.lookup(self.reference, params.get("docker_config"), self.warn)
        # a second line of defence: Ansible masks these wherever they might show up
        for secret in found.secrets():
            self.module.no_log_values.add(secret)
        return found

    @property
    def store(self):
        """The blob store of ``cache_dir`` (None without one)."""
        if self.check_mode and not self.params.get("offline"):
            # check mode writes nothing, not even into the blob store
            return None
        if self._store is None and self.params.get("cache_dir"):
            self._store = BlobStore(self.params["cache_dir"], create=not self.params.get("offline"))
        return self._store

    @property
    def client(self):
        if self._client is None:
            _compat.require_requests()
            p = self.params
            self._client = RegistryClient(
                self.reference, credentials=self.credentials() if not p.get("offline") else None,
                store=self.store, offline=p.get("offline"), validate_certs=p["validate_certs"],
                ca_path=p.get("ca_path"), client_cert=p.get("client_cert"), client_key=p.get("client_key"),
                timeout=p["timeout"], retries=p["retries"], warn=self.warn, tls_for_host=credentials.tls_for_url,
                mirrors=p.get("registry_mirrors"))
        return self._client

    # ---------------------------------------------------------------- results
    def describe(self, resolved):
        """The return values every module gives, from a client Resolved."""
        self.result.update(
            image=str(self.reference),
            digest=resolved.digest,
            manifest_digest=resolved.manifest_digest,
            config_digest=resolved.config_digest,
            platform=resolved.platform,
        )
        client = self._client
        if client is not None:
            self.result["source"] = client.store.path if client.offline else client.source

    def run(self, body):
        """Call ``body(self)``; turn client errors into fail_json; add elapsed and bytes_downloaded."""
        gc.freeze()   # the imported modules: no garbage collection walks them while the module runs
        try:
            body(self)
        except MissingLibrary as exc:
            self._finish()
            self.module.fail_json(msg=missing_required_lib(exc.library), exception=exc.import_error, **self.result)
        except RegistryError as exc:
            self._finish()
            self.module.fail_json(msg=str(exc), **self.result)
        except (OSError, IOError) as exc:
            self._finish()
            self.module.fail_json(msg="%s: %s" % (getattr(exc, "filename", None) or "I/O error",
                                                  exc.strerror or str(exc)), **self.result)
        self._finish()
        self.module.exit_json(**self.result)

    def _finish(self):
        # Everything allocated so far lives until the process ends: frozen, the interpreter's last garbage
        # collection at exit does not walk it again (20 to 30 ms of every run with ansible-core and requests
        # loaded).
        gc.freeze()
        if self._client is not None:
            self.result["bytes_downloaded"] = self._client.bytes_downloaded
        self.result["elapsed"] = round(time.time() - self.started, 3)
        if "image" not in self.result and self._reference is not None:
            self.result["image"] = str(self._reference)

    # ---------------------------------------------------------------- files
    def apply_file_attributes(self, path, changed):
        """Apply mode/owner/group/...; returns the new changed flag (check mode aware)."""
        if not os.path.lexists(path):
            return changed
        file_args = self.module.load_file_common_arguments(self.params, path=path)
        return self.module.set_fs_attributes_if_different(file_args, changed)

    def write_bytes(self, dest, data):
        """Put ``data`` at ``dest`` atomically unless it is already there. Returns True if it changed."""
        digest_new = hashlib.sha256(data).hexdigest()
        digest_old = file_sha256(dest)
        if self.diff_mode:
            self.result["diff"] = {
                "before": {"dest": dest, "digest": ("sha256:" + digest_old) if digest_old else None},
                "after": {"dest": dest, "digest": "sha256:" + digest_new},
            }
        changed = digest_old != digest_new
        if changed and not self.check_mode:
            self.atomic_write(dest, lambda fh: fh.write(data))
        return self.apply_file_attributes(dest, changed)

    def atomic_write(self, dest, producer):
        """Write through ``producer(fileobj)`` into a temp file beside ``dest``, fsync, rename over ``dest``.

        A failure leaves ``dest`` untouched and removes the temp file.
        """
        directory = os.path.dirname(os.path.abspath(dest)) or "."
        if not os.path.isdir(directory):
            raise RegistryError("the directory of dest %s does not exist" % dest)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(dest), suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                producer(handle)
                handle.flush()
                os.fsync(handle.fileno())
            self.module.atomic_move(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def file_sha256(path):
    """sha256 hex of a regular file, or None if it does not exist."""
    if not path or not os.path.isfile(path):
        return None
    return hash_file(path)[0].split(":", 1)[1]
