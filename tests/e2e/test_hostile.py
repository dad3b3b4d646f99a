"""Hostile or broken registry content and dangerous destinations: clear errors, nothing lost or written
outside dest."""
import json
import os

import pytest

from helpers import assert_clean_failure, sha256_file
from testbed.builder import build_image, make_layer, push_blob, push_manifest
from testbed.modrun import run_module


def _push_with_config(reg, repo, config):
    """An OCI image whose config is ``config`` (any JSON), with one real layer."""
    layer = make_layer({"etc/hostile": b"x"}, compression="gzip", fmt="oci")
    session = reg.session()
    push_blob(session, reg.url, repo, layer.data)
    raw_config = json.dumps(config).encode()
    config_digest = push_blob(session, reg.url, repo, raw_config)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                           "size": len(raw_config)},
                "layers": [layer.descriptor()]}
    push_manifest(session, reg.url, repo, "v1", json.dumps(manifest).encode(),
                  "application/vnd.oci.image.manifest.v1+json")
    return "%s/%s:v1" % (reg.host, repo)


def test_path_traversal_in_diff_ids_refused(fresh_registry, tmp_path):
    reg = fresh_registry("anonymous")
    image = _push_with_config(reg, "hostile/diffids", {
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:../../PWNED"]}})
    work = tmp_path / "out"
    work.mkdir()
    for module, extra in (("docker_registry_image", {}), ("docker_registry_layer", {"index": 0, "decompress": True})):
        result = run_module(module, dict(image=image, dest=str(work / "dest"), **extra))
        assert_clean_failure(result)
        assert "diff_ids" in result["msg"]
    assert os.listdir(str(work)) == []
    assert not list(tmp_path.rglob("PWNED*"))


def test_broken_config_shapes(fresh_registry, tmp_path):
    reg = fresh_registry("anonymous")
    for n, config in enumerate(([1, 2], {"architecture": "amd64", "os": "linux", "rootfs": "zz"},
                                {"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": "a"}})):
        image = _push_with_config(reg, "hostile/config%d" % n, config)
        result = run_module("docker_registry_image", dict(image=image, dest=str(tmp_path / "x.tar")))
        assert_clean_failure(result)
    assert not (tmp_path / "x.tar").exists()


class _Canned:
    """A registry a real server cannot be made to be: it serves fixed manifests by path (canned HTTP)."""

    def __init__(self, routes):
        import http.server
        import threading

        routes = dict(routes)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body):
                if self.path == "/v2/":
                    body, ctype, status = b"{}", "application/json", 200
                elif self.path in routes:
                    body, ctype, status = routes[self.path], "application/vnd.oci.image.index.v1+json", 200
                else:
                    body, ctype, status = b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json", 404
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                return body

            def do_GET(self):
                self.wfile.write(self._answer(None))

            def do_HEAD(self):
                self._answer(None)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_broken_index_entries():
    good = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "a" * 64, "size": 10,
            "platform": {"os": "linux", "architecture": "amd64"}}
    entries = [dict(good, digest=None), dict(good, digest="sha256:../../etc/passwd"), dict(good, annotations="x"),
               dict(good, platform="linux"), dict(good, size=-1), "just a string", dict(good, digest="md5:" + "a" * 32)]
    routes = {}
    for n, entry in enumerate(entries):
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}
        routes["/v2/hostile/index/manifests/t%d" % n] = json.dumps(index).encode()
    server = _Canned(routes)
    try:
        for n in range(len(entries)):
            result = run_module("docker_registry_manifest", {"registry": server.url, "image": "hostile/index:t%d" % n})
            assert_clean_failure(result)
            assert "entry 0" in result["msg"], result["msg"]
    finally:
        server.close()


def test_oci_dir_never_replaces_a_foreign_directory(registry_anonymous, seeded, tmp_path):
    info = seeded(registry_anonymous)["oci-simple"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    result = run_module("docker_registry_image", dict(image=info.image(registry_anonymous.host), dest=str(precious),
                                                      format="oci-dir"))
    assert_clean_failure(result)
    assert "did not write" in result["msg"]
    assert (precious / "thesis.txt").read_text() == "years of work"
    # an empty directory, or one this module wrote, is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_module("docker_registry_image", dict(image=info.image(registry_anonymous.host), dest=str(empty),
                                                    format="oci-dir"))["changed"] is True
    again = run_module("docker_registry_image", dict(image=info.image(registry_anonymous.host), dest=str(empty),
                                                     format="oci-dir", force=True))
    assert again["changed"] is True
    assert sorted(os.listdir(str(tmp_path))) == ["empty", "precious"]


@pytest.mark.parametrize("decompress", [False, True])
def test_stale_partial_file_is_replaced(registry_anonymous, seeded, tmp_path, decompress):
    info = seeded(registry_anonymous)["docker-simple"]
    layer = info.default["layers"][0]
    (tmp_path / ".l.part").write_bytes(b"\0" * layer["size"])
    result = run_module("docker_registry_layer", dict(image=info.image(registry_anonymous.host), index=0,
                                                      dest=str(tmp_path / "l"), decompress=decompress))
    assert result["rc"] == 0, result
    assert sha256_file(str(tmp_path / "l")) == layer["diff_id" if decompress else "digest"]
    assert "again from the start" in json.dumps(result.get("warnings"))
    assert sorted(os.listdir(str(tmp_path))) == ["l"]


def test_check_mode_writes_nothing_into_the_store(registry_anonymous, seeded, tmp_path):
    info = seeded(registry_anonymous)["oci-index"]
    store = tmp_path / "store"
    for module, extra in (("docker_registry_image", {}), ("docker_registry_layer", {"index": 0}),
                          ("docker_registry_manifest", {})):
        result = run_module(module, dict(image=info.image(registry_anonymous.host), dest=str(tmp_path / "d"),
                                         cache_dir=str(store), **extra), check=True)
        assert result["rc"] == 0, result
    assert not store.exists()
    assert not (tmp_path / "d").exists()


def test_index_true_without_a_matching_platform(fresh_registry, tmp_path):
    from testbed.builder import build_index
    reg = fresh_registry("anonymous")
    arm = build_image([make_layer({"a": b"1"}, fmt="oci")], platform="linux/s390x", fmt="oci")
    index = build_index([arm], fmt="oci")
    from testbed.builder import push_image
    push_image(reg.session(), reg.url, "only/s390x", index, tags=["v1"])
    dest = tmp_path / "index.json"
    result = run_module("docker_registry_manifest", {"image": "%s/only/s390x:v1" % reg.host, "index": True,
                                                     "dest": str(dest)})
    assert result["rc"] == 0, result
    assert sha256_file(str(dest)) == index.digest
    assert result["platforms"] == ["linux/s390x"]
    no_index = run_module("docker_registry_manifest", {"image": "%s/only/s390x:v1" % reg.host})
    assert_clean_failure(no_index)
    assert "linux/s390x" in no_index["msg"]
