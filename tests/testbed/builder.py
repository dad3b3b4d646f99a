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
import base64
import functools
import hashlib
import io
import json
import os
import random
import re
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
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
SCHEMA1_UNSIGNED = "application/vnd.docker.distribution.manifest.v1+json"

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
    artifact_type: Optional[str] = None   # set for OCI artifacts (descriptors then carry artifactType)

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

    def store_sizes(self):
        """{digest: size} of what a blob store holds for this image: its manifest, config and layers."""
        out = {self.digest: len(self.manifest_raw), self.config_digest: len(self.config_raw)}
        for layer in self.layers:
            out[layer.digest] = layer.size
        return out

    def descriptor(self, platform=True, annotations=None):
        d = {"mediaType": self.media_type, "size": len(self.manifest_raw), "digest": self.digest}
        if platform and self.platform:
            d["platform"] = parse_platform(self.platform)
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
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


NO_PLATFORM = False   # as the platform of an index entry tuple: the entry gets no ``platform`` at all


def build_index(entries, fmt="oci", annotations=None, artifact_type=None):
    """Build an :class:`Index`. ``entries``: list of Image, Index, or ``(child, platform_or_None,
    annotations_or_None)`` tuples. An Image's own platform is used unless a tuple gives one
    (:data:`NO_PLATFORM` leaves the entry without ``platform``); an Index child gets no platform unless
    given. ``artifact_type`` sets the index's ``artifactType`` (OCI 1.1)."""
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    children, descs = [], []
    for e in entries:
        if isinstance(e, tuple):
            child, plat, ann = (tuple(e) + (None, None))[:3]
        else:
            child, plat, ann = e, None, None
        if isinstance(child, Image):
            d = child.descriptor(platform=True, annotations=ann)
            if plat is NO_PLATFORM:
                d.pop("platform", None)
            elif plat:
                d["platform"] = parse_platform(plat) if isinstance(plat, str) else dict(plat)
        else:
            d = child.descriptor(platform=plat, annotations=ann)
        children.append(child)
        descs.append(d)
    m = {"schemaVersion": 2, "mediaType": media_type, "manifests": descs}
    if artifact_type:
        m["artifactType"] = artifact_type
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


# ---------------------------------------------------------------------------------------------------------
# OCI artifacts and referrers
# ---------------------------------------------------------------------------------------------------------
EMPTY_JSON = b"{}"   # the OCI empty descriptor's content (application/vnd.oci.empty.v1+json)
TITLE = "org.opencontainers.image.title"


def blob_layer(data, media_type, title=None, annotations=None):
    """A non-image "layer" of an artifact (any bytes); it has no diff_id."""
    ann = dict(annotations or {})
    if title:
        ann[TITLE] = title
    return Layer(data=data, diff_id=None, media_type=media_type, compression="none", tar_size=len(data),
                 annotations=ann or None)


def build_artifact(layers, artifact_type=None, config_raw=EMPTY_JSON, config_media_type=OCI_EMPTY,
                   config_data=False, subject=None, annotations=None):
    """An OCI 1.1 artifact manifest (an :class:`Image` with ``platform`` None). ``config_data`` embeds the
    config in its descriptor (``data``, as the image-spec shows for the empty descriptor); ``subject`` (an
    Image or Index) makes it a referrer of that manifest."""
    config = {"mediaType": config_media_type, "size": len(config_raw), "digest": sha256_digest(config_raw)}
    if config_data:
        config["data"] = base64.b64encode(config_raw).decode("ascii")
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
         "layers": [l.descriptor() for l in layers]}
    if artifact_type:
        m["artifactType"] = artifact_type
    if subject is not None:
        m["subject"] = {"mediaType": subject.media_type, "size": len(subject.manifest_raw),
                        "digest": subject.digest}
    if annotations:
        m["annotations"] = dict(annotations)
    raw = json.dumps(m, sort_keys=True, indent=3).encode("utf-8")
    return Image(platform=None, layers=list(layers), config_raw=config_raw, config_media_type=config_media_type,
                 manifest_raw=raw, media_type=OCI_MANIFEST, artifact_type=artifact_type or config_media_type)


