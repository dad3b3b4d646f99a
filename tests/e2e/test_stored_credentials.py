"""Stored credentials end to end: docker_registry_manifest run as a process with credentials from
config.json (auth, identitytoken, registrytoken), credential helpers (credHelpers, credsStore), podman
auth.json, $REGISTRY_AUTH_FILE, and TLS material from certs.d directories.

The token-mode registry here refuses anonymous pulls, so a success proves the stored credentials were
used; the token server's request log shows how.
"""
import base64
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import requests

from helpers import assert_clean_failure
from testbed.builder import seed
from testbed.modrun import PYROOT, run_module
from testbed.registry import Registry

MODULE = "docker_registry_manifest"


@pytest.fixture(scope="module")
def private_token(tmp_path_factory):
    """A token-mode registry whose token server grants nothing to anonymous requests."""
    reg = Registry("token", workdir=str(tmp_path_factory.mktemp("registry-private-token")))
    reg.start()
    try:
        info = seed(reg, kinds=["docker-simple"])["docker-simple"]
        reg.token_server.anonymous_actions = set()
        yield reg, info
    finally:
        reg.stop()


@pytest.fixture
def token_reg(private_token):
    reg, info = private_token
    ts = reg.token_server
    ts.clear()
    ts.post_enabled = True
    yield reg, info
    ts.post_enabled = True
    ts.clear()


class Home:
    """An isolated user environment for one module run: HOME, XDG dirs, PATH with fake helpers, the user's
    certs.d."""

    def __init__(self, root):
        self.root = root
        self.home = root / "home"
        self.bin = root / "bin"
        self.run = root / "run"
        # the per-user certs.d root every run consults (~/.config/containers/certs.d)
        self.certs_d = self.home / ".config" / "containers" / "certs.d"
        for d in (self.home, self.bin, self.run, self.certs_d):
            d.mkdir(parents=True, exist_ok=True)
        self.extra = {}

    @property
    def env(self):
        env = {
            "HOME": str(self.home),
            "DOCKER_CONFIG": "",
            "REGISTRY_AUTH_FILE": "",
            "XDG_CONFIG_HOME": "",
            "XDG_RUNTIME_DIR": str(self.run),
            "PATH": str(self.bin) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        }
        env.update(self.extra)
        return env

    def write(self, relpath, data):
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    def docker_config(self, data):
        return self.write("home/.docker/config.json", data)

    def helper(self, name, username, secret):
        """docker-credential-<name>: logs its arguments and stdin, answers with the given credentials."""
        log = self.root / ("helper-%s.log" % name)
        answer = json.dumps({"ServerURL": "ignored", "Username": username, "Secret": secret})
        script = self.bin / ("docker-credential-" + name)
        script.write_text("#!/bin/sh\nprintf '%%s|' \"$*\" >> %s\ncat >> %s\nprintf '%%s' '%s'\n"
                          % (log, log, answer))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return log

    def certs(self, host, ca=None, client_cert=None, client_key=None):
        d = self.certs_d / host
        d.mkdir(parents=True, exist_ok=True)
        if ca:
            shutil.copy(ca, str(d / "ca.crt"))
        if client_cert:
            shutil.copy(client_cert, str(d / "client.cert"))
            shutil.copy(client_key, str(d / "client.key"))
        return d


@pytest.fixture
def home(tmp_path):
    return Home(tmp_path / "user")


def b64auth(user, password):
    return base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def run(home, image, **args):
    args["image"] = image
    return run_module(MODULE, args, env=home.env)


def assert_ok(result, info, *secrets):
    assert result["rc"] == 0, result
    assert result.get("failed") is not True, result
    assert result["digest"] == info.digest
    assert_no_secrets(result, *secrets)


def assert_no_secrets(result, *secrets):
    for secret in secrets:
        assert secret
        assert secret not in result["stdout_raw"]
        assert secret not in result["stderr"]


def warnings_of(result):
    """Warning texts of a module result (ansible-core 2.19+ returns structured warnings)."""
    out = []
    for w in result.get("warnings") or []:
        if isinstance(w, dict):
            w = (w.get("event") or {}).get("msg") or w.get("msg") or json.dumps(w)
        out.append(w)
    return out


def token_requests(reg, method=None):
    return [r for r in reg.token_server.requests if method is None or r["method"] == method]


