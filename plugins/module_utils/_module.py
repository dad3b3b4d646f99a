# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""The Ansible adapter shared by every module: argument spec groups, options, client, errors, results.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gc
import os
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hocker.registry.plugins.module_utils._registry import destination
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import MissingLibrary, RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.options import (
    MASK, ClientOptions, build_client, mask_credentials, open_store)


class _AnsibleModule(AnsibleModule):
    """An AnsibleModule whose raw parameters lose any ``user:password@`` typed into a registry URL or an image
    before anything (validation errors, the ``invocation`` echoed at -vvv) can show them."""

    def _load_params(self):
        super(_AnsibleModule, self)._load_params()
        mask_credentials(self.params)

    def _log_invocation(self):
        # a NUL byte makes Ansible's own logging fail with a message about syslog: say what is wrong instead
        for name, value in self.params.items():
            if isinstance(value, str) and "\0" in value:
                self.fail_json(msg="%s contains a NUL byte, which no path or name can hold" % name)
        super(_AnsibleModule, self)._log_invocation()


# Argument spec groups, each matching a part of the doc fragment hocker.registry._registry.
IMAGE_ARGS = dict(
    image=dict(type="str", required=True, aliases=["name"]),
    registry=dict(type="str"),
    tag=dict(type="str"),
    platform=dict(type="str"),
)
AUTH_ARGS = dict(
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    token=dict(type="str", no_log=True),
    docker_config=dict(type="path", aliases=["config_path"]),
)
CONNECTION_ARGS = dict(
    validate_certs=dict(type="bool", default=True, aliases=["tls_verify"]),
    ca_path=dict(type="path", aliases=["ca_cert"]),
    client_cert=dict(type="path"),
    client_key=dict(type="path", no_log=False),
    timeout=dict(type="int", default=60),
    retries=dict(type="int", default=3),
    registry_mirrors=dict(type="list", elements="str"),
)
CACHE_ARGS = dict(
    cache_dir=dict(type="path"),
    offline=dict(type="bool", default=False),
)
REQUIRED_TOGETHER = [["client_cert", "client_key"], ["username", "password"]]
MUTUALLY_EXCLUSIVE = [["token", "username"], ["token", "password"]]


def common_argument_spec(without_aliases=()):
    """The shared options (every group), minus the aliases named in ``without_aliases`` (a module whose own
    option has that name)."""
    spec = {}
    for group in (IMAGE_ARGS, AUTH_ARGS, CONNECTION_ARGS, CACHE_ARGS):
        for name, option in group.items():
            option = dict(option)
            if option.get("aliases"):
                option["aliases"] = [a for a in option["aliases"] if a not in without_aliases]
                if not option["aliases"]:
                    del option["aliases"]
            spec[name] = option
    return spec


