"""Deterministic image builder for the test bed (no docker needed).

Everything here is pure Python: layers are tar archives made with :mod:`tarfile` (sorted members, fixed
mtime, uid/gid 0), compressed with a hand-rolled gzip writer (mtime 0, fixed level, so the bytes only depend
on zlib), :mod:`zstandard`, or left uncompressed. Configs, manifests and indexes are serialised with sorted
keys, so the same inputs always give the same digests.

Building and pushing are separate:

* ``make_layer`` / ``build_image`` / ``build_index`` return in-memory objects (:class:`Layer`,
  :class:`Image`, :class:`Index`);
* ``push_blob`` / ``push_manifest`` / ``push_image`` speak the registry API through a plain
  ``requests.Session`` and a base URL (``http://127.0.0.1:5000``), so they work with any registry the
  session can push to;
* ``seed(target, kinds=None)`` builds and pushes a catalogue of images (see :data:`KINDS`) and returns
  ``{kind: ImageInfo}``.
"""
import functools
import hashlib
import io
import json
import os
import random
import stat
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional
from urllib.parse import urljoin

import requests

try:
    import zstandard
except ImportError:  # pragma: no cover - the dev venv has it
    zstandard = None

# ---------------------------------------------------------------------------------------------------------
# media types
# ---------------------------------------------------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
IN_TOTO = "application/vnd.in-toto+json"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)

MTIME = 1700000000                 # fixed mtime of every tar member
CREATED = "2024-01-01T00:00:00Z"   # fixed "created" of every config
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
MiB = 1024 * 1024
GiB = 1024 * MiB


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj):
    """Deterministic JSON bytes (sorted keys, compact)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def platform_str(p):
    s = "%s/%s" % (p["os"], p["architecture"])
    if p.get("variant"):
        s += "/" + p["variant"]
    return s


def parse_platform(s):
    parts = s.split("/")
    if len(parts) not in (2, 3):
        raise ValueError("platform must be os/arch[/variant]: %r" % s)
    p = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        p["variant"] = parts[2]
    return p


# ---------------------------------------------------------------------------------------------------------
# tar
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One tar member. ``type``: file, dir, symlink, hardlink."""
    path: str
    data: bytes = b""
    type: str = "file"
    target: Optional[str] = None
    mode: Optional[int] = None


def _entries(files, parents=True):
    out = {}
    items = files.items() if isinstance(files, dict) else [(e.path, e) for e in files]
    for path, value in items:
        path = path.strip("/")
        if isinstance(value, Entry):
            e = Entry(path, value.data, value.type, value.target, value.mode)
        elif value is None:
            e = Entry(path, type="dir")
        elif isinstance(value, str):
            e = Entry(path, value.encode("utf-8"))
        else:
            e = Entry(path, bytes(value))
        out[path] = e
    if parents:
        for path in list(out):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                out.setdefault(d, Entry(d, type="dir"))
    # sorted by path, but a hard link always after the file it points to (loaders need the target first)
    return [out[k] for k in sorted(out, key=lambda k: (out[k].type == "hardlink", k))]


def _tarinfo(e):
    ti = tarfile.TarInfo(e.path)
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    if e.type == "dir":
        ti.type = tarfile.DIRTYPE
        ti.mode = 0o755 if e.mode is None else e.mode
    elif e.type == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.target
        ti.mode = 0o777
    elif e.type == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = e.target
        ti.mode = 0o644 if e.mode is None else e.mode
    elif e.type == "file":
        ti.type = tarfile.REGTYPE
        ti.size = len(e.data)
        ti.mode = 0o644 if e.mode is None else e.mode
    else:
        raise ValueError("unknown entry type %r" % e.type)
    return ti


