"""Who reads a gzip-compressed archive (``compression: gzip``, hocker's ``.tar.gz``), asserted with the tools
Debian 12 ships, so that docs/troubleshooting.md stays true when a tool changes:

- ``podman load -i`` (podman 4.3.1) loads a gzip-compressed docker-archive and oci-archive;
- ``podman pull docker-archive:`` and ``skopeo inspect docker-archive:`` refuse the gzip-compressed
  docker-archive (containers/image reads the archive's tar directly: "loading tar component manifest.json");
- ``docker load`` (dockerd 20.10) loads the gzip-compressed docker-archive;
- ``ctr images import`` (containerd 1.6) refuses both ("invalid tar header").
"""
import subprocess

import pytest

from testbed.modrun import run_module


@pytest.fixture(scope="module")
def gz_archives(tmp_path_factory, registry_anonymous, seeded):
    images = seeded(registry_anonymous)
    ref = images["docker-simple"].image(registry_anonymous.host)
    out = tmp_path_factory.mktemp("gz")
    paths = {}
    for fmt in ("docker-archive", "oci-archive"):
        dest = str(out / ("%s.tar.gz" % fmt))
        result = run_module("docker_registry_image", {"image": ref, "format": fmt, "compression": "gzip",
                                                      "dest": dest})
        assert result["rc"] == 0 and result["changed"], result
        with open(dest, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"
        paths[fmt] = dest
    return ref, images["docker-simple"], paths


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_load_reads_gzip_archives(gz_archives, podman, fmt):
    ref, info, paths = gz_archives
    names = podman.load(paths[fmt])
    assert ref in names or any(n.endswith(ref) for n in names), names
    assert [i["id"] for i in podman.images()] == [info.default["config_digest"]]


def test_podman_pull_and_skopeo_refuse_gzip_docker_archive(gz_archives, podman):
    _ref, _info, paths = gz_archives
    with pytest.raises(RuntimeError, match="loading tar component manifest.json"):
        podman.run("pull", "docker-archive:" + paths["docker-archive"])
    proc = subprocess.run(["skopeo", "inspect", "docker-archive:" + paths["docker-archive"]],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "loading tar component manifest.json" in proc.stderr, proc.stderr


def test_docker_loads_gzip_docker_archive(gz_archives, clean_dockerd):
    ref, info, paths = gz_archives
    assert "Loaded image: " + ref in clean_dockerd.load(paths["docker-archive"])
    assert clean_dockerd.image_inspect(ref)["Id"] == info.default["config_digest"]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_ctr_import_refuses_gzip_archives(gz_archives, containerd, fmt):
    _ref, _info, paths = gz_archives
    proc = subprocess.run(["ctr", "-a", containerd.socket, "-n", "hocker-test", "images", "import", "--snapshotter",
                           "native", paths[fmt]], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "invalid tar header" in proc.stderr, proc.stderr
