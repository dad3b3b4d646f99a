"""docker_registry_info against real registries: every field, missing images, auth, HEAD-only, tag pages."""
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from helpers import assert_clean_failure, auth_args
from testbed import builder
from testbed.modrun import PYROOT, run_module

MULTI = ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]


def info(reg, image, check=False, **extra):
    args = dict(auth_args(reg), image=image)
    args.update(extra)
    return run_module("docker_registry_info", args, check=check)


def expected_entry(platform_info, platform=None):
    layers = platform_info["layers"]
    return {
        "platform": platform or platform_info["platform"],
        "manifest_digest": platform_info["manifest_digest"],
        "media_type": platform_info["media_type"],
        "config_digest": platform_info["config_digest"],
        "size": sum(layer["size"] for layer in layers),
        "layers": len(layers),
    }


@pytest.mark.parametrize("kind", ["docker-list", "oci-index", "docker-simple", "oci-simple", "nested-index"])
def test_every_field(registry_anonymous, seeded, kind):
    reg = registry_anonymous
    img = seeded(reg)[kind]
    reg.clear_log()
    result = info(reg, img.image(reg.host), config=True)
    assert result["rc"] == 0, result
    assert result["changed"] is False
    assert result["exists"] is True
    assert result["image"] == "%s/%s:%s" % (reg.host, img.repository, img.tag)
    assert result["digest"] == img.digest
    assert result["media_type"] == img.media_type
    platforms = list(img.platforms)
    assert result["platforms"] == platforms
    assert [{k: e[k] for k in ("platform", "manifest_digest", "media_type", "config_digest", "size", "layers")}
            for e in result["manifests"]] == [expected_entry(img.platforms[p]) for p in platforms]
    for entry in result["manifests"]:
        config = json.loads(img.configs[entry["config_digest"]])
        assert entry["created"] == config["created"] == builder.CREATED
        assert entry["cmd"] == config["config"].get("Cmd")
        assert entry["entrypoint"] == config["config"].get("Entrypoint")
        assert entry["env"] == config["config"].get("Env", [])
        assert entry["labels"] == (config["config"].get("Labels") or {})
    # the top level describes this host's platform (the tests run on x86_64)
    amd64 = img.platforms["linux/amd64"]
    assert result["platform"] == "linux/amd64"
    assert result["manifest_digest"] == amd64["manifest_digest"]
    assert result["config_digest"] == amd64["config_digest"]
    assert result["created"] == builder.CREATED
    if kind == "oci-index":
        assert result["attestations"] == [{
            "digest": img.extra["attestation_digest"],
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "size": len(img.manifests[img.extra["attestation_digest"]]),
            "subject": amd64["manifest_digest"],
        }]
        assert "unknown/unknown" not in result["platforms"]
    else:
        assert "attestations" not in result
    # cost: manifests by GET (index, nested index, each platform), one config GET per platform, no layer
    gets = [r for r in reg.requests() if r["method"] == "GET"]
    blob_gets = [r["path"].rsplit("/", 1)[1] for r in gets if "/blobs/" in r["path"]]
    assert sorted(blob_gets) == sorted(img.platforms[p]["config_digest"] for p in platforms)
    nested = 1 if kind == "nested-index" else 0
    manifest_gets = [r for r in gets if "/manifests/" in r["path"]]
    assert len(manifest_gets) == (1 + nested + len(platforms) if img.media_type in builder.INDEX_TYPES else 1)
    assert not [r for r in reg.requests() if r["method"] == "HEAD"]


def test_platform_selection_and_no_match(registry_anonymous, seeded):
    reg = registry_anonymous
    img = seeded(reg)["docker-list"]
    arm = info(reg, img.image(reg.host), platform="linux/arm64")
    assert arm["platform"] == "linux/arm64/v8"
    assert arm["manifest_digest"] == img.platforms["linux/arm64/v8"]["manifest_digest"]
    assert "created" not in arm     # config=false
    assert "created" not in arm["manifests"][0]
    none = info(reg, img.image(reg.host), platform="linux/s390x")
    assert none["rc"] == 0 and none["exists"] is True, none
    assert none["platform"] is None and none["manifest_digest"] is None and none["config_digest"] is None
    assert none["platforms"] == MULTI
    single = seeded(reg)["docker-simple"]
    other = info(reg, single.image(reg.host), platform="linux/arm64", config=True)
    assert other["rc"] == 0 and other["platforms"] == ["linux/amd64"]
    assert other["platform"] is None and "created" not in other