def referrers_tag(digest):
    """The tag of the referrers tag schema (OCI distribution-spec 1.1, for registries without the referrers
    API): ``sha256:<hex>`` -> ``sha256-<hex>``."""
    algorithm, hexpart = digest.split(":", 1)
    return ("%s-%s" % (algorithm, hexpart))[:128]


def build_referrers_index(referrers):
    """The index a client keeps under :func:`referrers_tag` of the subject: one descriptor per referrer,
    with its ``artifactType`` and its manifest's ``annotations``."""
    return build_index([(r, None, r.manifest.get("annotations")) for r in referrers], fmt="oci")


# ---------------------------------------------------------------------------------------------------------
# Docker schema 1 (as docker 1.x pushed it)
# ---------------------------------------------------------------------------------------------------------
# the gzip of an empty tar (1024 zero bytes) that docker and distribution use as the blob of every
# "throwaway" schema 1 entry (a history entry without a layer); its digest is well known
EMPTY_GZIP_TAR = bytes.fromhex("1f8b080000096e8800ff621805a360148c5800080000ffff2eafb5ef00040000")
EMPTY_GZIP_TAR_DIGEST = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
SCHEMA1_SIGNED_AT = "2024-01-01T00:00:00Z"   # the "time" of every protected header


def go_json(obj, indent=None):
    """JSON bytes as Go's encoding/json writes them (UTF-8; ``<``, ``>``, ``&``, U+2028 and U+2029
    escaped; compact, or ``json.MarshalIndent(v, "", indent)``); keys in the order given."""
    if indent is None:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(obj, indent=indent, ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=None)
