# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Everything written at a user's ``dest`` goes through here.

PRIVATE to the hocker.registry collection: may change at any time.

- ``check_dest(path, kind, follow)``: what may be replaced. A device, fifo, socket or (for files) a directory
  is refused, never replaced; a symlink only with ``follow`` (its target is written then); the parent
  directory must exist. Every refusal is a DestinationError with one message per condition.
- ``safe_write(dest, producer)``: the one write primitive: a temp file beside ``dest`` (same file system),
  written, fsynced, given the old file's mode and owner (or the umask's mode), renamed over ``dest``, and the
  directory fsynced; any failure removes the temp file and leaves ``dest`` as it was. ``put_bytes`` uses it
  for small outputs (manifests, configs, expressions) and compares digests first.
- ``WorkDir``: one locked work directory per ``dest``, hidden beside it, for what a whole-image run needs
  (partial layer downloads that the next run resumes, layer files, the archive being written). It is kept
  when a run fails or is killed (so the next run resumes) and removed when a run succeeds.
- ``describe_os_error``: the message for an OSError, naming the path and the likely cause.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import shutil
import stat
import tempfile

from ansible_collections.hocker.registry.plugins.module_utils._registry import digest as digests
from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    AuthenticationError, DestinationError, ManifestError, NoSpace, RateLimited, TransportError)

_KIND_NAMES = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"))

_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
    errno.EIO: "an I/O error of the device",
}


_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR)


def describe_os_error(exc, path=None):
    """A message for an OSError that names the path (or, for a hidden temporary file, its directory) and
    the likely cause."""
    where = path or getattr(exc, "filename", None)
    code = getattr(exc, "errno", None)
    cause = _CAUSES.get(code) or getattr(exc, "strerror", None) or str(exc)
    if not where:
        return "I/O error: %s" % cause
    where = str(where)
    verb = "cannot write" if code in _WRITE_ERRORS else "cannot use"
    base = os.path.basename(where)
    if base.startswith(".") and (base.endswith((".tmp", ".part", ".partial")) or ".hocker-work" in where):
        return "%s in %s (temporary file %s): %s" % (verb, os.path.dirname(where) or ".", base, cause)
    return "%s %s: %s" % (verb, where, cause)


def _kind_of(mode):
    for test, name in _KIND_NAMES:
        if test(mode):
            return name
    return "not a regular file"


def _lstat(path):
    try:
        return os.lstat(path)
    except OSError:
        return None


def check_dest(path, kind="file", follow=False):
    """The path to write for ``dest`` (its symlink target with ``follow``), or DestinationError.

    ``kind``: ``file`` (must be absent or a regular file) or ``dir`` (absent or a directory).
    """
    if not isinstance(path, str) or not path.strip():
        raise DestinationError("dest must be a non-empty path")
    if "\0" in path:
        raise DestinationError("dest contains a NUL byte, which no path can hold")
    target = path
    info = _lstat(path)
    if info is not None and stat.S_ISLNK(info.st_mode):
        if not follow:
            raise DestinationError("dest %s is a symlink (to %s); it is not replaced: give the real path, or set "
                                   "follow=true to write its target" % (path, os.readlink(path)))
        target = os.path.realpath(path)
        info = _lstat(target)
    if info is not None:
        wanted = stat.S_ISREG if kind == "file" else stat.S_ISDIR
        if not wanted(info.st_mode):
            what = "a regular file" if kind == "file" else "a directory"
            raise DestinationError("dest %s exists and is %s, not %s; it is not replaced"
                                   % (path, _kind_of(info.st_mode), what))
    parent = os.path.dirname(os.path.abspath(target)) or "."
    if not os.path.isdir(parent):
        raise DestinationError("the directory of dest %s does not exist (%s)" % (path, parent))
    return target


def _worth_resuming(exc):
    """Whether a run that ended with ``exc`` leaves partial downloads worth resuming: it was cut off (the
    network, a full disk, a signal, credentials to fix), not refused for what it fetched (a digest, a bomb)."""
    return isinstance(exc, (TransportError, RateLimited, AuthenticationError, NoSpace, OSError, KeyboardInterrupt,
                            SystemExit))


def _new_file_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def take_over_attributes(tmp, dest):
    """Give ``tmp`` the mode and owner of an existing ``dest`` (the umask's mode for a new one)."""
    try:
        old = os.stat(dest)
    except OSError:
        os.chmod(tmp, _new_file_mode())
        return
    os.chmod(tmp, stat.S_IMODE(old.st_mode))
    try:
        os.chown(tmp, old.st_uid, old.st_gid)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def install(tmp, dest):
    """Rename the complete, fsynced ``tmp`` over ``dest`` and make the rename durable."""
    take_over_attributes(tmp, dest)
    os.rename(tmp, dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)) or ".")


def safe_write(dest, producer):
    """Write ``dest`` through ``producer(binary_file)`` atomically (see the module docstring)."""
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(dest), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            producer(handle)
            handle.flush()
            os.fsync(handle.fileno())
        install(tmp, dest)
    except OSError as exc:
        raise DestinationError(describe_os_error(exc, dest if exc.filename in (None, tmp) else None))
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def put_bytes(dest, data, dry_run=False, follow=False):
    """Put ``data`` at ``dest`` unless it already holds it; returns (new digest, old digest or None)."""
    target = check_dest(dest, "file", follow)
    new = digests.compute(data)
    old = digests.file_digest(target)
    if new != old and not dry_run:
        safe_write(target, lambda handle: handle.write(data))
    return new, old


