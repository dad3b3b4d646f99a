"""Self-tests of the registry test bed: real docker-registry processes in each mode, the token server,
the request log, a push/pull round trip and the CLI."""
import base64
import hashlib
import json
import os
import subprocess
import sys

import jwt
import pytest
import requests

from testbed.registry import ChallengeAuth, Registry, parse_www_authenticate

CLI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cli.py")
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


def _sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest(config, layers, extra_layers=()):
    m = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
         "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": _sha(config)},
         "layers": [{"mediaType": DOCKER_LAYER, "size": len(l), "digest": _sha(l)} for l in layers]
         + list(extra_layers)}
    return json.dumps(m, indent=3, sort_keys=True).encode()


def _push_image(reg, repo, tag, seed=b"x"):
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                         "seed": seed.decode()}).encode()
    layer = b"not really gzip " + seed * 100
    s = reg.push_session()
    reg.put_blob(repo, config, session=s)
    reg.put_blob(repo, layer, session=s)
    raw = _manifest(config, [layer])
    digest = reg.put_manifest(repo, tag, raw, DOCKER_MANIFEST, session=s)
    return {"config": config, "layer": layer, "manifest": raw, "digest": digest}


def _get(url, **kw):
    kw.setdefault("timeout", 30)
    return requests.get(url, **kw)


# ---- each mode answers as it should ------------------------------------------------------------
def test_anonymous_v2_answers_200(registry_anonymous):
    reg = registry_anonymous
    assert reg.url == "http://" + reg.host and reg.host.startswith("127.0.0.1:")
    r = _get(reg.url + "/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_basic_requires_credentials_over_verified_tls(registry_basic):
    reg = registry_basic
    assert reg.url.startswith("https://127.0.0.1:")
    r = _get(reg.url + "/v2/", verify=reg.ca_path)
    assert r.status_code == 401
    (scheme, params), = parse_www_authenticate(r.headers["WWW-Authenticate"])
    assert scheme == "basic" and params["realm"]
    assert _get(reg.url + "/v2/", verify=reg.ca_path, auth=(reg.username, reg.password)).status_code == 200
    assert _get(reg.url + "/v2/", verify=reg.ca_path, auth=(reg.username, "wrong")).status_code == 401
    # the certificate is only trusted through the test CA
    with pytest.raises(requests.exceptions.SSLError):
        _get(reg.url + "/v2/", verify="/etc/ssl/certs/ca-certificates.crt")
    # and it names localhost as well as 127.0.0.1
    r = _get("https://localhost:%d/v2/" % reg.port, verify=reg.ca_path, auth=(reg.username, reg.password))
    assert r.status_code == 200


def test_token_mode_challenges_with_bearer(registry_token):
    reg = registry_token
    r = _get(reg.url + "/v2/")
    assert r.status_code == 401
    (scheme, params), = parse_www_authenticate(r.headers["WWW-Authenticate"])
    assert scheme == "bearer"
    assert params["realm"] == reg.realm and reg.realm.startswith("http://127.0.0.1:")
    assert params["service"] == reg.service
    r = _get(reg.url + "/v2/testbed/nothing/manifests/latest")
    assert r.status_code == 401
    (scheme, params), = parse_www_authenticate(r.headers["WWW-Authenticate"])
    assert params["scope"] == "repository:testbed/nothing:pull"


def test_token_pull_anonymous_push_needs_credentials(registry_token):
    reg = registry_token
    img = _push_image(reg, "testbed/tok", "v1", seed=b"t")
    # anonymous token: pull works
    r = _get(reg.realm, params={"service": reg.service, "scope": "repository:testbed/tok:pull,push"})
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] > 0 and body["issued_at"]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "testbed/tok", "actions": ["pull"]}]
    hdr = {"Authorization": "Bearer " + body["token"], "Accept": DOCKER_MANIFEST}
    r = _get(reg.url + "/v2/testbed/tok/manifests/v1", headers=hdr)
    assert r.status_code == 200 and r.content == img["manifest"]
    # ... push does not
    r = requests.post(reg.url + "/v2/testbed/tok/blobs/uploads/", headers=hdr, timeout=30)
    assert r.status_code == 401
    # the user's token may push
    tok = reg.get_token(["repository:testbed/tok:pull,push"])
    r = requests.post(reg.url + "/v2/testbed/tok/blobs/uploads/", headers={"Authorization": "Bearer " + tok},
                      timeout=30)
    assert r.status_code == 202
    # a wrong password gets no token at all
    r = _get(reg.realm, params={"service": reg.service, "scope": "repository:testbed/tok:pull"},
             auth=(reg.username, "wrong"))
    assert r.status_code == 401