def schema1_signing_key():
    """The test bed's fixed ECDSA P-256 key (the kind of key docker 1.x made for each daemon)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    scalar = int.from_bytes(hashlib.sha256(b"hocker testbed schema 1 key").digest(), "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _jwk(public_key):
    from cryptography.hazmat.primitives import serialization
    numbers = public_key.public_numbers()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    # libtrust's key id: sha256 of the DER public key, 240 bits, base32, in groups of four
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    kid = ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))
    return {"crv": "P-256", "kid": kid, "kty": "EC", "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big"))}


def _format_split(payload):
    """(formatLength, formatTail) of a JSON object text: the tail is the closing brace and the white space
    before it, where a JWS "pretty signature" inserts ``"signatures"``."""
    close = len(payload.rstrip(b" \t\r\n")) - 1
    if close < 0 or payload[close:close + 1] != b"}":
        raise ValueError("not a JSON object text")
    length = len(payload[:close].rstrip(b" \t\r\n"))
    return length, payload[length:]


def sign_schema1(payload, key=None, signed_at=SCHEMA1_SIGNED_AT):
    """Sign a schema 1 manifest text the way docker 1.x did (libtrust JWS, ES256, "pretty signature"):
    returns the bytes with ``"signatures"`` inserted before the closing brace. Deterministic (RFC 6979)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    key = key or schema1_signing_key()
    length, tail = _format_split(payload)
    protected = _b64url(go_json({"formatLength": length, "formatTail": _b64url(tail), "time": signed_at}))
    signing_input = (protected + "." + _b64url(payload)).encode("ascii")
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    block = {"header": {"jwk": _jwk(key.public_key()), "alg": "ES256"},
             "signature": _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")), "protected": protected}
    indent = ""
    if payload[:2] == b"{\n":
        indent = payload[2:payload.index(b'"')].decode("ascii")
    if not indent:
        return payload[:length] + b',"signatures":' + go_json([block]) + b"}"
    sigs = go_json([block], indent=len(indent)).replace(b"\n", b"\n" + indent.encode("ascii"))
    return payload[:length] + b",\n" + indent.encode("ascii") + b'"signatures": ' + sigs + b"\n}"


def schema1_payload(raw):
    """The signed payload of a schema 1 manifest (its bytes without ``"signatures"``, rebuilt from
    formatLength/formatTail of the protected headers; the bytes as they are when unsigned). The test bed's
    own reading, independent of the collection's."""
    data = json.loads(raw)
    if "signatures" not in data:
        return raw
    lengths, tails = set(), set()
    for sig in data["signatures"]:
        header = json.loads(_b64url_decode(sig["protected"]))
        lengths.add(header["formatLength"])
        tails.add(_b64url_decode(header["formatTail"]))
    assert len(lengths) == 1 and len(tails) == 1, "signatures disagree on the payload"
    return raw[:lengths.pop()] + tails.pop()


def schema1_digest(raw):
    return sha256_digest(schema1_payload(raw))


def verify_schema1_signatures(raw):
    """Check every ES256 signature of a signed schema 1 manifest against its own JWK; returns the key ids."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    data = json.loads(raw)
    payload = schema1_payload(raw)
    kids = []
    for sig in data["signatures"]:
        jwk = sig["header"]["jwk"]
        assert sig["header"]["alg"] == "ES256" and jwk["kty"] == "EC" and jwk["crv"] == "P-256", sig["header"]
        pub = ec.EllipticCurvePublicNumbers(int.from_bytes(_b64url_decode(jwk["x"]), "big"),
                                            int.from_bytes(_b64url_decode(jwk["y"]), "big"),
                                            ec.SECP256R1()).public_key()
        rs = _b64url_decode(sig["signature"])
        signing_input = (sig["protected"] + "." + _b64url(payload)).encode("ascii")
        pub.verify(encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big")),
                   signing_input, ec.ECDSA(hashes.SHA256()))
        kids.append(jwk.get("kid"))
    return kids


@dataclass
class Schema1Step:
    """One schema 1 history entry, base first: a layer, or ``layer=None`` for a "throwaway" entry (a
    Dockerfile step without a layer; its fsLayer is :data:`EMPTY_GZIP_TAR`)."""
    created_by: str
    layer: Optional[Layer] = None
    created: str = CREATED


class Schema1Image(Image):
    """A schema 1 image. ``manifest_raw`` is the manifest as pushed (signed or not), ``digest`` its payload's
    digest, ``layers`` the layers in schema 2 order without the throwaway entries; ``config_raw`` is the
    schema 2 config containers/image makes of it (never pushed: schema 1 has no config blob)."""

    payload = b""
    fs_layers = ()

    def blobs(self):
        out = {layer.digest: layer.data for layer in self.layers}
        out.update(self.extra_blobs)
        return out


_GO_FRACTION = re.compile(r"\.(\d+?)0*(?=Z|[+-])")


def _go_time(text):
    """A canonical RFC 3339 time as Go's time.Time marshals it after parsing ``text`` (RFC3339Nano:
    trailing zeros of the fraction dropped, a zero offset written Z). Enough for the builder's inputs."""
    text = _GO_FRACTION.sub(lambda m: "" if set(m.group(1)) == {"0"} else "." + m.group(1), text)
    return text[:-6] + "Z" if text.endswith(("+00:00", "-00:00")) else text


