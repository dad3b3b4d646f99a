"""Real image loaders for tests: podman (private storage), a private dockerd, containerd's ctr.

API
---
``Podman(workdir)``: podman with its own ``--root``/``--runroot`` in ``workdir`` (vfs, cgroupfs, file events).
    ``.run(*args) -> CompletedProcess`` (raises on failure with stdout/stderr), ``.load(path) -> [names]``
    (names printed by ``podman load``), ``.images() -> [{'id': 'sha256:...', 'names': [...]}]``,
    ``.mount(name) -> path`` / ``.unmount(name)`` (``podman image mount``), ``.files(name) -> set`` (paths
    in the image's filesystem, relative, without leading ``./``), ``.reset()`` (remove every image).
    ``.close()`` removes the images and the runroot (kept under /tmp: podman wants it short).
``podman_load(archive, workdir) -> [{'id': 'sha256:...', 'names': [...]}]``: load into a fresh store and list.
``PrivateContainerd(workdir)``: ``containerd --config`` with its own root/state/socket. ``.start()``,
    ``.stop()``, ``.socket``, ``.ctr(*args)``.
``ctr_import(path, containerd, namespace='hocker-test') -> [{'name', 'digest'}]``: ``ctr images import
    --snapshotter native`` (unpacks the layers) and list the namespace's images.
``PrivateDockerd(workdir)``: dockerd (vfs, no iptables, no bridge) on its own socket, with its own
    PrivateContainerd. ``.start()`` waits until ``docker info`` answers, ``.stop()`` stops both cleanly.
    ``.docker(*args)``, ``.load(path) -> output``, ``.image_inspect(name) -> dict``, ``.images() -> [dict]``,
    ``.remove_all()``. Context managers.
``synthetic_image(workdir, layers, media='docker', arch='amd64')``: build a small image on disk without a
    registry (for archive tests): see its docstring.

Every process started here is stopped by ``stop()``; tools missing on PATH raise (tests never skip).
"""
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time

import zstandard


def _need(tool):
    path = shutil.which(tool)
    if not path:
        raise RuntimeError("required tool %s is not installed" % tool)
    return path


def _run(cmd, env=None, timeout=300, input=None):
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, input=input, check=False)
    if proc.returncode != 0:
        raise RuntimeError("command failed (%d): %s\nstdout: %s\nstderr: %s" % (
            proc.returncode, " ".join(cmd), proc.stdout.decode(errors="replace")[-4000:],
            proc.stderr.decode(errors="replace")[-4000:]))
    return proc