def refresh_token(reg):
    """A refresh token from the token server (docker login's offline_token GET)."""
    response = requests.get(reg.realm, params={"service": reg.service, "offline_token": "true",
                                               "client_id": "test", "scope": ""},
                            auth=(reg.username, reg.password), timeout=30)
    response.raise_for_status()
    token = response.json()["refresh_token"]
    reg.token_server.clear()
    return token


# ------------------------------------------------------------------------------------------ token registry
def test_anonymous_is_refused(token_reg, home):
    reg, info = token_reg
    result = run(home, info.image(reg.host))
    assert_clean_failure(result)
    assert "requires authentication" in result["msg"]


def test_config_json_auth(token_reg, home):
    reg, info = token_reg
    secret = b64auth(reg.username, reg.password)
    home.docker_config({"auths": {reg.host: {"auth": secret}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, secret)
    gets = token_requests(reg, "GET")
    assert gets and all(r["user"] == reg.username for r in gets)


def test_config_json_url_key_and_docker_config_option(token_reg, home):
    reg, info = token_reg
    path = home.write("elsewhere/my-config.json", {"auths": {"http://%s/v1/" % reg.host: {
        "username": reg.username, "password": reg.password}}})
    result = run(home, info.image(reg.host), docker_config=path)
    assert_ok(result, info, reg.password)


def test_identity_token_oauth_post(token_reg, home):
    reg, info = token_reg
    rt = refresh_token(reg)
    home.docker_config({"auths": {reg.host: {"auth": b64auth(reg.username, ""), "identitytoken": rt}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, rt, reg.password)
    posts = token_requests(reg, "POST")
    assert posts and all(p["status"] == 200 for p in posts)
    form = posts[0]["form"]
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == [rt]
    assert form["client_id"] == ["hocker.registry"] and form["service"] == [reg.service]
    assert form["scope"] == ["repository:%s:pull" % info.repository]
    assert token_requests(reg, "GET") == []


def test_identity_token_get_fallback_on_404(token_reg, home, monkeypatch):
    """A realm without OAuth2 (POST -> 404): GET with Basic <user or "<token>">:<identity token>."""
    reg, info = token_reg
    ts = reg.token_server
    rt = refresh_token(reg)
    ts.post_enabled = False
    original = ts.check_password

    # like ACR: the realm accepts the identity token as the password of a basic login
    def accept_refresh_token(user, password):
        return original(user, password) or password in ts.refresh_tokens

    monkeypatch.setattr(ts, "check_password", accept_refresh_token)
    home.docker_config({"auths": {reg.host: {"identitytoken": rt}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, rt)
    posts = token_requests(reg, "POST")
    assert len(posts) == 1 and posts[0]["status"] == 404
    gets = token_requests(reg, "GET")
    assert gets and all(g["user"] == "<token>" and g["status"] == 200 for g in gets)


def test_identity_token_rejected_is_a_clean_failure(token_reg, home):
    reg, info = token_reg
    home.docker_config({"auths": {reg.host: {"identitytoken": "rt-not-a-real-token-0123456789"}}})
    result = run(home, info.image(reg.host))
    assert_clean_failure(result, "rt-not-a-real-token-0123456789")
    assert "docker config" in result["msg"]


def test_registry_token(token_reg, home):
    reg, info = token_reg
    response = requests.get(reg.realm, params={"service": reg.service,
                                               "scope": "repository:%s:pull" % info.repository},
                            auth=(reg.username, reg.password), timeout=30)
    bearer = response.json()["access_token"]
    reg.token_server.clear()
    home.docker_config({"auths": {reg.host: {"registrytoken": bearer}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, bearer)
    assert token_requests(reg) == []


def test_cred_helpers(token_reg, home):
    reg, info = token_reg
    log = home.helper("fake", reg.username, reg.password)
    home.docker_config({"credHelpers": {reg.host: "fake"}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password)
    assert log.read_text() == "get|" + reg.host
    assert all(r["user"] == reg.username for r in token_requests(reg, "GET"))


def test_cred_helper_identity_token(token_reg, home):
    reg, info = token_reg
    rt = refresh_token(reg)
    home.helper("idtoken", "<token>", rt)
    home.docker_config({"credHelpers": {reg.host: "idtoken"}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, rt)
    assert [p["form"]["grant_type"] for p in token_requests(reg, "POST")] == [["refresh_token"]]


def test_creds_store(token_reg, home):
    reg, info = token_reg
    log = home.helper("store", reg.username, reg.password)
    home.docker_config({"credsStore": "store", "auths": {reg.host: {}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password)
    assert log.read_text() == "get|" + reg.host


def test_podman_runtime_auth_json(token_reg, home):
    reg, info = token_reg
    secret = b64auth(reg.username, reg.password)
    home.write("run/containers/auth.json", {"auths": {reg.host: {"auth": secret}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, secret)


def test_podman_config_auth_json(token_reg, home):
    reg, info = token_reg
    secret = b64auth(reg.username, reg.password)
    home.write("home/.config/containers/auth.json", {"auths": {reg.host: {"auth": secret}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, secret)


def test_registry_auth_file(token_reg, home):
    reg, info = token_reg
    secret = b64auth(reg.username, reg.password)
    home.extra["REGISTRY_AUTH_FILE"] = home.write("auth/registry-auth.json", {"auths": {reg.host: {"auth": secret}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, secret)


# ------------------------------------------------------------------------------------------ precedence
def test_cred_helper_wins_over_auths(token_reg, home):
    reg, info = token_reg
    home.helper("good", reg.username, reg.password)
    home.docker_config({"credHelpers": {reg.host: "good"}, "auths": {reg.host: {"auth": b64auth("nobody", "bad")}}})
    assert_ok(run(home, info.image(reg.host)), info, reg.password)
    assert {r["user"] for r in token_requests(reg, "GET")} == {reg.username}


def test_cred_helpers_win_over_creds_store(token_reg, home):
    reg, info = token_reg
    home.helper("good", reg.username, reg.password)
    store_log = home.helper("store", "nobody", "bad")
    home.docker_config({"credHelpers": {reg.host: "good"}, "credsStore": "store"})
    assert_ok(run(home, info.image(reg.host)), info, reg.password)
    assert not store_log.exists()


def test_docker_config_wins_over_podman_files(token_reg, home):
    reg, info = token_reg
    home.extra["REGISTRY_AUTH_FILE"] = home.write("auth.json", {"auths": {reg.host: {"auth": b64auth(reg.username, reg.password)}}})
    path = home.docker_config({"auths": {reg.host: {"auth": b64auth(reg.username, "wrong-password")}}})
    result = run(home, info.image(reg.host))
    assert_clean_failure(result, reg.password, "wrong-password")
    assert "rejected the credentials from docker config %s" % path in result["msg"]


def test_registry_auth_file_wins_over_podman_auth_json(token_reg, home):
    reg, info = token_reg
    home.extra["REGISTRY_AUTH_FILE"] = home.write("auth.json", {"auths": {reg.host: {"auth": b64auth(reg.username, reg.password)}}})
    home.write("run/containers/auth.json", {"auths": {reg.host: {"auth": b64auth(reg.username, "wrong-password")}}})
    assert_ok(run(home, info.image(reg.host)), info, reg.password, "wrong-password")


def test_explicit_options_win_over_stored(token_reg, home):
    reg, info = token_reg
    log = home.helper("store", "nobody", "bad")
    home.docker_config({"credsStore": "store"})
    result = run(home, info.image(reg.host), username=reg.username, password=reg.password)
    assert_ok(result, info, reg.password)
    assert not log.exists()


def test_not_found_helper_falls_back_silently(token_reg, home):
    reg, info = token_reg
    script = home.bin / "docker-credential-empty"
    script.write_text("#!/bin/sh\ncat >/dev/null\necho 'credentials not found in native keychain'\nexit 1\n")
    script.chmod(0o755)
    home.docker_config({"credsStore": "empty", "auths": {reg.host: {"auth": b64auth(reg.username, reg.password)}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password)
    assert warnings_of(result) == []


# ------------------------------------------------------------------------------------------ failing helpers
def test_missing_helper_warns_and_public_image_still_works(registry_token, seeded, home):
    """credsStore names a helper that is not installed: warn, pull the public image anonymously."""
    info = seeded(registry_token)["docker-simple"]
    home.docker_config({"credsStore": "desktop"})
    result = run(home, info.image(registry_token.host))
    assert_ok(result, info)
    warnings = warnings_of(result)
    assert any("docker-credential-desktop" in w and registry_token.host in w for w in warnings), result


def test_failing_helper_warns_without_its_output(token_reg, home):
    reg, info = token_reg
    leak = "leaked-" + reg.password
    script = home.bin / "docker-credential-broken"
    script.write_text("#!/bin/sh\ncat >/dev/null\necho '%s'\necho '%s' >&2\nexit 3\n" % (leak, leak))
    script.chmod(0o755)
    home.docker_config({"credHelpers": {reg.host: "broken"}, "auths": {reg.host: {"auth": b64auth(reg.username, reg.password)}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, leak)
    assert any("docker-credential-broken" in w and "exit status 3" in w for w in warnings_of(result))


def test_corrupt_config_warns_and_continues(token_reg, home):
    reg, info = token_reg
    secret = b64auth(reg.username, reg.password)
    path = home.docker_config('{"auths": {"%s": {"auth": "%s"' % (reg.host, secret))
    home.write("run/containers/auth.json", {"auths": {reg.host: {"auth": secret}}})
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, secret)
    assert any(path in w and "not valid JSON" in w for w in warnings_of(result))


# ------------------------------------------------------------------------------------------ certs.d
def test_certs_d_ca_for_basic_tls_registry(registry_basic, seeded, home):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    secret = b64auth(reg.username, reg.password)
    home.docker_config({"auths": {reg.host: {"auth": secret}}})
    without = run(home, info.image(reg.host))
    assert_clean_failure(without, reg.password, secret)
    assert "TLS" in without["msg"]
    home.certs(reg.host, ca=reg.ca_path)
    result = run(home, info.image(reg.host))
    assert_ok(result, info, reg.password, secret)


def test_certs_d_ca_bundle_with_several_crt_files(registry_basic, seeded, home):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    d = home.certs(reg.host)
    # an unrelated CA first, the registry's second: both end up in the bundle
    shutil.copy(reg.certs.token_cert, str(d / "a-other.crt"))
    shutil.copy(reg.ca_path, str(d / "b-registry.crt"))
    result = run(home, info.image(reg.host), username=reg.username, password=reg.password)
    assert_ok(result, info, reg.password)


def test_certs_d_client_certificate(registry_mtls, seeded, home):
    reg = registry_mtls
    info = seeded(reg)["docker-simple"]
    home.certs(reg.host, ca=reg.ca_path)
    without = run(home, info.image(reg.host))
    assert_clean_failure(without)
    home.certs(reg.host, client_cert=reg.client_cert, client_key=reg.client_key)
    result = run(home, info.image(reg.host))
    assert_ok(result, info)


def test_explicit_ca_path_wins_over_certs_d(registry_basic, seeded, home):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    d = home.certs(reg.host)
    shutil.copy(reg.certs.token_cert, str(d / "wrong.crt"))
    args = dict(username=reg.username, password=reg.password)
    assert_clean_failure(run(home, info.image(reg.host), **args), reg.password)
    assert_ok(run(home, info.image(reg.host), ca_path=reg.ca_path, **args), info, reg.password)


# ------------------------------------------------------------------------------------------ real ansible
def test_ansible_adhoc_vvv_never_shows_the_secret(token_reg, home):
    reg, info = token_reg
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    assert os.path.exists(ansible), "ansible (ansible-core) must be installed next to %s" % sys.executable
    rt = refresh_token(reg)
    secret = b64auth(reg.username, reg.password)
    home.helper("fake", reg.username, reg.password)
    home.docker_config({"credHelpers": {reg.host: "fake"},
                        "auths": {"other.example": {"auth": secret, "identitytoken": rt}}})
    env = dict(os.environ)
    env.update(home.env)
    env.update(ANSIBLE_COLLECTIONS_PATH=PYROOT, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCAL_TEMP=str(home.root / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(home.root / "ansible-remote"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        [ansible, "localhost", "-c", "local", "-i", "localhost,", "-vvv", "-m", "hocker.registry." + MODULE,
         "-a", "image=%s" % info.image(reg.host)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=600, cwd=str(home.root), check=False)
    out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, out
    assert info.digest in out
    for s in (reg.password, secret, rt):
        assert s not in out
