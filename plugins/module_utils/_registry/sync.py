# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Relaying images from one blob store to another (the ``store_sync`` action plugin and its module).

PRIVATE to the hocker.registry collection: may change at any time.

Controller side: ``plan(store, images, platforms)`` lists every blob another store must hold so that
``docker_registry_image`` with ``offline: true`` assembles each image from it - the top manifest (an index or
an image manifest), nested indexes, the image manifests of the platforms asked for, their configs and their
layers - plus the ``index.json`` entries that name the images. It reads only manifests (verified, they are
small) and the sizes of the other blobs: the store verified every blob when it was written.

Host side: ``Receiver(store)``:

- ``inspect(blobs, staging)`` says which blobs the store lacks. A blob counts as present when its size is
  right and either its *verified marker* still holds or hashing it again proves it good. The markers
  (``STORE/ingest/verified.json``: digest -> [size, inode, mtime_ns, ctime_ns] recorded right after the
  blob was verified) make an unchanged blob cost one ``stat`` instead of a re-hash. A write to the file
  changes its modification and change times, a replacement its inode: the blob is hashed again. So does a
  use the store records (``BlobStore.touch`` moves the modification time, for the least-recently-used
  eviction; a use followed by a read cannot be told from a write followed by a read): the layers an
  assembly used are hashed once more at the next relay (sha256, about 0.25 s per 400 MB), then trusted
  again. A blob that fails is removed (and then sent again). Complete blobs an interrupted earlier run
  left in the connection user's temporary directories are adopted (after verification) instead of being
  sent again.
- ``receive(blobs, staging, batches, files)`` verifies and commits what the controller sent: tar batches
  of small blobs (members ``<algorithm>/<hex>``, read as streams, never extracted to paths) and single
  big blob files (``hocker-blob-<algorithm>-<hex>``). Each blob's size and digest are checked, it is
  fsynced and renamed into ``blobs/`` under the blob's lock; nothing unverified ever lands there.
- ``record(entries)`` names the images in ``index.json`` (only entries that differ are rewritten).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import glob
import json
import os
import tarfile
import tempfile
import time

from ansible_collections.hocker.registry.plugins.module_utils._registry.digest import hash_file, hash_stream
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DigestMismatch, OfflineError, PlatformError, RegistryError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.manifest import (
    IMAGE_TYPES, INDEX_TYPES, MANIFEST_TYPES, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, is_digest, parse_config,
    parse_manifest)
from ansible_collections.hocker.registry.plugins.module_utils._registry.platform import (
    Platform, descriptor_platform, is_attestation, parse_platform, select)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference
from ansible_collections.hocker.registry.plugins.module_utils._registry.store import REF_NAME, write_json_atomic

SMALL_BLOB = 8 * 1024 * 1024        # blobs below this size travel in tar batches
BATCH_LIMIT = 256 * 1024 * 1024     # at most this many blob bytes per batch
STAGED_PREFIX = "hocker-blob-"
BATCH_PREFIX = "hocker-batch-"
STALE_AGE = 3600                    # seconds after which leftovers of interrupted runs are deleted
MAX_INDEX_DEPTH = 4
MARKERS = "verified.json"


def store_name(reference):
    """The ``index.json`` name a store gives a reference (what the registry client records)."""
    if reference.digest:
        return "%s@%s" % (reference.name, reference.digest)
    return "%s:%s" % (reference.name, reference.tag or "latest")


def staged_name(digest):
    """File name of a big blob sent on its own."""
    algorithm, _sep, hexpart = digest.partition(":")
    return "%s%s-%s" % (STAGED_PREFIX, algorithm, hexpart)


def member_name(digest):
    """Name of a blob inside a batch."""
    return digest.replace(":", "/", 1)


def _member_digest(name):
    digest = name.replace("/", ":", 1)
    return digest if is_digest(digest) else None


def check_blob_list(blobs):
    """Validate ``[{digest, size}]`` (from the other side of the connection); return {digest: size}."""
    wanted = {}
    if not isinstance(blobs, list):
        raise RegistryError("the blob list is not a list")
    for item in blobs:
        if not isinstance(item, dict) or not is_digest(item.get("digest")):
            raise RegistryError("invalid blob entry %r" % (item,))
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError("invalid size in blob entry %r" % (item,))
        wanted[item["digest"]] = size
    return wanted


