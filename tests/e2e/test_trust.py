"""What a trusted tool must never do, and what users hit first (issue 12), as real module runs against the
test bed's registries and fault proxy. Each passed case is also a row of docs/reliability.md."""
import http.server
import os
import signal
import socketserver
import stat
import subprocess
import sys
import threading
import time

import pytest

from helpers import assert_clean_failure, sha256_file
from reliability import record
from testbed.modrun import PYROOT, run_module
from testbed.proxy import FaultProxy

SECRET_USER = "deploy"


class Listener:
    """A plain HTTP server that records every request it gets (a token realm an attacker controls)."""

    def __init__(self):
        seen = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append({"path": self.path, "headers": dict(self.headers)})
                body = b'{"token":"stolen"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def small_fs(tmp_path):
    """A small tmpfs mounted in the test's directory (``small_fs(size, ro=False) -> path``), unmounted after."""
    mounted = []

    def make(size, ro=False):
        path = tmp_path / ("fs%d" % len(mounted))
        path.mkdir()
        options = "size=%s" % size + (",ro" if ro else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ------------------------------------------------------------------------------------------ credentials
@pytest.mark.parametrize("mode", ["token", "basic"])
def test_redirected_401_never_gets_the_registry_credentials(mode, request, seeded, tmp_path):
    """A blob request redirected to another origin whose answer is a 401 with its own bearer challenge:
    the registry's credentials never reach that realm (over http and https registries alike)."""
    reg = request.getfixturevalue("registry_" + mode)
    info = seeded(reg)["docker-simple"]
    evil = Listener()
    try:
        with FaultProxy(reg) as proxy:
            proxy.add_rule("redirect_blob", method="GET", path="/blobs/")
            proxy.add_rule("status", server="blob", status=401,
                           headers={"WWW-Authenticate": 'Bearer realm="%s/token",service="evil"' % evil.url})
            args = dict(image=info.repository + ":" + info.tag, registry=proxy.url, index=0,
                        dest=str(tmp_path / "layer"), username=reg.username, password=reg.password, retries=0)
            result = run_module("docker_registry_layer", args)
        assert_clean_failure(result, reg.password)
        assert "never sent to another host" in result["msg"] and "127.0.0.2" in result["msg"], result["msg"]
        assert evil.requests == []
        assert not (tmp_path / "layer").exists()
    finally:
        evil.close()
    record("cred-redirect-401-" + mode, "credentials",
           "a blob redirected to another origin answering 401 with its own realm (%s registry)" % mode,
           "fails naming the host; the realm gets no request", result["msg"])


def test_vvv_never_shows_credentials_typed_into_registry(registry_anonymous, tmp_path):
    secret = "Typed-1nto-The-URL"
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=PYROOT, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "l"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "r"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [ansible, "localhost", "-c", "local", "-i", "localhost,", "-vvv", "-m", "hocker.registry.docker_registry_manifest",
         "-a", "image=app registry=http://%s:%s@%s" % (SECRET_USER, secret, registry_anonymous.host)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=300, cwd=str(tmp_path), check=False)
    out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    assert proc.returncode != 0 and "registry must not contain credentials" in out, out[-3000:]
    assert secret not in out
    record("cred-vvv-registry-userinfo", "credentials", "user:password@ in registry, ansible -vvv",
           "refused; the password appears nowhere in the output", "registry must not contain credentials")


# ------------------------------------------------------------------------------------------ integrity
def _truncate(path):
    with open(str(path), "r+b") as f:
        f.truncate(os.path.getsize(str(path)) // 2)


def _overwrite(path):
    with open(str(path), "r+b") as f:
        f.seek(os.path.getsize(str(path)) - 3000)
        f.write(b"\xff" * 16)


def _delete_a_blob(path):
    blobs = os.path.join(str(path), "blobs", "sha256")
    os.unlink(os.path.join(blobs, sorted(os.listdir(blobs))[0]))


@pytest.mark.parametrize("fmt,damage,words", [
    ("docker-archive", _truncate, "truncated"),
    ("oci-archive", _truncate, "truncated"),
    ("oci-dir", _delete_a_blob, "missing"),
    ("docker-archive", _overwrite, "does not match its digest"),
], ids=["docker-archive-truncated", "oci-archive-truncated", "oci-dir-blob-deleted", "docker-archive-overwritten"])
def test_damaged_dest_is_found_and_repaired_from_the_store(fmt, damage, words, registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    dest = tmp_path / ("img" if fmt == "oci-dir" else "img.tar")
    args = dict(image=info.image(reg.host), dest=str(dest), format=fmt, cache_dir=str(tmp_path / "store"))
    assert run_module("docker_registry_image", args)["changed"] is True
    good = sha256_file(str(dest)) if fmt != "oci-dir" else None
    damage(dest)
    reg.clear_log()
    repaired = run_module("docker_registry_image", args)
    assert repaired["rc"] == 0 and repaired["changed"] is True, repaired
    assert words in repaired["repaired"], repaired["repaired"]
    assert reg.count("GET", r"/blobs/") == 0               # everything came from the store
    if good:
        assert sha256_file(str(dest)) == good
    again = run_module("docker_registry_image", dict(args, verify=True))
    assert again["changed"] is False and "repaired" not in again
    record("integrity-%s-%s" % (fmt, damage.__name__.strip("_")), "integrity",
           "%s: %s, then the same task again" % (fmt, damage.__name__.strip("_").replace("_", " ")),
           "changed, written again from the store (no blob GET), said why in `repaired`", repaired["repaired"])


# ------------------------------------------------------------------------------------------ decompression
def test_gzip_bomb_stops_at_its_ratio(registry_anonymous, tmp_path):
    from testbed.builder import seed
    info = seed(registry_anonymous, kinds=["gzip-bomb"])["gzip-bomb"]
    dest = tmp_path / "bomb.tar"
    result = run_module("docker_registry_layer", {"image": info.image(registry_anonymous.host), "index": -1,
                                                  "decompress": True, "dest": str(dest)})
    assert_clean_failure(result)
    assert "max_inflation_ratio" in result["msg"] and info.default["layers"][-1]["digest"] in result["msg"]
    assert os.listdir(str(tmp_path)) == []
    record("bomb-ratio", "decompression", "a 1 GiB gzip bomb in a ~1 MiB layer, decompress: true",
           "stops past 256 MiB at 200x its size, naming the layer and the option", result["msg"])


def test_inflating_stops_before_the_disk_is_full(registry_anonymous, seeded, small_fs, tmp_path):
    from testbed.builder import seed
    info = seed(registry_anonymous, kinds=["gzip-bomb"])["gzip-bomb"]
    fs = small_fs("200m")
    result = run_module("docker_registry_image", {"image": info.image(registry_anonymous.host), "dest": str(fs / "b.tar"),
                                                  "max_inflation_ratio": 0})
    assert_clean_failure(result)
    assert "not enough space" in result["msg"] and str(fs) in result["msg"], result["msg"]
    # nothing at dest; the inflated output is gone and only the (small) compressed download is kept, to be
    # resumed once there is room
    assert sorted(os.listdir(str(fs))) in ([], [".b.tar.hocker-work", ".b.tar.hocker-work.lock"]), os.listdir(str(fs))
    work = fs / ".b.tar.hocker-work"
    kept = os.listdir(str(work)) if work.is_dir() else []
    assert all(name.endswith(".partial") for name in kept), kept
    assert sum((work / name).stat().st_size for name in kept) < 16 * 1024 * 1024, kept
    record("bomb-full-disk", "decompression", "the 1 GiB bomb into a 200 MiB file system, no ratio bound",
           "stops before the disk is full, naming the layer and the directory", result["msg"])


def test_full_disk_and_read_only_name_the_path(registry_anonymous, seeded, small_fs):
    info = seeded(registry_anonymous)["docker-simple"]
    image = info.image(registry_anonymous.host)
    full = small_fs("4k")
    result = run_module("docker_registry_image", {"image": image, "dest": str(full / "img.tar")})
    assert_clean_failure(result)
    assert str(full) in result["msg"] and ("no space left" in result["msg"] or "are free" in result["msg"])
    record("dest-full-disk", "destinations", "dest on a full file system", "fails naming the path and the cause",
           result["msg"])
    ro = small_fs("1m", ro=True)
    result = run_module("docker_registry_manifest", {"image": image, "dest": str(ro / "m.json")})
    assert_clean_failure(result)
    assert str(ro) in result["msg"] and "read-only" in result["msg"], result["msg"]
    record("dest-read-only", "destinations", "dest on a read-only file system", "fails naming the path and the cause",
           result["msg"])


# ------------------------------------------------------------------------------------------ without the registry
def test_converged_host_needs_no_registry(fresh_registry, tmp_path):
    from testbed.builder import seed
    reg = fresh_registry("anonymous")
    info = seed(reg, kinds=["oci-simple"])["oci-simple"]
    layer = info.default["layers"][0]["digest"]
    pinned = "%s/%s@%s" % (reg.host, info.repository, info.digest)
    args_layer = {"image": info.image(reg.host), "layer": layer, "dest": str(tmp_path / "layer.tgz")}
    args_manifest = {"image": pinned, "dest": str(tmp_path / "manifest.json")}
    assert run_module("docker_registry_layer", args_layer)["changed"] is True
    assert run_module("docker_registry_manifest", args_manifest)["changed"] is True
    reg.stop()
    for module, args in (("docker_registry_layer", args_layer), ("docker_registry_manifest", args_manifest)):
        again = run_module(module, args)
        assert again["rc"] == 0 and again["changed"] is False, again
    record("offline-converged", "without the registry", "registry down; layer by digest and manifest by digest already in dest",
           "no request, changed: false", "ok")


def test_tag_and_tag_with_digest_write_the_same_archive_once(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    dest = str(tmp_path / "img.tar")
    assert run_module("docker_registry_image", {"image": info.image(reg.host), "dest": dest})["changed"] is True
    reg.clear_log()
    both = run_module("docker_registry_image", {"image": "%s@%s" % (info.image(reg.host), info.digest), "dest": dest})
    assert both["changed"] is False and reg.requests() == []
    record("same-image-two-names", "without the registry", "repo:tag, then repo:tag@digest of the same image",
           "the second run changes nothing and asks nothing", "ok")


# ------------------------------------------------------------------------------------------ what users hit first
def test_oci_dir_mode_applies_to_the_tree(registry_anonymous, seeded, tmp_path):
    info = seeded(registry_anonymous)["oci-simple"]
    dest = tmp_path / "layout"
    result = run_module("docker_registry_image", {"image": info.image(registry_anonymous.host), "dest": str(dest),
                                                  "format": "oci-dir", "mode": "0640"})
    assert result["changed"] is True
    for root, dirs, files in os.walk(str(dest)):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o750, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o640
    again = run_module("docker_registry_image", {"image": info.image(registry_anonymous.host), "dest": str(dest),
                                                 "format": "oci-dir", "mode": "0640"})
    assert again["changed"] is False


def test_decompressed_layer_reports_the_blob_size(registry_anonymous, seeded, tmp_path):
    info = seeded(registry_anonymous)["docker-simple"]
    layer = info.default["layers"][0]
    result = run_module("docker_registry_layer", {"image": info.image(registry_anonymous.host), "index": 0,
                                                  "decompress": True, "dest": str(tmp_path / "l.tar")})
    assert result["size"] == layer["size"] != os.path.getsize(str(tmp_path / "l.tar"))


def test_diff_shows_what_changes(registry_anonymous, seeded, tmp_path):
    info = seeded(registry_anonymous)["oci-simple"]
    image = info.image(registry_anonymous.host)
    dest = str(tmp_path / "img.tar")
    run_module("docker_registry_image", {"image": image, "dest": dest})
    other = run_module("docker_registry_image", {"image": image, "dest": dest, "repo_tags": ["other/name:2"],
                                                 "layers": "compressed"}, check=True, diff=True)
    before, after = other["diff"]["before"], other["diff"]["after"]
    assert before["repo_tags"] != after["repo_tags"] and (before["layers"], after["layers"]) == (
        "uncompressed", "compressed")
    mdest = str(tmp_path / "m.json")
    run_module("docker_registry_manifest", {"image": image, "dest": mdest, "mode": "0644"})
    moded = run_module("docker_registry_manifest", {"image": image, "dest": mdest, "mode": "0600"}, diff=True)
    assert moded["changed"] is True
    assert moded["diff"]["before"]["mode"] == "0644" and moded["diff"]["after"]["mode"] == "0600", moded["diff"]


def test_certs_d_directory_as_ca_path(registry_basic, seeded, tmp_path):
    import shutil
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    certs = tmp_path / "certs.d"
    certs.mkdir()
    shutil.copy(reg.ca_path, str(certs / "ca.crt"))
    result = run_module("docker_registry_manifest", {"image": info.image(reg.host), "ca_path": str(certs),
                                                     "username": reg.username, "password": reg.password})
    assert result["rc"] == 0 and result["digest"] == info.digest, result


def test_aliases_and_short_platforms(registry_basic, seeded):
    reg = registry_basic
    info = seeded(reg)["docker-list"]
    result = run_module("docker_registry_manifest", {"name": info.image(reg.host), "ca_cert": reg.ca_path,
                                                     "tls_verify": True, "platform": "arm64",
                                                     "username": reg.username, "password": reg.password})
    assert result["rc"] == 0, result
    assert result["platform"].startswith("linux/arm64")


def test_killed_image_download_resumes_from_the_work_dir(fresh_registry, tmp_path):
    from testbed.builder import seed
    reg = fresh_registry("anonymous")
    info = seed(reg, kinds=["big"], big_size=24 * 1024 * 1024)["big"]
    total = sum(layer["size"] for layer in info.default["layers"])
    dest = tmp_path / "big.tar"
    with FaultProxy(reg.url) as proxy:
        base = {"image": info.repository + ":" + info.tag, "registry": proxy.url, "dest": str(dest)}
        proxy.add_rule("stall", method="GET", path="/blobs/", after_bytes=2 * 1024 * 1024, seconds=30)
        procs = []
        out = {}
        worker = threading.Thread(target=lambda: out.update(run_module(
            "docker_registry_image", base, popen_hook=procs.append, timeout=120)))
        worker.start()
        deadline = time.monotonic() + 60
        work = tmp_path / ".big.tar.hocker-work"
        while time.monotonic() < deadline:
            partials = [p for p in work.glob("*.partial") if p.stat().st_size >= 1024 * 1024] if work.exists() else []
            if partials:
                break
            time.sleep(0.05)
        assert partials, "no partial download appeared"
        os.kill(procs[0].pid, signal.SIGKILL)
        worker.join()
        proxy.clear_rules()
        again = run_module("docker_registry_image", base)
    assert again["rc"] == 0 and again["changed"] is True, again
    assert again["bytes_downloaded"] < total, (again["bytes_downloaded"], total)
    assert not work.exists()
    record("resume-killed-image", "network faults", "docker_registry_image killed mid-download (no cache_dir), run again",
           "resumes the partial layers kept in the work directory, then removes it",
           "downloaded less than the whole image again (%s)" % (
               "the partial layers were resumed" if again["bytes_downloaded"] < total else "?"))
