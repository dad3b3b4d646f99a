# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Upkeep of a blob store (see store.py): create, remove, verify, prune, and shrink to a size.

PRIVATE to the hocker.registry collection: may change at any time.

What is kept: an ``index.json`` entry names an image by its top manifest (an index or an image manifest);
everything reachable from it is kept: index -> child manifests (every platform, attestations, nested
indexes) -> config and layers. A blob no entry reaches is *unreferenced*.

Concurrent writers (the fetching modules) work like this: a blob is downloaded into ``ingest/<hex>.partial``
while its per-blob lock ``ingest/<hex>.lock`` is held and renamed into ``blobs/`` when verified; small blobs
(manifests, configs) are written to a temporary file of ``ingest/`` and renamed; an image's ``index.json``
entry is written under ``ingest/index.lock`` right after its top manifest is stored. So upkeep:

- holds ``ingest/index.lock`` while it decides and removes (no entry can appear meanwhile);
- removes a blob only after taking its per-blob lock without waiting: a blob or partial download whose lock
  is held is being written and is skipped (reported in ``busy``);
- removes an unreferenced blob, a partial download or a temporary file only when it has not been written
  or used for ``min_age`` seconds (a writer may have stored a manifest whose entry it is about to write);
- writes the new ``index.json`` before removing the blobs of dropped entries (a crash in between leaves
  unreferenced blobs, which the next prune removes, never an entry without its blobs);
- leaves the ``*.lock`` files alone (a writer may have one open; they are empty).

Nothing here writes when ``check_mode`` is set; the result then says what would be removed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time

from ansible_collections.hocker.registry.plugins.module_utils._registry import digest as hashing
from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import ManifestError, RegistryError
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    MAX_MANIFEST_SIZE, is_digest)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import (
    FETCHED_AT, MAX_INDEX_SIZE, REF_NAME, BlobStore, write_json_atomic)

ALGORITHMS = ("sha256", "sha512")
DEFAULT_MIN_AGE = 3600
_AGE_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class StoreError(RegistryError):
    """The store cannot be worked on (not a store, a broken index.json, ...)."""


def parse_age(value):
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"``, ``"1w"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _AGE_RE.match(str(value)) if value is not None else None
    if not match:
        raise StoreError("invalid age %r: give seconds or a number with s, m, h, d or w (e.g. 1h)" % (value,))
    return int(match.group(1)) * _AGE_UNITS[match.group(2)]


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = "kmgtpe"


def parse_size(value, what="size"):
    """Bytes from ``1048576``, ``"500M"``, ``"20G"``, ``"1.5T"``, ``"20GiB"`` (powers of 1024)."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        if value < 0:
            raise StoreError("%s must not be negative" % what)
        return value
    match = _SIZE_RE.match(str(value)) if value is not None else None
    if not match:
        raise StoreError("invalid %s %r: give bytes or a number with K, M, G, T or P (e.g. 20G)" % (what, value))
    unit = match.group(2).lower()
    factor = 1024 ** (_SIZE_UNITS.index(unit) + 1) if unit else 1
    return int(float(match.group(1)) * factor)


def is_store(path):
    return os.path.isfile(os.path.join(path, "oci-layout"))


def _iso(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)) if timestamp else None


# ---------------------------------------------------------------------------------------------- state
def ensure_store(path, check_mode):
    """Create the store at ``path`` unless it is one. Returns True when it was (or would be) created."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise StoreError("%s exists and is not a directory" % path)
    if is_store(path):
        return False
    if not check_mode:
        BlobStore(path, create=True)
    return True


def remove_store(path, check_mode, warn=None):
    """Remove the whole store at ``path``; only a directory holding an ``oci-layout`` file is removed.

    The directory is first renamed to a hidden sibling, so it disappears at once for other processes, then
    deleted. A directory that cannot be renamed (a mount point) is emptied in place and left behind, with a
    warning. Returns True when it was (or would be) removed.
    """
    if not _removable(path):
        return False
    if check_mode:
        return True
    absolute = os.path.abspath(path)
    doomed = tempfile.mkdtemp(dir=os.path.dirname(absolute), prefix=".%s.removing." % os.path.basename(absolute))
    try:
        os.rename(absolute, os.path.join(doomed, "store"))
    except OSError as exc:
        os.rmdir(doomed)
        if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES):
            raise
        _empty_in_place(absolute)
        if warn:
            warn("%s could not be removed (%s); its content was removed and the empty directory left in place"
                 % (path, exc.strerror))
        return True
    shutil.rmtree(doomed)
    return True