def build_schema1(steps, name, tag, platform="linux/amd64", config=None, style="v2", signed=True,
                  docker_version=None):
    """Build a schema 1 :class:`Schema1Image` from ``steps`` (:class:`Schema1Step`, base first).

    ``style="v2"``: the v1Compatibility entries docker 1.10+ / distribution wrote when converting a schema 2
    image (the top entry is the image config with ``id``/``parent``/``throwaway`` added, sorted keys; the
    others hold only id, parent, created, container_config.Cmd and throwaway). ``style="v1"``: docker 1.9
    (each entry a whole v1 image JSON in struct order, with ``container``, ``docker_version`` and ``Size``).
    Everything is serialised the way Go does (``&`` as ``\\u0026``, ...) and the manifest is indented with
    three spaces, then signed (:func:`sign_schema1`) unless ``signed`` is false."""
    p = parse_platform(platform)
    inner = config if config is not None else {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]}
    docker_version = docker_version or ("1.13.1" if style == "v2" else "1.9.1")
    ids, parent = [], ""
    for i, step in enumerate(steps):
        blob = step.layer.digest if step.layer else EMPTY_GZIP_TAR_DIGEST
        ids.append(hashlib.sha256(("%d %s %s %s" % (i, blob, parent, name)).encode()).hexdigest())
        parent = ids[-1]
    entries = []   # base first: v1Compatibility texts
    top = len(steps) - 1
    for i, step in enumerate(steps):
        cmd = [step.created_by]
        if style == "v1" and step.created_by.startswith("/bin/sh -c "):
            cmd = ["/bin/sh", "-c", step.created_by[len("/bin/sh -c "):]]
        if style == "v2" and i < top:
            v1 = {"id": ids[i]}
            if i:
                v1["parent"] = ids[i - 1]
            v1["created"] = step.created
            v1["container_config"] = {"Cmd": cmd}
            if step.layer is None:
                v1["throwaway"] = True
            entries.append(go_json(v1))
            continue
        if style == "v2":   # the top entry: the schema 2 config made v1, keys sorted (a Go map)
            v1 = {"architecture": p["architecture"], "config": inner, "container_config": {"Cmd": cmd},
                  "created": step.created, "docker_version": docker_version, "id": ids[i], "os": p["os"]}
            if i:
                v1["parent"] = ids[i - 1]
            if step.layer is None:
                v1["throwaway"] = True
            if p.get("variant"):
                v1["variant"] = p["variant"]
            entries.append(go_json(dict(sorted(v1.items()))))
            continue
        v1 = {"id": ids[i]}   # docker 1.9: a whole v1 image per entry, in the v1 image struct's order
        if i:
            v1["parent"] = ids[i - 1]
        v1.update({"created": step.created, "container": hashlib.sha256(ids[i].encode()).hexdigest(),
                   "container_config": {"Hostname": "", "User": "", "Env": inner.get("Env"), "Cmd": cmd},
                   "docker_version": docker_version, "config": inner, "architecture": p["architecture"],
                   "os": p["os"], "Size": step.layer.tar_size if step.layer else 0})
        if step.layer is None:
            v1["throwaway"] = True
        entries.append(go_json(v1))
    fs_layers = [{"blobSum": s.layer.digest if s.layer else EMPTY_GZIP_TAR_DIGEST} for s in reversed(steps)]
    manifest = {"schemaVersion": 1, "name": name, "tag": tag, "architecture": p["architecture"],
                "fsLayers": fs_layers, "history": [{"v1Compatibility": e.decode("utf-8")} for e in reversed(entries)]}
    payload = go_json(manifest, indent=3)
    raw = sign_schema1(payload) if signed else payload
    layers = [s.layer for s in steps if s.layer is not None]
    # what containers/image makes of it: the top entry without its v1 fields, plus rootfs and history
    top_entry = json.loads(entries[-1])
    v1_only = ("id", "parent", "parent_id", "layer_id", "throwaway", "Size")
    cfg = {k: v for k, v in top_entry.items() if k not in v1_only}
    history = []
    for text in entries:
        v1 = json.loads(text)
        item = {"created": _go_time(v1["created"])}
        created_by = " ".join((v1.get("container_config") or {}).get("Cmd") or [])
        if created_by:
            item["created_by"] = created_by
        if v1.get("throwaway"):
            item["empty_layer"] = True
        history.append(item)
    cfg["rootfs"] = {"type": "layers", "diff_ids": [l.diff_id for l in layers]}
    cfg["history"] = history
    config_raw = go_json(dict(sorted(cfg.items())))
    img = Schema1Image(platform=platform, layers=layers, config_raw=config_raw, config_media_type=DOCKER_CONFIG,
                       manifest_raw=raw, media_type=SCHEMA1_SIGNED if signed else SCHEMA1_UNSIGNED,
                       digest=sha256_digest(payload))
    img.payload = payload
    img.fs_layers = [d["blobSum"] for d in fs_layers]
    if any(s.layer is None for s in steps):
        img.extra_blobs[EMPTY_GZIP_TAR_DIGEST] = EMPTY_GZIP_TAR
    return img


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