# --------------------------------------------------------------------------------------------------- planning
class Plan:
    """What a store must hold for a set of images: ``blobs`` (digest -> size, in a useful order: manifests
    and configs first), ``entries`` (index.json names) and ``images`` (a summary per image)."""

    def __init__(self):
        self.blobs = {}
        self.kinds = {}
        self.entries = []
        self.images = []

    def add(self, digest, size, kind):
        if digest not in self.blobs:
            self.blobs[digest] = size
            self.kinds[digest] = kind

    def blob_list(self):
        small = [d for d in self.blobs if self.kinds[d] != "layer"]
        layers = [d for d in self.blobs if self.kinds[d] == "layer"]
        return [{"digest": d, "size": self.blobs[d]} for d in small + layers]

    @property
    def total_bytes(self):
        return sum(self.blobs.values())


def _named_entries(store):
    entries = []
    for entry in store.read_index()["manifests"]:
        if not isinstance(entry, dict):
            continue
        name = (entry.get("annotations") or {}).get(REF_NAME)
        if isinstance(name, str) and name:
            entries.append((name, entry))
    return entries


def _top_descriptor(store, image):
    """(name, descriptor) of ``image`` (a reference) in ``store``."""
    try:
        reference = parse_reference(image)
    except RegistryError as exc:
        raise RegistryError("images: %s" % exc)
    name = store_name(reference)
    entry = store.lookup_image(name)
    if entry is None and reference.digest and store.has(reference.digest):
        # stored under a tag only: the digest names the same bytes
        raw = store.read_bytes(reference.digest, MAX_MANIFEST_SIZE)
        if raw is not None:
            manifest = parse_manifest(raw, None, reference.digest, "manifest %s" % reference.digest)
            entry = manifest.descriptor()
    if entry is None:
        raise OfflineError("%s is not in the store %s (no index.json entry %s); fetch it there first, e.g. with "
                           "docker_registry_image and cache_dir=%s" % (image, store.path, name, store.path))
    return name, entry


def _descriptor(entry, what):
    digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType")
    if not is_digest(digest) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError("%s has an invalid descriptor in index.json" % what)
    if media_type is not None and media_type not in MANIFEST_TYPES:
        raise RegistryError("%s has the unsupported media type %r" % (what, media_type))
    return {"mediaType": media_type, "digest": digest, "size": size}


def _read_manifest(store, descriptor, what, media_type=None):
    """A stored manifest, verified; None when the store does not have it."""
    if not store.has(descriptor["digest"], descriptor.get("size")):
        return None
    raw = store.read_bytes(descriptor["digest"], MAX_MANIFEST_SIZE)
    if raw is None:
        return None
    return parse_manifest(raw, media_type, descriptor["digest"], what)


def _require(store, descriptor, what):
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not store.has(digest, size):
        raise OfflineError("%s (%s, %s bytes) is missing from the store %s; fetch the image into it again"
                           % (what, digest, size, store.path))


def _add_image(store, plan, manifest, name):
    """The config and layers of one image manifest (which must all be in the store)."""
    plan.add(manifest.digest, manifest.size, "manifest")
    config = manifest.config
    _require(store, config, "the config of %s (%s)" % (name, manifest.digest))
    plan.add(config["digest"], config["size"], "config")
    for position, layer in enumerate(manifest.layers):
        _require(store, layer, "layer %d of %s (%s)" % (position, name, manifest.digest))
        plan.add(layer["digest"], layer["size"], "layer")


def _leaves(store, plan, index, name, depth=0):
    """[(Platform or None, descriptor)] of every runnable image of an index; nested indexes are added."""
    found = []
    for descriptor in index.manifests:
        if not isinstance(descriptor, dict) or is_attestation(descriptor):
            continue
        media_type = descriptor.get("mediaType")
        if media_type in INDEX_TYPES:
            if depth >= MAX_INDEX_DEPTH:
                raise RegistryError("the indexes of %s are nested more than %d deep" % (name, MAX_INDEX_DEPTH))
            nested = _read_manifest(store, descriptor, "nested index %s of %s" % (descriptor["digest"], name))
            if nested is None:
                raise OfflineError("the nested index %s of %s is missing from the store %s; fetch the image into it "
                                   "again" % (descriptor["digest"], name, store.path))
            if not nested.is_index:
                raise RegistryError("index entry %s of %s is not an index" % (descriptor["digest"], name))
            plan.add(nested.digest, nested.size, "index")
            found.extend(_leaves(store, plan, nested, name, depth + 1))
        elif media_type in IMAGE_TYPES or media_type is None:
            found.append((descriptor_platform(descriptor), descriptor))
    return found


