# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Loading image archives into a container runtime (docker, podman, containerd) through their CLIs.

Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
Do not use this from other collections or standalone plugins/modules!

Nothing here imports Ansible or the registry client (only the collection's name rules, the pure
``_registry/reference.py``): commands run through a ``run(argv, timeout)`` callable returning
``(rc, stdout, stderr)`` (``module_runner(module)`` builds one on ``AnsibleModule.run_command``), and
executables are found through ``which(name)``.

API
---
``read_archive(path) -> ArchiveInfo``
    Reads ``manifest.json`` and/or ``index.json`` of a docker-archive or oci-archive (plain tar, or
    gzip/bzip2/xz-compressed) without extracting it. ``ArchiveInfo``: ``image_id`` (the config digest),
    ``names`` (fully qualified ``registry/repository:tag``), ``target`` (the descriptor digest
    ``ctr images import`` gives the image, None when only ``manifest.json`` is there), ``kind``
    (``docker-archive`` / ``oci-archive``), ``compression``. Raises ``ArchiveError``.
``normalize_name(name) -> str`` / ``familiar_name(full) -> str``
    ``hello-world`` -> ``docker.io/library/hello-world:latest`` and back (``hello-world:latest``).
``select_runtime(kind, runtime_args, which, run, namespace) -> Runtime``
    ``kind`` ``auto`` tries docker, podman and containerd in that order and takes the first one present and
    running. Raises ``RuntimeFailure`` naming what was found and why it cannot be used.
``Runtime``: ``.name``, ``.version``, ``.state(names, info) -> {name: id or None}``, ``.load(path)``,
    ``.tag(source, name)``, ``.present(info, name, value) -> bool``.
``load_image(params, which, run, check_mode) -> dict``
    The whole job of the ``image_load`` module; returns the result. The archive is loaded only when the runtime
    lacks the image (docker/podman: no image with that ID; containerd: no name pointing to the archive's
    target digest); wanted names that are missing or point to another image are then set with the tag
    command. Afterwards every wanted name is checked.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bz2
import gzip
import hashlib
import json
import lzma
import os
import platform as _platform
import re
import shutil
import tarfile
import tempfile
import threading
import zlib

from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import (
    normalize_name as reference_name, split_domain, split_tag)