def _removable(path):
    """True when ``path`` is a store to remove, False when there is none; anything else is refused."""
    if not os.path.lexists(path):
        return False
    if os.path.islink(path):
        raise StoreError("%s is a symbolic link; give the store's real path to remove it" % path)
    if not os.path.isdir(path):
        raise StoreError("%s is not a directory; refusing to remove it" % path)
    if not is_store(path):
        if not [n for n in os.listdir(path) if n != "lost+found"]:
            return False    # an empty directory: what is left of a store on a mount point
        raise StoreError("%s is not a blob store (it has no oci-layout file); refusing to remove it" % path)
    return True


def _empty_in_place(absolute):
    """Empty a store that cannot be renamed (a mount point); the layout marker goes first, so it stops being
    a store at once."""
    os.unlink(os.path.join(absolute, "oci-layout"))
    for name in sorted(os.listdir(absolute)):
        if name == "lost+found":
            continue
        child = os.path.join(absolute, name)
        if os.path.isdir(child) and not os.path.islink(child):
            shutil.rmtree(child)
        else:
            os.unlink(child)


# ---------------------------------------------------------------------------------------------- locks
@contextlib.contextmanager
def _try_lock(path):
    """Take the flock on ``path`` without waiting: yields True when taken, False when another process holds
    it. No lock file is created: without one no writer holds the lock (a writer only starts writing a blob
    that ``blobs/`` lacks, so one that starts now cannot be after the blob being removed)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                yield False
                return
            raise
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _index_lock(store, check_mode):
    """The store's index.json lock (waiting for it). Check mode creates no lock file."""
    path = os.path.join(store.ingest_dir, "index.lock")
    if check_mode and not os.path.exists(path):
        yield
        return
    fd = os.open(path, os.O_RDWR | (0 if check_mode else os.O_CREAT), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_path(store, hexpart):
    return os.path.join(store.ingest_dir, "%s.lock" % hexpart)


# ---------------------------------------------------------------------------------------------- reading
class Blob:
    __slots__ = ("digest", "path", "size", "mtime")

    def __init__(self, digest, path, size, mtime):
        self.digest = digest
        self.path = path
        self.size = size
        self.mtime = mtime


def scan_blobs(store):
    """{digest: Blob} of ``blobs/`` (files whose names are not digests are left out and returned apart)."""
    found = {}
    strange = []
    try:
        algorithms = sorted(os.listdir(store.blobs_dir))
    except OSError:
        return found, strange
    for algorithm in algorithms:
        folder = os.path.join(store.blobs_dir, algorithm)
        if not os.path.isdir(folder):
            strange.append(folder)
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            digest = "%s:%s" % (algorithm, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if algorithm not in ALGORITHMS or not is_digest(digest) or not os.path.isfile(path) \
                    or os.path.islink(path):
                strange.append(path)
                continue
            found[digest] = Blob(digest, path, st.st_size, st.st_mtime)
    return found, strange


def scan_ingest(store):
    """[(path, kind, hexpart or None, size, mtime)] of the partial downloads and temporary files."""
    found = []
    candidates = []
    try:
        candidates.extend(os.path.join(store.ingest_dir, n) for n in os.listdir(store.ingest_dir))
    except OSError:
        pass
    # write_json_atomic's temporary files live beside index.json
    candidates.extend(os.path.join(store.path, n) for n in os.listdir(store.path)
                      if n.startswith(".index.") and n.endswith(".tmp"))
    for path in sorted(candidates):
        name = os.path.basename(path)
        if name.endswith(".lock"):
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not os.path.isfile(path):
            continue
        hexpart = None
        kind = "temporary"
        if name.endswith(".partial"):
            kind = "partial"
            hexpart = name[:-len(".partial")]
        found.append((path, kind, hexpart, st.st_size, st.st_mtime))
    return found


def read_index_strict(store):
    """index.json parsed; a missing one is empty; an unreadable or invalid one is an error (pruning against a
    misread index would remove everything)."""
    path = os.path.join(store.path, "index.json")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except IOError as exc:
        if exc.errno == errno.ENOENT:
            return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        raise
    try:
        data = jsonutil.loads(raw, path, limit=MAX_INDEX_SIZE)
    except ManifestError as exc:
        raise StoreError("%s; fix it or remove the store (state=absent) and fetch again" % exc)
    if not isinstance(data.get("manifests"), list):
        raise StoreError("%s has no manifests list; fix it or remove the store (state=absent) and fetch again"
                         % path)
    return data


def entry_name(entry):
    if not isinstance(entry, dict):
        return None
    name = (entry.get("annotations") or {}).get(REF_NAME)
    return name if isinstance(name, str) else None


def store_name(reference):
    """The ``org.opencontainers.image.ref.name`` the fetching modules record for ``reference``."""
    if reference.digest:
        return "%s@%s" % (reference.name, reference.digest)
    return "%s:%s" % (reference.name, reference.tag or "latest")


def _repository_of(name):
    if "@" in name:
        return name.split("@", 1)[0]
    head, sep, tail = name.rpartition(":")
    if sep and "/" not in tail:
        return head
    return name


class Keep:
    """The ``keep`` references, normalised like the fetching modules name their index.json entries."""

    def __init__(self, references):
        self.names = set()
        self.pinned = set()     # (repository name, digest)
        for text in references:
            reference = parse_reference(text)
            self.names.add(store_name(reference))
            if reference.digest:
                self.pinned.add((reference.name, reference.digest))

    def matches(self, entry):
        name = entry_name(entry)
        if name is None:
            return False
        if name in self.names:
            return True
        return (_repository_of(name), entry.get("digest")) in self.pinned


class Walker:
    """Reachability from manifests stored in the store (parsed once each)."""

    def __init__(self, store, blobs, warn):
        self.store = store
        self.blobs = blobs
        self.warn = warn
        self._children = {}

    def _parse(self, digest):
        """(child manifest digests, config digest or None, other leaf digests) of a stored manifest; a blob
        that is not a manifest (or is absent) has none."""
        if digest not in self._children:
            data = self._read(digest)
            found = ([], None, [])
            if isinstance(data, dict):
                config = data.get("config")
                found = (_digests(data.get("manifests")),
                         config["digest"] if _digests([config]) else None,
                         _digests(data.get("layers")) + _digests(data.get("blobs")))
            self._children[digest] = found
        return self._children[digest]

    def _read(self, digest):
        """The JSON of a stored blob small enough to be a manifest; None when it is absent or not JSON."""
        blob = self.blobs.get(digest)
        if blob is None or blob.size > MAX_MANIFEST_SIZE:
            return None
        try:
            with open(blob.path, "rb") as handle:
                return jsonutil.loads(handle.read(), blob.path, expect=None)
        except (IOError, OSError, ManifestError):
            return None

    def reach(self, digest):
        """(every digest reachable from the manifest ``digest``, present or not; the manifests and configs
        among them, which tell when the image was last used)."""
        every, meta = set(), set()
        if not is_digest(digest):
            return every, meta
        stack = [digest]
        while stack:
            current = stack.pop()
            if current in meta:
                continue
            every.add(current)
            meta.add(current)
            children, config, leaves = self._parse(current)
            stack.extend(children)
            if config:
                every.add(config)
                meta.add(config)
            every.update(leaves)
        return every, meta


def _digests(descriptors):
    """The valid digests of a list of descriptors (anything else in it is left out)."""
    return [d["digest"] for d in descriptors or [] if isinstance(d, dict) and is_digest(d.get("digest"))]


def _digest_of(entry):
    return entry.get("digest") if isinstance(entry, dict) else None


def _total(blobs, ingest):
    """Bytes of ``blobs`` ({digest: Blob}) and ``ingest`` (scan_ingest items)."""
    return sum(b.size for b in blobs.values()) + sum(i[3] for i in ingest)


class _Plan:
    """What one run removes. ``kept`` and ``dropped`` ((entry, reason)) split the index.json entries;
    ``doomed`` are the blobs only dropped entries reach (removed whatever their age), ``garbage`` the
    unreferenced blobs not used for min_age, ``stale`` the ingest files to look at. ``reach`` maps
    ``id(entry)`` to ``Walker.reach`` of its digest."""

    def __init__(self, entries, walker, blobs):
        self.blobs = blobs
        self.reach = dict((id(entry), walker.reach(_digest_of(entry))) for entry in entries)
        self.kept, self.dropped = [], []
        self.doomed, self.garbage, self.stale = [], [], []
        self.kept_refs, self.dropped_refs = set(), set()

    def refs(self, entries):
        found = set()
        for entry in entries:
            found |= self.reach[id(entry)][0]
        return found

    def classify(self, entries, verify, prune, keep):
        """Drop the entries whose manifest is missing (``verify``) or that ``keep`` does not name (``prune``);
        the blobs only dropped entries reached are doomed."""
        for entry in entries:
            digest = _digest_of(entry)
            if verify and (not is_digest(digest) or digest not in self.blobs):
                self.dropped.append((entry, "missing_manifest"))
            elif prune and keep is not None and not keep.matches(entry):
                self.dropped.append((entry, "not_kept"))
            else:
                self.kept.append(entry)
        self.kept_refs = self.refs(self.kept)
        self.dropped_refs = self.refs(entry for entry, _reason in self.dropped) - self.kept_refs
        self.doomed = [self.blobs[d] for d in sorted(self.dropped_refs) if d in self.blobs]

    def collect_garbage(self, ingest, now, min_age):
        """The blobs no entry reaches that were not used for ``min_age``; every ingest file (each is looked at
        again when it is removed)."""
        self.garbage = [b for d, b in sorted(self.blobs.items())
                        if d not in self.kept_refs and d not in self.dropped_refs and now - b.mtime >= min_age]
        self.stale = list(ingest)

    def refcount(self):
        """{digest: number of kept entries reaching it}."""
        counts = {}
        for entry in self.kept:
            for digest in self.reach[id(entry)][0]:
                counts[digest] = counts.get(digest, 0) + 1
        return counts

    def drop(self, entries, reason):
        """Move ``entries`` from kept to dropped."""
        if entries:
            self.kept = [e for e in self.kept if all(e is not x for x in entries)]
            self.dropped.extend((e, reason) for e in entries)

    def release(self, entry, refcount, doomed):
        """Evict ``entry``: the blobs no other kept entry reaches become doomed. Returns the bytes freed."""
        freed = 0
        for digest in sorted(self.reach[id(entry)][0]):
            refcount[digest] -= 1
            if refcount[digest] == 0 and digest in self.blobs and digest not in doomed:
                self.doomed.append(self.blobs[digest])
                doomed.add(digest)
                freed += self.blobs[digest].size
        return freed


# ---------------------------------------------------------------------------------------------- upkeep
class Upkeep:
    """One run over an existing store. ``run()`` returns the result dict."""

    def __init__(self, path, check_mode=False, warn=None, now=None):
        if not is_store(path):
            raise StoreError("%s is not a blob store (no oci-layout file)" % path)
        self.store = BlobStore(path, create=False)
        self.check_mode = check_mode
        self.warn = warn or (lambda message: None)
        self.now = now if now is not None else time.time()
        self.removed = []           # blob digests removed (or that would be)
        self.removed_images = []    # {name, digest, reason}
        self.removed_partials = []  # file names
        self.corrupt = []
        self.busy = []
        self.freed = 0
        self.verified = 0

    # ------------------------------------------------------------------ removal primitives
    def _remove_blob(self, blob, min_age=None):
        """Remove one blob under its lock (without waiting); False when it is busy or (with ``min_age``)
        was used since it was scanned. Check mode takes the lock too (to report busy blobs) and removes
        nothing."""
        hexpart = blob.digest.split(":", 1)[1]
        with _try_lock(_lock_path(self.store, hexpart)) as locked:
            if not locked:
                self.busy.append(blob.digest)
                return False
            if not self._unlink_unused(blob.path, min_age):
                return False
        self.removed.append(blob.digest)
        self.freed += blob.size
        return True

    def _remove_ingest(self, item, blobs, min_age):
        path, _kind, hexpart, size, mtime = item
        if _complete(hexpart, blobs):
            min_age = None  # the store holds the blob: the partial download is of no use, whatever its age
        elif self.now - mtime < min_age:
            return False
        lock = _lock_path(self.store, hexpart) if hexpart else None
        with (_try_lock(lock) if lock else _nothing()) as locked:
            if not locked:
                self.busy.append(os.path.basename(path))
                return False
            if not self._unlink_unused(path, min_age):
                return False
        self.removed_partials.append(os.path.basename(path))
        self.freed += size
        return True

    def _unlink_unused(self, path, min_age):
        """Remove ``path`` (its lock held) unless it is gone or (with ``min_age``) was used since the scan;
        check mode removes nothing. Returns whether it was (or would be) removed."""
        try:
            st = os.lstat(path)
        except OSError:
            return False    # already gone (another upkeep run)
        if min_age is not None and self.now - st.st_mtime < min_age:
            return False    # a writer used it just now
        if not self.check_mode:
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return True

    # ------------------------------------------------------------------ verify
    def verify(self, blobs):
        """Re-hash every blob; remove the corrupt ones. Returns the digests removed."""
        gone = set()
        for digest in sorted(blobs):
            blob = blobs[digest]
            try:
                inode, actual = _hash_open(blob.path, digest.split(":", 1)[0])
            except (IOError, OSError):
                continue
            self.verified += 1
            if actual == digest:
                continue
            if self.check_mode:
                self.corrupt.append(digest)
                self.removed.append(digest)
                self.freed += blob.size
                gone.add(digest)
                continue
            with _try_lock(_lock_path(self.store, digest.split(":", 1)[1])) as locked:
                if not locked:
                    self.busy.append(digest)
                    continue
                try:
                    st = os.lstat(blob.path)
                except OSError:
                    gone.add(digest)
                    continue
                if st.st_ino != inode:
                    continue    # replaced meanwhile (the writers replace only a bad copy, with a verified one)
                os.unlink(blob.path)
            self.corrupt.append(digest)
            self.removed.append(digest)
            self.freed += blob.size
            gone.add(digest)
        return gone

    # ------------------------------------------------------------------ the run
    def run(self, verify=False, prune=False, keep=None, max_size=None, min_age=DEFAULT_MIN_AGE):
        blobs, ingest, size_before = self._scan(verify)
        keep = Keep(keep) if keep is not None else None
        with _index_lock(self.store, self.check_mode):
            index = read_index_strict(self.store)
            plan = _Plan(index["manifests"], Walker(self.store, blobs, self.warn), blobs)
            plan.classify(index["manifests"], verify, prune, keep)
            # with prune (or when over max_size) the unreferenced blobs not used for min_age go too, and stale
            # partial downloads
            size_now = _total(blobs, ingest)
            if prune or (max_size is not None and size_now > max_size):
                plan.collect_garbage(ingest, self.now, min_age)
            if max_size is not None:
                self._evict(plan, keep, max_size, size_now, min_age)
            self._apply(plan, index, min_age)
        return self._result(plan, blobs, ingest, size_before, verify, max_size)

    def _scan(self, verify):
        """(blobs, ingest files, size before) of the store; with ``verify`` the corrupt blobs are removed
        and left out of ``blobs``."""
        blobs, strange = scan_blobs(self.store)
        ingest = scan_ingest(self.store)
        size_before = _total(blobs, ingest)
        if strange:
            self.warn("%d file(s) in %s are not blobs of this store and were left alone (e.g. %s)"
                      % (len(strange), self.store.blobs_dir, strange[0]))
        if verify:
            for digest in self.verify(blobs):
                blobs.pop(digest, None)
        return blobs, ingest, size_before

    def _evict(self, plan, keep, max_size, size_now, min_age):
        """max_size: drop kept entries, least recently used first (``keep`` protects its references), until
        what is left fits."""
        doomed = set(b.digest for b in plan.doomed) | set(b.digest for b in plan.garbage)
        size_now -= sum(plan.blobs[d].size for d in doomed)
        size_now -= sum(i[3] for i in plan.stale if self._stale(i, plan.blobs, min_age))
        refcount = plan.refcount()
        evicted = []
        for entry in self._eviction_order(plan, keep):
            if size_now <= max_size:
                break
            evicted.append(entry)
            size_now -= plan.release(entry, refcount, doomed)
        plan.drop(evicted, "evicted")

    def _eviction_order(self, plan, keep):
        """The kept entries ``keep`` does not name, least recently used first."""
        candidates = [e for e in plan.kept if keep is None or not keep.matches(e)]
        candidates.sort(key=lambda e: (self._last_used(e, plan.reach[id(e)][1], plan.blobs), entry_name(e) or ""))
        return candidates

    def _apply(self, plan, index, min_age):
        """Write the new index.json (entries first), then remove the blobs and ingest files."""
        if plan.dropped:
            for entry, reason in plan.dropped:
                self.removed_images.append({"name": entry_name(entry), "digest": _digest_of(entry),
                                            "reason": reason})
            if not self.check_mode:
                new_index = dict(index)
                new_index["manifests"] = plan.kept
                write_json_atomic(os.path.join(self.store.path, "index.json"), new_index)
        for blob in plan.doomed:
            self._remove_blob(blob)
        for blob in plan.garbage:
            self._remove_blob(blob, min_age)
        for item in plan.stale:
            self._remove_ingest(item, plan.blobs, min_age)

    def _result(self, plan, blobs, ingest, size_before, verify, max_size):
        removed = set(self.removed)
        remaining = dict((d, b) for d, b in blobs.items() if d not in removed)
        ingest_left = [i for i in ingest if os.path.basename(i[0]) not in set(self.removed_partials)]
        size = _total(remaining, ingest_left)
        result = {
            "removed": sorted(removed),
            "removed_images": self.removed_images,
            "removed_partials": sorted(self.removed_partials),
            "corrupt": sorted(self.corrupt),
            "busy": sorted(set(self.busy)),
            "freed": self.freed,
            "size": size,
            "size_before": size_before,
            "blobs": len(remaining),
            "images": [self._image(entry, plan.reach[id(entry)], remaining) for entry in plan.kept],
        }
        if verify:
            result["verified"] = self.verified
        if max_size is not None:
            result["max_size"] = max_size
            result["fits"] = size <= max_size
            if not result["fits"]:
                self.warn("the store %s still holds %d bytes, more than max_size %d: what is left is in use (busy), "
                          "kept, or unreferenced but used less than min_age ago" % (self.store.path, size, max_size))
        return result

    def _image(self, entry, reached, remaining):
        every, meta = reached
        return {
            "name": entry_name(entry),
            "digest": _digest_of(entry),
            "media_type": entry.get("mediaType") if isinstance(entry, dict) else None,
            "size": sum(remaining[d].size for d in every if d in remaining),
            "last_used": _iso(self._last_used(entry, meta, remaining)),
        }

    def _stale(self, item, blobs, min_age):
        return _complete(item[2], blobs) or self.now - item[4] >= min_age

    def _last_used(self, entry, meta, blobs):
        """When an image was last fetched or used: its index.json time stamp, or the newest modification
        time of its manifests and configs (the store touches blobs when it serves them). Layers do not count:
        another image may share them."""
        latest = 0
        annotations = (entry.get("annotations") or {}) if isinstance(entry, dict) else {}
        try:
            latest = int(annotations.get(FETCHED_AT) or 0)
        except (TypeError, ValueError):
            latest = 0
        for digest in meta:
            blob = blobs.get(digest)
            if blob is not None and blob.mtime > latest:
                latest = blob.mtime
        return latest


def _complete(hexpart, blobs):
    """Whether the store holds the blob a partial download (of ``hexpart``) was for."""
    return hexpart is not None and any(("%s:%s" % (a, hexpart)) in blobs for a in ALGORITHMS)


@contextlib.contextmanager
def _nothing():
    yield True


def _hash_open(path, algorithm):
    """(inode, digest) of a file, both from one open file (a rename over the path cannot mix them up)."""
    with open(path, "rb") as handle:
        return os.fstat(handle.fileno()).st_ino, hashing.hash_stream(handle, algorithm)[0]
