"""Unit tests for the Nix emitter (plugins/module_utils/_registry/nix.py).

Nix itself (Debian's nix-bin) checks the generated text: every expression goes through
``nix-instantiate --parse``, strings are evaluated back with ``nix-instantiate --eval``, and hashes are
compared with ``nix-hash`` / ``nix hash``. A missing nix-bin fails these tests (it is a CI requirement).
"""
import copy
import hashlib
import json
import os
import posixpath
import random
import re
import shutil
import subprocess
from urllib.parse import urlsplit, urlunsplit

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import nix
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    InvalidReference,
    ManifestError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))))
FIXTURES = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "hocker-docker2nix")
if not os.path.isdir(FIXTURES):
    FIXTURES = "/work/shared/fixtures/hocker-docker2nix"
STUB_PKGS = os.path.join(ROOT, "tests", "e2e", "nix", "stub-pkgs.nix")

HUB = "https://registry-1.docker.io/v2/"
GOLDEN_CONFIG = "sha256:054abe38b1e6f863befa4258cbfaf127b1cc9440d2e2e349b15d22e676b591e7"
GOLDEN_LAYER = "sha256:cd0a524342efac6edff500c17e625735bbe479c926439b263bbe3c8518a0849c"


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------

def _tool(name):
    path = shutil.which(name)
    assert path, "%s is required for these tests (Debian package nix-bin)" % name
    return path


@pytest.fixture
def nixenv(tmp_path):
    """Environment for nix commands that may write to a store: a private store under tmp_path."""
    env = dict(os.environ)
    env.pop("NIX_REMOTE", None)
    env.update(NIX_STORE_DIR=str(tmp_path / "store"), NIX_STATE_DIR=str(tmp_path / "var"),
               NIX_LOG_DIR=str(tmp_path / "log"), NIX_CONF_DIR=str(tmp_path / "etc"))
    return env