def test_labels_entrypoint(registry_anonymous):
    reg = registry_anonymous
    layer = builder.make_layer({"app/x": "x\n"})
    image = builder.build_image([layer], config={"Labels": {"org.opencontainers.image.version": "1.2"},
                                                 "Entrypoint": ["/app/x"], "Cmd": ["--help"], "User": "app",
                                                 "WorkingDir": "/app"})
    builder.push_image(reg.push_session(), reg.url, "info15/labelled", image, tags=["1.2"])
    result = info(reg, "%s/info15/labelled:1.2" % reg.host, config=True)
    assert result["labels"] == {"org.opencontainers.image.version": "1.2"}
    assert result["entrypoint"] == ["/app/x"] and result["cmd"] == ["--help"]
    assert result["user"] == "app" and result["working_dir"] == "/app"
    assert result["manifests"][0]["labels"] == result["labels"]


def test_missing_tag_repository_digest(registry_anonymous, seeded):
    reg = registry_anonymous
    img = seeded(reg)["docker-simple"]
    for image, tags in (("%s/%s:no-such-tag" % (reg.host, img.repository), ["latest", "v1"]),
                        ("%s/no/such-repository:v1" % reg.host, []),
                        ("%s/%s@sha256:%s" % (reg.host, img.repository, "0" * 64), ["latest", "v1"])):
        for manifests in (True, False):
            result = info(reg, image, manifests=manifests, tags=True)
            assert result["rc"] == 0, result
            assert result["exists"] is False
            assert result["digest"] is None and result["media_type"] is None
            assert result["manifests"] == [] and result["platforms"] == []
            assert result["manifest_digest"] is None
            assert result["tags"] == tags


@pytest.mark.parametrize("mode", ["basic", "token", "mtls"])
def test_auth_registries(request, seeded, mode):
    reg = request.getfixturevalue("registry_" + mode)
    img = seeded(reg)["oci-index"]
    result = info(reg, img.image(reg.host), tags=True, config=True)
    assert result["rc"] == 0, result
    assert result["exists"] is True and result["digest"] == img.digest
    assert result["platforms"] == MULTI
    assert result["tags"] == ["latest", "v1"]
    assert len(result["attestations"]) == 1
    missing = info(reg, "%s/%s:nope" % (reg.host, img.repository), tags=True)
    assert missing["rc"] == 0 and missing["exists"] is False and missing["tags"] == ["latest", "v1"]
    if mode == "mtls":
        return
    # auth failures still fail, cleanly and without the password
    wrong = info(reg, img.image(reg.host), username=reg.username, password="wrong-" + reg.password)
    assert_clean_failure(wrong, "wrong-" + reg.password, reg.password)
    assert "exists" not in wrong
    if mode == "basic":
        anonymous = run_module("docker_registry_info", dict(auth_args(reg, with_credentials=False),
                                                            image=img.image(reg.host)))
        assert_clean_failure(anonymous)
        assert "requires authentication" in anonymous["msg"]


def test_head_only(registry_anonymous, seeded):
    reg = registry_anonymous
    img = seeded(reg)["oci-index"]
    reg.clear_log()
    result = info(reg, img.image(reg.host), manifests=False)
    assert result["rc"] == 0, result
    assert result["exists"] is True and result["digest"] == img.digest
    assert result["media_type"] == img.media_type
    assert result["manifests"] == [] and result["platforms"] == []
    assert result["bytes_downloaded"] == 0
    assert [(r["method"], r["path"]) for r in reg.requests()] == [
        ("HEAD", "/v2/%s/manifests/%s" % (img.repository, img.tag))]
    check = info(reg, img.by_digest(reg.host), manifests=False, check=True)
    assert check["exists"] is True and check["digest"] == img.digest and check["changed"] is False