def push_manifest(session, base_url, repo, ref, raw, media_type, digest=None):
    """PUT a manifest (raw bytes) under ``ref`` (tag or digest); returns its digest. ``digest``: the digest
    the registry must report when it is not the sha256 of ``raw`` (a signed schema 1 manifest: its payload's)."""
    digest = digest or sha256_digest(raw)
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
            push_manifest(session, base_url, repo, node.digest, node.manifest_raw, node.media_type,
                          digest=node.digest)
    for tag in tags or [obj.digest]:
        push_manifest(session, base_url, repo, tag, obj.manifest_raw, obj.media_type, digest=obj.digest)
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
    # OCI artifacts among the pushed manifests: manifest digest -> {manifest_digest, media_type,
    # artifact_type (the manifest's artifactType, else its config media type), config_digest,
    # config_media_type, subject (digest or None), layers [{digest, diff_id (None), size, media_type, ...}]}
    artifacts: Dict[str, dict] = field(default_factory=dict)

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
        """The linux/amd64 platform entry (or the first one; None when the kind has no image)."""
        return self.platforms.get("linux/amd64") or next(iter(self.platforms.values()), None)


KEEP_BLOB_MAX = 16 * MiB


def image_info(kind, repository, tags, obj, extra=None, also=()):
    """``also``: further objects pushed with the kind (referrers, attestation subjects): their manifests,
    configs, blobs and artifacts are listed, their platforms are not."""
    manifests, configs, blobs, platforms, artifacts = {}, {}, {}, {}, {}
    own = {id(n) for n in walk(obj)}
    for node in [n for o in also for n in walk(o)] + list(walk(obj)):
        manifests[node.digest] = node.manifest_raw
        if isinstance(node, Image):
            configs[node.config_digest] = node.config_raw
            for layer in node.layers:
                if layer.size <= KEEP_BLOB_MAX:
                    blobs[layer.digest] = layer.data
            blobs.update((d, b) for d, b in node.extra_blobs.items() if len(b) <= KEEP_BLOB_MAX)
            if node.artifact_type or node.platform is None:
                m = node.manifest
                artifacts[node.digest] = {
                    "manifest_digest": node.digest, "media_type": node.media_type,
                    "artifact_type": node.artifact_type or node.config_media_type,
                    "config_digest": node.config_digest, "config_media_type": node.config_media_type,
                    "subject": (m.get("subject") or {}).get("digest"),
                    "layers": [l.info() for l in node.layers]}
        if id(node) not in own:
            continue
        if isinstance(node, Image):
            if not node.platform or node.platform == "unknown/unknown" or node.platform in platforms:
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
                     blobs=blobs, extra=extra or {}, built=obj, artifacts=artifacts)


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
TWO_PLATFORMS = ("linux/amd64", "linux/arm64/v8")
INDEX_ARTIFACT_TYPE = "application/vnd.hocker.testbed.bundle.v1"
REPORT_ARTIFACT_TYPE = "application/vnd.hocker.testbed.report.v1"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
COSIGN_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ALSO_PUSH = "_also_push"   # extra key of a kind: [(obj, tags)] pushed after it (not part of its ImageInfo.extra)
PUSH_AS = "_push_as"       # extra key of a kind: the object the registry gets instead of the kind's own