def nix_parse(text, tmp_path=None):
    """``nix-instantiate --parse`` the text; returns the parsed form (fails the test on a parse error)."""
    proc = subprocess.run([_tool("nix-instantiate"), "--parse", "-E", text], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, "nix-instantiate --parse failed:\n%s\n---\n%s" % (proc.stderr, text)
    return proc.stdout


def nix_eval(expr, env=None):
    """Evaluate a Nix expression strictly and return it as Python data (via --json)."""
    proc = subprocess.run([_tool("nix-instantiate"), "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, "nix-instantiate --eval failed:\n%s\n---\n%s" % (proc.stderr, expr)
    return json.loads(proc.stdout)


def nix_eval_fails(expr, env=None):
    proc = subprocess.run([_tool("nix-instantiate"), "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode != 0, "evaluation unexpectedly succeeded: %s" % proc.stdout
    return proc.stderr


def write(tmp_path, text, name="image.nix"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def squash(text):
    return "".join(text.split())


def golden_manifest():
    with open(os.path.join(FIXTURES, "manifest-debian_jessie.json")) as f:
        return json.load(f)


def golden_nix():
    with open(os.path.join(FIXTURES, "golden-debian_jessie.nix")) as f:
        return f.read()


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_manifest(n_layers=3, oci=False, layer_type=None, seed=1):
    rng = random.Random(seed)
    cfg = digest_of(b"config-%d" % seed)
    layers = []
    for i in range(n_layers):
        layers.append({
            "mediaType": layer_type or ("application/vnd.oci.image.layer.v1.tar+gzip" if oci
                                        else "application/vnd.docker.image.rootfs.diff.tar.gzip"),
            "size": rng.randint(100, 10 ** 8),
            "digest": digest_of(b"layer-%d-%d" % (seed, i)),
        })
    m = {"schemaVersion": 2,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json" if oci
                    else "application/vnd.docker.container.image.v1+json", "size": 1234, "digest": cfg},
         "layers": layers}
    m["mediaType"] = ("application/vnd.oci.image.manifest.v1+json" if oci
                      else "application/vnd.docker.distribution.manifest.v2+json")
    return m


def hocker_blob_url(registry, repository, image_name, digest_hex):
    """The URL hocker-layer requests, computed like hocker's ``joinURIPath``: POSIX path joining of
    ``/``, ``v2``, the registry URI's path and ``<repository>/<imageName>`` (an absolute registry path
    replaces the leading ``/v2``), followed by ``blobs/sha256:<hex>``."""
    parts = urlsplit(registry)
    path = posixpath.join("/", "v2", parts.path, repository + "/" + image_name, "blobs", "sha256:" + digest_hex)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


STORE_NAME_RE = re.compile(r"^[A-Za-z0-9+\-_?=][A-Za-z0-9+\-._?=]*$")

# stand-ins for nixpkgs' fetchdocker functions that return their arguments, so the emitted call can be
# inspected after evaluation
ECHO_FETCHERS = "{ fetchDockerConfig = a: a; fetchDockerLayer = a: a; fetchdocker = a: a; }"


# ---------------------------------------------------------------------------------------------------------
# Nix base-32 and SRI
# ---------------------------------------------------------------------------------------------------------

def test_base32_golden_hashes_are_the_manifest_digests():
    golden = golden_nix()
    hashes = re.findall(r'sha256 = "([0-9a-z]{52})"', golden)
    assert hashes == [nix.nix_base32_digest(GOLDEN_CONFIG), nix.nix_base32_digest(GOLDEN_LAYER)]
    assert nix.nix_base32(bytes.fromhex(GOLDEN_CONFIG.split(":")[1])) == "1rwinmvfc8jxn54y7qnj82acrc97y7xcnn22zaz67y76n4wbwjh5"
    assert nix.nix_base32_digest(GOLDEN_LAYER.split(":")[1]) == "1744l0c8ag5y7ck9nhr6r5wy9frmaxi7xh80ypgnxb7g891m42nd"


def test_base32_known_vectors():
    # sha256 of the empty string, as Nix prints it
    assert nix.nix_base32(hashlib.sha256(b"").digest()) == "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
    assert nix.nix_base32(b"") == ""
    assert nix.nix_base32(b"\x00") == "00"
    assert nix.nix_base32(b"\xff") == "7z"
    assert len(nix.nix_base32(bytes(32))) == 52
    assert len(nix.nix_base32(bytes(64))) == 103


def test_base32_matches_nix_hash_binary():
    rng = random.Random(8)
    hexes = [hashlib.sha256(rng.randbytes(40)).hexdigest() for _i in range(12)]
    hexes += ["0" * 64, "f" * 64, "80" + "0" * 62, "0" * 62 + "01"]
    for h in hexes:
        out = subprocess.run([_tool("nix-hash"), "--type", "sha256", "--to-base32", h],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert nix.nix_base32(bytes.fromhex(h)) == out
        assert nix.nix_base32_decode(out) == bytes.fromhex(h)


def test_base32_decode_rejects_garbage():
    with pytest.raises(ValueError):
        nix.nix_base32_decode("e" * 52)  # 'e' is not in Nix's alphabet
    with pytest.raises(ValueError):
        nix.nix_base32_decode("z" * 52)  # more than 256 bits


def test_sri():
    assert nix.sri("sha256:" + hashlib.sha256(b"").hexdigest()) == "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert nix.sri(GOLDEN_CONFIG) == nix.sri(GOLDEN_CONFIG.split(":")[1])
    assert nix.sri("sha512:" + hashlib.sha512(b"x").hexdigest()).startswith("sha512-")
    out = subprocess.run([_tool("nix"), "--extra-experimental-features", "nix-command", "hash", "to-sri",
                          "--type", "sha256", GOLDEN_LAYER.split(":")[1]],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert nix.sri(GOLDEN_LAYER) == out


@pytest.mark.parametrize("bad", [
    "sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32, "sha256:" + "g" * 64, "", None,
    "sha256:" + "a" * 64 + "\n", "sha256:" + "a" * 64 + '"',
])
def test_split_digest_rejects(bad):
    with pytest.raises(ManifestError):
        nix.split_digest(bad)


def test_split_digest_algorithm_restriction():
    assert nix.split_digest("a" * 64) == ("sha256", "a" * 64)
    with pytest.raises(ManifestError):
        nix.split_digest("sha512:" + "a" * 128, algorithms=("sha256",))


# ---------------------------------------------------------------------------------------------------------
# escaping
# ---------------------------------------------------------------------------------------------------------

NASTY = [
    "plain",
    'quote " inside',
    "dollar-brace ${builtins.abort \"pwned\"}",
    "$${x}",
    "back\\slash\\",
    "\\${x}",
    "new\nline\r\ttab",
    "''${x}",
    "unicode \u00e9\u4e2d \U0001F600",
    "ends with $",
    "$",
    "\\",
    '"; x = import /etc/passwd; y = "',
]


@pytest.mark.parametrize("value", NASTY)
def test_nix_string_round_trips(value):
    literal = nix.nix_string(value)
    nix_parse(literal)
    assert nix_eval(literal) == value


def test_nix_string_rejects_nul():
    with pytest.raises(ValueError):
        nix.nix_string("a\x00b")


def test_indented_string_scripts_round_trip():
    for script in (nix.FETCH_SCRIPT, nix.ASSEMBLE_SCRIPT):
        assert nix_eval("let s = " + nix.nix_indented_string(script, 4) + "; in s") == script
    assert nix_eval(nix.nix_indented_string("a\n  ${b}\nc", 2)) == "a\n  ${b}\nc"
    for bad in ("a''b", "x'${y}", "ends'", "tab\there"):
        with pytest.raises(ValueError):
            nix.nix_indented_string(bad, 2)


def test_comment_cannot_break_out():
    assert "\n" not in nix.nix_comment("a\nb = 1;")
    text = nix.fetchurl_expression("http://127.0.0.1:5000", "app", "v1", make_manifest(1),
                                   image='evil\nin builtins.abort "x"', platform="linux/amd64\n}")
    nix_parse(text)


# ---------------------------------------------------------------------------------------------------------
# format: fetchdocker
# ---------------------------------------------------------------------------------------------------------

def test_fetchdocker_matches_hocker_golden():
    out = nix.fetchdocker_expression(HUB, "library/debian", "jessie", golden_manifest())
    assert squash(out) == squash(golden_nix())
    nix_parse(out)


@pytest.mark.parametrize("registry", [
    "https://registry-1.docker.io/v2/", "https://registry-1.docker.io/v2", "https://registry-1.docker.io",
    "registry-1.docker.io", "https://docker.io", "https://index.docker.io/v2/",
])
def test_fetchdocker_golden_with_registry_spellings(registry):
    out = nix.fetchdocker_expression(registry, "library/debian", "jessie", golden_manifest())
    assert squash(out) == squash(golden_nix())


def test_fetchdocker_manifest_as_bytes_and_object():
    raw = open(os.path.join(FIXTURES, "manifest-debian_jessie.json"), "rb").read()

    class FakeManifest:
        data = json.loads(raw)

    for value in (raw, raw.decode("utf-8"), FakeManifest()):
        assert squash(nix.fetchdocker_expression(HUB, "library/debian", "jessie", value)) == squash(golden_nix())


def test_fetchdocker_alt_name():
    out = nix.fetchdocker_expression(HUB, "library/debian", "jessie", golden_manifest(), name="my-debian")
    data = nix_eval("(%s) %s" % (out, ECHO_FETCHERS))
    assert data["name"] == "my-debian"
    assert data["imageName"] == "debian"


def test_fetchdocker_multi_layer_evaluates():
    m = make_manifest(4)
    out = nix.fetchdocker_expression("https://reg.example.com:8443", "team/app", "1.2", m)
    nix_parse(out)
    data = nix_eval("(%s) %s" % (out, ECHO_FETCHERS))
    assert data["registry"] == "https://reg.example.com:8443/v2/"
    assert (data["repository"], data["imageName"], data["tag"], data["name"]) == ("team", "app", "1.2", "app")
    assert data["imageConfig"]["sha256"] == nix.nix_base32_digest(m["config"]["digest"])
    assert data["imageConfig"]["tag"] == "1.2"
    assert len(data["imageLayers"]) == 4
    for layer, desc in zip(data["imageLayers"], m["layers"]):
        hexpart = desc["digest"].split(":")[1]
        assert layer["layerDigest"] == hexpart
        assert layer["sha256"] == nix.nix_base32(bytes.fromhex(hexpart))
        assert "tag" not in layer  # like hocker: fetchDockerLayer does not inherit tag


def test_fetchdocker_oci_manifest():
    m = make_manifest(2, oci=True)
    out = nix.fetchdocker_expression("https://ghcr.io", "owner/app", "v1", m)
    data = nix_eval("(%s) %s" % (out, ECHO_FETCHERS))
    assert [l["layerDigest"] for l in data["imageLayers"]] == [d["digest"][7:] for d in m["layers"]]


def test_fetchdocker_no_layers():
    m = make_manifest(0)
    out = nix.fetchdocker_expression(HUB, "library/scratchy", "v1", m)
    assert nix_eval("(%s) %s" % (out, ECHO_FETCHERS))["imageLayers"] == []


@pytest.mark.parametrize("path, registry, expected", [
    # (repository path, registry URL) -> (registry, repository, imageName)
    ("library/debian", "https://registry-1.docker.io", ("https://registry-1.docker.io/v2/", "library", "debian")),
    ("alpine", "http://127.0.0.1:5000", ("http://127.0.0.1:5000/", "v2", "alpine")),
    ("a/b/c", "https://reg.example.com", ("https://reg.example.com/v2/a/", "b", "c")),
    ("a/b/c/d/e", "https://reg.example.com:8443/v2/", ("https://reg.example.com:8443/v2/a/b/c/", "d", "e")),
])
def test_fetchdocker_name_mapping(path, registry, expected):
    names = nix.fetchdocker_names(registry, path)
    assert (names["registry"], names["repository"], names["imageName"]) == expected


@pytest.mark.parametrize("path", ["alpine", "team/app", "a/b/c", "org/team/sub/app"])
def test_fetchdocker_urls_are_right_for_any_depth(path):
    """Whatever the depth, hocker (driven by nixpkgs' fetchers) must request <registry>/v2/<path>/...,
    and repository/imageName must satisfy nixpkgs' asserts and store-name rules."""
    m = make_manifest(2)
    registry = "https://reg.example.com:5000"
    out = nix.fetchdocker_expression(registry, path, "v1", m)
    nix_parse(out)
    data = nix_eval("(%s) %s" % (out, ECHO_FETCHERS))
    assert "/" not in data["repository"] and "/" not in data["imageName"]
    assert STORE_NAME_RE.match(data["name"])
    # fetchDockerConfig's name and fetchDockerLayer's name must be valid store names
    assert STORE_NAME_RE.match("%s_%s_%s-config.json" % (data["repository"], data["imageName"], data["tag"]))
    for layer, desc in zip(data["imageLayers"], m["layers"]):
        assert hocker_blob_url(layer["registry"], layer["repository"], layer["imageName"], layer["layerDigest"]) \
            == "%s/v2/%s/blobs/%s" % (registry, path, desc["digest"])


def test_fetchdocker_golden_url():
    out = nix.fetchdocker_expression(HUB, "library/debian", "jessie", golden_manifest())
    layer = nix_eval("(%s) %s" % (out, ECHO_FETCHERS))["imageLayers"][0]
    assert hocker_blob_url(layer["registry"], layer["repository"], layer["imageName"], layer["layerDigest"]) == \
        "https://registry-1.docker.io/v2/library/debian/blobs/" + GOLDEN_LAYER


@pytest.mark.parametrize("tag", [t for t in NASTY if "\x00" not in t])
def test_fetchdocker_escapes_tag_and_name(tag):
    out = nix.fetchdocker_expression("https://reg.example.com", "app/x", tag, make_manifest(1), name=tag)
    nix_parse(out)
    data = nix_eval("(%s) %s" % (out, ECHO_FETCHERS))
    assert data["tag"] == tag and data["name"] == tag and data["imageConfig"]["tag"] == tag


def test_fetchdocker_needs_tag():
    with pytest.raises(InvalidReference):
        nix.fetchdocker_expression(HUB, "library/debian", None, golden_manifest())


def test_fetchdocker_rejects_sha512_layers():
    m = make_manifest(1)
    m["layers"][0]["digest"] = "sha512:" + hashlib.sha512(b"x").hexdigest()
    with pytest.raises(ManifestError):
        nix.fetchdocker_expression(HUB, "library/debian", "v1", m)


# ---------------------------------------------------------------------------------------------------------
# manifest validation (both formats)
# ---------------------------------------------------------------------------------------------------------

INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 10,
                   "digest": digest_of(b"m"), "platform": {"os": "linux", "architecture": "amd64"}}],
}


@pytest.mark.parametrize("fmt", nix.FORMATS)
@pytest.mark.parametrize("manifest, message", [
    (INDEX, "index"),
    (dict(INDEX, mediaType="application/vnd.docker.distribution.manifest.list.v2+json"), "index"),
    ({"schemaVersion": 1, "fsLayers": []}, "version 1"),
    ({"config": {"digest": GOLDEN_CONFIG}, "layers": []}, "schemaVersion"),
    ({"schemaVersion": 2, "layers": []}, "config"),
    ({"schemaVersion": 2, "config": {"digest": GOLDEN_CONFIG}}, "layers"),
    (b"not json", "JSON"),
    ([1, 2], "object"),
])
def test_bad_manifests(fmt, manifest, message):
    with pytest.raises(ManifestError) as exc:
        nix.nix_expression(fmt, HUB, "library/debian", "jessie", manifest)
    assert message in str(exc.value)


@pytest.mark.parametrize("fmt", nix.FORMATS)
def test_malicious_digest_is_refused(fmt):
    m = make_manifest(1)
    m["layers"][0]["digest"] = 'sha256:"; evil = true; x = "'
    with pytest.raises(ManifestError):
        nix.nix_expression(fmt, HUB, "library/debian", "v1", m)


def test_unknown_format():
    with pytest.raises(ValueError):
        nix.nix_expression("pullImage", HUB, "library/debian", "v1", golden_manifest())


@pytest.mark.parametrize("path", ["", "/", "a//b", "a/../b", None])
def test_bad_repository_path(path):
    with pytest.raises(InvalidReference):
        nix.fetchdocker_names("https://reg.example.com", path)


# ---------------------------------------------------------------------------------------------------------
# format: fetchurl
# ---------------------------------------------------------------------------------------------------------

def fetchurl_attrs(tmp_path, nixenv, text, args=""):
    """Evaluate the generated fetchurl expression against the stub package set and return the
    interesting attributes of the archive and blob derivations."""
    path = write(tmp_path, text)
    expr = """
      let
        img = import %s ({ pkgs = import %s { }; } // { %s });
        blob = d: { inherit (d.drvAttrs) name url outputHash outputHashMode outputHashAlgo impureEnvVars
                      credentialsFile scope; };
      in {
        name = img.name;
        manifestJson = img.drvAttrs.manifestJson;
        repositoriesJson = img.drvAttrs.repositoriesJson;
        members = img.drvAttrs.members;
        nblobs = builtins.length img.drvAttrs.blobs;
        config = blob img.imageConfig;
        layers = map blob img.imageLayers;
        inherit (img) imageDigest configDigest repoTags;
      }
    """ % (path, STUB_PKGS, args)
    return nix_eval(expr, env=nixenv)


def test_fetchurl_multi_layer(tmp_path, nixenv):
    m = make_manifest(3)
    mdigest = digest_of(json.dumps(m).encode())
    text = nix.fetchurl_expression("http://127.0.0.1:5000", "team/app", "1.0", m, manifest_digest=mdigest)
    nix_parse(text)
    a = fetchurl_attrs(tmp_path, nixenv, text)
    assert a["name"] == "docker-image-team-app-1.0.tar"
    assert a["imageDigest"] == mdigest and a["configDigest"] == m["config"]["digest"]
    assert a["repoTags"] == ["127.0.0.1:5000/team/app:1.0"]
    cfg_hex = m["config"]["digest"][7:]
    assert a["config"]["url"] == "http://127.0.0.1:5000/v2/team/app/blobs/" + m["config"]["digest"]
    assert a["config"]["outputHash"] == nix.sri(m["config"]["digest"])
    assert (a["config"]["outputHashMode"], a["config"]["outputHashAlgo"]) == ("flat", "sha256")
    assert a["config"]["scope"] == "repository:team/app:pull"
    assert a["config"]["credentialsFile"] == ""
    for var in ("HOCKER_REGISTRY_USERNAME", "HOCKER_REGISTRY_PASSWORD", "HOCKER_REGISTRY_TOKEN",
                "HOCKER_REGISTRY_CREDENTIALS_FILE", "https_proxy"):
        assert var in a["config"]["impureEnvVars"]
    for layer, desc in zip(a["layers"], m["layers"]):
        assert layer["url"].endswith("/v2/team/app/blobs/" + desc["digest"])
        assert layer["outputHash"] == nix.sri(desc["digest"])
        assert layer["name"] == "docker-layer-%s.tar.gz" % desc["digest"][7:]
    manifest_json = json.loads(a["manifestJson"])
    assert manifest_json == [{
        "Config": cfg_hex + ".json",
        "RepoTags": ["127.0.0.1:5000/team/app:1.0"],
        "Layers": [d["digest"][7:] + ".tar.gz" for d in m["layers"]],
    }]
    assert json.loads(a["repositoriesJson"]) == {"127.0.0.1:5000/team/app": {"1.0": m["layers"][-1]["digest"][7:]}}
    assert a["members"] == [cfg_hex + ".json"] + [d["digest"][7:] + ".tar.gz" for d in m["layers"]]


def test_fetchurl_docker_hub_names(tmp_path, nixenv):
    text = nix.fetchurl_expression(HUB, "library/debian", "jessie", golden_manifest())
    a = fetchurl_attrs(tmp_path, nixenv, text)
    assert a["repoTags"] == ["debian:jessie"]
    assert a["name"] == "docker-image-debian-jessie.tar"
    assert a["layers"][0]["url"] == "https://registry-1.docker.io/v2/library/debian/blobs/" + GOLDEN_LAYER
    assert a["layers"][0]["scope"] == "repository:library/debian:pull"


@pytest.mark.parametrize("path", ["alpine", "a/b/c"])
def test_fetchurl_any_depth(tmp_path, nixenv, path):
    text = nix.fetchurl_expression("https://reg.example.com", path, "v1", make_manifest(1))
    a = fetchurl_attrs(tmp_path, nixenv, text)
    assert a["layers"][0]["url"].startswith("https://reg.example.com/v2/%s/blobs/sha256:" % path)
    assert a["repoTags"] == ["reg.example.com/%s:v1" % path]
    assert STORE_NAME_RE.match(a["name"])


def test_fetchurl_oci_and_layer_suffixes(tmp_path, nixenv):
    m = make_manifest(3, oci=True)
    m["layers"][1]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    m["layers"][2]["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    a = fetchurl_attrs(tmp_path, nixenv, nix.fetchurl_expression("https://ghcr.io", "o/app", "2", m))
    layers = json.loads(a["manifestJson"])[0]["Layers"]
    assert [l.split(".", 1)[1] for l in layers] == ["tar.gz", "tar.zst", "tar"]


def test_fetchurl_duplicate_layers_fetched_once(tmp_path, nixenv):
    m = make_manifest(2)
    m["layers"].append(copy.deepcopy(m["layers"][0]))
    a = fetchurl_attrs(tmp_path, nixenv, nix.fetchurl_expression("https://reg.example.com", "app", "v1", m))
    assert a["nblobs"] == 3  # config + 2 distinct layers
    layers = json.loads(a["manifestJson"])[0]["Layers"]
    assert len(layers) == 3 and layers[0] == layers[2]
    assert len(a["layers"]) == 3 and a["layers"][0]["url"] == a["layers"][2]["url"]


def test_fetchurl_repo_tags_and_override(tmp_path, nixenv):
    m = make_manifest(1)
    text = nix.fetchurl_expression("https://reg.example.com", "app", "v1", m, repo_tags=["app:v1", "app:stable"])
    a = fetchurl_attrs(tmp_path, nixenv, text)
    assert json.loads(a["repositoriesJson"]) == {"app": {"v1": m["layers"][0]["digest"][7:],
                                                         "stable": m["layers"][0]["digest"][7:]}}
    a = fetchurl_attrs(tmp_path, nixenv, text, 'repoTags = [ "other/name:x" ];')
    assert json.loads(a["manifestJson"])[0]["RepoTags"] == ["other/name:x"]


def test_fetchurl_digest_only(tmp_path, nixenv):
    m = make_manifest(1)
    mdigest = digest_of(b"manifest")
    a = fetchurl_attrs(tmp_path, nixenv, nix.fetchurl_expression("https://reg.example.com", "app", None, m,
                                                                 manifest_digest=mdigest))
    assert a["repoTags"] == []
    assert json.loads(a["manifestJson"])[0]["RepoTags"] == []
    assert a["name"] == "docker-image-app-%s.tar" % mdigest[7:19]


def test_fetchurl_credentials_file_must_be_a_string(tmp_path, nixenv):
    text = nix.fetchurl_expression("https://reg.example.com", "app", "v1", make_manifest(1))
    a = fetchurl_attrs(tmp_path, nixenv, text, 'credentialsFile = "/run/secrets/registry";')
    assert a["config"]["credentialsFile"] == "/run/secrets/registry"
    path = write(tmp_path, text)
    err = nix_eval_fails("(import %s { pkgs = import %s { }; credentialsFile = /etc/hostname; }).drvPath"
                         % (path, STUB_PKGS), env=nixenv)
    assert "assertion" in err


def test_fetchurl_never_contains_credentials():
    text = nix.fetchurl_expression("https://reg.example.com", "app", "v1", make_manifest(1))
    assert "Authorization" in text  # the header is built at build time from the environment only
    for line in text.splitlines():
        assert not re.search(r"(password|token|username)\s*=\s*\"", line, re.I), line
    with pytest.raises(InvalidReference) as exc:
        nix.fetchurl_expression("https://user:secret@reg.example.com", "app", "v1", make_manifest(1))
    assert "secret" not in str(exc.value)


@pytest.mark.parametrize("tag", [t for t in NASTY if "\x00" not in t])
def test_fetchurl_escapes_user_strings(tmp_path, nixenv, tag):
    text = nix.fetchurl_expression("https://reg.example.com", "app", tag, make_manifest(1), repo_tags=[tag],
                                   image=tag, name=tag)
    nix_parse(text)
    path = write(tmp_path, text)
    assert nix_eval("(import %s { pkgs = import %s { }; }).repoTags" % (path, STUB_PKGS), env=nixenv) == [tag]


def test_fetchurl_rejects_bad_repo_tag_at_evaluation(tmp_path, nixenv):
    text = nix.fetchurl_expression("https://reg.example.com", "app", "v1", make_manifest(1), repo_tags=["no-tag"])
    path = write(tmp_path, text)
    err = nix_eval_fails("(import %s { pkgs = import %s { }; }).drvAttrs.repositoriesJson" % (path, STUB_PKGS),
                         env=nixenv)
    assert "NAME:TAG" in err


def test_every_expression_parses_for_many_shapes():
    for n in (0, 1, 5):
        for oci in (False, True):
            m = make_manifest(n, oci=oci, seed=n + 10)
            for fmt in nix.FORMATS:
                for path in ("x", "library/x", "a/b/c/d"):
                    nix_parse(nix.nix_expression(fmt, "https://reg.example.com", path, "t", m))
