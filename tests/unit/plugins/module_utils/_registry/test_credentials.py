"""Stored credentials (docker config.json, credential helpers, podman auth.json) and certs.d lookup."""
import base64
import json
import os
import stat

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import credentials
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference

SECRET = "s3cr3t-Value-!@#"


def b64(text):
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated HOME / XDG / PATH so that nothing of the real machine is read."""
    home = tmp_path / "home"
    home.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + "/usr/bin:/bin")
    return tmp_path


class Warnings(list):
    def __call__(self, msg):
        self.append(msg)


def write_json(path, data):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        if isinstance(data, str):
            handle.write(data)
        else:
            json.dump(data, handle)
    return path


def docker_config(env, data):
    return write_json(env / "home" / ".docker" / "config.json", data)


def helper(env, name, body):
    """A fake docker-credential-<name> on PATH; ``body`` is shell code (stdin is the server URL)."""
    path = env / "bin" / ("docker-credential-" + name)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def answering_helper(env, name, username, secret):
    log = env / ("%s.stdin" % name)
    body = ('cat > %s\n[ "$1" = get ] || exit 3\n'
            "printf '%%s' '%s'" % (log, json.dumps({"ServerURL": "x", "Username": username, "Secret": secret})))
    helper(env, name, body)
    return log


def assert_no_secret(warnings, creds=None, secret=SECRET):
    for w in warnings:
        assert secret not in w
    if creds is not None and creds.source:
        assert secret not in creds.source


# ------------------------------------------------------------------------------------------ key matching
@pytest.mark.parametrize("keys,image,expected", [
    (["https://index.docker.io/v1/"], "debian", "https://index.docker.io/v1/"),
    (["docker.io"], "library/debian", "docker.io"),
    (["index.docker.io"], "docker.io/library/debian", "index.docker.io"),
    (["registry-1.docker.io"], "debian:12", "registry-1.docker.io"),
    (["https://index.docker.io/v1/", "docker.io"], "debian", "https://index.docker.io/v1/"),
    (["docker.io", "https://index.docker.io/v1/"], "debian", "https://index.docker.io/v1/"),
    (["quay.io"], "debian", None),
    (["127.0.0.1:5000"], "127.0.0.1:5000/app", "127.0.0.1:5000"),
    (["https://127.0.0.1:5000/v1/"], "127.0.0.1:5000/app", "https://127.0.0.1:5000/v1/"),
    (["http://127.0.0.1:5000"], "127.0.0.1:5000/app", "http://127.0.0.1:5000"),
    (["http://127.0.0.1:5000", "127.0.0.1:5000"], "127.0.0.1:5000/app", "127.0.0.1:5000"),
    (["127.0.0.1:5001"], "127.0.0.1:5000/app", None),
    (["127.0.0.1"], "127.0.0.1:5000/app", None),
    (["Registry.Example.COM"], "registry.example.com/a/b", "Registry.Example.COM"),
    (["registry.example.com", "registry.example.com/team"], "registry.example.com/team/app",
     "registry.example.com/team"),
    (["registry.example.com", "registry.example.com/team"], "registry.example.com/other/app",
     "registry.example.com"),
    (["registry.example.com/team/app", "registry.example.com/team"], "registry.example.com/team/app",
     "registry.example.com/team/app"),
    (["registry.example.com/tea"], "registry.example.com/team/app", None),
    (["docker.io/library"], "debian", "docker.io/library"),
    (["gcr.io"], "docker.io/gcr.io", None),
])
def test_match_key(keys, image, expected):
    assert credentials.match_key(keys, parse_reference(image)) == expected


def test_match_key_with_registry_option():
    ref = parse_reference("app", registry="https://127.0.0.1:5000/v2/")
    assert credentials.match_key(["https://127.0.0.1:5000"], ref) == "https://127.0.0.1:5000"
    hub = parse_reference("library/debian", registry="https://index.docker.io")
    assert credentials.match_key(["https://index.docker.io/v1/"], hub) == "https://index.docker.io/v1/"


@pytest.mark.parametrize("key,host", [
    ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"),
    ("https://h.example:5000/v1/", "h.example:5000"), ("h.example/ns/repo", "h.example"), ("http://H", "h"),
])
def test_normalize_host(key, host):
    assert credentials.normalize_host(key) == host


def test_helper_server_url():
    assert credentials.helper_server_url(parse_reference("debian")) == "https://index.docker.io/v1/"
    assert credentials.helper_server_url(parse_reference("127.0.0.1:5000/app")) == "127.0.0.1:5000"


# ------------------------------------------------------------------------------------------ auths entries
def test_auth_base64(env):
    docker_config(env, {"auths": {"https://index.docker.io/v1/": {"auth": b64("alice:" + SECRET + ":x")}}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("debian"), warn=warnings)
    assert (creds.username, creds.password) == ("alice", SECRET + ":x")
    assert creds.source == "docker config %s" % (env / "home" / ".docker" / "config.json")
    assert warnings == []


def test_username_password_fields(env):
    docker_config(env, {"auths": {"reg.example:5000": {"username": "bob", "password": SECRET}}})
    creds = credentials.lookup(parse_reference("reg.example:5000/app"))
    assert (creds.username, creds.password) == ("bob", SECRET)


def test_identity_token_entry(env):
    docker_config(env, {"auths": {"reg.example": {"auth": b64("carol:"), "identitytoken": SECRET}}})
    creds = credentials.lookup(parse_reference("reg.example/app"))
    assert creds.identity_token == SECRET
    assert creds.username == "carol"
    assert creds.password is None and not creds.has_basic


def test_registry_token_entry(env):
    docker_config(env, {"auths": {"reg.example": {"registrytoken": SECRET}}})
    creds = credentials.lookup(parse_reference("reg.example/app"))
    assert creds.registry_token == SECRET and not creds.has_basic


def test_bad_base64_warns_without_secret(env):
    docker_config(env, {"auths": {"reg.example": {"auth": "!!" + SECRET}}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert creds.empty
    assert len(warnings) == 1 and "not base64" in warnings[0] and "reg.example" in warnings[0]
    assert_no_secret(warnings)


def test_empty_entry_is_anonymous(env):
    docker_config(env, {"auths": {"reg.example": {}}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert creds.empty and creds.source is None and warnings == []


def test_no_config_at_all_is_anonymous_and_silent(env):
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).empty
    assert warnings == []


# ------------------------------------------------------------------------------------------ file locations
def test_docker_config_option_file_and_directory(env):
    path = write_json(env / "elsewhere" / "config.json", {"auths": {"reg.example": {"auth": b64("opt:" + SECRET)}}})
    docker_config(env, {"auths": {"reg.example": {"auth": b64("home:x")}}})
    ref = parse_reference("reg.example/app")
    assert credentials.lookup(ref, docker_config=path).username == "opt"
    assert credentials.lookup(ref, docker_config=str(env / "elsewhere")).username == "opt"
    assert credentials.lookup(ref).username == "home"


def test_docker_config_option_missing_warns(env):
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), docker_config=str(env / "nope.json"),
                               warn=warnings)
    assert creds.empty
    assert len(warnings) == 1 and "does not exist" in warnings[0]


def test_docker_config_env(env, monkeypatch):
    write_json(env / "dc" / "config.json", {"auths": {"reg.example": {"auth": b64("envuser:x")}}})
    docker_config(env, {"auths": {"reg.example": {"auth": b64("home:x")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(env / "dc"))
    assert credentials.lookup(parse_reference("reg.example/app")).username == "envuser"


def test_registry_auth_file(env, monkeypatch):
    path = write_json(env / "auth" / "my.json", {"auths": {"reg.example": {"auth": b64("raf:" + SECRET)}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", path)
    creds = credentials.lookup(parse_reference("reg.example/app"))
    assert creds.username == "raf" and creds.source == "REGISTRY_AUTH_FILE " + path


def test_podman_runtime_auth(env):
    path = write_json(env / "run" / "containers" / "auth.json",
                      {"auths": {"reg.example": {"auth": b64("podman:" + SECRET)}}})
    creds = credentials.lookup(parse_reference("reg.example/app"))
    assert creds.username == "podman" and creds.source == "podman auth file " + path


def test_podman_config_auth_xdg_and_home(env, monkeypatch):
    home_path = write_json(env / "home" / ".config" / "containers" / "auth.json",
                           {"auths": {"reg.example": {"auth": b64("homecfg:x")}}})
    ref = parse_reference("reg.example/app")
    assert credentials.lookup(ref).source == "podman auth file " + home_path
    write_json(env / "xdg" / "containers" / "auth.json", {"auths": {"reg.example": {"auth": b64("xdg:x")}}})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env / "xdg"))
    assert credentials.lookup(ref).username == "xdg"


def test_podman_namespaced_keys(env):
    write_json(env / "run" / "containers" / "auth.json", {"auths": {
        "reg.example": {"auth": b64("host:x")},
        "reg.example/team": {"auth": b64("team:x")},
    }})
    assert credentials.lookup(parse_reference("reg.example/team/app")).username == "team"
    assert credentials.lookup(parse_reference("reg.example/other/app")).username == "host"


def test_source_precedence(env, monkeypatch):
    """docker config > $REGISTRY_AUTH_FILE > $XDG_RUNTIME_DIR auth.json > ~/.config auth.json."""
    ref = parse_reference("reg.example/app")
    write_json(env / "home" / ".config" / "containers" / "auth.json", {"auths": {"reg.example": {"auth": b64("d:x")}}})
    assert credentials.lookup(ref).username == "d"
    write_json(env / "run" / "containers" / "auth.json", {"auths": {"reg.example": {"auth": b64("c:x")}}})
    assert credentials.lookup(ref).username == "c"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", write_json(env / "raf.json", {"auths": {"reg.example": {"auth": b64("b:x")}}}))
    assert credentials.lookup(ref).username == "b"
    docker_config(env, {"auths": {"reg.example": {"auth": b64("a:x")}}})
    assert credentials.lookup(ref).username == "a"
    # a file without an entry for the registry does not hide the next one
    docker_config(env, {"auths": {"other.example": {"auth": b64("z:x")}}})
    assert credentials.lookup(ref).username == "b"


def test_same_file_read_once(env, monkeypatch):
    path = docker_config(env, "{broken")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", path)
    warnings = Warnings()
    credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert len(warnings) == 1


# ------------------------------------------------------------------------------------------ corrupt files
@pytest.mark.parametrize("content,expect", [
    ('{"auths": {"reg.example": {"auth": "%s"' % b64("x:" + SECRET), "not valid JSON: Expecting"),
    ("[1, 2]", "is not a JSON object"),
    (b"\xff\xfe" + SECRET.encode(), "not UTF-8"),
])
def test_corrupt_config_warns_and_continues(env, monkeypatch, content, expect):
    path = str(env / "home" / ".docker" / "config.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(content if isinstance(content, bytes) else content.encode())
    write_json(env / "run" / "containers" / "auth.json", {"auths": {"reg.example": {"auth": b64("next:x")}}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert creds.username == "next"
    assert len(warnings) == 1 and expect in warnings[0] and path in warnings[0]
    assert_no_secret(warnings)
    assert b64("x:" + SECRET) not in warnings[0]


def test_unreadable_config_warns(env, monkeypatch):
    path = docker_config(env, {"auths": {}})
    write_json(env / "run" / "containers" / "auth.json", {"auths": {"reg.example": {"auth": b64("next:x")}}})

    def refuse(name, *args, **kwargs):
        if str(name) == path:
            raise PermissionError(13, "Permission denied", name)
        return open(name, *args, **kwargs)

    # tests run as root, who reads any file: make this one unreadable for the module under test
    monkeypatch.setattr(credentials, "open", refuse, raising=False)
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).username == "next"
    assert len(warnings) == 1 and "cannot read" in warnings[0] and "Permission denied" in warnings[0]


def test_config_is_a_directory_warns(env):
    os.makedirs(str(env / "home" / ".docker" / "config.json"))
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).empty
    assert len(warnings) == 1 and "not a regular file" in warnings[0]


# ------------------------------------------------------------------------------------------ helpers
def test_cred_helper_protocol(env):
    log = answering_helper(env, "fake", "helperuser", SECRET)
    docker_config(env, {"credHelpers": {"reg.example:5000": "fake"}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example:5000/app"), warn=warnings)
    assert (creds.username, creds.password) == ("helperuser", SECRET)
    assert creds.source == "credential helper docker-credential-fake"
    assert log.read_text() == "reg.example:5000"
    assert warnings == []


def test_cred_helper_docker_hub_server_url(env):
    log = answering_helper(env, "hub", "u", SECRET)
    docker_config(env, {"credHelpers": {"docker.io": "hub"}})
    assert credentials.lookup(parse_reference("debian")).username == "u"
    assert log.read_text() == "https://index.docker.io/v1/"


def test_cred_helper_identity_token(env):
    answering_helper(env, "idt", "<token>", SECRET)
    docker_config(env, {"credsStore": "idt"})
    creds = credentials.lookup(parse_reference("reg.example/app"))
    assert creds.identity_token == SECRET
    assert creds.username is None and creds.password is None


def test_creds_store(env):
    log = answering_helper(env, "store", "storeuser", SECRET)
    docker_config(env, {"credsStore": "store", "auths": {"reg.example": {}}})
    creds = credentials.lookup(parse_reference("reg.example/app"))
    assert creds.username == "storeuser" and creds.source == "credential helper docker-credential-store"
    assert log.read_text() == "reg.example"


def test_helper_precedence(env):
    """credHelpers[host] > credsStore > auths[host]."""
    answering_helper(env, "perhost", "from-credhelpers", "a")
    answering_helper(env, "store", "from-credsstore", "b")
    ref = parse_reference("reg.example/app")
    cfg = {"credHelpers": {"reg.example": "perhost"}, "credsStore": "store",
           "auths": {"reg.example": {"auth": b64("from-auths:c")}}}
    docker_config(env, cfg)
    assert credentials.lookup(ref).username == "from-credhelpers"
    del cfg["credHelpers"]
    docker_config(env, cfg)
    assert credentials.lookup(ref).username == "from-credsstore"
    del cfg["credsStore"]
    docker_config(env, cfg)
    assert credentials.lookup(ref).username == "from-auths"
    # a credHelpers entry for another registry does not apply
    cfg["credHelpers"] = {"other.example": "perhost"}
    docker_config(env, cfg)
    assert credentials.lookup(ref).username == "from-auths"


def test_helper_not_found_is_silent_and_continues(env):
    helper(env, "empty", "cat >/dev/null\necho 'credentials not found in native keychain'\nexit 1")
    docker_config(env, {"credHelpers": {"reg.example": "empty"}, "credsStore": "empty",
                        "auths": {"reg.example": {"auth": b64("fallback:x")}}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert creds.username == "fallback"
    assert warnings == []


def test_missing_helper_warns_and_continues(env):
    docker_config(env, {"credsStore": "desktop"})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert creds.empty
    assert len(warnings) == 1
    assert "docker-credential-desktop" in warnings[0] and "reg.example" in warnings[0]
    assert "not found on PATH" in warnings[0]


def test_failing_helper_warns_without_its_output(env):
    helper(env, "broken", "cat >/dev/null\necho '%s'\necho 'oops %s' >&2\nexit 7" % (SECRET, SECRET))
    docker_config(env, {"credHelpers": {"reg.example": "broken"},
                        "auths": {"reg.example": {"auth": b64("fallback:x")}}})
    warnings = Warnings()
    creds = credentials.lookup(parse_reference("reg.example/app"), warn=warnings)
    assert creds.username == "fallback"
    assert len(warnings) == 1 and "docker-credential-broken" in warnings[0] and "exit status 7" in warnings[0]
    assert_no_secret(warnings)


@pytest.mark.parametrize("output,expect", [
    ("not json " + SECRET, "not a JSON object"),
    ('["%s"]' % SECRET, "not a JSON object"),
    ('{"Username": "", "Secret": "%s"}' % SECRET, "without a user name"),
])
def test_helper_bad_answers_warn(env, output, expect):
    helper(env, "odd", "cat >/dev/null\nprintf '%%s' '%s'" % output)
    docker_config(env, {"credsStore": "odd"})
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).empty
    assert len(warnings) == 1 and expect in warnings[0]
    assert_no_secret(warnings)


def test_helper_empty_secret_is_not_found(env):
    helper(env, "nosecret", "cat >/dev/null\necho '{\"Username\": \"u\", \"Secret\": \"\"}'")
    docker_config(env, {"credsStore": "nosecret"})
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).empty
    assert warnings == []


def test_helper_timeout_kills_it(env, monkeypatch):
    pidfile = env / "child.pid"
    # the helper starts a child that would keep the pipes open: the whole group must be killed
    helper(env, "slow", "sleep 300 &\necho $! > %s\nwait" % pidfile)
    docker_config(env, {"credsStore": "slow"})
    monkeypatch.setattr(credentials, "HELPER_TIMEOUT", 1)
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).empty
    assert len(warnings) == 1 and "did not answer" in warnings[0] and "docker-credential-slow" in warnings[0]
    child = int(pidfile.read_text())
    # killed: gone, or a zombie about to be reaped by init
    try:
        with open("/proc/%d/stat" % child) as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        assert state in ("Z", "X")
    except FileNotFoundError:
        pass


def test_helper_name_with_path_is_refused(env):
    docker_config(env, {"credsStore": "../../bin/sh"})
    warnings = Warnings()
    assert credentials.lookup(parse_reference("reg.example/app"), warn=warnings).empty
    assert len(warnings) == 1 and "not a plain program name" in warnings[0]


def test_helper_in_podman_auth_file(env):
    answering_helper(env, "podhelper", "p", SECRET)
    write_json(env / "run" / "containers" / "auth.json", {"credHelpers": {"reg.example": "podhelper"}})
    assert credentials.lookup(parse_reference("reg.example/app")).username == "p"


# ------------------------------------------------------------------------------------------ certs.d
def make_pem(path, label):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % label)
    return path


@pytest.fixture
def certs_roots(env, monkeypatch):
    roots = [env / "docker-certs.d", env / "containers-certs.d"]
    monkeypatch.setattr(credentials, "CERTS_D_ROOTS", [str(r) for r in roots])
    return roots


def test_certs_d_ca_bundle(certs_roots):
    make_pem(certs_roots[0] / "reg.example:5000" / "ca.crt", "CA-ONE")
    make_pem(certs_roots[1] / "reg.example:5000" / "other.crt", "CA-TWO")
    make_pem(certs_roots[0] / "reg.example:5001" / "ca.crt", "WRONG-PORT")
    tls = credentials.tls_for_url("https://reg.example:5000/v2/app/manifests/latest")
    assert tls["client_cert"] is None and tls["client_key"] is None
    with open(tls["ca_path"]) as handle:
        bundle = handle.read()
    assert "CA-ONE" in bundle and "CA-TWO" in bundle and "WRONG-PORT" not in bundle
    assert bundle.index("CA-ONE") < bundle.index("CA-TWO")
    # the default trust store is kept (docker adds certs.d CAs to the system pool)
    assert bundle.count("BEGIN CERTIFICATE") > 2
    # cached: the same bundle for the next request
    assert credentials.tls_for_url("https://reg.example:5000/v2/")["ca_path"] == tls["ca_path"]


def test_certs_d_client_certificate(certs_roots):
    d = certs_roots[1] / "reg.example"
    make_pem(d / "client.cert", "CLIENT")
    (d / "client.key").write_text("KEY")
    tls = credentials.tls_for_url("https://reg.example/v2/")
    assert tls == {"ca_path": None, "client_cert": str(d / "client.cert"), "client_key": str(d / "client.key")}
    assert credentials.tls_for_url("https://reg.example:443/v2/")["client_cert"] == str(d / "client.cert")


def test_certs_d_other_cert_key_pair_and_cert_without_key(certs_roots):
    d = certs_roots[0] / "pair.example"
    make_pem(d / "me.cert", "ME")
    (d / "me.key").write_text("KEY")
    assert credentials.tls_for_url("https://pair.example/v2/")["client_key"] == str(d / "me.key")
    lonely = certs_roots[0] / "lonely.example"
    make_pem(lonely / "client.cert", "ALONE")
    assert credentials.tls_for_url("https://lonely.example/v2/") is None


def test_certs_d_nothing(certs_roots):
    assert credentials.tls_for_url("https://none.example/v2/") is None
    make_pem(certs_roots[0] / "plain.example:80" / "ca.crt", "X")
    assert credentials.tls_for_url("http://plain.example:80/v2/") is None


def test_certs_d_explicit_roots(env):
    """The roots are an argument (the test bed passes its own); nothing in the environment changes them."""
    root = env / "own-certs.d"
    make_pem(root / "127.0.0.1:5000" / "ca.crt", "FROM-ROOTS")
    tls = credentials.tls_for_url("https://127.0.0.1:5000/v2/", roots=[str(root)])
    with open(tls["ca_path"]) as handle:
        assert "FROM-ROOTS" in handle.read()
    assert credentials.tls_for_url("https://127.0.0.1:5000/v2/", roots=[str(env / "empty")]) is None


def test_ca_path_directory(env):
    """A certs.d-style directory given as ca_path: its CAs (plus the default store) and client pair."""
    d = env / "certs"
    make_pem(d / "ca.crt", "DIR-CA")
    make_pem(d / "me.cert", "ME")
    (d / "me.key").write_text("KEY")
    tls = credentials.tls_from_directory(str(d))
    with open(tls["ca_path"]) as handle:
        assert "DIR-CA" in handle.read()
    assert tls["client_cert"] == str(d / "me.cert") and tls["client_key"] == str(d / "me.key")


def test_certs_d_user_directory(env, certs_roots):
    d = env / "home" / ".config" / "containers" / "certs.d" / "user.example:8443"
    make_pem(d / "ca.crt", "USER-CA")
    tls = credentials.tls_for_url("https://user.example:8443/v2/")
    with open(tls["ca_path"]) as handle:
        assert "USER-CA" in handle.read()


def test_certs_d_ipv6(certs_roots):
    make_pem(certs_roots[0] / "[::1]:5000" / "ca.crt", "V6")
    assert credentials.tls_for_url("https://[::1]:5000/v2/")["ca_path"]