def _schema1_steps(kind):
    """Four history entries, base first: a layer, ENV (throwaway), a layer, CMD (throwaway)."""
    base = make_layer({"etc/os-release": 'NAME="schema1"\n', "bin": None,
                       "etc/kind": kind + "\n"})
    app = make_layer({"app/hello": Entry("app/hello", b"#!/bin/sh\necho $GREETING\n", mode=0o755)})
    if kind == "schema1":
        times = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:01Z", "2024-01-01T00:00:02Z", "2024-01-01T00:00:03Z"]
    else:   # docker 1.9 wrote nanoseconds; a trailing zero and an offset show Go's time normalisation
        times = ["2015-11-20T18:07:51.123456789Z", "2015-11-20T18:07:52.120000000Z",
                 "2015-11-20T19:07:53.5+01:00", "2015-11-20T18:07:54.000000000Z"]
    return [Schema1Step("/bin/sh -c #(nop) ADD file:4fe1a2b3 in / ", base, times[0]),
            Schema1Step("/bin/sh -c #(nop)  ENV GREETING=hello", None, times[1]),
            Schema1Step("/bin/sh -c mkdir -p /app && printf '<%s>' hi > /app/log", app, times[2]),
            Schema1Step('/bin/sh -c #(nop)  CMD ["/app/hello"]', None, times[3])]


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
    if kind == "index-no-platform":
        imgs = [_platform_image(p, "oci", kind) for p in TWO_PLATFORMS]
        extra["platforms"] = list(TWO_PLATFORMS)   # only their configs say so
        return build_index([(img, NO_PLATFORM, None) for img in imgs], fmt="oci"), extra
    if kind == "index-attestations-only":
        subjects = [_platform_image(p, "oci", kind) for p in TWO_PLATFORMS]
        atts = [build_attestation(s, "%s-%d" % (kind, i)) for i, s in enumerate(subjects)]
        extra["attestation_digests"] = [a.digest for a, _ann in atts]
        extra["subject_digests"] = [s.digest for s in subjects]   # pushed by digest, not in the index
        extra[ALSO_PUSH] = [(s, ()) for s in subjects]
        return build_index([(a, None, ann) for a, ann in atts], fmt="oci"), extra
    if kind == "index-annotated":
        imgs = [_platform_image(p, "oci", kind) for p in TWO_PLATFORMS]
        att, ann = build_attestation(imgs[0], kind)
        extra["attestation_digest"] = att.digest
        extra["annotations"] = {"org.opencontainers.image.created": CREATED,
                                "org.opencontainers.image.description": "an index with annotations & an artifactType"}
        extra["artifact_type"] = INDEX_ARTIFACT_TYPE
        return build_index(imgs + [(att, None, ann)], fmt="oci", annotations=extra["annotations"],
                           artifact_type=INDEX_ARTIFACT_TYPE), extra
    if kind == "artifact-empty-config":
        sbom = canonical_json({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": "testbed",
                               "dataLicense": "CC0-1.0", "packages": [{"name": "testbed", "versionInfo": "1"}]})
        layers = [blob_layer(sbom, "application/spdx+json", "sbom.spdx.json"),
                  blob_layer(b"hello from an OCI artifact\n", "text/plain", "readme.txt")]
        extra["artifact_type"] = REPORT_ARTIFACT_TYPE
        return build_artifact(layers, artifact_type=REPORT_ARTIFACT_TYPE, config_data=True,
                              annotations={"org.opencontainers.image.created": CREATED}), extra
    if kind == "artifact-custom-config":
        chart = make_tar({"testbed/Chart.yaml": "apiVersion: v2\nname: testbed\nversion: 0.1.0\n",
                          "testbed/values.yaml": "replicaCount: 1\n"})
        layer = Layer(data=gzip_bytes(chart), diff_id=None, media_type=HELM_CHART, compression="gzip",
                      tar_size=len(chart))
        config = canonical_json({"apiVersion": "v2", "name": "testbed", "version": "0.1.0"})
        extra["artifact_type"] = HELM_CONFIG    # no artifactType: the config media type is the artifact's type
        extra["uncompressed_digest"] = sha256_digest(chart)
        return build_artifact([layer], config_raw=config, config_media_type=HELM_CONFIG), extra
    if kind == "repeated-layer":
        a = make_layer({"etc/state": "a\n", "a.txt": "layer a\n"})
        b = make_layer({"etc/state": "b\n", "b.txt": "layer b\n"})
        c = make_layer({"c.txt": "layer c\n"})
        extra["order"] = "abacb"
        extra["distinct"] = 3
        extra["files"] = {"etc/state": "b\n", "a.txt": "layer a\n", "b.txt": "layer b\n", "c.txt": "layer c\n"}
        return build_image([a, b, a, c, b], config={"Cmd": ["/bin/sh"]}), extra
    if kind in ("schema1", "schema1-unsigned"):
        style = "v2" if kind == "schema1" else "v1"
        steps = _schema1_steps(kind)
        name = "testbed/" + kind
        config = {"Cmd": ["/app/hello"], "Env": ["PATH=/usr/bin:/bin", "GREETING=hello"], "WorkingDir": "/app"}
        img = build_schema1(steps, name, "v1", config=config, style=style, signed=(kind == "schema1"))
        extra["payload"] = img.payload.decode("utf-8")
        extra["fs_layers"] = list(img.fs_layers)                  # top first, throwaway entries included
        extra["throwaway"] = [s.layer is None for s in reversed(steps)]
        extra["files"] = {"etc/os-release": 'NAME="schema1"\n', "app/hello": "#!/bin/sh\necho $GREETING\n"}
        if kind == "schema1-unsigned":
            # distribution refuses unsigned schema 1 and re-signs what it serves: the registry holds the
            # signed twin (same payload, same digest); serve_manifest() puts the unsigned bytes in front of it
            extra[PUSH_AS] = build_schema1(steps, name, "v1", config=config, style=style, signed=True)
        return img, extra
    if kind == "referrers":
        subject = build_image([make_layer({"app/signed.txt": "an image with referrers\n"}, fmt="oci")], fmt="oci")
        claim = canonical_json({"critical": {"identity": {"docker-reference": "testbed/referrers"},
                                             "image": {"docker-manifest-digest": subject.digest},
                                             "type": "cosign container image signature"}, "optional": None})
        sig = build_artifact([blob_layer(claim, COSIGN_SIMPLESIGNING,
                                         annotations={"dev.cosignproject.cosign/signature": "MEUCIQ-testbed"})],
                             artifact_type=COSIGN_SIG, subject=subject,
                             annotations={"org.opencontainers.image.created": CREATED})
        sbom = build_artifact([blob_layer(canonical_json({"spdxVersion": "SPDX-2.3", "name": "referrers"}),
                                          "application/spdx+json", "sbom.spdx.json")],
                              artifact_type="application/spdx+json", subject=subject,
                              annotations={"org.opencontainers.image.created": CREATED, "org.example.format": "spdx"})
        fallback = build_referrers_index([sig, sbom])
        extra["subject_digest"] = subject.digest
        extra["referrers_tag"] = referrers_tag(subject.digest)
        extra["referrers_index_digest"] = fallback.digest
        extra["referrers"] = fallback.manifest["manifests"]
        extra[ALSO_PUSH] = [(fallback, (extra["referrers_tag"],))]
        return subject, extra
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
         "uncompressed", "multigzip", "whiteout", "foreign", "many-layers", "shared-base",
         # issue 14: everything else a registry can serve
         "index-no-platform", "index-attestations-only", "index-annotated", "artifact-empty-config",
         "artifact-custom-config", "repeated-layer", "schema1", "schema1-unsigned", "referrers")
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
        extra = dict(extra)
        also = extra.pop(ALSO_PUSH, ())
        push_as = extra.pop(PUSH_AS, obj)
        repo = repo_prefix + kind
        use_chunked = (kind in CHUNKED_KINDS) if chunked is None else chunked
        push_image(session, base_url, repo, push_as, tags=list(tags), chunked=use_chunked)
        for other, other_tags in also:
            push_image(session, base_url, repo, other, tags=list(other_tags), chunked=use_chunked)
        out[kind] = image_info(kind, repo, list(tags), obj, extra, also=[o for o, _t in also])
    return out


def serve_manifest(proxy, info, raw=None, media_type=None):
    """Make ``proxy`` (a :class:`testbed.proxy.FaultProxy` in front of the kind's registry) answer GET and
    HEAD of the kind's manifest, by each tag and by digest, with ``raw`` (default ``info.raw``) as
    ``media_type`` (default ``info.media_type``) and ``Docker-Content-Digest: info.digest``; everything else
    goes to the registry. This is how ``schema1-unsigned`` is served as docker 1.x-era registries did (no
    distribution release stores unsigned schema 1). Returns the rules."""
    raw = info.raw if raw is None else raw
    refs = "|".join(re.escape(r) for r in list(info.tags) + [info.digest])
    path = r"^/v2/%s/manifests/(?:%s)$" % (re.escape(info.repository), refs)
    return [proxy.add_rule("status", method=method, path=path, status=200, body=raw,
                           content_type=media_type or info.media_type,
                           headers={"Docker-Content-Digest": info.digest}) for method in ("GET", "HEAD")]