def test_store_first(registry_anonymous, seeded, tmp_path):
    """With a cache_dir holding the image, a HEAD is all the registry sees; the store is not changed."""
    reg = registry_anonymous
    img = seeded(reg)["oci-index"]
    store = str(tmp_path / "store")
    missing = info(reg, img.image(reg.host), cache_dir=store)
    assert missing["rc"] == 0 and missing["exists"] is True
    assert not os.path.exists(store)    # info never creates a store
    fetched = run_module("docker_registry_image", dict(image=img.image(reg.host), platform="all", format="oci-dir",
                                                       dest=str(tmp_path / "layout"), cache_dir=store))
    assert fetched["rc"] == 0, fetched
    before = snapshot(store)
    reg.clear_log()
    for check in (False, True):
        result = info(reg, img.image(reg.host), cache_dir=store, config=True, check=check)
        assert result["rc"] == 0, result
        assert result["digest"] == img.digest and result["platforms"] == MULTI
        assert result["created"] == builder.CREATED
        assert result["bytes_downloaded"] == 0
    assert [r["method"] for r in reg.requests()] == ["HEAD", "HEAD"]
    assert snapshot(store) == before
    offline = info(reg, img.image(reg.host), cache_dir=store, offline=True, tags=True)
    assert offline["exists"] is True and offline["digest"] == img.digest and offline["tags"] == [img.tag]
    assert offline["source"] == store
    gone = info(reg, "%s/%s:latest" % (reg.host, img.repository), cache_dir=store, offline=True)
    assert gone["rc"] == 0 and gone["exists"] is False
    assert [r["method"] for r in reg.requests()] == ["HEAD", "HEAD"]


def snapshot(store):
    out = {}
    for root, _dirs, files in os.walk(store):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def test_ad_hoc_command(registry_anonymous, seeded):
    reg = registry_anonymous
    img = seeded(reg)["docker-simple"]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=PYROOT, ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    out = subprocess.run([ansible, "localhost", "-m", "hocker.registry.docker_registry_info", "-a",
                          "image=%s tags=true" % img.image(reg.host)], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # the ad hoc (minimal) callback prints "localhost | SUCCESS => {...}"
    head, _sep, body = out.stdout.partition(" => ")
    assert head.strip() == "localhost | SUCCESS", out.stdout
    result = json.loads(body)
    assert result["exists"] is True and result["digest"] == img.digest and result["tags"] == ["latest", "v1"]


# ------------------------------------------------------------------------------------------- tag pages
class Paginator:
    """A front for an anonymous registry that pages tag lists like distribution v3 and the OCI spec
    (``n`` capped at ``page``, ``last``, lexical order, ``Link: <...>; rel="next"``) and relays every other
    request."""

    def __init__(self, upstream, page=100, absolute=False, foreign_link=False):
        self.upstream = upstream
        self.page = page
        self.absolute = absolute
        self.foreign_link = foreign_link
        self.tag_requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                outer.handle(self, "HEAD")

            def do_GET(self):
                outer.handle(self, "GET")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.host = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req, method):
        parts = urlsplit(req.path)
        match = re.match(r"^/v2/(.+)/tags/list$", parts.path)
        if match and method == "GET":
            self.tag_requests.append(req.path)
            query = dict(parse_qsl(parts.query))
            upstream = requests.get(self.upstream + parts.path, timeout=30)
            if upstream.status_code != 200:
                return self.send(req, upstream.status_code, upstream.content, {"Content-Type": "application/json"})
            tags = sorted(upstream.json()["tags"])
            n = min(int(query.get("n", self.page)), self.page)   # the page size is also the most n may ask
            if "last" in query:
                tags = [t for t in tags if t > query["last"]]
            body = {"name": match.group(1), "tags": tags[:n]}
            headers = {"Content-Type": "application/json"}
            if len(tags) > n:
                link = "%s?%s" % (parts.path, urlencode({"n": n, "last": tags[n - 1]}))
                if self.foreign_link:
                    link = "http://127.0.0.9:1" + link
                elif self.absolute:
                    link = self.url + link
                headers["Link"] = '<%s>; rel="next"' % link
            return self.send(req, 200, json.dumps(body).encode(), headers)
        upstream = requests.request(method, self.upstream + req.path, headers={
            k: v for k, v in req.headers.items() if k.lower() in ("accept", "range", "accept-encoding")},
            timeout=30, stream=True)
        body = b"" if method == "HEAD" else upstream.raw.read(decode_content=False)
        keep = ("content-type", "docker-content-digest", "content-length", "content-range")
        self.send(req, upstream.status_code, body, {k: v for k, v in upstream.headers.items() if k.lower() in keep},
                  head=method == "HEAD")

    @staticmethod
    def send(req, status, body, headers, head=False):
        req.send_response(status)
        for key, value in headers.items():
            if key.lower() != "content-length":
                req.send_header(key, value)
        req.send_header("Content-Length", headers.get("Content-Length") or headers.get("content-length")
                        or str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)