class RegistryModule:
    """An AnsibleModule with the shared options, plus what every module of the collection needs."""

    def __init__(self, argument_spec=None, supports_check_mode=True, file_args=False, mutually_exclusive=None,
                 required_if=None, required_one_of=None, without_aliases=(), keep_results=()):
        spec = common_argument_spec(without_aliases)
        spec.update(argument_spec or {})
        self.module = _AnsibleModule(
            argument_spec=spec,
            supports_check_mode=supports_check_mode,
            add_file_common_args=file_args,
            required_together=REQUIRED_TOGETHER,
            mutually_exclusive=MUTUALLY_EXCLUSIVE + list(mutually_exclusive or []),
            required_if=required_if,
            required_one_of=required_one_of,
        )
        if keep_results:
            self._keep_results(keep_results)
        self.params = self.module.params
        self.started = time.time()
        self.result = {"changed": False, "bytes_downloaded": 0}
        self._client = None
        self._reference = None
        self._store = None
        try:
            self._check_credentials_in_urls()
            self.options = ClientOptions.from_mapping(self.params)
        except RegistryError as exc:
            self.module.fail_json(msg=str(exc), **self.result)

    def _check_credentials_in_urls(self):
        for name in ("registry", "image"):
            if MASK in (self.params.get(name) or ""):
                raise RegistryError("%s must not contain credentials (user:password@); give them in username and "
                                    "password (or token) instead, which are never logged" % name)
        if any(MASK in (m or "") for m in self.params.get("registry_mirrors") or ()):
            raise RegistryError("registry_mirrors must not contain credentials (user:password@); mirrors are "
                                "asked anonymously")

    def _keep_results(self, names):
        """Ansible adds file facts (uid, mode, size, ...) of a result's ``dest`` to the result; keep the
        module's own values of ``names`` (the layer module's ``size`` is the blob's, not the file's)."""
        add_path_info = self.module.add_path_info

        def keep(kwargs):
            own = dict((name, kwargs[name]) for name in names if kwargs.get(name) is not None)
            add_path_info(kwargs)
            kwargs.update(own)
            return kwargs
        self.module.add_path_info = keep

    # ---------------------------------------------------------------- pieces built from the options
    @property
    def check_mode(self):
        return self.module.check_mode

    @property
    def diff_mode(self):
        return self.module._diff

    def warn(self, message):
        self.module.warn(message)

    def hide(self, secret):
        """Never show ``secret`` in any output of this run."""
        self.module.no_log_values.add(secret)

    @property
    def reference(self):
        if self._reference is None:
            self._reference = self.options.reference()
        return self._reference

    def wanted_platform(self):
        """The Platform asked for (or this host's); ``all`` is handled by the modules that allow it."""
        return self.options.wanted_platform()

    @property
    def store(self):
        """The blob store of ``cache_dir`` (None without one, and in check mode unless offline)."""
        if self._store is None:
            self._store = open_store(self.options, self.check_mode, self.warn)
        return self._store

    @property
    def client(self):
        if self._client is None:
            self._reference, self._client = build_client(self.options, warn=self.warn, secret=self.hide,
                                                         check_mode=self.check_mode, store=self.store)
        return self._client

    # ---------------------------------------------------------------- results
    def describe_source(self):
        client = self._client
        if self.options.offline and self.store is not None:
            self.result["source"] = self.store.path
        elif client is not None and client.source:
            self.result["source"] = client.source

    def finish_job(self, result, dest=None, recurse=False):
        """Take a job's results: its diff (in diff mode), then the file attributes of ``dest``."""
        diff = result.pop("diff", None)
        if self.diff_mode and diff:
            self.result["diff"] = diff
        self.result.update(result)
        self.describe_source()
        if dest:
            self.result["changed"] = self.apply_file_attributes(dest, result.get("changed", False), recurse=recurse)

    def run(self, body):
        """Call ``body(self)``; turn client errors into fail_json; add the request counters and timing."""
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
            self.module.fail_json(msg=destination.describe_os_error(exc, exc.filename or self.params.get("dest")),
                                  **self.result)
        self._finish()
        self.module.exit_json(**self.result)

    def _finish(self):
        # Everything allocated so far lives until the process ends: frozen, the interpreter's last garbage
        # collection at exit does not walk it again (20 to 30 ms of every run with ansible-core and requests
        # loaded).
        gc.freeze()
        elapsed = time.time() - self.started
        client = self._client
        if client is not None:
            self.result["bytes_downloaded"] = client.bytes_downloaded
            self.result["requests"] = client.request_counts()
        else:
            self.result.setdefault("requests", {"head": 0, "manifest_get": 0, "blob_get": 0, "token": 0})
        self.result["elapsed"] = round(elapsed, 3)
        self.result["throughput"] = int(self.result["bytes_downloaded"] / elapsed) if elapsed > 0 else 0
        if "image" not in self.result and self._reference is not None:
            self.result["image"] = str(self._reference)

    # ---------------------------------------------------------------- files
    def apply_file_attributes(self, path, changed, recurse=False):
        """Apply mode/owner/group/... to ``path`` (and with ``recurse`` to everything below it: files get
        ``mode``, directories ``mode`` plus the execute bits wherever it gives read, so the tree stays
        traversable); returns the new changed flag. In diff mode, attribute changes show in the diff."""
        if not os.path.lexists(path):
            return changed
        diff = self.result.setdefault("diff", {"before": {}, "after": {}}) if self.diff_mode else None
        module = self.module
        args = module.load_file_common_arguments(self.params, path=path)
        if not recurse or not os.path.isdir(path):
            return module.set_fs_attributes_if_different(args, changed, diff=diff)
        changed = self._apply_to_dir(path, args, changed, diff)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                changed = self._apply_to_dir(os.path.join(root, name), args, changed, None)
            for name in files:
                changed = module.set_fs_attributes_if_different(dict(args, path=os.path.join(root, name)), changed)
        return changed

    def _apply_to_dir(self, path, args, changed, diff):
        args = dict(args, path=path)
        if args.get("mode") is not None:
            args["mode"] = "0%o" % directory_mode(self.module, path, args["mode"])
        return self.module.set_fs_attributes_if_different(args, changed, diff=diff)


def directory_mode(module, path, mode):
    """The mode a directory gets for a file ``mode`` (octal or symbolic): the same bits plus execute
    wherever read is given, so that the tree stays traversable (ansible.builtin.file with recurse does
    the same for directories with X)."""
    if isinstance(mode, int):
        bits = mode
    elif isinstance(mode, str) and mode.isdigit():
        bits = int(mode, 8)
    else:
        bits = module._symbolic_mode_to_octal(os.stat(path), mode)
    bits &= 0o7777
    return bits | ((bits & 0o444) >> 2)