RETIRED = "retired"   # where a directory dest is moved while its replacement is renamed into place


class WorkDir:
    """The locked work directory of one ``dest`` (see the module docstring); a context manager.

    ``path(name)`` names a file inside. ``done()`` marks success: the directory is removed on exit. A run cut
    off by the network, a full disk or a signal keeps only its partial downloads (``*.partial``), for the
    next run to resume; any other failure (a blob that does not verify, a decompression bomb) removes the
    directory. Entering removes whatever else a killed run left.
    """

    def __init__(self, dest):
        parent, name = os.path.split(os.path.abspath(dest))
        self.dir = os.path.join(parent, ".%s.hocker-work" % name)
        self.lock_path = self.dir + ".lock"
        self.dest = dest
        self.fd = None
        self.succeeded = False

    def __enter__(self):
        import fcntl
        try:
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise DestinationError(describe_os_error(exc, self.lock_path))
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise DestinationError("another run is writing %s right now (its lock %s is held)"
                                   % (self.dest, self.lock_path))
        if not self._lock_is_current():
            os.close(self.fd)
            raise DestinationError("another run is writing %s right now (its lock %s was replaced)"
                                   % (self.dest, self.lock_path))
        self._own_dir()
        self._restore_retired()
        self._keep_only_partials()
        return self

    def _restore_retired(self):
        """Put back the directory a run killed between its two renames (see imagedest) moved aside: ``dest``
        is missing and its last good content sits in ``retired``."""
        retired = self.path(RETIRED)
        if os.path.isdir(retired) and not os.path.islink(retired) and not os.path.lexists(self.dest):
            try:
                os.rename(retired, self.dest)
            except OSError:
                pass

    def _lock_is_current(self):
        """Whether the locked file is still the one at lock_path (a run that finished may have unlinked it
        while this one waited: then a third run could lock a new file, and two runs would share the dir)."""
        try:
            return os.fstat(self.fd).st_ino == os.stat(self.lock_path).st_ino
        except OSError:
            return False

    def _own_dir(self):
        """The work directory, made anew unless it is a real directory of this user (a symlink, a file or
        someone else's directory planted there is not used)."""
        try:
            info = os.lstat(self.dir)
        except OSError:
            info = None
        if info is not None and not (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()):
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(self.dir)
            else:
                os.unlink(self.dir)
            info = None
        if info is None:
            os.mkdir(self.dir, 0o700)

    def _keep_only_partials(self):
        """Remove what an earlier run left except its partial downloads (``*.partial``); True if any remain."""
        kept = False
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith(".partial") and os.path.isfile(path) and not os.path.islink(path):
                kept = True
            elif os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        return kept

    def path(self, name):
        return os.path.join(self.dir, name)

    def scratch(self, name):
        """A path for a file that must start empty (an earlier run's leftover is removed)."""
        path = self.path(name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        return path

    def done(self):
        self.succeeded = True

    def __exit__(self, exc_type, exc, traceback):
        try:
            resumable = not self.succeeded and _worth_resuming(exc) and self._keep_only_partials()
        except OSError:
            resumable = True
        if not resumable:
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                os.unlink(self.lock_path)   # while still locked: a run waiting on it then sees it replaced
            except OSError:
                pass
        os.close(self.fd)
        self.fd = None
        return False


# ---------------------------------------------------------------------------------------------------------
# what an output was made from, kept on the file itself
# ---------------------------------------------------------------------------------------------------------
RECORD_ATTR = "user.hocker.registry.record"
MAX_RECORD = 3000


def write_record(path, record):
    """Keep ``record`` (a small JSON-able dict) in an extended attribute of ``path``; silently nothing where
    the file system has no extended attributes or the record is too big. A later run reads it back with
    ``read_record`` to answer without asking the registry for what it already knows."""
    data = jsonutil.dumps(record)
    if len(data) > MAX_RECORD:
        return
    try:
        os.setxattr(path, RECORD_ATTR, data)
    except (OSError, AttributeError):
        pass


def read_record(path):
    """The record ``write_record`` kept on ``path``, or None."""
    try:
        data = os.getxattr(path, RECORD_ATTR)
    except (OSError, AttributeError):
        return None
    try:
        return jsonutil.loads(data, "the record of %s" % path, limit=MAX_RECORD)
    except ManifestError:
        return None


def known_output(path, reference, request, current_top, version=1):
    """The record kept on ``path`` when it proves ``path`` holds what ``request`` asks of ``reference`` now:
    written by the same request for the same repository, unchanged since (its content digest), and made
    from the manifest ``current_top()`` says the reference names now (not called for a digest reference).
    None otherwise."""
    record = read_record(path)
    if not isinstance(record, dict) or record.get("v") != version or record.get("image") != reference.name \
            or record.get("request") != request or record.get("output") != digests.file_digest(path):
        return None
    top = reference.digest or current_top()
    if top is None or top != record.get("top"):
        return None
    return record


def remember_output(path, reference, request, top, result, version=1):
    """Keep what ``path`` was made from on it (see ``known_output``)."""
    write_record(path, {"v": version, "image": reference.name, "top": top, "request": request,
                        "output": digests.file_digest(path), "result": result})