@pytest.fixture(scope="module")
def many_tags(registry_anonymous, seeded):
    """testbed/docker-simple of the session registry under 250 more tags (t000 .. t249)."""
    reg = registry_anonymous
    img = seeded(reg)["docker-simple"]
    session = reg.push_session()
    # the manifest's blobs must be in the repository first
    for digest, data in list(img.blobs.items()) + list(img.configs.items()):
        reg.put_blob("info15/many", data, session=session)
    for i in range(250):
        reg.put_manifest("info15/many", "t%03d" % i, img.raw, img.media_type, session=session)
    return reg, img, ["t%03d" % i for i in range(250)]


def test_tags_distribution_28(many_tags):
    """distribution 2.8 ignores n and last and answers every tag at once (unsorted): one request."""
    reg, img, tags = many_tags
    reg.clear_log()
    result = info(reg, "%s/info15/many:t000" % reg.host, manifests=False, tags=True)
    assert result["rc"] == 0, result
    assert result["tags"] == tags
    assert reg.count("GET", r"/tags/list") == 1
    capped = info(reg, "%s/info15/many:t000" % reg.host, manifests=False, tags=True, limit=7)
    assert capped["tags"] == tags[:7]


@pytest.mark.parametrize("absolute", [False, True])
def test_tags_link_pagination(many_tags, absolute):
    reg, img, tags = many_tags
    front = Paginator(reg.url, page=100, absolute=absolute)
    try:
        result = info(reg, "%s/info15/many:t100" % front.host, tags=True)
        assert result["rc"] == 0, result
        assert result["exists"] is True and result["digest"] == img.digest
        assert result["tags"] == tags
        assert front.tag_requests == ["/v2/info15/many/tags/list", "/v2/info15/many/tags/list?n=100&last=t099",
                                      "/v2/info15/many/tags/list?n=100&last=t199"]
        front.tag_requests[:] = []
        capped = info(reg, "%s/info15/many:t100" % front.host, manifests=False, tags=True, limit=130)
        assert capped["tags"] == tags[:130]
        # the first page asks for the limit (the registry answers at most 100); the Link of the second says
        # the page size; no third page
        assert front.tag_requests == ["/v2/info15/many/tags/list?n=130",
                                      "/v2/info15/many/tags/list?n=100&last=t099"]
    finally:
        front.stop()


def test_tags_link_to_another_host(many_tags):
    reg, _img, tags = many_tags
    front = Paginator(reg.url, page=100, foreign_link=True)
    try:
        result = info(reg, "%s/info15/many:t000" % front.host, manifests=False, tags=True)
        assert result["rc"] == 0, result
        assert result["tags"] == tags[:100]
        assert "links its next page on another host" in json.dumps(result.get("warnings")), result
        assert len(front.tag_requests) == 1
    finally:
        front.stop()


def test_invalid_limit(registry_anonymous, seeded):
    reg = registry_anonymous
    img = seeded(reg)["docker-simple"]
    result = info(reg, img.image(reg.host), tags=True, limit=0)
    assert_clean_failure(result)
    assert "limit" in result["msg"]