def _config_platform(store, manifest, name):
    config_descriptor = manifest.config
    _require(store, config_descriptor, "the config of %s" % name)
    raw = store.read_bytes(config_descriptor["digest"], MAX_CONFIG_SIZE)
    if raw is None:
        raise OfflineError("the config of %s (%s) in the store %s is damaged; fetch the image into it again"
                           % (name, config_descriptor["digest"], store.path))
    return Platform.from_dict(parse_config(raw, "the config of %s" % name))


def plan(store, images=None, platforms=None):
    """The Plan for ``images`` (references; None: every named image of ``store``) and ``platforms``
    (``os/arch[/variant]`` strings; None: every platform of each image that the store holds)."""
    wanted = [parse_platform(p) for p in platforms] if platforms else None
    result = Plan()
    if images is None:
        targets = _named_entries(store)
    else:
        targets = [_top_descriptor(store, image) for image in images]
    seen = set()
    for name, entry in targets:
        if name in seen:
            continue
        seen.add(name)
        top_descriptor = _descriptor(entry, name)
        top = _read_manifest(store, top_descriptor, "manifest %s of %s" % (top_descriptor["digest"], name),
                             top_descriptor["mediaType"])
        if top is None:
            raise OfflineError("the manifest of %s (%s) is missing from the store %s; fetch the image into it again"
                               % (name, top_descriptor["digest"], store.path))
        top_descriptor["mediaType"] = top.media_type
        result.entries.append({"name": name, "descriptor": top_descriptor})
        result.add(top.digest, top.size, "index" if top.is_index else "manifest")
        chosen = []
        if top.is_index:
            leaves = _leaves(store, result, top, name)
            if wanted is None:
                for plat, descriptor in leaves:
                    manifest = _read_manifest(store, descriptor, "manifest %s of %s" % (descriptor["digest"], name))
                    if manifest is not None and not manifest.is_index:
                        chosen.append((plat, manifest))
                if not chosen:
                    raise OfflineError("the store %s holds the index of %s but none of its images; fetch it with "
                                       "the platforms you need" % (store.path, name))
            else:
                known = [(plat, d) for plat, d in leaves if plat is not None]
                for want in wanted:
                    try:
                        plat, descriptor = select(known, want)
                    except PlatformError as exc:
                        raise PlatformError("%s: %s" % (name, exc))
                    manifest = _read_manifest(store, descriptor, "manifest %s of %s" % (descriptor["digest"], name))
                    if manifest is None:
                        raise OfflineError("the store %s lacks the %s image of %s (%s); fetch it with platform %s "
                                           "first" % (store.path, plat, name, descriptor["digest"], want))
                    if manifest.is_index:
                        raise RegistryError("index entry %s of %s is itself an index" % (descriptor["digest"], name))
                    if all(m.digest != manifest.digest for _p, m in chosen):
                        chosen.append((plat, manifest))
        else:
            plat = _config_platform(store, top, name)
            for want in wanted or []:
                if plat.os and plat.architecture and want.rank(plat) is None:
                    raise PlatformError("%s is for %s only, not for %s" % (name, plat, want))
            chosen.append((plat, top))
        for _plat, manifest in chosen:
            _add_image(store, result, manifest, name)
        result.images.append({"image": name, "digest": top.digest,
                              "platforms": sorted(set(str(p) for p, _m in chosen if p is not None))})
    return result


# --------------------------------------------------------------------------------------------------- receiving
def _stat_key(st):
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


def _marker_holds(marker, st):
    """True when a blob is as it was when it was verified: the same size, inode, modification and change
    times."""
    return isinstance(marker, list) and marker == _stat_key(st)