# ---------------------------------------------------------------------------------------------------------
# podman
# ---------------------------------------------------------------------------------------------------------
class Podman(object):
    def __init__(self, workdir):
        self.podman = _need("podman")
        self.workdir = os.path.abspath(workdir)
        self.root = os.path.join(self.workdir, "root")
        # podman refuses a runroot longer than 50 characters, and its database remembers the runroot:
        # inside workdir when that is short enough, else a fixed short path derived from workdir
        self.runroot = os.path.join(self.workdir, "runroot")
        if len(self.runroot) > 50:
            self.runroot = "/tmp/hkpod-" + hashlib.sha256(self.workdir.encode()).hexdigest()[:16]
        self.tmpdir = os.path.join(self.workdir, "tmp")
        for d in (self.root, self.runroot, self.tmpdir):
            os.makedirs(d, exist_ok=True)
        self.env = dict(os.environ, TMPDIR=self.tmpdir, HOME=self.workdir)
        self.env.pop("CONTAINERS_STORAGE_CONF", None)

    def cmd(self, *args):
        return [self.podman, "--root", self.root, "--runroot", self.runroot, "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", self.tmpdir] + list(args)

    def run(self, *args, **kw):
        return _run(self.cmd(*args), env=self.env, **kw)

    def load(self, path):
        out = self.run("load", "-i", path).stdout.decode()
        names = []
        for line in out.splitlines():
            if line.startswith("Loaded image"):
                names.extend(n.strip() for n in line.split(":", 1)[1].split(","))
        return names

    def images(self):
        data = json.loads(self.run("images", "--format", "json").stdout.decode() or "[]")
        # podman lists an image once per name: merge them
        by_id = {}
        for img in data:
            iid = img.get("Id") or img.get("ID")
            if not iid.startswith("sha256:"):
                iid = "sha256:" + iid
            entry = by_id.setdefault(iid, {"id": iid, "names": [], "digest": img.get("Digest")})
            entry["names"] = sorted(set(entry["names"]) | set(img.get("Names") or []))
        return [by_id[k] for k in sorted(by_id)]

    def mount(self, name):
        return self.run("image", "mount", name).stdout.decode().strip()

    def unmount(self, name):
        self.run("image", "unmount", name)

    def files(self, name):
        root = self.mount(name)
        try:
            found = set()
            for dirpath, dirnames, filenames in os.walk(root):
                rel = os.path.relpath(dirpath, root)
                for n in dirnames + filenames:
                    found.add(os.path.normpath(os.path.join(rel, n)))
            return found
        finally:
            self.unmount(name)

    def reset(self):
        self.run("rmi", "--all", "--force")

    def close(self):
        """Remove every image and the short-lived runroot (the store in workdir is left to the caller)."""
        try:
            self.reset()
        finally:
            shutil.rmtree(self.runroot, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def podman_load(archive, workdir):
    """Load ``archive`` into a fresh private podman store; return the images it holds afterwards."""
    podman = Podman(workdir)
    try:
        podman.load(archive)
        return podman.images()
    finally:
        shutil.rmtree(podman.runroot, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# containerd / dockerd
# ---------------------------------------------------------------------------------------------------------
def _wait(predicate, timeout, what, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if predicate():
            return
        time.sleep(0.1)
    tail = ""
    if log and os.path.exists(log):
        with open(log, "rb") as f:
            tail = f.read()[-4000:].decode(errors="replace")
    raise RuntimeError("%s did not become ready\n%s" % (what, tail))


def _stop_process(proc, timeout=30):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class PrivateContainerd(object):
    def __init__(self, workdir):
        self.containerd = _need("containerd")
        self.ctr_bin = _need("ctr")
        self.workdir = os.path.abspath(workdir)
        self.socket = os.path.join(self.workdir, "containerd.sock")
        self.config = os.path.join(self.workdir, "containerd.toml")
        self.log = os.path.join(self.workdir, "containerd.log")
        self.proc = None

    def start(self):
        if self.proc is not None:
            return self
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.config, "w") as f:
            f.write("""version = 2
root = "%(d)s/root"
state = "%(d)s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "%(sock)s"
[ttrpc]
  address = "%(sock)s.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
""" % {"d": self.workdir, "sock": self.socket})
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([self.containerd, "--config", self.config], stdout=logf, stderr=logf,
                                     start_new_session=True)
        logf.close()
        try:
            _wait(self._ready, 60, "containerd", self.proc, self.log)
        except Exception:
            self.stop()
            raise
        return self

    def _ready(self):
        if not os.path.exists(self.socket):
            return False
        return subprocess.run([self.ctr_bin, "-a", self.socket, "version"], capture_output=True, check=False).returncode == 0

    def ctr(self, *args, **kw):
        return _run([self.ctr_bin, "-a", self.socket] + list(args), **kw)

    def stop(self):
        _stop_process(self.proc)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def ctr_import(path, containerd, namespace="hocker-test"):
    """Import an archive with ``ctr images import`` (unpacking it) and return the namespace's images."""
    containerd.ctr("-n", namespace, "images", "import", "--snapshotter", "native", path)
    return ctr_images(containerd, namespace)


def ctr_images(containerd, namespace="hocker-test"):
    out = containerd.ctr("-n", namespace, "images", "ls").stdout.decode()
    result = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            result.append({"name": parts[0], "media_type": parts[1], "digest": parts[2]})
    return result


def ctr_remove_all(containerd, namespace="hocker-test"):
    for img in ctr_images(containerd, namespace):
        containerd.ctr("-n", namespace, "images", "rm", "--sync", img["name"])


class PrivateDockerd(object):
    def __init__(self, workdir):
        self.dockerd = _need("dockerd")
        self.docker_bin = _need("docker")
        self.workdir = os.path.abspath(workdir)
        self.containerd = PrivateContainerd(os.path.join(self.workdir, "containerd"))
        self.socket = os.path.join(self.workdir, "docker.sock")
        self.log = os.path.join(self.workdir, "dockerd.log")
        self.proc = None
        self.env = None

    def start(self):
        if self.proc is not None:
            return self
        os.makedirs(self.workdir, exist_ok=True)
        self.containerd.start()
        config = os.path.join(self.workdir, "daemon.json")
        with open(config, "w") as f:
            f.write("{}\n")
        cfgdir = os.path.join(self.workdir, "client")
        os.makedirs(cfgdir, exist_ok=True)
        self.env = dict(os.environ, DOCKER_CONFIG=cfgdir, DOCKER_HOST="unix://" + self.socket)
        self.env.pop("DOCKER_CONTEXT", None)
        cmd = [self.dockerd, "--config-file", config, "--storage-driver", "vfs", "--iptables=false",
               "--ip6tables=false", "--ip-masq=false", "--bridge=none",
               "--data-root", os.path.join(self.workdir, "data"),
               "--exec-root", os.path.join(self.workdir, "exec"),
               "--pidfile", os.path.join(self.workdir, "dockerd.pid"),
               "-H", "unix://" + self.socket, "--containerd", self.containerd.socket,
               "--containerd-namespace", "hocker-moby", "--containerd-plugins-namespace", "hocker-plugins"]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, env=self.env, start_new_session=True)
        logf.close()
        try:
            _wait(self._ready, 120, "dockerd", self.proc, self.log)
        except Exception:
            self.stop()
            raise
        return self

    def _ready(self):
        if not os.path.exists(self.socket):
            return False
        return subprocess.run([self.docker_bin, "info"], capture_output=True, env=self.env, check=False).returncode == 0

    def docker(self, *args, **kw):
        return _run([self.docker_bin] + list(args), env=self.env, **kw)

    def load(self, path):
        return self.docker("load", "-i", path).stdout.decode()

    def image_inspect(self, name):
        return json.loads(self.docker("image", "inspect", name).stdout.decode())[0]

    def images(self):
        out = self.docker("images", "--no-trunc", "--format", "{{json .}}").stdout.decode()
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def remove_all(self):
        out = self.docker("images", "-q", "--no-trunc").stdout.decode().split()
        if out:
            self.docker("rmi", "-f", *sorted(set(out)))

    def stop(self):
        _stop_process(self.proc)
        self.proc = None
        self.containerd.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------------------------
# synthetic images
# ---------------------------------------------------------------------------------------------------------
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER_TYPES = {
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
    ("docker", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",   # docker has no zstd type
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
}


def layer_tar(entries):
    """A deterministic tar from ``entries``: list of (path, bytes) for files, (path, None) for directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.mtime = 1
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _compress(data, kind):
    if kind == "gzip":
        # two members, like eStargz/pigz output, to exercise multi-member handling
        half = len(data) // 2
        return gzip.compress(data[:half], mtime=0) + gzip.compress(data[half:], mtime=0)
    if kind == "zstd":
        cctx = zstandard.ZstdCompressor(level=3)
        half = len(data) // 2
        skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip"
        return cctx.compress(data[:half]) + skippable + cctx.compress(data[half:])
    return data


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def synthetic_image(workdir, layers, media="docker", arch="amd64", os_name="linux", variant=None, label=None):
    """Write a small image's blobs to ``workdir`` and describe it.

    ``layers``: list of ``(entries, compression)`` with entries as for ``layer_tar`` and compression ``gzip``
    | ``zstd`` | ``none``. ``media``: ``docker`` (schema2 manifest, docker config/layer types where docker has
    one) or ``oci``. Returns a dict with ``config``, ``manifest`` (bytes), ``config_digest``,
    ``manifest_digest``, ``media_type``, ``diff_ids`` and ``layers`` (dicts with ``digest``, ``diff_id``,
    ``size``, ``media_type``, ``blob_path``, ``tar_path``). ``archive_image(img, mode)`` turns it into the
    input of ``archive.write_archive``.
    """
    os.makedirs(workdir, exist_ok=True)
    descs = []
    layer_info = []
    for entries, kind in layers:
        tar = layer_tar(entries)
        blob = _compress(tar, kind)
        diff_id = _digest(tar)
        digest = _digest(blob)
        blob_path = os.path.join(workdir, digest.split(":")[1] + ".blob")
        tar_path = os.path.join(workdir, diff_id.split(":")[1] + ".tar")
        with open(blob_path, "wb") as f:
            f.write(blob)
        with open(tar_path, "wb") as f:
            f.write(tar)
        mt = _LAYER_TYPES[(media, kind)]
        descs.append({"mediaType": mt, "digest": digest, "size": len(blob)})
        layer_info.append({"digest": digest, "diff_id": diff_id, "size": len(blob), "media_type": mt,
                           "blob_path": blob_path, "tar_path": tar_path, "uncompressed_size": len(tar)})
    config = {
        "architecture": arch,
        "os": os_name,
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"test": label or "x"}},
        "rootfs": {"type": "layers", "diff_ids": [li["diff_id"] for li in layer_info]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "synthetic"} for _li in layer_info],
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if media == "docker" else OCI_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG if media == "docker" else OCI_CONFIG,
                   "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": descs,
    }
    # registry-style pretty JSON, so that re-serialising would change the digest
    manifest_bytes = json.dumps(manifest, indent=3).encode()
    return {
        "config": config_bytes,
        "manifest": manifest_bytes,
        "config_digest": _digest(config_bytes),
        "manifest_digest": _digest(manifest_bytes),
        "media_type": manifest["mediaType"],
        "diff_ids": config["rootfs"]["diff_ids"],
        "layers": layer_info,
    }


def archive_image(img, mode):
    """Input of ``archive.write_archive`` for a ``synthetic_image`` in layers mode ``mode``."""
    layers = []
    for li in img["layers"]:
        layers.append({"digest": li["digest"], "diff_id": li["diff_id"], "size": li["size"],
                       "media_type": li["media_type"],
                       "path": li["blob_path"] if mode == "compressed" else li["tar_path"]})
    return {"config": img["config"], "manifest": img["manifest"], "layers": layers,
            "config_digest": img["config_digest"], "manifest_digest": img["manifest_digest"]}
