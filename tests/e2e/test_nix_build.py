"""The fetchurl Nix expression, built for real with Debian's nix-bin against real registries.

Each test pushes images to a real docker-registry (test bed), emits the expression with the collection's
emitter, runs ``nix-build`` in a private Nix store under tmp_path (Nix verifies every blob against its
fixed-output hash, i.e. the registry digest), then loads the archive with ``podman load`` into a private
podman store and checks the loaded name and image id (= config digest).

There is no nixpkgs here: ``tests/e2e/nix/stub-pkgs.nix`` provides bash/curl/coreutils/... as symlinks to
the host's tools, which needs ``--option sandbox false``.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import nix
from testbed.loaders import Podman
from testbed.proxy import FaultProxy

HERE = os.path.dirname(os.path.abspath(__file__))
STUB_PKGS = os.path.join(HERE, "nix", "stub-pkgs.nix")

# Environment variables that must not leak from the developer's shell into the builds under test.
_SCRUB = tuple(nix.CREDENTIAL_ENV_VARS) + tuple(nix.PROXY_ENV_VARS) + ("NIX_REMOTE", "NIX_PATH")


def _tool(name):
    path = shutil.which(name)
    assert path, "%s is required for the Nix tests (Debian package nix-bin)" % name
    return path


class NixStore(object):
    """A private Nix store (``NIX_STORE_DIR`` etc. under ``root``): every build really fetches."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.env = dict((k, v) for k, v in os.environ.items() if k not in _SCRUB)
        self.env.update(NIX_STORE_DIR=os.path.join(self.root, "store"),
                        NIX_STATE_DIR=os.path.join(self.root, "var"),
                        NIX_LOG_DIR=os.path.join(self.root, "log"),
                        NIX_CONF_DIR=os.path.join(self.root, "etc"))

    def build(self, expr_path, env=None, args=()):
        """nix-build; returns (CompletedProcess, result path or None)."""
        out_link = os.path.join(self.root, "result-%d" % len(os.listdir(self.root)))
        cmd = [_tool("nix-build"), expr_path, "--arg", "pkgs", "import %s { }" % STUB_PKGS,
               "--option", "sandbox", "false", "--option", "substituters", "",
               "--option", "build-users-group", "", "-o", out_link] + list(args)
        full_env = dict(self.env)
        full_env.update(env or {})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=600, check=False)
        return proc, (os.path.realpath(out_link) if proc.returncode == 0 else None)

    def store_text(self):
        """Every readable text of the store (for secret scans)."""
        chunks = []
        for dirpath, _dirs, files in os.walk(os.path.join(self.root, "store")):
            for name in files:
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    continue
                with open(path, "rb") as f:
                    chunks.append(f.read())
        return b"\n".join(chunks)


def emit(reg_url, info, platform="linux/amd64", **kwargs):
    entry = info.platforms[platform]
    manifest = json.loads(info.manifests[entry["manifest_digest"]])
    return nix.fetchurl_expression(reg_url, info.repository, info.tag, manifest,
                                   manifest_digest=entry["manifest_digest"], platform=platform, **kwargs), entry


def write_expr(tmp_path, text, name="image.nix"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def build_ok(store, expr_path, **kw):
    proc, result = store.build(expr_path, **kw)
    assert proc.returncode == 0, "nix-build failed:\n%s" % proc.stderr[-6000:]
    assert result and os.path.isfile(result)
    return proc, result


def blob_digests(entry):
    return {entry["config_digest"]} | set(l["digest"] for l in entry["layers"])


def assert_loads(archive, entry, repo_tag):
    # podman wants a short runroot path (< 50 characters): not under pytest's tmp_path
    workdir = tempfile.mkdtemp(prefix="hnix-", dir="/tmp")
    try:
        podman = Podman(workdir)
        names = podman.load(archive)
        images = podman.images()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert len(images) == 1, images
    assert images[0]["id"] == entry["config_digest"]
    assert repo_tag in images[0]["names"] or ("localhost/" + repo_tag) in images[0]["names"], (images, names)
    return images[0]


def blob_gets(reg, status=200):
    return [r for r in reg.requests() if r["method"] == "GET" and "/blobs/" in r["path"] and r["status"] == status
            and "curl" in (r.get("user_agent") or "")]


# ---------------------------------------------------------------------------------------------------------
# anonymous registry
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, platform", [
    ("oci-simple", "linux/amd64"),      # OCI manifest, two gzip layers
    ("docker-list", "linux/arm64/v8"),  # docker manifest list: a non-host platform picked from the index
    ("oci-index", "linux/amd64"),       # OCI index with an attestation
    ("zstd", "linux/amd64"),            # zstd layers kept compressed in the archive
])
def test_fetchurl_build_and_podman_load(registry_anonymous, seeded, tmp_path, kind, platform):
    reg = registry_anonymous
    info = seeded(reg)[kind]
    text, entry = emit(reg.url, info, platform)
    reg.clear_log()
    store = NixStore(tmp_path / "nix")
    _proc, archive = build_ok(store, write_expr(tmp_path, text))

    # every blob was fetched by the Nix builder (curl), each exactly once
    fetched = [r["path"].rsplit("/", 1)[1] for r in blob_gets(reg)]
    assert sorted(fetched) == sorted(blob_digests(entry))

    repo_tag = "%s/%s:%s" % (reg.host, info.repository, info.tag)
    assert os.path.basename(archive).endswith("-docker-image-%s-%s.tar" % (info.repository.replace("/", "-"), info.tag))
    assert_loads(archive, entry, repo_tag)