def make_tar(files, parents=True):
    """Deterministic tar bytes from ``{path: bytes|str|None(dir)|Entry}`` or a list of :class:`Entry`.

    Members are sorted by path (hard links last); missing parent directories are added when ``parents``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in _entries(files, parents):
            ti = _tarinfo(e)
            tf.addfile(ti, io.BytesIO(e.data) if ti.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def _walk_entries(roots, prefix=""):
    """Yield ``(Entry, path_or_None)`` for real directories, sorted, without following symlinks."""
    seen = set()
    for root in roots:
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            arc_dir = (prefix + dirpath).strip("/")
            if arc_dir not in seen:
                seen.add(arc_dir)
                yield Entry(arc_dir, type="dir"), None
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                arc = (prefix + full).strip("/")
                try:
                    st = os.lstat(full)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    yield Entry(arc, type="symlink", target=os.readlink(full)), None
                elif stat.S_ISREG(st.st_mode):
                    yield Entry(arc, mode=0o755 if st.st_mode & 0o111 else 0o644), full


def tars_of_directories(roots, layer_bytes, max_bytes=None, prefix=""):
    """Deterministic tars of real directories (sorted walk; regular files, dirs and symlinks only; fixed
    owner/mtime; modes reduced to 0644/0755), cut into several tars of about ``layer_bytes`` of file
    content each; stops once ``max_bytes`` of content is reached. Returns ``([tar_bytes], content_bytes)``."""
    tars = []
    total = 0
    buf = tf = None
    in_layer = 0
    for e, full in _walk_entries(roots, prefix):
        if max_bytes is not None and total >= max_bytes:
            break
        if tf is None:
            buf = io.BytesIO()
            tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
            in_layer = 0
        if full is None:
            tf.addfile(_tarinfo(e))
            continue
        try:
            with open(full, "rb") as f:
                e.data = f.read()
        except OSError:
            continue
        tf.addfile(_tarinfo(e), io.BytesIO(e.data))
        total += len(e.data)
        in_layer += len(e.data)
        if in_layer >= layer_bytes:
            tf.close()
            tars.append(buf.getvalue())
            tf = None
    if tf is not None:
        tf.close()
        tars.append(buf.getvalue())
    return tars, total


# ---------------------------------------------------------------------------------------------------------
# compression
# ---------------------------------------------------------------------------------------------------------
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"  # no flags, mtime 0, xfl 0, OS unknown


class GzipWriter:
    """Streaming deterministic single-member gzip writer."""

    def __init__(self, level=GZIP_LEVEL):
        self._c = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data):
        out = b"" if self._started else _GZIP_HEADER
        self._started = True
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        return out + self._c.compress(data)

    def flush(self):
        out = b"" if self._started else _GZIP_HEADER
        self._started = True
        return out + self._c.flush() + struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)


def gzip_bytes(data, level=GZIP_LEVEL, members=1):
    """Deterministic gzip. ``members`` > 1 splits ``data`` into that many parts, each its own gzip member,
    concatenated (a valid multi-member gzip stream)."""
    members = max(1, int(members))
    if members == 1:
        w = GzipWriter(level)
        return w.compress(data) + w.flush()
    step = max(1, -(-len(data) // members))
    out = []
    for i in range(members):
        part = data[i * step:(i + 1) * step]
        w = GzipWriter(level)
        out.append(w.compress(part) + w.flush())
    return b"".join(out)


def zstd_bytes(data, level=ZSTD_LEVEL):
    if zstandard is None:
        raise RuntimeError("the zstandard module is required for zstd layers")
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True).compress(data)


def compress(data, compression, level=None, members=1):
    if compression == "gzip":
        return gzip_bytes(data, GZIP_LEVEL if level is None else level, members)
    if compression == "zstd":
        return zstd_bytes(data, ZSTD_LEVEL if level is None else level)
    if compression in (None, "none", "identity", "uncompressed"):
        return data
    raise ValueError("unknown compression %r" % compression)


def layer_media_type(fmt, compression, foreign=False):
    if fmt == "docker":
        if foreign:
            return DOCKER_FOREIGN_LAYER
        if compression == "gzip":
            return DOCKER_LAYER_GZIP
        if compression in (None, "none", "identity", "uncompressed"):
            return DOCKER_LAYER_TAR
        raise ValueError("docker manifests have no media type for %r layers (use fmt='oci')" % compression)
    if compression == "gzip":
        return OCI_LAYER_GZIP
    if compression == "zstd":
        return OCI_LAYER_ZSTD
    return OCI_LAYER_TAR


# ---------------------------------------------------------------------------------------------------------
# layers, images, indexes
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Layer:
    data: bytes            # the blob as stored in the registry (compressed)
    diff_id: str           # sha256 of the uncompressed tar
    media_type: str
    compression: str       # gzip, zstd, none
    tar_size: int          # uncompressed size
    urls: Optional[List[str]] = None
    annotations: Optional[Dict[str, str]] = None
    digest: str = ""
    size: int = 0

    def __post_init__(self):
        if not self.digest:
            self.digest = sha256_digest(self.data)
        if not self.size:
            self.size = len(self.data)

    def descriptor(self):
        d = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def info(self):
        return {"digest": self.digest, "diff_id": self.diff_id, "size": self.size,
                "media_type": self.media_type, "compression": self.compression, "urls": self.urls}


def layer_from_tar(tar, compression="gzip", fmt="docker", level=None, members=1, urls=None,
                   foreign=False, annotations=None):
    data = compress(tar, compression, level, members)
    comp = "none" if compression in (None, "none", "identity", "uncompressed") else compression
    return Layer(data=data, diff_id=sha256_digest(tar), media_type=layer_media_type(fmt, comp, foreign),
                 compression=comp, tar_size=len(tar), urls=urls, annotations=annotations)


def make_layer(files, compression="gzip", fmt="docker", level=None, members=1, urls=None, foreign=False,
               parents=True):
    """A layer from ``{path: bytes|str|None|Entry}`` (see :func:`make_tar`)."""
    return layer_from_tar(make_tar(files, parents), compression, fmt, level, members, urls, foreign)


@dataclass
class Image:
    """One single-platform image: config + manifest + layers."""
    platform: str
    layers: List[Layer]
    config_raw: bytes
    config_media_type: str
    manifest_raw: bytes
    media_type: str
    config_digest: str = ""
    digest: str = ""
    extra_blobs: Dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self):
        self.config_digest = self.config_digest or sha256_digest(self.config_raw)
        self.digest = self.digest or sha256_digest(self.manifest_raw)

    @property
    def manifest(self):
        return json.loads(self.manifest_raw)

    @property
    def config(self):
        return json.loads(self.config_raw)

    def blobs(self):
        out = {self.config_digest: self.config_raw}
        for layer in self.layers:
            out[layer.digest] = layer.data
        out.update(self.extra_blobs)
        return out

    def descriptor(self, platform=True, annotations=None):
        d = {"mediaType": self.media_type, "size": len(self.manifest_raw), "digest": self.digest}
        if platform and self.platform:
            d["platform"] = parse_platform(self.platform)
        if annotations:
            d["annotations"] = dict(annotations)
        return d


@dataclass
class Index:
    """An OCI index or docker manifest list; ``children`` are :class:`Image` or :class:`Index`."""
    raw: bytes
    media_type: str
    children: list
    digest: str = ""

    def __post_init__(self):
        self.digest = self.digest or sha256_digest(self.raw)

    @property
    def manifest_raw(self):
        return self.raw

    @property
    def manifest(self):
        return json.loads(self.raw)

    def descriptor(self, platform=None, annotations=None):
        d = {"mediaType": self.media_type, "size": len(self.raw), "digest": self.digest}
        if platform:
            d["platform"] = parse_platform(platform) if isinstance(platform, str) else dict(platform)
        if annotations:
            d["annotations"] = dict(annotations)
        return d


def make_config(diff_ids, platform="linux/amd64", fmt="docker", config=None, created=CREATED,
                history=None, extra=None):
    """Image config JSON bytes (docker and OCI share the structure)."""
    p = parse_platform(platform)
    cfg = {
        "architecture": p["architecture"],
        "os": p["os"],
        "created": created,
        "config": config if config is not None else {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": history if history is not None else [
            {"created": created, "created_by": "testbed layer %d" % i} for i in range(len(diff_ids))],
    }
    if p.get("variant"):
        cfg["variant"] = p["variant"]
    if extra:
        cfg.update(extra)
    return canonical_json(cfg)


def build_image(layers, platform="linux/amd64", fmt="docker", config=None, created=CREATED, history=None,
                config_extra=None, annotations=None, media_type_field=True, config_raw=None,
                config_media_type=None):
    """Build an :class:`Image` (``fmt``: ``docker`` schema2 or ``oci``). ``config`` is the inner
    ``config`` object (Env, Cmd, ...); ``config_raw`` overrides the whole config blob;
    ``media_type_field=False`` omits ``mediaType`` from an OCI manifest (pre-1.0.2 style)."""
    if config_raw is None:
        config_raw = make_config([l.diff_id for l in layers], platform, fmt, config, created, history,
                                 config_extra)
    if config_media_type is None:
        config_media_type = DOCKER_CONFIG if fmt == "docker" else OCI_CONFIG
    media_type = DOCKER_MANIFEST if fmt == "docker" else OCI_MANIFEST
    m = {"schemaVersion": 2,
         "config": {"mediaType": config_media_type, "size": len(config_raw), "digest": sha256_digest(config_raw)},
         "layers": [l.descriptor() for l in layers]}
    if fmt == "docker" or media_type_field:
        m["mediaType"] = media_type
    if annotations:
        m["annotations"] = dict(annotations)
    raw = json.dumps(m, sort_keys=True, indent=3).encode("utf-8")
    return Image(platform=platform, layers=list(layers), config_raw=config_raw,
                 config_media_type=config_media_type, manifest_raw=raw, media_type=media_type)


def build_index(entries, fmt="oci", annotations=None):
    """Build an :class:`Index`. ``entries``: list of Image, Index, or ``(child, platform_or_None,
    annotations_or_None)`` tuples. An Image's own platform is used unless a tuple gives one; an Index
    child gets no platform unless given."""
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    children, descs = [], []
    for e in entries:
        if isinstance(e, tuple):
            child, plat, ann = (tuple(e) + (None, None))[:3]
        else:
            child, plat, ann = e, None, None
        if isinstance(child, Image):
            d = child.descriptor(platform=True, annotations=ann)
            if plat:
                d["platform"] = parse_platform(plat) if isinstance(plat, str) else dict(plat)
        else:
            d = child.descriptor(platform=plat, annotations=ann)
        children.append(child)
        descs.append(d)
    m = {"schemaVersion": 2, "mediaType": media_type, "manifests": descs}
    if annotations:
        m["annotations"] = dict(annotations)
    raw = json.dumps(m, sort_keys=True, indent=3).encode("utf-8")
    return Index(raw=raw, media_type=media_type, children=children)


def build_attestation(subject, seed="attestation"):
    """A buildkit-style attestation manifest for ``subject`` (an Image); returns ``(Image, annotations)``
    for use as an index entry with platform unknown/unknown."""
    statement = canonical_json({"_type": "https://in-toto.io/Statement/v0.1",
                                "predicateType": "https://spdx.dev/Document",
                                "subject": [{"name": "testbed", "digest": {"sha256": subject.digest[7:]}}],
                                "predicate": {"seed": seed}})
    layer = Layer(data=statement, diff_id=sha256_digest(statement), media_type=IN_TOTO, compression="none",
                  tar_size=len(statement), annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"})
    cfg = canonical_json({"architecture": "unknown", "os": "unknown", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}})
    img = build_image([layer], platform="unknown/unknown", fmt="oci", config_raw=cfg)
    ann = {"vnd.docker.reference.digest": subject.digest, "vnd.docker.reference.type": "attestation-manifest"}
    return img, ann


def walk(obj):
    """Yield every Image / Index reachable from ``obj`` (children first)."""
    if isinstance(obj, Index):
        for c in obj.children:
            yield from walk(c)
    yield obj


# ---------------------------------------------------------------------------------------------------------
# pushing
# ---------------------------------------------------------------------------------------------------------
class PushError(RuntimeError):
    pass


def _check(resp, *ok):
    if resp.status_code not in ok:
        raise PushError("%s %s -> %s: %s" % (resp.request.method, resp.request.url, resp.status_code,
                                             resp.text[:500]))
    return resp


def _with_query(url, query):
    return url + ("&" if "?" in url else "?") + query


def _v2(base_url, repo, rest):
    return "%s/v2/%s/%s" % (base_url.rstrip("/"), repo, rest)


def blob_exists(session, base_url, repo, digest):
    r = session.head(_v2(base_url, repo, "blobs/" + digest), allow_redirects=True)
    return r.status_code == 200


def push_blob(session, base_url, repo, data, chunked=False, chunk_size=1 * MiB, digest=None,
              check_exists=True, mount_from=None):
    """Upload ``data`` (bytes) as a blob of ``repo``; returns its digest. Monolithic: POST then PUT
    ``?digest=`` with the body; ``chunked``: POST, PATCH chunks (Content-Range), then PUT ``?digest=``.
    ``mount_from`` tries a cross-repository mount first."""
    digest = digest or sha256_digest(data)
    if check_exists and blob_exists(session, base_url, repo, digest):
        return digest
    url = _v2(base_url, repo, "blobs/uploads/")
    if mount_from:
        r = session.post(url, params={"mount": digest, "from": mount_from})
        if r.status_code == 201:
            return digest
        _check(r, 202)
    else:
        r = _check(session.post(url), 202)
    location = urljoin(url, r.headers["Location"])
    if not chunked:
        r = session.put(_with_query(location, "digest=" + digest), data=data,
                        headers={"Content-Type": "application/octet-stream"})
        _check(r, 201)
    else:
        offset = 0
        view = memoryview(data)
        while offset < len(data) or offset == 0:
            part = bytes(view[offset:offset + chunk_size])
            if not part:
                break
            r = session.patch(location, data=part, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": "%d-%d" % (offset, offset + len(part) - 1)})
            _check(r, 202)
            location = urljoin(location, r.headers["Location"])
            offset += len(part)
        r = session.put(_with_query(location, "digest=" + digest), headers={"Content-Length": "0"})
        _check(r, 201)
    got = r.headers.get("Docker-Content-Digest")
    if got and got != digest:
        raise PushError("registry stored blob as %s, expected %s" % (got, digest))
    return digest


def push_manifest(session, base_url, repo, ref, raw, media_type):
    """PUT a manifest (raw bytes) under ``ref`` (tag or digest); returns its digest."""
    digest = sha256_digest(raw)
    r = session.put(_v2(base_url, repo, "manifests/" + ref), data=raw, headers={"Content-Type": media_type})
    _check(r, 201)
    got = r.headers.get("Docker-Content-Digest")
    if got and got != digest:
        raise PushError("registry stored manifest as %s, expected %s" % (got, digest))
    return digest


def push_image(session, base_url, repo, obj, tags=(), chunked=False):
    """Push an Image or Index (all blobs, child manifests by digest, then the top under each tag; by
    digest if no tags). Returns the top digest."""
    done = set()
    for node in walk(obj):
        if isinstance(node, Image):
            for digest, data in node.blobs().items():
                if digest not in done:
                    push_blob(session, base_url, repo, data, chunked=chunked, digest=digest)
                    done.add(digest)
        if node is not obj:
            push_manifest(session, base_url, repo, node.digest, node.manifest_raw, node.media_type)
    for tag in tags or [obj.digest]:
        push_manifest(session, base_url, repo, tag, obj.manifest_raw, obj.media_type)
    return obj.digest


# ---------------------------------------------------------------------------------------------------------
# catalogue
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ImageInfo:
    kind: str
    repository: str
    tag: str
    tags: List[str]
    digest: str                      # digest of what the tag points to
    media_type: str                  # media type of what the tag points to
    platforms: Dict[str, dict]       # "linux/amd64" -> {manifest_digest, media_type, config_digest, ...}
    manifests: Dict[str, bytes]      # digest -> raw manifest bytes (top, children, attestations)
    configs: Dict[str, bytes]        # digest -> raw config bytes
    blobs: Dict[str, bytes]          # digest -> layer bytes (only layers <= 16 MiB are kept)
    extra: dict = field(default_factory=dict)
    built: object = None             # the Image / Index object

    @property
    def raw(self):
        """Raw bytes of the manifest/index the tag points to."""
        return self.manifests[self.digest]

    @property
    def reference(self):
        return "%s:%s" % (self.repository, self.tag)

    def image(self, host):
        """``host/repository:tag`` e.g. ``127.0.0.1:5000/testbed/docker-simple:v1``."""
        return "%s/%s:%s" % (host, self.repository, self.tag)

    def by_digest(self, host):
        return "%s/%s@%s" % (host, self.repository, self.digest)

    @property
    def default(self):
        """The linux/amd64 platform entry (or the only one)."""
        return self.platforms.get("linux/amd64") or next(iter(self.platforms.values()))


KEEP_BLOB_MAX = 16 * MiB


def image_info(kind, repository, tags, obj, extra=None):
    manifests, configs, blobs, platforms = {}, {}, {}, {}
    for node in walk(obj):
        manifests[node.digest] = node.manifest_raw
        if isinstance(node, Image):
            configs[node.config_digest] = node.config_raw
            for layer in node.layers:
                if layer.size <= KEEP_BLOB_MAX:
                    blobs[layer.digest] = layer.data
            if node.platform == "unknown/unknown" or node.platform in platforms:
                continue
            platforms[node.platform] = {
                "platform": node.platform,
                "manifest_digest": node.digest,
                "media_type": node.media_type,
                "manifest_size": len(node.manifest_raw),
                "config_digest": node.config_digest,
                "config_media_type": node.config_media_type,
                "config_size": len(node.config_raw),
                "layers": [l.info() for l in node.layers],
            }
    # keep the platform order of the index (walk yields children first, in order)
    return ImageInfo(kind=kind, repository=repository, tag=tags[0], tags=list(tags), digest=obj.digest,
                     media_type=obj.media_type, platforms=platforms, manifests=manifests, configs=configs,
                     blobs=blobs, extra=extra or {}, built=obj)


def _files(tag, n=3, size=64):
    """Small deterministic file contents that differ per ``tag``."""
    out = {}
    for i in range(n):
        body = ("%s file %d\n" % (tag, i)) * max(1, size // 16)
        out["data/%s/file%d.txt" % (tag, i)] = body
    return out


def _prng_bytes(seed, n):
    return random.Random(seed).randbytes(n)


@functools.lru_cache(maxsize=None)
def _simple_layers():
    l1 = make_layer({
        "etc/os-release": 'NAME="testbed"\nID=testbed\nVERSION_ID=1\n',
        "etc/hostname": "testbed\n",
        "bin": None,
        "tmp": Entry("tmp", type="dir", mode=0o1777),
    })
    l2 = make_layer({
        "usr/share/doc/testbed/README": "a deterministic test image\n" * 20,
        "usr/lib/testbed/lib.so": _prng_bytes("docker-simple-lib", 2048),
    })
    l3 = make_layer({
        "app/run.sh": Entry("app/run.sh", b"#!/bin/sh\necho hello from testbed\n", mode=0o755),
        "app/current": Entry("app/current", type="symlink", target="run.sh"),
        "app/hard": Entry("app/hard", type="hardlink", target="app/run.sh"),
    })
    return l1, l2, l3


def _platform_image(plat, fmt, tag):
    files = {"etc/platform": plat + "\n", "etc/os-release": 'NAME="testbed"\nID=testbed\n'}
    files.update(_files("%s-%s" % (tag, plat.replace("/", "-")), 2))
    l1 = make_layer(files, fmt=fmt)
    l2 = make_layer({"usr/bin/hello": Entry("usr/bin/hello", ("#!/bin/sh\necho %s\n" % plat).encode(), mode=0o755)},
                    fmt=fmt)
    return build_image([l1, l2], platform=plat, fmt=fmt, config={"Cmd": ["/usr/bin/hello"], "Env": ["PLATFORM=" + plat]})


MULTI_PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")

FOREIGN_URL_DEFAULT = "http://127.0.0.1:9/testbed/foreign/{digest}"  # port 9 (discard): nothing listens

WHITEOUT_VISIBLE = ["etc/keep.txt", "opt/data/new.txt", "opt/other.txt"]
WHITEOUT_HIDDEN = ["etc/remove.txt", "opt/data/a.txt", "opt/data/b.txt", "opt/data/sub/c.txt"]


def _build_kind(kind, big_size=300 * MiB, realistic_size=450 * MiB, bomb_size=1 * GiB, foreign_url=None):
    """Return ``(obj, extra)`` for a catalogue kind."""
    extra = {}
    if kind == "docker-simple":
        return build_image(list(_simple_layers()), fmt="docker"), extra
    if kind == "oci-simple":
        l1 = make_layer(_files("oci-simple-a"), fmt="oci")
        l2 = make_layer(_files("oci-simple-b", 5, 300), fmt="oci")
        return build_image([l1, l2], fmt="oci", annotations={"org.opencontainers.image.title": "oci-simple"}), extra
    if kind == "oci-no-mediatype":
        l1 = make_layer(_files("oci-no-mediatype"), fmt="oci")
        return build_image([l1], fmt="oci", media_type_field=False), extra
    if kind == "docker-list":
        return build_index([_platform_image(p, "docker", kind) for p in MULTI_PLATFORMS], fmt="docker"), extra
    if kind == "oci-index":
        imgs = [_platform_image(p, "oci", kind) for p in MULTI_PLATFORMS]
        att, ann = build_attestation(imgs[0], kind)
        extra["attestation_digest"] = att.digest
        return build_index(imgs + [(att, None, ann)], fmt="oci"), extra
    if kind == "nested-index":
        inner = build_index([_platform_image(p, "oci", kind) for p in MULTI_PLATFORMS[:2]], fmt="oci")
        extra["inner_index_digest"] = inner.digest
        return build_index([inner], fmt="oci"), extra
    if kind == "zstd":
        l1 = make_layer(_files("zstd-a", 4, 2000), compression="zstd", fmt="oci")
        l2 = make_layer(_files("zstd-b", 2, 100), compression="zstd", fmt="oci")
        return build_image([l1, l2], fmt="oci"), extra
    if kind == "uncompressed":
        l1 = make_layer(_files("uncompressed-a"), compression="none", fmt="oci")
        l2 = make_layer(_files("uncompressed-b"), compression="none", fmt="oci")
        return build_image([l1, l2], fmt="oci"), extra
    if kind == "multigzip":
        l1 = make_layer(_files("multigzip-a", 8, 4000), members=3)
        l2 = make_layer(_files("multigzip-b"))
        extra["members"] = 3
        return build_image([l1, l2]), extra
    if kind == "whiteout":
        base = make_layer({
            "etc/keep.txt": "keep\n", "etc/remove.txt": "remove me\n",
            "opt/data/a.txt": "a\n", "opt/data/b.txt": "b\n", "opt/data/sub/c.txt": "c\n",
            "opt/other.txt": "other\n",
        })
        top = make_layer({
            "etc/.wh.remove.txt": b"",
            "opt/data/.wh..wh..opq": b"",
            "opt/data/new.txt": "new\n",
        })
        extra["visible"] = list(WHITEOUT_VISIBLE)
        extra["hidden"] = list(WHITEOUT_HIDDEN)
        return build_image([base, top]), extra
    if kind == "foreign":
        tar = make_tar({"foreign/base.txt": "this layer lives at a foreign URL\n" * 10})
        blob = gzip_bytes(tar)
        url = (foreign_url or FOREIGN_URL_DEFAULT).format(digest=sha256_digest(blob))
        fl = layer_from_tar(tar, urls=[url], foreign=True)
        l2 = make_layer({"app/hello.txt": "hello\n"})
        extra["foreign_url"] = url
        extra["foreign_digest"] = fl.digest
        extra["foreign_blob"] = fl.data
        return build_image([fl, l2]), extra
    if kind == "many-layers":
        layers = [make_layer({"layers/%02d.txt" % i: "layer %d\n" % i}) for i in range(40)]
        return build_image(layers), extra
    if kind == "shared-base":
        l1, l2, _l3 = _simple_layers()
        own = make_layer({"app/shared.txt": "built on docker-simple's base\n"})
        extra["shared_with"] = "docker-simple"
        extra["shared_layers"] = [l1.digest, l2.digest]
        return build_image([l1, l2, own], config={"Cmd": ["/bin/true"]}), extra
    if kind == "big":
        n = 5
        per = max(1, big_size // n)
        layers = []
        for i in range(n):
            tar = make_tar({"big/blob%d.bin" % i: _prng_bytes("big-%d-%d" % (big_size, i), per)})
            layers.append(layer_from_tar(tar, level=1))
        extra["size"] = big_size
        return build_image(layers), extra
    if kind == "realistic":
        roots = ["/usr/share/locale", "/usr/share/doc", "/usr/share/man", "/usr/share/i18n",
                 "/usr/share/perl", "/usr/share/vim", "/usr/share/icons", "/usr/share/cmake-3.25",
                 "/usr/share/zoneinfo", "/usr/share/mime", "/usr/share/X11", "/usr/share/perl5",
                 "/usr/share/fonts", "/usr/share/java", "/usr/share/common-licenses", "/usr/lib/python3",
                 "/usr/lib/python3.11"]
        roots = [r for r in roots if os.path.isdir(r)]
        tars, total = tars_of_directories(roots, layer_bytes=realistic_size // 5, max_bytes=realistic_size)
        layers = [layer_from_tar(t, fmt="oci") for t in tars]   # OCI layer types in an OCI manifest
        extra["content_bytes"] = total
        extra["roots"] = roots
        return build_image(layers, fmt="oci"), extra
    if kind == "gzip-bomb":
        bomb = _bomb_layer(bomb_size)
        small = make_layer({"app/note.txt": "the other layer inflates to %d bytes\n" % bomb_size})
        extra["inflated_size"] = bomb.tar_size
        return build_image([small, bomb]), extra
    raise ValueError("unknown image kind %r" % kind)


def _bomb_layer(size):
    """A gzip layer whose tar holds one file of ``size`` zero bytes (everything after the 512-byte header is
    zeros, so it is streamed in chunks)."""
    ti = _tarinfo(Entry("zeros.bin", b""))
    ti.size = size
    header = ti.tobuf(tarfile.PAX_FORMAT)
    body = size + (-size % 512) + 1024
    total = len(header) + body
    total += -total % tarfile.RECORDSIZE
    h = hashlib.sha256(header)
    w = GzipWriter(9)
    out = [w.compress(header)]
    chunk = bytes(4 * MiB)
    left = total - len(header)
    while left:
        c = chunk if left >= len(chunk) else chunk[:left]
        h.update(c)
        out.append(w.compress(c))
        left -= len(c)
    out.append(w.flush())
    data = b"".join(out)
    return Layer(data=data, diff_id="sha256:" + h.hexdigest(), media_type=DOCKER_LAYER_GZIP, compression="gzip",
                 tar_size=total)


KINDS = ("docker-simple", "oci-simple", "oci-no-mediatype", "docker-list", "oci-index", "nested-index", "zstd",
         "uncompressed", "multigzip", "whiteout", "foreign", "many-layers", "shared-base")
OPT_IN_KINDS = ("big", "realistic", "gzip-bomb")
ALL_KINDS = KINDS + OPT_IN_KINDS

# kinds pushed with chunked (PATCH) uploads by default, to exercise both upload styles
CHUNKED_KINDS = ("oci-simple", "zstd", "multigzip")


@functools.lru_cache(maxsize=None)
def build_kind(kind, big_size=300 * MiB, realistic_size=450 * MiB, bomb_size=1 * GiB, foreign_url=None):
    """Cached :func:`_build_kind` (deterministic, so caching is only a speed-up)."""
    return _build_kind(kind, big_size, realistic_size, bomb_size, foreign_url)


def _target(target):
    if isinstance(target, (tuple, list)):
        return target[0], target[1]
    if isinstance(target, str):
        s = requests.Session()
        s.trust_env = False
        return s, target
    if hasattr(target, "push_session"):
        return target.push_session(), target.url
    raise TypeError("seed target must be a registry object, (session, base_url) or a base URL")


def seed(target, kinds=None, repo_prefix="testbed/", tags=("v1", "latest"), chunked=None, big_size=300 * MiB,
         realistic_size=450 * MiB, bomb_size=1 * GiB, foreign_url=None):
    """Build and push catalogue images; returns ``{kind: ImageInfo}``.

    ``target``: a registry object with ``push_session()`` and ``url``, a ``(session, base_url)`` pair or a
    base URL. ``kinds``: names from :data:`ALL_KINDS` (default :data:`KINDS`). Each kind goes to
    ``<repo_prefix><kind>`` under every tag in ``tags`` (``ImageInfo.tag`` is the first).
    ``chunked``: True/False for all, None = per-kind default (:data:`CHUNKED_KINDS` use PATCH uploads).
    ``foreign_url``: URL template for the foreign layer (``{digest}`` is replaced)."""
    session, base_url = _target(target)
    kinds = list(KINDS if kinds is None else kinds)
    for k in kinds:
        if k not in ALL_KINDS:
            raise ValueError("unknown image kind %r (known: %s)" % (k, ", ".join(ALL_KINDS)))
    out = {}
    for kind in kinds:
        obj, extra = build_kind(kind, big_size, realistic_size, bomb_size, foreign_url)
        repo = repo_prefix + kind
        use_chunked = (kind in CHUNKED_KINDS) if chunked is None else chunked
        push_image(session, base_url, repo, obj, tags=list(tags), chunked=use_chunked)
        out[kind] = image_info(kind, repo, list(tags), obj, dict(extra))
    return out
