"""Malformed input, hostile answers and network faults, one module run each: a clear message, no traceback,
nothing written, no secret shown. Every passed case is a row of docs/reliability.md (tests/e2e/reliability.py).
"""
import json
import os
import socket

import pytest

from helpers import assert_clean_failure, sha256_file, warning_texts
from reliability import record
from testbed.fakeregistry import FakeRegistry
from testbed.modrun import run_module
from testbed.proxy import FaultProxy

DEEP = "[" * 20000 + "]" * 20000
SECRET = "Sup3r-s3cret-Pw"
DIGEST = "sha256:" + "a" * 64


# (id, area, case, expected message words, module, args): ``args`` may name the keys ``{image}`` (a seeded
# image on the anonymous registry), ``{registry}`` (its URL), ``{tmp}`` (a fresh directory).
OPTION_CASES = [
    ("timeout-zero", "options", "timeout: 0", "timeout must be from 1 to 3600",
     "docker_registry_manifest", {"image": "{image}", "timeout": 0}),
    ("timeout-negative", "options", "timeout: -5", "timeout must be from 1 to 3600",
     "docker_registry_manifest", {"image": "{image}", "timeout": -5}),
    ("timeout-huge", "options", "timeout: 10^12", "timeout must be from 1 to 3600",
     "docker_registry_manifest", {"image": "{image}", "timeout": 10 ** 12}),
    ("retries-negative", "options", "retries: -1", "retries must be from 0 to 100",
     "docker_registry_manifest", {"image": "{image}", "retries": -1}),
    ("retries-huge", "options", "retries: 10^9", "retries must be from 0 to 100",
     "docker_registry_manifest", {"image": "{image}", "retries": 10 ** 9}),
    ("max-workers-zero", "options", "max_workers: 0", "max_workers must be from 1 to 64",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/a.tar", "max_workers": 0}),
    ("inflation-negative", "options", "max_inflation_ratio: -1", "max_inflation_ratio must be 0",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/a.tar", "max_inflation_ratio": -1}),
    ("client-cert-alone", "options", "client_cert without client_key", "required together",
     "docker_registry_manifest", {"image": "{image}", "client_cert": "/etc/hostname"}),
    ("token-and-user", "options", "token with username/password", "mutually exclusive",
     "docker_registry_manifest", {"image": "{image}", "token": "a-static-token", "username": "u", "password": SECRET}),
    ("offline-no-store", "options", "offline without cache_dir", "offline needs cache_dir",
     "docker_registry_manifest", {"image": "{image}", "offline": True}),
    ("format-unknown", "options", "format: zip", "value of format must be one of",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/a.tar", "format": "zip"}),
    ("layer-and-index", "options", "layer and index together", "mutually exclusive",
     "docker_registry_layer", {"image": "{image}", "dest": "{tmp}/l", "layer": DIGEST, "index": 0}),
    ("layer-neither", "options", "neither layer nor index", "one of the following is required",
     "docker_registry_layer", {"image": "{image}", "dest": "{tmp}/l"}),
    ("ca-path-missing", "options", "ca_path names no file", "does not exist",
     "docker_registry_manifest", {"image": "{image}", "ca_path": "{tmp}/nothing.pem"}),
    ("ca-path-empty-dir", "options", "ca_path is a directory without certificates", "without *.crt",
     "docker_registry_manifest", {"image": "{image}", "ca_path": "{tmp}"}),
    ("cache-dir-nul", "options", "cache_dir with a NUL byte", "contains a NUL byte",
     "docker_registry_manifest", {"image": "{image}", "cache_dir": "{tmp}/a\0b"}),
    ("repo-tags-no-tag", "options", "repo_tags entry without a tag", "must look like name:tag",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/a.tar", "repo_tags": ["notag"]}),
    ("repo-tags-digest", "options", "repo_tags entry with a digest", "must look like name:tag",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/a.tar", "repo_tags": ["app@" + DIGEST]}),
    ("all-docker-archive", "options", "platform: all into a docker-archive", "platform=all needs format",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/a.tar", "platform": "all"}),
    ("gzip-oci-dir", "options", "compression: gzip with format: oci-dir", "compression applies to archives",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/d", "format": "oci-dir", "compression": "gzip"}),
    ("image-empty", "references", "image: ''", "non-empty image reference",
     "docker_registry_manifest", {"image": ""}),
    ("image-whitespace", "references", "image with a space", "whitespace",
     "docker_registry_manifest", {"image": "team/my app"}),
    ("image-uppercase", "references", "image with capitals", "lowercase",
     "docker_registry_manifest", {"image": "Team/App"}),
    ("image-url", "references", "image given as a URL", "give the registry URL in the registry option",
     "docker_registry_manifest", {"image": "https://reg.example.com/app"}),
    ("image-credentials", "references", "user:password@ typed into image", "image must not contain credentials",
     "docker_registry_manifest", {"image": "deploy:%s@reg.example.com/app:1" % SECRET}),
    ("registry-credentials", "references", "user:password@ typed into registry", "registry must not contain credentials",
     "docker_registry_manifest", {"image": "app", "registry": "https://deploy:%s@reg.example.com" % SECRET}),
    ("mirror-credentials", "references", "user:password@ typed into a mirror", "registry_mirrors must not contain",
     "docker_registry_manifest", {"image": "app", "registry_mirrors": ["https://u:%s@mirror.example" % SECRET]}),
    ("registry-scheme", "references", "registry: ftp://...", "only http:// and https://",
     "docker_registry_manifest", {"image": "app", "registry": "ftp://reg.example.com"}),
    ("registry-path", "references", "registry URL with a path", "no path other than /v2/",
     "docker_registry_manifest", {"image": "app", "registry": "https://reg.example.com/some/path"}),
    ("registry-port", "references", "registry port 99999", "invalid port",
     "docker_registry_manifest", {"image": "app", "registry": "https://reg.example.com:99999"}),
    ("image-and-registry", "references", "image names a registry and registry is set", "names a registry",
     "docker_registry_manifest", {"image": "other.example.com/app", "registry": "https://reg.example.com"}),
    ("tag-conflict", "references", "image tag and tag option differ", "carries tag",
     "docker_registry_manifest", {"image": "app:1", "tag": "2"}),
    ("tag-invalid", "references", "tag '-bad'", "invalid tag",
     "docker_registry_manifest", {"image": "app", "tag": "-bad"}),
    ("digest-short", "references", "a digest too short", "invalid digest",
     "docker_registry_manifest", {"image": "app@sha256:abc"}),
    ("digest-algorithm", "references", "md5 digest", "unsupported digest algorithm",
     "docker_registry_manifest", {"image": "app@md5:" + "a" * 32}),
    ("image-id", "references", "a 64-hex image ID as image", "image ID, not a repository",
     "docker_registry_manifest", {"image": "b" * 64}),
    ("platform-empty-arch", "references", "platform: 'linux/'", "invalid platform",
     "docker_registry_manifest", {"image": "{image}", "platform": "linux/"}),
    ("platform-unknown", "references", "platform: 'foo'", "known architecture",
     "docker_registry_manifest", {"image": "{image}", "platform": "foo"}),
    ("layer-bad-digest", "references", "layer: 'sha256:zz'", "invalid layer",
     "docker_registry_layer", {"image": "{image}", "dest": "{tmp}/l", "layer": "sha256:zz"}),
    ("dest-empty", "destinations", "dest: ''", "non-empty path",
     "docker_registry_manifest", {"image": "{image}", "dest": ""}),
    ("dest-nul", "destinations", "dest with a NUL byte", "contains a NUL byte",
     "docker_registry_config", {"image": "{image}", "dest": "{tmp}/a\0b"}),
    ("dest-device", "destinations", "dest: /dev/null", "a character device, not a regular file",
     "docker_registry_manifest", {"image": "{image}", "dest": "/dev/null"}),
    ("dest-fifo", "destinations", "dest is a fifo", "a fifo, not a regular file",
     "docker_registry_layer", {"image": "{image}", "dest": "{tmp}/fifo", "index": 0}),
    ("dest-directory", "destinations", "config dest is an existing directory", "a directory, not a regular file",
     "docker_registry_config", {"image": "{image}", "dest": "{tmp}"}),
    ("dest-symlink", "destinations", "dest is a symlink (no follow)", "is a symlink",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/link.tar"}),
    ("dest-no-parent", "destinations", "the directory of dest does not exist", "does not exist",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/missing/a.tar"}),
    ("oci-dir-foreign", "destinations", "oci-dir dest is a directory someone else wrote", "did not write",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/foreign", "format": "oci-dir"}),
    ("oci-dir-file", "destinations", "oci-dir dest is a file", "a regular file, not a directory",
     "docker_registry_image", {"image": "{image}", "dest": "{tmp}/plain", "format": "oci-dir"}),
]


def _prepare(tmp):
    os.mkfifo(os.path.join(tmp, "fifo"))
    os.symlink(os.path.join(tmp, "elsewhere.tar"), os.path.join(tmp, "link.tar"))
    os.mkdir(os.path.join(tmp, "foreign"))
    with open(os.path.join(tmp, "foreign", "precious.txt"), "w") as f:
        f.write("keep me")
    with open(os.path.join(tmp, "plain"), "w") as f:
        f.write("a file")


def _fill(value, ctx):
    if isinstance(value, str):
        return value.format(**ctx)
    if isinstance(value, list):
        return [_fill(v, ctx) for v in value]
    return value


def _listing(tmp):
    return sorted((root, tuple(sorted(dirs)), tuple(sorted(files))) for root, dirs, files in os.walk(tmp))


@pytest.mark.parametrize("case", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_input(case, registry_anonymous, seeded, tmp_path):
    case_id, area, description, words, module, args = case
    info = seeded(registry_anonymous)["docker-simple"]
    tmp = str(tmp_path / "work")
    os.mkdir(tmp)
    _prepare(tmp)
    before = _listing(tmp)
    ctx = {"image": info.image(registry_anonymous.host), "registry": registry_anonymous.url, "tmp": tmp}
    result = run_module(module, dict((k, _fill(v, ctx)) for k, v in args.items()))
    assert_clean_failure(result, SECRET)
    assert words in result["msg"], result["msg"]
    assert _listing(tmp) == before                   # nothing written, nothing replaced
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    record(case_id, area, description, "refused: " + words, result["msg"])


# ------------------------------------------------------------------------------------------ hostile answers
def _canned_cases():
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:../../x",
                           "size": 2}, "layers": []}
    oci = "application/vnd.oci.image.manifest.v1+json"
    return [
        ("manifest-deep", "a manifest of 20,000 nested brackets", "nested too deeply", 200, DEEP, oci),
        ("manifest-not-json", "a manifest that is not JSON", "not valid JSON", 200, "{{{not json", oci),
        ("manifest-array", "a manifest that is a JSON array", "not a JSON object", 200, "[1, 2]", oci),
        ("manifest-huge", "a 5 MiB manifest", "larger than", 200, "{" + " " * (5 << 20) + "}", oci),
        ("manifest-bad-digest", "a descriptor digest with a path in it", "invalid digest", 200, json.dumps(manifest), oci),
        ("manifest-type-clash", "Content-Type and mediaType disagree", "does not match its mediaType", 200,
         json.dumps(dict(manifest, mediaType="application/vnd.docker.distribution.manifest.v2+json")), oci),
        ("error-404-deep", "404 with a deeply nested error body", "not found", 404, DEEP, "application/json"),
        ("error-401-deep", "401 with a deeply nested error body", "requires authentication", 401, DEEP,
         "application/json"),
        ("error-500-deep", "500 with a deeply nested error body", "HTTP 500", 500, DEEP, "application/json"),
    ]


@pytest.mark.parametrize("case", _canned_cases(), ids=[c[0] for c in _canned_cases()])
def test_hostile_answers(case, tmp_path):
    case_id, description, words, status, body, ctype = case
    with FakeRegistry() as fake:
        fake.answer("GET", "/manifests/", status=status, body=body, headers={"Content-Type": ctype})
        dest = tmp_path / "m.json"
        result = run_module("docker_registry_manifest", {"image": "app:v1", "registry": fake.url, "dest": str(dest),
                                                         "retries": 0})
    assert_clean_failure(result)
    assert words in result["msg"] and "Recursion" not in result["stdout_raw"], result["msg"]
    assert not dest.exists()
    record("answer-" + case_id, "hostile answers", description, "refused: " + words, result["msg"])


def test_hostile_token_answer(tmp_path):
    with FakeRegistry() as fake:
        fake.add_manifest("app", "v1", {"schemaVersion": 2, "manifests": []},
                          "application/vnd.oci.image.index.v1+json")
        fake.challenge()
        fake.token(DEEP)
        result = run_module("docker_registry_manifest", {"image": "app:v1", "registry": fake.url, "username": "u",
                                                         "password": SECRET, "retries": 0})
    assert_clean_failure(result, SECRET)
    assert "token service" in result["msg"] and "nested too deeply" in result["msg"]
    record("answer-token-deep", "hostile answers", "a token answer of 20,000 nested brackets",
           "refused: the token service's answer", result["msg"])


def test_hostile_local_files(registry_anonymous, seeded, tmp_path):
    """Deep or oddly typed JSON in files the collection reads: the blob store's index (rebuilt), a docker
    config (ignored with a warning), an oci-dir's index.json (not ours: refused), a saved Nix manifest."""
    info = seeded(registry_anonymous)["docker-simple"]
    image = info.image(registry_anonymous.host)
    store = tmp_path / "store"
    assert run_module("docker_registry_manifest", {"image": image, "cache_dir": str(store)})["rc"] == 0
    (store / "index.json").write_text(DEEP)
    rebuilt = run_module("docker_registry_manifest", {"image": image, "cache_dir": str(store)})
    assert rebuilt["rc"] == 0 and any("rebuilt" in w for w in warning_texts(rebuilt)), rebuilt
    record("file-store-index-deep", "hostile answers", "cache_dir/index.json of 20,000 nested brackets",
           "the store index is rebuilt from the stored manifests, with a warning", warning_texts(rebuilt)[0])
    (store / "index.json").write_text(json.dumps({"manifests": [{"annotations": ["x"]}, {"annotations": "y"}]}))
    odd = run_module("docker_registry_manifest", {"image": image, "cache_dir": str(store)})
    assert odd["rc"] == 0, odd
    record("file-store-annotations", "hostile answers", "store index entries whose annotations are a list or string",
           "ignored; the run works", "ok")
    config = tmp_path / "config.json"
    config.write_text(DEEP)
    warned = run_module("docker_registry_manifest", {"image": image, "docker_config": str(config)})
    assert warned["rc"] == 0 and any("nested too deeply" in w for w in warning_texts(warned)), warned
    record("file-docker-config-deep", "hostile answers", "a docker config.json of 20,000 nested brackets",
           "ignored with a warning, anonymous pull goes on", warning_texts(warned)[0])
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "index.json").write_text(DEEP)
    refused = run_module("docker_registry_image", {"image": image, "dest": str(layout), "format": "oci-dir"})
    assert_clean_failure(refused)
    assert "did not write" in refused["msg"] and (layout / "index.json").read_text() == DEEP
    record("file-oci-dir-index-deep", "hostile answers", "an oci-dir whose index.json is 20,000 nested brackets",
           "refused, nothing replaced", refused["msg"])
    saved = tmp_path / "manifest.json"
    saved.write_text(DEEP)
    nix = run_module("docker_registry_nix", {"image": "app:v1", "registry": "https://reg.example.com",
                                             "manifest": str(saved)})
    assert_clean_failure(nix)
    assert "nested too deeply" in nix["msg"]
    record("file-nix-manifest-deep", "hostile answers", "a saved manifest of 20,000 nested brackets (nix)",
           "refused: nested too deeply", nix["msg"])


# ------------------------------------------------------------------------------------------ network faults
def test_network_faults(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["docker-simple"]
    layer = info.default["layers"][-1]["digest"]
    base = {"image": info.repository + ":" + info.tag, "retries": 1}
    with FaultProxy(reg.url) as proxy:
        proxy.add_rule("status", method="GET", path="/manifests/", status=503)
        failed = run_module("docker_registry_manifest", dict(base, registry=proxy.url))
        assert_clean_failure(failed)
        assert "HTTP 503" in failed["msg"] and "after 2 tries" in failed["msg"], failed["msg"]
        record("net-503", "network faults", "503 on every manifest request (retries: 1)",
               "fails after the retries, saying how many tries", failed["msg"])
        proxy.clear_rules()
        proxy.add_rule("status", method="GET", path="/manifests/", status=429, retry_after="0")
        limited = run_module("docker_registry_manifest", dict(base, registry=proxy.url))
        assert_clean_failure(limited)
        assert "rate limiting" in limited["msg"]
        record("net-429", "network faults", "429 on every manifest request", "fails naming the rate limit",
               limited["msg"])
        proxy.clear_rules()
        proxy.add_rule("loop", method="GET", path="/manifests/")
        loop = run_module("docker_registry_manifest", dict(base, registry=proxy.url))
        assert_clean_failure(loop)
        assert "redirect" in loop["msg"]
        record("net-redirect-loop", "network faults", "a redirect loop", "fails naming the loop", loop["msg"])
        proxy.clear_rules()
        dest = tmp_path / "layer.tgz"
        proxy.add_rule("flip", method="GET", path=layer.split(":")[1], offset=10)
        corrupt = run_module("docker_registry_layer", dict(base, registry=proxy.url, layer=layer, dest=str(dest)))
        assert_clean_failure(corrupt)
        assert "failed verification" in corrupt["msg"] and not dest.exists()
        assert os.listdir(str(tmp_path)) == []
        record("net-corrupt-blob", "network faults", "a flipped byte in a layer blob",
               "fails verification, nothing kept", corrupt["msg"])
        proxy.clear_rules()
        proxy.add_rule("reset", method="GET", path=layer.split(":")[1], count=1, after_bytes=None)
        reset = run_module("docker_registry_layer", dict(base, registry=proxy.url, layer=layer, dest=str(dest)))
        assert reset["rc"] == 0 and sha256_file(str(dest)) == layer
        record("net-reset", "network faults", "the connection reset once during a blob",
               "retried within the run, verified", "ok, %d warning(s)" % len(reset.get("warnings") or []))
    port = _free_port()
    refused = run_module("docker_registry_manifest", dict(base, registry="http://127.0.0.1:%d" % port, retries=0))
    assert_clean_failure(refused)
    assert "connection refused" in refused["msg"] and "NewConnectionError" not in refused["msg"]
    record("net-refused", "network faults", "nothing listens on the registry's port",
           "fails: connection refused, with the likely cause", refused["msg"])


def test_plain_http_to_a_tls_registry(registry_basic, seeded):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    result = run_module("docker_registry_manifest", {"image": info.repository + ":" + info.tag,
                                                     "registry": "http://" + reg.host, "username": reg.username,
                                                     "password": reg.password, "retries": 0})
    assert_clean_failure(result, reg.password)
    assert "speaks https, not http" in result["msg"]
    record("net-http-to-tls", "network faults", "http:// given for a TLS registry",
           "fails: the registry speaks https", result["msg"])


def _free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