DOCKER_HUB = "docker.io"
MAX_JSON = 4 * 1024 * 1024          # manifest.json, index.json, manifests and configs are small
MAX_KEPT = 64 * 1024 * 1024         # small blobs kept while streaming a compressed archive
MAX_MESSAGE = 600                   # characters of a runtime's own error message that are shown
QUERY_TIMEOUT = 60                  # seconds for every command that only asks (version, inspect, ls, tag)

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX_NAME = re.compile(r"(?:^|/)(?:sha256[:/])?([a-f0-9]{64})(?:\.json)?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRUNCATED = " (it ends without the end-of-archive blocks: it is truncated)"


class ArchiveError(Exception):
    """The archive cannot be read or is not an image archive."""


class RuntimeFailure(Exception):
    """A runtime is missing, not running, or refused a command."""


# ---------------------------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------------------------
def normalize_name(name):
    """A repo tag (``name[:tag]``) as the runtimes store it: ``registry/repository:tag``.

    Raises ValueError for digests and malformed names. The normalisation is the collection's one
    (``reference.normalize_name``, which also names the images in the archives it writes); the checks are
    what the runtimes' tag commands accept."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError("not an image name: %r" % (name,))
    if "@" in name:
        raise ValueError("%s: a repo tag names a tag, not a digest" % name)
    remote, tag, _digest = split_tag(name)
    if not _TAG.match("latest" if tag is None else tag):
        raise ValueError("%s: invalid tag %r" % (name, tag))
    path = split_domain(remote)[1]
    if not all(_PATH_COMPONENT.match(p) for p in path.split("/")):
        raise ValueError("%s: invalid repository name (lower case letters, digits and separators)" % name)
    return reference_name(name)


def familiar_name(full):
    """``docker.io/library/x:1`` -> ``x:1``; ``docker.io/o/x:1`` -> ``o/x:1``; others unchanged."""
    if full.startswith(DOCKER_HUB + "/"):
        rest = full[len(DOCKER_HUB) + 1:]
        if rest.startswith("library/") and "/" not in rest[len("library/"):]:
            rest = rest[len("library/"):]
        return rest
    return full


def _name_or_none(value):
    try:
        return normalize_name(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# platform (for an archive that holds an index)
# ---------------------------------------------------------------------------------------------------------
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


def host_platform():
    machine = _platform.machine().lower()
    arch = _ARCH.get(machine, machine)
    variant = None
    if machine == "armv6l":
        variant = "v6"
    elif arch == "arm":
        variant = "v7"
    return "linux", arch, variant


def _matches(plat, want):
    if not isinstance(plat, dict):
        return False
    os_, arch, variant = want
    if plat.get("os") != os_ or plat.get("architecture") != arch:
        return False
    have = plat.get("variant")
    if arch == "arm64":
        return have in (None, "", "v8")
    if arch == "arm":
        return (have or "v7") == (variant or "v7")
    return True


# ---------------------------------------------------------------------------------------------------------
# reading archives
# ---------------------------------------------------------------------------------------------------------
class ArchiveInfo:
    def __init__(self, kind, image_id, names, target, target_media_type, compression):
        self.kind = kind
        self.image_id = image_id
        self.names = names
        self.target = target
        self.target_media_type = target_media_type
        self.compression = compression

    def as_dict(self):
        return {"format": self.kind, "image_id": self.image_id, "names": list(self.names),
                "target": self.target, "compression": self.compression}


def _sniff(path):
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if len(head) < 512:
        raise ArchiveError("%s is not an image archive (%s)" % (path, "empty file" if not head else "too short for a tar"))
    return "none"


def _member_name(name):
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _blob_path(digest):
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ArchiveError("invalid digest %r in the archive" % (digest,))
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _parse_json(data, what):
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError("%s is not valid JSON: %s" % (what, exc))


class _Collector:
    """What has been read from the archive so far, and which blobs are still needed."""

    def __init__(self, path):
        self.path = path
        self.manifest_json = None
        self.index_json = None
        self.blobs = {}
        self.kept = 0
        self.truncated = False

    # ---- which blobs matter
    def needed(self):
        """Blob paths still needed to resolve index.json (None when index.json is not read yet)."""
        if self.index_json is None:
            return None
        need = set()
        for desc in _entries(self.index_json, self.path):
            self._walk(desc, need)
        return need

    def _walk(self, desc, need, depth=0):
        path = _blob_path(desc.get("digest"))
        data = self.blobs.get(path)
        if data is None:
            need.add(path)
            return
        parsed = _parse_json(data, path)
        if _is_index(desc, parsed) and depth < 4:
            child = _pick_platform(parsed, self.path)
            if child is not None:
                self._walk(child, need, depth + 1)

    def resolved(self):
        need = self.needed()
        return need is not None and not need

    def offer(self, name, size, read):
        """Keep ``name`` if it may be needed; ``read()`` returns its bytes."""
        if name == "manifest.json" and self.manifest_json is None:
            self.manifest_json = _parse_json(_read_limited(read, size, name), "manifest.json")
        elif name == "index.json" and self.index_json is None:
            self.index_json = _parse_json(_read_limited(read, size, name), "index.json")
        elif name.startswith("blobs/") and size <= MAX_JSON:
            need = self.needed()
            if need is not None and name not in need:
                return
            if need is None and self.kept + size > MAX_KEPT:
                return
            self.blobs[name] = read()
            self.kept += size


def _read_limited(read, size, what):
    if size > MAX_JSON:
        raise ArchiveError("%s in the archive is too big (%d bytes)" % (what, size))
    return read()


def _is_index(desc, data):
    if desc.get("mediaType") in INDEX_TYPES:
        return True
    return isinstance(data, dict) and "manifests" in data and "config" not in data


def _entries(index, path):
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests or not all(isinstance(m, dict) for m in manifests):
        raise ArchiveError("index.json of %s lists no image" % path)
    return manifests


def _pick_platform(index, path):
    """The descriptor of this host's platform in a nested index (attestations skipped)."""
    want = host_platform()
    entries = _entries(index, path)
    for desc in entries:
        if _matches(desc.get("platform"), want):
            return desc
    real = [d for d in entries if (d.get("platform") or {}).get("os") not in (None, "unknown")]
    if len(real) == 1 and not (real[0].get("platform") or {}).get("architecture"):
        return real[0]
    return None


def _scan_seekable(path, collector):
    try:
        total = os.path.getsize(path)
        end = 0
        with tarfile.open(path, mode="r:") as tar:
            members = {}
            for member in tar.getmembers():
                if member.offset_data + member.size > total:
                    raise ArchiveError("%s cannot be read as a tar archive (%s ends after the end of the file): it "
                                       "is truncated" % (path, _member_name(member.name)))
                if member.isfile():
                    members.setdefault(_member_name(member.name), member)
                end = member.offset_data + member.size + (-member.size % tarfile.BLOCKSIZE)
            # tar writers end an archive with two zero blocks; without them it was cut at a member boundary
            truncated = total < end + 2 * tarfile.BLOCKSIZE
            collector.truncated = truncated
            for name in ("manifest.json", "index.json"):
                m = members.get(name)
                if m is not None:
                    collector.offer(name, m.size, lambda m=m: tar.extractfile(m).read())
            for _round in range(6):   # index -> (nested index ->) manifest
                need = collector.needed()
                if not need:
                    break
                for blob in sorted(need):
                    m = members.get(blob)
                    if m is None:
                        raise ArchiveError("%s: index.json names %s, which the archive lacks%s" % (
                            path, blob, TRUNCATED if truncated else ""))
                    collector.offer(blob, m.size, lambda m=m: tar.extractfile(m).read())
            return members
    except tarfile.TarError as exc:
        raise ArchiveError("%s cannot be read as a tar archive (%s): it is damaged or no archive" % (path, exc))


def _scan_stream(path, compression, collector):
    opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[compression]
    members = {}
    try:
        with opener(path, "rb") as raw:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name = _member_name(member.name)
                    members.setdefault(name, member)
                    collector.offer(name, member.size, lambda m=member: tar.extractfile(m).read())
                    if collector.resolved():
                        break   # index.json and the manifests it names are read: no need to inflate the rest
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ArchiveError("%s is not a readable %s-compressed tar archive (%s)" % (path, compression, exc))
    return members


def _config_digest_from_manifest(data, what):
    manifest = _parse_json(data, what)
    config = manifest.get("config") if isinstance(manifest, dict) else None
    digest = config.get("digest") if isinstance(config, dict) else None
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ArchiveError("%s has no valid config digest" % what)
    return digest


def read_archive(path):
    """What an archive holds (see the module docstring)."""
    compression = _compression_of(path)
    collector = _Collector(path)
    try:
        if compression == "none":
            members = _scan_seekable(path, collector)
        else:
            members = _scan_stream(path, compression, collector)
    except (IOError, OSError) as exc:
        raise ArchiveError("cannot read %s: %s" % (path, exc.strerror or exc))
    if collector.manifest_json is None and collector.index_json is None:
        raise ArchiveError("%s is not an image archive: it has neither manifest.json (docker-archive) nor "
                           "index.json (oci-archive)" % path)
    image_id = names = target = target_type = None
    kind = "docker-archive" if collector.manifest_json is not None else "oci-archive"
    if collector.index_json is not None:
        image_id, names, target, target_type = _from_index(collector, path)
    if collector.manifest_json is not None:
        image_id, names = _from_manifest_json(collector, path, compression, members, image_id, names)
    return ArchiveInfo(kind, image_id, names or [], target, target_type, compression)


def _compression_of(path):
    """The compression of an archive file this module can read (a directory or zstd is refused)."""
    if os.path.isdir(path):
        raise ArchiveError("%s is a directory; give an archive file (docker-archive or oci-archive)" % path)
    try:
        compression = _sniff(path)
    except (IOError, OSError) as exc:
        raise ArchiveError("cannot read %s: %s" % (path, exc.strerror or exc))
    if compression == "zstd":
        raise ArchiveError("%s is zstd-compressed; only plain tar archives and gzip, bzip2 or xz-compressed ones "
                           "can be inspected" % path)
    return compression


def _from_index(collector, path):
    """(image ID or None, names, target digest, target media type) from index.json."""
    entries = _entries(collector.index_json, path)
    targets = sorted(set(e.get("digest") for e in entries))
    if len(targets) > 1:
        raise ArchiveError("%s holds %d different images; image_load loads an archive of one image" % (
            path, len(targets)))
    desc = entries[0]
    names = _index_names(entries)
    image_id = _index_image_id(collector, desc, path)
    if image_id is None and collector.manifest_json is None:
        raise ArchiveError("%s: the manifest named by index.json is missing from the archive" % path)
    return image_id, names, desc.get("digest"), desc.get("mediaType")


def _index_names(entries):
    """The names index.json gives its entries (containerd's name annotation, else a full ref.name)."""
    names = []
    for entry in entries:
        ann = entry.get("annotations") if isinstance(entry.get("annotations"), dict) else {}
        name = _name_or_none(ann.get(NAME_ANNOTATION) or "")
        if name is None and "/" in (ann.get(REF_NAME_ANNOTATION) or ""):
            name = _name_or_none(ann[REF_NAME_ANNOTATION])
        if name and name not in names:
            names.append(name)
    return names


def _index_image_id(collector, desc, path):
    """The config digest of the image ``desc`` names (through nested indexes, this host's platform); None
    when its manifest was not read."""
    blob = collector.blobs.get(_blob_path(desc.get("digest")))
    for _depth in range(4):
        if blob is None:
            return None
        data = _parse_json(blob, "manifest " + desc.get("digest", "?"))
        if not _is_index(desc, data):
            return _config_digest_from_manifest(blob, "the manifest " + desc.get("digest"))
        desc = _pick_platform(data, path)
        if desc is None:
            raise ArchiveError("%s holds no image for this host's platform %s" % (
                path, "/".join(p for p in host_platform() if p)))
        blob = collector.blobs.get(_blob_path(desc.get("digest")))
    return None


def _from_manifest_json(collector, path, compression, members, image_id, names):
    """(image ID, names) with manifest.json's config and RepoTags (which win over index.json's names)."""
    entry = _manifest_json_entry(collector.manifest_json, path)
    config = entry.get("Config")
    if not isinstance(config, str) or not config:
        raise ArchiveError("manifest.json of %s names no config" % path)
    match = _HEX_NAME.search(_member_name(config))
    digest = "sha256:" + match.group(1) if match else _hash_member(path, compression, config)
    if image_id is not None and image_id != digest:
        raise ArchiveError("%s is inconsistent: manifest.json names config %s, index.json %s" % (
            path, digest, image_id))
    if _member_name(config) not in members and compression == "none":
        raise ArchiveError("%s: manifest.json names %s, which the archive lacks%s" % (
            path, config, TRUNCATED if collector.truncated else ""))
    docker_names = _repo_tag_names(entry, path)
    return digest, docker_names if docker_names or not names else names


def _manifest_json_entry(entries, path):
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ArchiveError("manifest.json of %s lists no image" % path)
    if len(entries) > 1:
        raise ArchiveError("%s holds %d images; image_load loads an archive of one image" % (path, len(entries)))
    return entries[0]


def _repo_tag_names(entry, path):
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ArchiveError("manifest.json of %s has invalid RepoTags" % path)
    names = []
    for tag in tags:
        name = _name_or_none(tag)
        if name is None:
            raise ArchiveError("manifest.json of %s has an invalid repo tag %r" % (path, tag))
        if name not in names:
            names.append(name)
    return names


def _hash_member(path, compression, name):
    """sha256 of one member (a config not named by its digest, as in very old docker saves)."""
    opener = {"none": open, "gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[compression]
    with opener(path, "rb") as raw:
        with tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if member.isfile() and _member_name(member.name) == _member_name(name):
                    if member.size > MAX_JSON:
                        raise ArchiveError("the config %s in %s is too big" % (name, path))
                    return "sha256:" + hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    raise ArchiveError("%s: manifest.json names %s, which the archive lacks" % (path, name))


# ---------------------------------------------------------------------------------------------------------
# running commands
# ---------------------------------------------------------------------------------------------------------
def shorten(text, limit=MAX_MESSAGE):
    """A runtime's message on one line, at most ``limit`` characters."""
    text = _ANSI.sub("", text or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    one = " / ".join(lines)
    if len(one) > limit:
        one = one[:limit - 3].rstrip() + "..."
    return one


def module_runner(module, timeout):
    """``run(argv, timeout=None) -> (rc, out, err)`` on ``module.run_command``; a command that runs longer
    than its timeout (``timeout`` when not given) is killed and reported as rc -9 with a message."""

    def run(argv, limit=None):
        limit = limit or timeout
        state = {"timer": None, "killed": False}

        def arm(proc):
            def kill():
                state["killed"] = True
                try:
                    proc.kill()
                except OSError:
                    pass
            state["timer"] = threading.Timer(limit, kill)
            state["timer"].daemon = True
            state["timer"].start()

        try:
            rc, out, err = module.run_command(argv, before_communicate_callback=arm, expand_user_and_vars=False)
        finally:
            if state["timer"] is not None:
                state["timer"].cancel()
        if state["killed"]:
            return -9, out, "timed out after %s seconds: %s" % (limit, " ".join(argv[:4]))
        return rc, out, err

    return run


# ---------------------------------------------------------------------------------------------------------
# runtimes
# ---------------------------------------------------------------------------------------------------------
class Runtime:
    name = None
    binary = None
    reads_compressed = False      # whether the load command reads a gzip/bzip2/xz-compressed archive

    def __init__(self, path, args, run, namespace=None, snapshotter=None):
        self.path = path
        self.args = list(args or [])
        self._run = run
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.version = None

    def cmd(self, *args):
        return [self.path] + self.args + list(args)

    def run(self, args, what, timeout=QUERY_TIMEOUT, ok=(0,)):
        rc, out, err = self._run(self.cmd(*args), timeout)
        if rc not in ok:
            raise RuntimeFailure("%s %s failed (rc=%s): %s" % (self.binary, what, rc, shorten(err or out)))
        return rc, out, err

    def probe(self):
        """Raise RuntimeFailure unless the runtime answers; sets ``version``."""
        raise NotImplementedError

    def state(self, names, info):
        """{name: value} for each of ``names`` (None when the runtime lacks it)."""
        raise NotImplementedError

    def expected(self, info):
        """The value ``state`` shows for a name of the archive's image."""
        return info.image_id

    def present(self, info, name, value):
        return value == self.expected(info)

    def has_image(self, info):
        raise NotImplementedError

    def load(self, path, timeout):
        raise NotImplementedError

    def tag(self, info, source, name):
        raise NotImplementedError


class _DockerLike(Runtime):
    """docker and podman share their image commands."""
    missing_markers = ("no such image", "no such object", "image not known")

    def inspect_id(self, name):
        rc, out, err = self._run(self.cmd("image", "inspect", "--format", "{{.Id}}", name), QUERY_TIMEOUT)
        if rc != 0:
            message = (err or out or "").lower()
            if any(m in message for m in self.missing_markers):
                return None
            raise RuntimeFailure("%s image inspect %s failed (rc=%s): %s" % (
                self.binary, name, rc, shorten(err or out)))
        value = out.strip().splitlines()[0].strip() if out.strip() else ""
        if re.match(r"^[a-f0-9]{64}$", value):
            value = "sha256:" + value
        return value or None

    def state(self, names, info):
        return dict((name, self.inspect_id(name)) for name in names)

    def has_image(self, info):
        return self.inspect_id(info.image_id) == info.image_id

    def load(self, path, timeout):
        _rc, out, _err = self.run(["load", "-i", path], "load", timeout=timeout)
        return out

    def tag(self, info, source, name):
        self.run(["tag", info.image_id, name], "tag %s" % name)


class Docker(_DockerLike):
    name = binary = "docker"
    reads_compressed = True

    def probe(self):
        rc, out, err = self._run(self.cmd("version", "--format", "{{.Server.Version}}"), QUERY_TIMEOUT)
        if rc != 0 or not out.strip():
            raise RuntimeFailure("the docker daemon is not reachable: %s" % shorten(err or out or "no answer"))
        self.version = out.strip()


class Podman(_DockerLike):
    name = binary = "podman"

    def probe(self):
        rc, out, err = self._run(self.cmd("version", "--format", "{{.Client.Version}}"), QUERY_TIMEOUT)
        if rc != 0:
            raise RuntimeFailure("podman does not work: %s" % shorten(err or out or "no answer"))
        self.version = out.strip()
        # the storage must be usable (a wrong --root or --storage-driver fails here, not half-way)
        rc, out, err = self._run(self.cmd("images", "--quiet", "--noheading"), QUERY_TIMEOUT)
        if rc != 0:
            raise RuntimeFailure("podman cannot use its image store: %s" % shorten(err or out))


def _ctr_address(args, environ):
    address = environ.get("CONTAINERD_ADDRESS") or "/run/containerd/containerd.sock"
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-a", "--address") and i + 1 < len(args):
            address = args[i + 1]
            i += 1
        elif a.startswith("--address="):
            address = a.split("=", 1)[1]
        elif a.startswith("-a="):
            address = a.split("=", 1)[1]
        i += 1
    return address


class Containerd(Runtime):
    name = "containerd"
    binary = "ctr"

    def cmd(self, *args):
        return [self.path] + self.args + ["--namespace", self.namespace] + list(args)

    def probe(self):
        address = _ctr_address(self.args, os.environ)
        path = address[len("unix://"):] if address.startswith("unix://") else address
        if "://" not in path and not os.path.exists(path):
            raise RuntimeFailure("containerd is not running: no socket at %s (give its address with "
                                 "runtime_args: ['--address', PATH])" % path)
        rc, out, err = self._run(self.cmd("version"), QUERY_TIMEOUT)
        if rc != 0 or "Server:" not in out:
            raise RuntimeFailure("containerd is not reachable at %s: %s" % (
                address, shorten(err or out or "no answer")))
        match = re.search(r"Server:\s*\n\s*Version:\s*(\S+)", out)
        self.version = match.group(1) if match else None

    def images(self):
        _rc, out, _err = self.run(["images", "ls"], "images ls")
        found = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3 and _DIGEST.match(parts[2]):
                found[parts[0]] = parts[2]
        return found

    def expected(self, info):
        return info.target or info.image_id

    def _config_of(self, digest):
        rc, out, _err = self._run(self.cmd("content", "get", digest), QUERY_TIMEOUT)
        if rc != 0:
            return None
        try:
            data = json.loads(out)
            return data["config"]["digest"]
        except (ValueError, KeyError, TypeError):
            return None

    def state(self, names, info):
        found = self.images()
        out = {}
        for name in names:
            value = found.get(name)
            if value is not None and info.target is None:
                # an archive without index.json: containerd made the manifest itself; compare the config
                value = info.image_id if self._config_of(value) == info.image_id else value
            out[name] = value
        return out

    def has_image(self, info):
        wanted = self.expected(info)
        return any(v == wanted for v in self.state(list(self.images()), info).values())

    def load(self, path, timeout):
        args = ["images", "import"]
        if self.snapshotter:
            args += ["--snapshotter", self.snapshotter]
        _rc, out, _err = self.run(args + [path], "images import", timeout=timeout)
        return out

    def tag(self, info, source, name):
        if source is None:
            # the image is there under names the archive does not give (the same image loaded from another
            # archive, e.g. a mirror's copy): the new name is made after one of those
            source = next((n for n, value in sorted(self.state(list(self.images()), info).items())
                           if self.present(info, n, value)), None)
        if source is None:
            raise RuntimeFailure("containerd can only name an image after another name: the archive names no "
                                 "image, so %s cannot be added (write the archive with repo_tags)" % name)
        self.run(["images", "tag", "--force", source, name], "images tag %s" % name)


RUNTIMES = {"docker": Docker, "podman": Podman, "containerd": Containerd}
AUTO_ORDER = ("docker", "podman", "containerd")


def select_runtime(kind, runtime_args, which, run, namespace="k8s.io", snapshotter=None):
    kinds = AUTO_ORDER if kind == "auto" else (kind,)
    problems = []
    for name in kinds:
        cls = RUNTIMES[name]
        path = which(cls.binary)
        if not path:
            problems.append("%s: the %s command is not installed (not found on PATH)" % (name, cls.binary))
            continue
        runtime = cls(path, runtime_args, run, namespace=namespace, snapshotter=snapshotter)
        try:
            runtime.probe()
        except RuntimeFailure as exc:
            problems.append("%s: %s" % (name, exc))
            continue
        return runtime
    if kind == "auto":
        raise RuntimeFailure("no container runtime found running (tried docker, podman, containerd): %s" %
                             "; ".join(problems))
    raise RuntimeFailure("runtime %s cannot be used: %s" % (kind, problems[0].split(": ", 1)[1]))


# ---------------------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------------------
def load_image(params, which, run, check_mode=False):
    """Load ``params['src']`` unless the runtime already has it under every wanted name."""
    src = params["src"]
    info = read_archive(src)
    wanted = _wanted_names(params.get("repo_tags"), info)
    runtime = select_runtime(params.get("runtime") or "auto", params.get("runtime_args") or [], which, run,
                             namespace=params.get("namespace") or "k8s.io", snapshotter=params.get("snapshotter"))
    job = _LoadJob(runtime, info, wanted)
    result = job.result(src)
    if check_mode or not result["changed"]:
        return result
    job.apply(src, params.get("timeout"))
    job.verify(src)
    return result


def _wanted_names(repo_tags, info):
    """The names the image must have: ``repo_tags`` normalised (duplicates dropped), else the archive's."""
    if repo_tags is None:
        return list(info.names)
    wanted = []
    for tag in repo_tags:
        try:
            name = normalize_name(tag)
        except ValueError as exc:
            raise ArchiveError("repo_tags: %s" % exc)
        if name not in wanted:
            wanted.append(name)
    return wanted


class _LoadJob:
    """What the runtime has of one archive's image, and what load_image does about it: load only when the
    runtime lacks the image; a name that is missing or points to another image is (re)set with the tag
    command when the image is there (a load would give the same result, slower)."""

    def __init__(self, runtime, info, wanted):
        self.runtime = runtime
        self.info = info
        self.wanted = wanted
        self.expected = runtime.expected(info)
        self.known = wanted + [n for n in info.names if n not in wanted]
        self.state = runtime.state(self.known, info)
        self.before = dict((n, self.state[n]) for n in wanted)
        missing = [n for n in wanted if not runtime.present(info, n, self.before[n])]
        self.image_there = self._present_under_a_name() or runtime.has_image(info)
        self.need_load = not self.image_there
        self.retag = [n for n in missing if not (self.need_load and n in info.names)]

    def _present_under_a_name(self):
        return any(self.runtime.present(self.info, n, self.state[n]) for n in self.known)

    def result(self, src):
        runtime, info, wanted = self.runtime, self.info, self.wanted
        actions = ["load %s into %s" % (src, runtime.name)] if self.need_load else []
        actions.extend("tag %s as %s" % (info.image_id, familiar_name(name)) for name in self.retag)
        before = dict((familiar_name(n), self.before[n]) for n in wanted)
        after = dict((familiar_name(n), self.expected) for n in wanted)
        if not wanted:
            before = {info.image_id: info.image_id if self.image_there else None}
            after = {info.image_id: info.image_id}
        return {
            "changed": bool(self.need_load or self.retag),
            "loaded": bool(self.need_load),
            "runtime": runtime.name,
            "runtime_version": runtime.version,
            "image_id": info.image_id,
            "repo_tags": [familiar_name(n) for n in wanted],
            "archive": info.as_dict(),
            "actions": actions,
            "diff": {"before": {"runtime": runtime.name, "images": before},
                     "after": {"runtime": runtime.name, "images": after}},
        }

    def apply(self, src, timeout):
        """Load the archive (when needed), then set the names to retag."""
        runtime, info = self.runtime, self.info
        if self.need_load:
            try:
                _load(runtime, src, info, timeout)
            except RuntimeFailure as exc:
                if runtime.name == "docker" and info.kind == "oci-archive":
                    raise RuntimeFailure("%s (docker before 25 cannot load an oci-archive into its classic image "
                                         "store: write a docker-archive)" % exc)
                raise
            source = info.names[0] if info.names else None
        else:
            source = next((n for n in self.known if runtime.present(info, n, self.state[n])), None)
        for name in self.retag:
            runtime.tag(info, source, name)

    def verify(self, src):
        """The runtime must now show every wanted name with this content."""
        runtime, info, wanted = self.runtime, self.info, self.wanted
        after = runtime.state(wanted, info)
        wrong = [n for n in wanted if not runtime.present(info, n, after[n])]
        if wrong:
            raise RuntimeFailure("%s loaded %s but %s" % (runtime.name, src, "; ".join(
                "%s is %s, not %s" % (familiar_name(n), after[n] or "missing", self.expected) for n in wrong)))
        if not wanted and not runtime.has_image(info):
            raise RuntimeFailure("%s loaded %s but does not list the image %s" % (runtime.name, src, info.image_id))


def _load(runtime, src, info, timeout):
    """Load ``src``; a compressed archive goes through a plain copy for runtimes that cannot read it."""
    if info.compression == "none" or runtime.reads_compressed:
        return runtime.load(src, timeout)
    opener = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}[info.compression]
    directory = os.path.dirname(os.path.abspath(src))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(src), suffix=".import.tar")
    try:
        with os.fdopen(fd, "wb") as out:
            with opener(src, "rb") as raw:
                shutil.copyfileobj(raw, out, 1024 * 1024)
        return runtime.load(tmp, timeout)
    finally:
        os.unlink(tmp)