def test_fetchurl_archive_is_reproducible(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    text, _entry = emit(reg.url, info)
    path = write_expr(tmp_path, text)
    _p1, first = build_ok(NixStore(tmp_path / "a"), path)
    _p2, second = build_ok(NixStore(tmp_path / "b"), path)

    def digest(p):
        with open(p, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()

    assert digest(first) == digest(second)


def test_fetchurl_corrupted_blob_is_rejected_by_nix(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    entry = info.platforms["linux/amd64"]
    layer = entry["layers"][0]["digest"]
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("flip", method="GET", path=r"/blobs/" + layer, offset=5, mask=0x01)
        text, _entry = emit(proxy.url, info)
        proc, result = NixStore(tmp_path / "nix").build(write_expr(tmp_path, text))
    assert proc.returncode != 0 and result is None
    assert "hash mismatch" in proc.stderr
    assert layer[7:] in proc.stderr or nix.sri(layer) in proc.stderr


def test_fetchurl_follows_blob_redirect_without_leaking_auth(registry_token, seeded, tmp_path):
    """A 307 to object storage: curl follows it and does not send the registry's bearer token there
    (the test bed's blob host answers 400 to requests carrying Authorization, as S3 does)."""
    reg = registry_token
    info = seeded(reg)["oci-simple"]
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("redirect_blob", method="GET", path=r"/blobs/sha256:")
        text, entry = emit(proxy.url, info)
        _proc, archive = build_ok(NixStore(tmp_path / "nix"), write_expr(tmp_path, text))
        served = [r for r in proxy.blob_requests() if r["status"] == 200]
    assert len(served) == len(blob_digests(entry))
    for r in served:
        assert not any(k.lower() == "authorization" for k in r["headers"])
    assert_loads(archive, entry, "%s/%s:%s" % (proxy.host, info.repository, info.tag))


# ---------------------------------------------------------------------------------------------------------
# token registry (anonymous pull token, like Docker Hub / GHCR) and credentials
# ---------------------------------------------------------------------------------------------------------

def test_fetchurl_token_registry_anonymous_pull_token(registry_token, seeded, tmp_path):
    reg = registry_token
    info = seeded(reg)["oci-simple"]
    text, entry = emit(reg.url, info)
    reg.clear_log()
    before = len(reg.token_requests())
    store = NixStore(tmp_path / "nix")
    _proc, archive = build_ok(store, write_expr(tmp_path, text))
    assert len(blob_gets(reg, 401)) == len(blob_digests(entry))   # challenged ...
    assert len(blob_gets(reg, 200)) == len(blob_digests(entry))   # ... then served with the token
    new = reg.token_requests()[before:]
    assert len(new) == len(blob_digests(entry))
    assert all("repository:%s:pull" % info.repository in json.dumps(t) for t in new)
    assert_loads(archive, entry, "%s/%s:%s" % (reg.host, info.repository, info.tag))


def test_fetchurl_token_registry_with_credentials(fresh_registry, tmp_path):
    """Anonymous pulls refused by the token server: the build fails with a clear message without
    credentials, and succeeds with nixpkgs-style DOCKER_USER/DOCKER_PASS in the builder environment."""
    from testbed.builder import seed

    reg = fresh_registry("token")
    info = seed(reg, kinds=["oci-simple"])["oci-simple"]
    reg.token_server.anonymous_actions = set()
    text, entry = emit(reg.url, info)
    path = write_expr(tmp_path, text)

    proc, result = NixStore(tmp_path / "anon").build(path)
    assert proc.returncode != 0 and result is None
    assert "HOCKER_REGISTRY_USERNAME" in proc.stderr  # tells the user how to pass credentials

    wrong = {"DOCKER_USER": reg.username, "DOCKER_PASS": "not-the-password"}
    proc, result = NixStore(tmp_path / "wrong").build(path, env=wrong)
    assert proc.returncode != 0 and "credentials" in proc.stderr
    assert "not-the-password" not in proc.stderr

    store = NixStore(tmp_path / "nix")
    proc, archive = build_ok(store, path, env={"DOCKER_USER": reg.username, "DOCKER_PASS": reg.password})
    assert reg.password not in proc.stdout + proc.stderr
    assert reg.password.encode() not in store.store_text()
    assert_loads(archive, entry, "%s/%s:%s" % (reg.host, info.repository, info.tag))


# ---------------------------------------------------------------------------------------------------------
# basic-auth registry (TLS with the test bed's CA)
# ---------------------------------------------------------------------------------------------------------

def test_fetchurl_basic_auth_from_environment(registry_basic, seeded, tmp_path):
    reg = registry_basic
    info = seeded(reg)["oci-simple"]
    text, entry = emit(reg.url, info)
    assert reg.password not in text
    path = write_expr(tmp_path, text)
    env = {"HOCKER_REGISTRY_USERNAME": reg.username, "HOCKER_REGISTRY_PASSWORD": reg.password,
           "HOCKER_REGISTRY_CA_FILE": reg.ca_path}

    proc, result = NixStore(tmp_path / "nocreds").build(path, env={"HOCKER_REGISTRY_CA_FILE": reg.ca_path})
    assert proc.returncode != 0 and result is None
    assert "needs credentials" in proc.stderr

    store = NixStore(tmp_path / "nix")
    proc, archive = build_ok(store, path, env=env)
    assert reg.password not in proc.stdout + proc.stderr
    assert reg.password.encode() not in store.store_text()
    assert_loads(archive, entry, "%s/%s:%s" % (reg.host, info.repository, info.tag))


def test_fetchurl_basic_auth_from_credentials_file(registry_basic, seeded, tmp_path):
    """hocker's credentials-file format, given as the credentialsFile argument (a string path outside
    the store) and, separately, through HOCKER_REGISTRY_CREDENTIALS_FILE."""
    reg = registry_basic
    info = seeded(reg)["oci-simple"]
    text, entry = emit(reg.url, info)
    path = write_expr(tmp_path, text)
    creds = tmp_path / "secret" / "registry-credentials"
    creds.parent.mkdir()
    creds.write_text("USERNAME=%s\nPASSWORD=%s\n" % (reg.username, reg.password))
    os.chmod(str(creds), 0o600)

    store = NixStore(tmp_path / "nix")
    proc, archive = build_ok(store, path, env={"HOCKER_REGISTRY_CA_FILE": reg.ca_path},
                             args=["--argstr", "credentialsFile", str(creds)])
    assert reg.password.encode() not in store.store_text()
    assert_loads(archive, entry, "%s/%s:%s" % (reg.host, info.repository, info.tag))

    store2 = NixStore(tmp_path / "nix2")
    build_ok(store2, path, env={"HOCKER_REGISTRY_CA_FILE": reg.ca_path,
                                "HOCKER_REGISTRY_CREDENTIALS_FILE": str(creds)})
    assert reg.password.encode() not in store2.store_text()


# ---------------------------------------------------------------------------------------------------------
# the module docker_registry_nix
# ---------------------------------------------------------------------------------------------------------

GOLDEN_DIR = "/work/shared/fixtures/hocker-docker2nix"
_golden_alt = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "shared", "fixtures",
                           "hocker-docker2nix")
if os.path.isdir(_golden_alt):
    GOLDEN_DIR = _golden_alt


def run_nix_module(args, **kw):
    from testbed.modrun import run_module

    return run_module("docker_registry_nix", args, **kw)


def test_module_fetchurl_builds_and_loads(registry_token, seeded, tmp_path):
    """The module fetches the manifest (anonymous token, index -> chosen platform), writes the .nix
    file idempotently, and the file builds into an archive podman loads."""
    reg = registry_token
    info = seeded(reg)["docker-list"]
    dest = str(tmp_path / "image.nix")
    args = dict(image=info.image(reg.host), platform="linux/arm/v7", format="fetchurl", dest=dest)

    check = run_nix_module(args, check=True)
    assert check["rc"] == 0 and check["changed"] is True, check
    assert not os.path.exists(dest)

    first = run_nix_module(args, diff=True)
    assert first["rc"] == 0 and first["changed"] is True, first
    entry = info.platforms["linux/arm/v7"]
    assert first["digest"] == info.digest
    assert first["manifest_digest"] == entry["manifest_digest"]
    assert first["config_digest"] == entry["config_digest"]
    assert first["platform"] == "linux/arm/v7"
    assert first["registry_url"] == reg.url
    with open(dest) as f:
        assert f.read() == first["expression"]
    assert first["diff"]["after"]["digest"] != first["diff"]["before"]["digest"]

    again = run_nix_module(args)
    assert again["changed"] is False and again["expression"] == first["expression"]

    _proc, archive = build_ok(NixStore(tmp_path / "nix"), dest)
    assert_loads(archive, entry, "%s/%s:%s" % (reg.host, info.repository, info.tag))


def test_module_fetchdocker_golden_from_saved_manifest(tmp_path):
    """With a saved manifest nothing is fetched (the registry named does not even exist)."""
    dest = str(tmp_path / "debian.nix")
    res = run_nix_module(dict(registry="https://registry-1.docker.io/v2/", image="library/debian", tag="jessie",
                              manifest=os.path.join(GOLDEN_DIR, "manifest-debian_jessie.json"), dest=dest))
    assert res["rc"] == 0 and res["changed"] is True, res
    with open(os.path.join(GOLDEN_DIR, "golden-debian_jessie.nix")) as f:
        assert "".join(res["expression"].split()) == "".join(f.read().split())
    assert res["bytes_downloaded"] == 0
    assert res["format"] == "fetchdocker"
    assert res["image"] == "registry-1.docker.io/library/debian:jessie"
    assert res["config_digest"] == "sha256:054abe38b1e6f863befa4258cbfaf127b1cc9440d2e2e349b15d22e676b591e7"
    with open(os.path.join(GOLDEN_DIR, "manifest-debian_jessie.json"), "rb") as f:
        assert res["manifest_digest"] == "sha256:" + hashlib.sha256(f.read()).hexdigest()
    assert run_nix_module(dict(image="debian:jessie", dest=dest,
                               manifest=os.path.join(GOLDEN_DIR, "manifest-debian_jessie.json")))["changed"] is False


def test_module_fetchdocker_from_registry_parses(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    res = run_nix_module(dict(image=info.image(reg.host)))
    assert res["rc"] == 0, res
    assert "manifest is OCI" in json.dumps(res.get("warnings", []))  # warnings may be structured (2.19+)
    proc = subprocess.run([_tool("nix-instantiate"), "--parse", "-E", res["expression"]], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    entry = info.platforms["linux/amd64"]
    assert nix.nix_base32_digest(entry["config_digest"]) in res["expression"]
    for layer in entry["layers"]:
        assert layer["digest"][7:] in res["expression"]
    assert 'registry = "%s/v2/";' % reg.url in res["expression"]
    assert 'repository = "testbed";' in res["expression"] and 'imageName = "oci-simple";' in res["expression"]


def test_module_saved_index_and_digest_mismatch(tmp_path):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                 "manifests": []}))
    res = run_nix_module(dict(image="127.0.0.1:9/app:v1", manifest=str(index)))
    assert res.get("failed") and "index" in res["msg"], res
    res = run_nix_module(dict(image="app@sha256:" + "0" * 64,
                              manifest=os.path.join(GOLDEN_DIR, "manifest-debian_jessie.json")))
    assert res.get("failed") and "digest" in res["msg"], res
    res = run_nix_module(dict(image="app@sha256:" + "0" * 64, format="fetchdocker",
                              manifest=os.path.join(GOLDEN_DIR, "manifest-debian_jessie.json")))
    assert res.get("failed")