class Receiver:
    """The host side: what the store lacks, and committing what arrives."""

    def __init__(self, store, check_mode=False):
        self.store = store
        self.check_mode = check_mode
        self._markers = self._load_markers()
        self._new_markers = {}
        self._dropped = set()

    # ---------------------------------------------------------------- verified markers
    @property
    def _markers_path(self):
        return os.path.join(self.store.ingest_dir, MARKERS)

    def _load_markers(self):
        try:
            with open(self._markers_path, "rb") as handle:
                data = json.loads(handle.read().decode("utf-8"))
        except (IOError, OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mark(self, digest):
        try:
            st = os.stat(self.store.blob_path(digest))
        except OSError:
            return
        self._new_markers[digest] = _stat_key(st)
        self._dropped.discard(digest)

    def _unmark(self, digest):
        self._new_markers.pop(digest, None)
        self._dropped.add(digest)

    def save_markers(self):
        if self.check_mode or not (self._new_markers or self._dropped):
            return
        with self.store._flock(os.path.join(self.store.ingest_dir, "verified.lock")):
            markers = self._load_markers()
            markers.update(self._new_markers)
            for digest in self._dropped:
                markers.pop(digest, None)
            # forget blobs that left the store (pruned, evicted, removed by a verification)
            for digest in list(markers):
                if not is_digest(digest) or not os.path.exists(self.store.blob_path(digest)):
                    del markers[digest]
            write_json_atomic(self._markers_path, markers)
        self._new_markers = {}
        self._dropped = set()

    # ---------------------------------------------------------------- inspecting
    def status(self, digest, size):
        """``present``, ``missing`` or ``corrupt`` (size or digest wrong) for one blob of the store."""
        path = self.store.blob_path(digest)
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        if st.st_size != size:
            return "corrupt"
        if _marker_holds(self._markers.get(digest), st):
            return "present"
        try:
            actual = _hash_file(path, digest.split(":", 1)[0])
        except (IOError, OSError):
            return "corrupt"
        if actual != digest:
            return "corrupt"
        self._mark(digest)
        return "present"

    def _remove_corrupt(self, digest, size):
        with self.store.lock(digest):
            # another writer may have replaced it meanwhile
            if self.status(digest, size) == "corrupt":
                self.store.remove_blob(digest)
                self._unmark(digest)

    def inspect(self, blobs, staging=None):
        """Which of ``blobs`` ({digest: size}) the store lacks. Returns a dict: ``missing`` (digests, in
        order), ``present`` (count), ``replaced`` (corrupt blobs found; removed unless in check mode),
        ``reused`` (blobs taken from an interrupted earlier run's files)."""
        missing, replaced, reused = [], [], []
        present = 0
        for digest, size in blobs.items():
            state = self.status(digest, size)
            if state == "present":
                present += 1
                continue
            if state == "corrupt":
                replaced.append(digest)
                if not self.check_mode:
                    self._remove_corrupt(digest, size)
            missing.append(digest)
        if staging and missing and not self.check_mode:
            left = []
            for digest in missing:
                if self._adopt(digest, blobs[digest], staging):
                    reused.append(digest)
                else:
                    left.append(digest)
            missing = left
        if staging and not self.check_mode:
            self._clean_stale(staging)
        self.save_markers()
        return {"missing": missing, "present": present, "replaced": replaced, "reused": reused}

    def _leftovers(self, staging, pattern):
        base = os.path.dirname(os.path.abspath(staging))
        own = os.path.abspath(staging)
        return [path for path in glob.glob(os.path.join(glob.escape(base), "*", pattern))
                if os.path.dirname(path) != own]

    def _adopt(self, digest, size, staging):
        """Commit a complete copy of ``digest`` left by an interrupted run; True when one was taken."""
        for path in self._leftovers(staging, staged_name(digest)):
            try:
                if os.path.getsize(path) != size:
                    continue
                self.commit_file(path, digest, size)
                return True
            except DigestMismatch:
                continue      # commit_file removed it
            except (IOError, OSError):
                continue
        return False

    def _clean_stale(self, staging):
        """Delete our files that interrupted runs left behind long ago (best effort)."""
        limit = time.time() - STALE_AGE
        for pattern in (STAGED_PREFIX + "*", BATCH_PREFIX + "*"):
            for path in self._leftovers(staging, pattern):
                try:
                    if os.path.getmtime(path) < limit:
                        os.unlink(path)
                except OSError:
                    pass

    # ---------------------------------------------------------------- committing
    def commit_file(self, path, digest, size):
        """Verify the file ``path`` (a blob that arrived) and move it into the store (or copy it when it
        cannot be moved). The file is gone afterwards in both cases, also when it was bad. Returns True when
        the store gained the blob, False when it had it already."""
        with self.store.lock(digest):
            state = self.status(digest, size)
            if state == "present":
                _unlink(path)
                return False
            if state == "corrupt":
                self.store.remove_blob(digest)
                self._unmark(digest)
            with open(path, "rb") as handle:
                actual, length = hash_stream(handle, digest.split(":", 1)[0])
                if length != size or actual != digest:
                    _unlink(path)
                    raise DigestMismatch("blob %s arrived damaged: %d bytes hashing to %s, expected %d bytes; "
                                         "nothing was kept" % (digest, length, actual, size))
                os.fsync(handle.fileno())
            target = self.store.blob_path(digest)
            moved = False
            try:
                st = os.stat(path)
                os.chmod(path, 0o644)
                os.rename(path, target)
                moved = True
                if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                    # arrived as the connection user's file: the store's files are the store user's
                    os.chown(target, os.geteuid(), os.getegid())
            except OSError as exc:
                if moved:
                    raise
                if exc.errno not in (errno.EXDEV, errno.EACCES, errno.EPERM):
                    raise
                self._copy_in(path, digest)
                _unlink(path)
            self._mark(digest)
            return True

    def _copy_in(self, path, digest):
        """Copy a verified file into the store (other file system, or a file we may not move)."""
        fd, tmp = tempfile.mkstemp(dir=self.store.ingest_dir, prefix=".sync.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                with open(path, "rb") as handle:
                    actual, _length = hash_stream(handle, digest.split(":", 1)[0], out)
                out.flush()
                os.fsync(out.fileno())
            if actual != digest:   # changed under us after the first check
                raise DigestMismatch("blob %s changed while it was copied into the store" % digest)
            self.store.commit(tmp, digest, verified=True)
        finally:
            _unlink(tmp)

    def _commit_stream(self, stream, digest, size):
        """Write a blob from a stream (a batch member) into the store, verified. True when it was added."""
        with self.store.lock(digest):
            state = self.status(digest, size)
            if state == "present":
                return False
            if state == "corrupt":
                self.store.remove_blob(digest)
                self._unmark(digest)
            fd, tmp = tempfile.mkstemp(dir=self.store.ingest_dir, prefix=".sync.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    actual, length = hash_stream(stream, digest.split(":", 1)[0], out)
                    out.flush()
                    os.fsync(out.fileno())
                if length != size or actual != digest:
                    raise DigestMismatch("blob %s arrived damaged: %d bytes hashing to %s, expected %d bytes; "
                                         "nothing was kept" % (digest, length, actual, size))
                self.store.commit(tmp, digest, verified=True)
            finally:
                _unlink(tmp)
            self._mark(digest)
            return True

    def receive(self, blobs, staging, batches=(), files=(), partial=False):
        """Commit what arrived in ``staging``: ``batches`` (tar file names) and ``files`` (digests sent on
        their own). Every blob of ``blobs`` ({digest: size}) must be in the store afterwards, unless
        ``partial`` (what a failed transfer managed to send is kept, the rest is not looked for). Returns
        the digests added."""
        added = []
        try:
            for batch in batches:
                path = os.path.join(staging, _plain(batch))
                if partial and not os.path.exists(path):
                    continue
                added.extend(self._receive_batch(path, blobs))
            for digest in files:
                if digest not in blobs:
                    raise RegistryError("blob %s was sent but is not in the list of needed blobs" % digest)
                path = os.path.join(staging, staged_name(digest))
                if not os.path.exists(path):
                    if partial or self.status(digest, blobs[digest]) == "present":
                        continue      # not sent, or a concurrent run adopted it
                    raise RegistryError("blob %s did not arrive (no file %s)" % (digest, path))
                if partial and os.path.getsize(path) != blobs[digest]:
                    continue          # cut short: the next run sends it again
                if self.commit_file(path, digest, blobs[digest]):
                    added.append(digest)
        finally:
            self.save_markers()
        if not partial:
            lacking = [d for d, size in blobs.items() if not self.store.has(d, size)]
            if lacking:
                raise RegistryError("the store %s still lacks %d blob(s) after the transfer: %s"
                                    % (self.store.path, len(lacking), ", ".join(lacking[:5])))
        return added

    def _receive_batch(self, path, blobs):
        added = []
        try:
            with open(path, "rb") as handle:
                with tarfile.open(fileobj=handle, mode="r|") as archive:
                    for member in archive:
                        digest = _member_digest(member.name)
                        if not member.isfile() or digest is None or digest not in blobs:
                            raise RegistryError("unexpected member %r in the batch %s" % (member.name, path))
                        if member.size != blobs[digest]:
                            raise DigestMismatch("blob %s arrived with %d bytes, expected %d"
                                                 % (digest, member.size, blobs[digest]))
                        if self._commit_stream(archive.extractfile(member), digest, blobs[digest]):
                            added.append(digest)
        except tarfile.TarError as exc:
            raise RegistryError("the batch %s is damaged: %s" % (path, exc))
        finally:
            _unlink(path)
        return added

    # ---------------------------------------------------------------- index.json
    def record(self, entries):
        """Name the images in index.json; returns the names whose entry was added or changed."""
        changed = []
        for entry in entries:
            name, descriptor = _check_entry(entry)
            current = self.store.lookup_image(name) if os.path.isdir(self.store.path) else None
            if current is not None and all(current.get(k) == descriptor[k] for k in ("mediaType", "digest", "size")):
                continue
            changed.append(name)
            if not self.check_mode:
                if not self.store.has(descriptor["digest"], descriptor["size"]):
                    raise RegistryError("cannot name %s in index.json: its manifest %s is not in the store"
                                        % (name, descriptor["digest"]))
                self.store.record_image(name, descriptor)
        return changed


def _check_entry(entry):
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise RegistryError("invalid index entry %r" % (entry,))
    name = entry["name"]
    try:
        normal = store_name(parse_reference(name))
    except RegistryError:
        normal = None
    if normal != name:
        raise RegistryError("invalid image name %r in an index entry" % (name,))
    descriptor = entry.get("descriptor")
    if not isinstance(descriptor, dict):
        raise RegistryError("index entry %s has no descriptor" % name)
    checked = _descriptor(descriptor, name)
    if checked["mediaType"] is None:
        raise RegistryError("index entry %s has no media type" % name)
    return name, checked


def _plain(name):
    if not isinstance(name, str) or os.path.basename(name) != name or not name.startswith(BATCH_PREFIX):
        raise RegistryError("invalid batch name %r" % (name,))
    return name


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _hash_file(path, algorithm):
    return hash_file(path, algorithm)[0]


# --------------------------------------------------------------------------------------------------- sending
def make_batches(store, digests, sizes, directory):
    """Write tar batches of the blobs ``digests`` (from ``store``) into ``directory``; returns
    [(file path, [digests])]. Each blob's size is checked against ``sizes``; its bytes are not hashed (the
    store verified them when it wrote them, and the receiver verifies them again)."""
    batches = []
    current, current_bytes = [], 0
    groups = []
    for digest in digests:
        size = sizes[digest]
        if current and current_bytes + size > BATCH_LIMIT:
            groups.append(current)
            current, current_bytes = [], 0
        current.append(digest)
        current_bytes += size
    if current:
        groups.append(current)
    for number, group in enumerate(groups):
        path = os.path.join(directory, "%s%d.tar" % (BATCH_PREFIX, number))
        with open(path, "wb") as out:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as archive:
                for digest in group:
                    source = store.blob_path(digest)
                    with open(source, "rb") as handle:
                        size = os.fstat(handle.fileno()).st_size
                        if size != sizes[digest]:
                            raise RegistryError("the blob %s in the store %s has %d bytes instead of %d; the store "
                                                "is damaged" % (digest, store.path, size, sizes[digest]))
                        info = tarfile.TarInfo(member_name(digest))
                        info.size = size
                        info.mode = 0o644
                        info.mtime = 0
                        archive.addfile(info, handle)
        batches.append((path, group))
    return batches


def source_path(store, digest, size):
    """The store file of a blob sent on its own (its size checked)."""
    path = store.blob_path(digest)
    try:
        actual = os.path.getsize(path)
    except OSError:
        raise OfflineError("the blob %s is missing from the store %s" % (digest, store.path))
    if actual != size:
        raise RegistryError("the blob %s in the store %s has %d bytes instead of %d; the store is damaged"
                            % (digest, store.path, actual, size))
    return path