def test_token_is_rs256_with_x5c_chain(registry_token):
    tok = registry_token.get_token(["repository:a/b:pull"])
    header = jwt.get_unverified_header(tok)
    assert header["alg"] == "RS256"
    assert len(header["x5c"]) == 2
    with open(registry_token.ca_path, "rb") as f:
        ca_der = base64.b64decode("".join(l for l in f.read().decode().splitlines() if "-----" not in l))
    assert base64.b64decode(header["x5c"][1]) == ca_der


def test_token_server_records_requests_and_credentials(registry_token):
    reg = registry_token
    reg.clear_log()
    assert reg.token_requests() == []
    _get(reg.realm, params=[("service", reg.service), ("scope", "repository:a/b:pull"),
                            ("scope", "repository:c/d:pull")], auth=(reg.username, reg.password))
    (req,) = reg.token_requests()
    assert req["method"] == "GET" and req["user"] == reg.username and req["status"] == 200
    assert req["query"]["scope"] == ["repository:a/b:pull", "repository:c/d:pull"]
    assert req["headers"]["Authorization"].startswith("Basic ")


def test_refresh_token_flows(fresh_registry):
    reg = fresh_registry("token", token_expires_in=120)
    ts = reg.token_server
    _push_image(reg, "testbed/rt", "v1", seed=b"r")
    # GET with offline_token=true hands out a refresh token
    r = _get(reg.realm, params={"service": reg.service, "scope": "repository:testbed/rt:pull",
                                "offline_token": "true", "client_id": "hocker-test"},
             auth=(reg.username, reg.password))
    assert r.status_code == 200 and r.json()["expires_in"] == 120
    refresh = r.json()["refresh_token"]
    # POST grant_type=refresh_token
    form = {"grant_type": "refresh_token", "refresh_token": refresh, "service": reg.service,
            "scope": "repository:testbed/rt:pull", "client_id": "hocker-test"}
    r = requests.post(reg.realm, data=form, timeout=30)
    assert r.status_code == 200
    access = r.json()["access_token"]
    r = _get(reg.url + "/v2/testbed/rt/manifests/v1",
             headers={"Authorization": "Bearer " + access, "Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    # an unknown refresh token is refused; a missing client_id too
    assert requests.post(reg.realm, data=dict(form, refresh_token="nope"), timeout=30).status_code == 401
    no_client = {k: v for k, v in form.items() if k != "client_id"}
    assert requests.post(reg.realm, data=no_client, timeout=30).status_code == 400
    # POST grant_type=password with access_type=offline
    r = requests.post(reg.realm, data={"grant_type": "password", "username": reg.username,
                                       "password": reg.password, "service": reg.service,
                                       "scope": "repository:testbed/rt:pull,push", "client_id": "hocker-test",
                                       "access_type": "offline"}, timeout=30)
    assert r.status_code == 200 and r.json()["refresh_token"].startswith("rt-")
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["access"][0]["actions"] == ["pull", "push"]
    r = requests.post(reg.realm, data={"grant_type": "password", "username": reg.username, "password": "bad",
                                       "service": reg.service, "client_id": "hocker-test"}, timeout=30)
    assert r.status_code == 401
    # the switch that makes POST unsupported (clients must fall back to GET)
    ts.post_enabled = False
    assert requests.post(reg.realm, data=form, timeout=30).status_code == 404
    assert [q["method"] for q in ts.requests].count("POST") == 6


def test_token_https_realm_variant(fresh_registry):
    reg = fresh_registry("token", realm_scheme="https")
    assert reg.realm.startswith("https://127.0.0.1:") and reg.url.startswith("http://")
    r = _get(reg.url + "/v2/")
    assert parse_www_authenticate(r.headers["WWW-Authenticate"])[0][1]["realm"] == reg.realm
    img = _push_image(reg, "testbed/https-realm", "v1")
    s = reg.session(credentials=False)  # anonymous pull through the https realm
    r = s.get(reg.url + "/v2/testbed/https-realm/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200 and r.content == img["manifest"]
    with pytest.raises(requests.exceptions.SSLError):
        _get(reg.realm, verify="/etc/ssl/certs/ca-certificates.crt")


def test_anonymous_token_access_can_be_withdrawn(fresh_registry):
    reg = fresh_registry("token")
    _push_image(reg, "testbed/private", "v1")
    reg.token_server.anonymous_actions = set()
    r = reg.session(credentials=False).get(reg.url + "/v2/testbed/private/manifests/v1")
    assert r.status_code == 401
    assert reg.push_session().get(reg.url + "/v2/testbed/private/manifests/v1",
                                  headers={"Accept": DOCKER_MANIFEST}).status_code == 200


def test_mtls_refuses_without_client_certificate(registry_mtls):
    reg = registry_mtls
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        _get(reg.url + "/v2/", verify=reg.ca_path)
    r = _get(reg.url + "/v2/", verify=reg.ca_path, cert=(reg.client_cert, reg.client_key))
    assert r.status_code == 200
    assert reg.username is None and reg.password is None
    assert reg.client_options()["client_cert"] == reg.client_cert


# ---- request log -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["anonymous", "basic", "token", "mtls"])
def test_request_log_counts(request, mode):
    reg = request.getfixturevalue("registry_" + mode)
    s = reg.push_session()
    reg.clear_log()
    assert reg.requests() == []
    for _i in range(3):
        s.get(reg.url + "/v2/")
    s.head(reg.url + "/v2/testbed/none/manifests/latest")
    log = reg.requests()
    ok = [e for e in log if e["status"] == 200]
    assert [(e["method"], e["path"]) for e in ok] == [("GET", "/v2/")] * 3
    assert reg.count("GET", r"^/v2/$", status=200) == 3
    assert reg.count("HEAD", r"/manifests/") >= 1
    assert reg.count("HEAD", r"/manifests/", status=404) == 1
    assert reg.count("DELETE") == 0
    reg.clear_log()
    assert reg.count() == 0


# ---- push / pull round trip ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["anonymous", "basic", "token", "mtls"])
def test_push_pull_round_trip(request, mode):
    reg = request.getfixturevalue("registry_" + mode)
    img = _push_image(reg, "testbed/roundtrip", "v1", seed=mode.encode())
    s = reg.push_session()
    reg.clear_log()
    r = s.get(reg.url + "/v2/testbed/roundtrip/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200 and r.content == img["manifest"]
    assert r.headers["Docker-Content-Digest"] == img["digest"] == _sha(img["manifest"])
    r = s.get(reg.url + "/v2/testbed/roundtrip/manifests/" + img["digest"], headers={"Accept": DOCKER_MANIFEST})
    assert r.content == img["manifest"]
    r = s.get(reg.url + "/v2/testbed/roundtrip/blobs/" + _sha(img["layer"]))
    assert r.status_code == 200 and r.content == img["layer"]
    assert reg.count("GET", r"/blobs/sha256:", status=200) == 1
    assert reg.count("GET", r"/manifests/", status=200) == 2
    tags = s.get(reg.url + "/v2/testbed/roundtrip/tags/list").json()
    assert tags == {"name": "testbed/roundtrip", "tags": ["v1"]}


def test_foreign_layers_and_delete_are_enabled(registry_anonymous):
    reg = registry_anonymous
    config = b'{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":[]}}'
    reg.put_blob("testbed/foreign", config)
    foreign = {"mediaType": FOREIGN_LAYER, "size": 1234, "digest": "sha256:" + "ab" * 32,
               "urls": ["https://example.invalid/layer.tar.gz"]}
    raw = _manifest(config, [], [foreign])
    digest = reg.put_manifest("testbed/foreign", "v1", raw, DOCKER_MANIFEST)
    r = _get(reg.url + "/v2/testbed/foreign/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200 and r.content == raw
    r = requests.delete(reg.url + "/v2/testbed/foreign/manifests/" + digest, timeout=30)
    assert r.status_code == 202
    assert _get(reg.url + "/v2/testbed/foreign/manifests/" + digest).status_code == 404


# ---- life cycle ------------------------------------------------------------------------------
def test_start_stop_idempotent_and_context_manager(tmp_path):
    reg = Registry("anonymous", workdir=str(tmp_path / "reg"))
    with reg:
        url = reg.url
        pid = reg.pids[0]
        assert reg.start() is reg and reg.url == url and reg.pids == [pid]
        assert _get(url + "/v2/").status_code == 200
    assert not reg.running
    reg.stop()  # again: no error
    with pytest.raises(requests.exceptions.ConnectionError):
        _get(url + "/v2/", timeout=5)
    assert not os.path.exists("/proc/%d/cmdline" % pid) or b"docker-registry" not in open(
        "/proc/%d/cmdline" % pid, "rb").read()


def test_fresh_registry_is_empty_and_separate(fresh_registry, registry_anonymous):
    _push_image(registry_anonymous, "testbed/shared", "v1")
    reg = fresh_registry("anonymous")
    assert reg.url != registry_anonymous.url
    assert _get(reg.url + "/v2/testbed/shared/tags/list").status_code == 404


def test_parse_www_authenticate():
    v = 'Bearer realm="https://a/token",service="reg",scope="repository:x/y:pull,push", Basic realm="r"'
    assert parse_www_authenticate(v) == [
        ("bearer", {"realm": "https://a/token", "service": "reg", "scope": "repository:x/y:pull,push"}),
        ("basic", {"realm": "r"})]
    assert parse_www_authenticate('Basic realm="a \\"q\\" b"') == [("basic", {"realm": 'a "q" b'})]


def test_challenge_auth_reuses_tokens(registry_token):
    reg = registry_token
    _push_image(reg, "testbed/cache", "v1")
    s = requests.Session()
    s.trust_env = False
    auth = ChallengeAuth(reg.username, reg.password)
    s.auth = auth
    for _i in range(3):
        assert s.get(reg.url + "/v2/testbed/cache/tags/list").status_code == 200
    assert auth.token_requests == 1


# ---- CLI -------------------------------------------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, CLI] + list(args), capture_output=True, text=True, timeout=300, check=False)


def test_cli_up_status_down(tmp_path):
    state = str(tmp_path / "state.json")
    config = str(tmp_path / "integration_config.yml")
    common = ["--state", state, "--config", config]
    try:
        r = _cli("up", "--modes", "anonymous,token", *common)
        assert r.returncode == 0, r.stderr
        with open(state) as f:
            st = json.load(f)
        assert sorted(st["registries"]) == ["anonymous", "token"]
        tok = st["registries"]["token"]
        assert tok["realm"].startswith("http://127.0.0.1:") and tok["username"] and tok["password"]
        assert len(tok["pids"]) == 2
        # the registries outlived the CLI process
        anon = st["registries"]["anonymous"]
        assert _get(anon["url"] + "/v2/").status_code == 200
        r = _get(tok["realm"], params={"service": tok["service"], "scope": "repository:a/b:pull"},
                 auth=(tok["username"], tok["password"]))
        assert r.status_code == 200 and r.json()["access_token"]
        import yaml
        with open(config) as f:
            cfg = yaml.safe_load(f)
        assert cfg["hocker_registry_anonymous_url"] == anon["url"]
        assert cfg["hocker_registry_token_host"] == tok["host"]
        assert cfg["hocker_registry_token_password"] == tok["password"]
        assert cfg["hocker_registry_token_realm"] == tok["realm"]
        # idempotent: a second `up` keeps the running set
        r = _cli("up", "--modes", "anonymous,token", *common)
        assert r.returncode == 0 and "already up" in r.stdout
        with open(state) as f:
            assert json.load(f)["registries"]["anonymous"]["pids"] == anon["pids"]
        r = _cli("status", *common)
        assert r.returncode == 0 and "DOWN" not in r.stdout
        # a state file can be turned back into a Registry object
        reg = Registry.from_state(anon)
        reg.clear_log()
        _get(anon["url"] + "/v2/")
        assert reg.count("GET", "^/v2/$") == 1
    finally:
        r = _cli("down", *common)
    assert r.returncode == 0
    assert not os.path.exists(state) and not os.path.exists(config)
    with pytest.raises(requests.exceptions.ConnectionError):
        _get(anon["url"] + "/v2/", timeout=5)
    for pid in anon["pids"] + tok["pids"]:
        try:
            with open("/proc/%d/stat" % pid) as f:
                assert f.read().rsplit(")", 1)[1].split()[0] == "Z"  # at most a zombie awaiting its reaper
        except FileNotFoundError:
            pass
    assert _cli("status", *common).returncode == 3


def test_config_overrides_and_second_loopback_address(fresh_registry):
    reg = fresh_registry("basic", bind="127.0.0.2", config_overrides={"http": {"relativeurls": True}})
    assert reg.host.startswith("127.0.0.2:")
    assert reg.config()["http"]["relativeurls"] is True and "tls" in reg.config()["http"]
    s = reg.push_session()
    r = s.post(reg.url + "/v2/testbed/rel/blobs/uploads/")
    assert r.status_code == 202 and r.headers["Location"].startswith("/v2/testbed/rel/blobs/uploads/")
    assert reg.put_blob("testbed/rel", b"relative") == _sha(b"relative")
