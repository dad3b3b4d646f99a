# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Controller side of hocker.registry.store_sync (documentation: plugins/modules/store_sync.py).

1. plan: read the controller's store and list the blobs the images need (sync.plan);
2. ask the host which of them its store lacks (the module, step ``inspect``);
3. send only those through the connection plugin: small blobs in tar batches, big blobs one file each,
   into the task's remote temporary directory;
4. let the host verify and commit them and name the images (the module, step ``receive``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import shlex
import shutil
import tempfile
import time

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.path import makedirs_safe, unfrackpath

from ansible_collections.hocker.registry.plugins.module_utils._registry import sync
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import BlobStore

MODULE = "hocker.registry.store_sync"
DEFAULT_SRC_VAR = "image_deploy_controller_cache_dir"
ARGUMENT_SPEC = dict(
    src=dict(type="path"),
    dest=dict(type="str", required=True),     # a path on the host: expanded there
    images=dict(type="list", elements="str"),
    platforms=dict(type="list", elements="str"),
)


class ActionModule(ActionBase):

    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        started = time.time()
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        planned = self._plan(args, task_vars, result)
        if planned is None:
            return result
        store, plan = planned
        local_dir = None
        try:
            if self._connection._shell.tmpdir is None:
                self._make_tmp_path()
            staging = self._connection._shell.tmpdir
            common = dict(blobs=plan.blob_list(), entries=plan.entries, staging=staging)
            mark = time.time()
            inspect = self._run_step(args["dest"], dict(common, step="inspect"), task_vars)
            durations = result["durations"] = {"inspect": round(time.time() - mark, 3)}
            if inspect.get("failed"):
                result.update(_failure(inspect))
                return result
            missing = inspect.get("missing") or []
            result.update(present=inspect.get("present", 0), reused=len(inspect.get("reused") or []),
                          replaced=len(inspect.get("replaced") or []), transfers=0,
                          sent_blobs=[{"digest": d, "size": plan.blobs[d]} for d in missing],
                          sent=len(missing), bytes_sent=sum(plan.blobs[d] for d in missing),
                          recorded=inspect.get("recorded") or [], changed=bool(inspect.get("changed")))
            if self._task.check_mode:
                result["changed"] = bool(missing) or result["changed"]
                return result
            if not missing:
                return result

            local_dir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP, prefix="hocker-sync-")
            sent = self._send(store, plan, missing, local_dir, args["dest"], common, task_vars, result)
            if sent is None:
                return result
            sent_batches, sent_files, remote_paths = sent
            result["transfers"] = len(remote_paths)
            durations["transfer"] = round(time.time() - mark - durations["inspect"], 3)
            self._fixup_perms2([staging] + remote_paths, execute=False)
            received = self._run_step(args["dest"], dict(common, step="receive", batches=sent_batches,
                                                         files=sent_files), task_vars)
            if received.get("failed"):
                result.update(_failure(received))
                return result
            durations["receive"] = round(time.time() - mark - durations["inspect"] - durations["transfer"], 3)
            result["recorded"] = received.get("recorded") or []
            result["changed"] = True
            return result
        finally:
            if local_dir:
                shutil.rmtree(local_dir, ignore_errors=True)
            self._remove_tmp_path(self._connection._shell.tmpdir)
            result["elapsed"] = round(time.time() - started, 3)

    def _plan(self, args, task_vars, result):
        """(store, plan) of what the host needs from the controller's store, or None with the failure in
        ``result``."""
        src = args["src"]
        if not src and task_vars.get(DEFAULT_SRC_VAR):
            src = os.path.expanduser(str(self._templar.template(task_vars[DEFAULT_SRC_VAR])))
        result.update(src=src, dest=args["dest"], changed=False)
        if not src:
            result.update(failed=True, msg="src is required (the controller's store), unless the variable %s is "
                                           "set" % DEFAULT_SRC_VAR)
            return None
        try:
            store = BlobStore(src, create=False)
            plan = sync.plan(store, args["images"], args["platforms"])
        except (RegistryError, OSError, IOError) as exc:
            result.update(failed=True, msg="src %s: %s" % (src, exc))
            return None
        result.update(images=plan.images, blobs=len(plan.blobs))
        return store, plan

    def _send(self, store, plan, missing, local_dir, dest, common, task_vars, result):
        """Transfer the ``missing`` blobs into the staging directory (small ones batched into tars); returns
        (batch names, big blob digests, remote paths), or None with the failure in ``result`` after keeping
        on the host what arrived in full."""
        staging = common["staging"]
        small = [d for d in missing if plan.blobs[d] < sync.SMALL_BLOB]
        big = [d for d in missing if plan.blobs[d] >= sync.SMALL_BLOB]
        sent_batches, sent_files, remote_paths = [], [], []
        restore = self._uncompressed_transfers()
        try:
            for path, _group in sync.make_batches(store, small, plan.blobs, local_dir):
                name = os.path.basename(path)
                remote = self._connection._shell.join_path(staging, name)
                self._transfer_file(path, remote)
                os.unlink(path)
                sent_batches.append(name)
                remote_paths.append(remote)
            for digest in big:
                remote = self._connection._shell.join_path(staging, sync.staged_name(digest))
                self._transfer_file(sync.source_path(store, digest, plan.blobs[digest]), remote)
                sent_files.append(digest)
                remote_paths.append(remote)
        except (AnsibleError, RegistryError, OSError, IOError) as exc:
            if restore is not None:
                self._connection.set_option("ssh_args", restore)
                restore = None
            # keep what arrived in full (the next run sends the rest), then report the failure
            self._keep_partial(dest, common, sent_batches, sent_files, remote_paths, task_vars)
            result.update(failed=True, transfers=len(remote_paths),
                          msg="sending the blobs to %s failed: %s" % (dest, exc))
            return None
        finally:
            if restore is not None:
                self._connection.set_option("ssh_args", restore)
        return sent_batches, sent_files, remote_paths

    def _uncompressed_transfers(self):
        """Send the blobs without ssh compression over the ssh connection.

        Ansible's default ``ssh_args`` ask for compression (``-C``), and OpenSSH servers grant it by default:
        every byte then goes through zlib, which for layers (compressed already) costs CPU and gains nothing
        - several times slower than the link on a fast network. When the task's ssh arguments ask for
        compression, the transfers of this task use the same arguments without it, over a connection of
        their own (another ControlPath: the shared connection keeps the compression it was opened with).
        Returns the ``ssh_args`` to restore afterwards, or None when nothing was changed.
        """
        conn = self._connection
        if getattr(conn, "transport", None) != "ssh":
            return None
        try:
            original = conn.get_option("ssh_args") or ""
            tokens = shlex.split(original)
        except (KeyError, ValueError, AttributeError):
            return None
        kept, compression = [], False
        position = 0
        while position < len(tokens):
            token = tokens[position]
            value = None
            if token == "-o" and position + 1 < len(tokens):
                value = tokens[position + 1]
            elif token.startswith("-o") and len(token) > 2:
                value = token[2:]
            if token == "-C":
                compression = True
            elif value is not None and value.replace(" ", "").lower().startswith("compression="):
                compression = compression or value.split("=", 1)[1].strip().lower() == "yes"
                position += 1 if token == "-o" else 0
            else:
                kept.append(token)
            position += 1
        if not compression:
            return None
        try:
            directory = unfrackpath(conn.get_option("control_path_dir"))
            makedirs_safe(directory, 0o700)
            identity = "%s-%s-%s" % (conn.get_option("host") or self._play_context.remote_addr,
                                     conn.get_option("port"), conn.get_option("remote_user"))
        except (KeyError, AnsibleError, OSError):
            return None
        control_path = os.path.join(directory, "hocker-%s" % hashlib.sha1(identity.encode("utf-8")).hexdigest()[:10])
        # ssh takes the first value given for an option: these come before anything else
        conn.set_option("ssh_args", " ".join(shlex.quote(t) for t in
                                             ["-o", "Compression=no", "-o", "ControlPath=%s" % control_path] + kept))
        return original

    def _run_step(self, dest, private, task_vars):
        """Run the module part on the host for one step (``inspect`` or ``receive``)."""
        return self._execute_module(MODULE, module_args=dict(dest=dest, _hocker_sync=private), task_vars=task_vars)

    def _keep_partial(self, dest, common, batches, files, remote_paths, task_vars):
        if not remote_paths:
            return
        try:
            self._fixup_perms2([common["staging"]] + remote_paths, execute=False)
            self._run_step(dest, dict(common, step="receive", batches=batches, files=files, partial=True), task_vars)
        except Exception:  # pylint: disable=broad-except
            pass    # the connection may be gone: the next run finds the complete files and takes them


def _failure(module_result):
    """A failed module part's result, without its invocation (the private list of every blob)."""
    return dict((k, v) for k, v in module_result.items() if k != "invocation")
