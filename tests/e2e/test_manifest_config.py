"""docker_registry_manifest and docker_registry_config against real registries in every auth mode."""
import json
import os
import stat

import pytest

from helpers import assert_clean_failure, auth_args, sha256_file
from testbed.modrun import run_module


def run(name, reg, image, check=False, diff=False, **extra):
    args = dict(auth_args(reg), image=image)
    args.update(extra)
    return run_module(name, args, check=check, diff=diff)


def test_manifest_check_real_idempotent(any_registry, tmp_path):
    reg, images = any_registry
    info = images["docker-simple"]
    dest = str(tmp_path / "m.json")
    image = info.image(reg.host)

    first = run("docker_registry_manifest", reg, image, check=True, diff=True, dest=dest)
    assert first["rc"] == 0, first
    assert first["changed"] is True
    assert not os.path.exists(dest)
    assert first["diff"]["before"]["digest"] is None
    assert first["diff"]["after"]["digest"] == info.digest

    real = run("docker_registry_manifest", reg, image, dest=dest)
    assert real["changed"] is True, real
    assert sha256_file(dest) == info.digest
    assert real["digest"] == info.digest == real["manifest_digest"]
    assert real["config_digest"] == info.default["config_digest"]
    assert real["platform"] == "linux/amd64"
    assert real["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert real["image"] == "%s/%s:%s" % (reg.host, info.repository, info.tag)
    assert real["bytes_downloaded"] > 0
    assert not reg.password or reg.password not in real["stdout_raw"]

    again = run("docker_registry_manifest", reg, image, dest=dest)
    assert again["changed"] is False
    again_check = run("docker_registry_manifest", reg, image, dest=dest, check=True)
    assert again_check["changed"] is False


def test_config_check_real_idempotent(any_registry, tmp_path):
    reg, images = any_registry
    info = images["oci-simple"]
    dest = str(tmp_path / "c.json")
    image = info.image(reg.host)
    check = run("docker_registry_config", reg, image, dest=dest, check=True)
    assert check["changed"] is True and not os.path.exists(dest)
    real = run("docker_registry_config", reg, image, dest=dest)
    assert real["changed"] is True
    assert sha256_file(dest) == info.default["config_digest"] == real["config_digest"]
    assert real["config"] == json.loads(info.configs[info.default["config_digest"]])
    assert run("docker_registry_config", reg, image, dest=dest)["changed"] is False


@pytest.mark.parametrize("kind", ["docker-list", "oci-index"])
@pytest.mark.parametrize("platform,key", [("linux/arm64", "linux/arm64/v8"), ("linux/arm/v7", "linux/arm/v7"),
                                          ("linux/amd64", "linux/amd64")])
def test_index_platform_selection(registry_anonymous, seeded, kind, platform, key):
    info = seeded(registry_anonymous)[kind]
    result = run("docker_registry_manifest", registry_anonymous, info.image(registry_anonymous.host),
                 platform=platform)
    assert result["rc"] == 0, result
    assert result["digest"] == info.digest
    assert result["manifest_digest"] == info.platforms[key]["manifest_digest"]
    assert result["config_digest"] == info.platforms[key]["config_digest"]
    assert result["platform"] == key
    assert result["platforms"] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]
    assert "unknown/unknown" not in result["platforms"]
    assert result["index"]["manifests"]


def test_index_written_with_index_true(registry_token, seeded, tmp_path):
    info = seeded(registry_token)["oci-index"]
    dest = str(tmp_path / "index.json")
    result = run("docker_registry_manifest", registry_token, info.image(registry_token.host), dest=dest, index=True)
    assert result["changed"] is True
    assert sha256_file(dest) == info.digest
    assert result["media_type"] == "application/vnd.oci.image.index.v1+json"


def test_nested_index(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["nested-index"]
    result = run("docker_registry_manifest", registry_anonymous, info.image(registry_anonymous.host),
                 platform="linux/arm64")
    assert result["rc"] == 0, result
    assert result["manifest_digest"] == info.platforms["linux/arm64/v8"]["manifest_digest"]


def test_by_digest_and_hocker_style_registry(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["oci-simple"]
    by_digest = run("docker_registry_manifest", reg, info.by_digest(reg.host))
    assert by_digest["rc"] == 0 and by_digest["digest"] == info.digest
    hocker = run_module("docker_registry_manifest", {"registry": reg.url + "/v2/", "image": info.repository,
                                                     "tag": info.tag})
    assert hocker["rc"] == 0 and hocker["digest"] == info.digest
    assert hocker["image"] == "%s/%s:%s" % (reg.host, info.repository, info.tag)


def test_oci_manifest_without_media_type(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["oci-no-mediatype"]
    result = run("docker_registry_manifest", registry_anonymous, info.image(registry_anonymous.host))
    assert result["rc"] == 0, result
    assert result["media_type"] == "application/vnd.oci.image.manifest.v1+json"


def test_file_attributes(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["docker-simple"]
    dest = str(tmp_path / "m.json")
    assert run("docker_registry_manifest", reg, info.image(reg.host), dest=dest, mode="0600")["changed"]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    changed = run("docker_registry_manifest", reg, info.image(reg.host), dest=dest, mode="0644")
    assert changed["changed"] is True
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o644
    assert run("docker_registry_manifest", reg, info.image(reg.host), dest=dest, mode="0644")["changed"] is False


def test_dest_replaced_when_content_differs(registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["docker-simple"]
    dest = tmp_path / "m.json"
    dest.write_bytes(b"old content")
    result = run("docker_registry_manifest", reg, info.image(reg.host), dest=str(dest))
    assert result["changed"] is True
    assert sha256_file(str(dest)) == info.digest
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


# ----------------------------------------------------------------------------------------------- failures
def test_bad_reference(registry_anonymous):
    result = run_module("docker_registry_manifest", {"image": "Bad/Name"})
    assert_clean_failure(result)
    assert "lowercase" in result["msg"]


def test_unknown_repository_tag_and_digest(registry_anonymous, seeded):
    reg = registry_anonymous
    info = seeded(reg)["docker-simple"]
    for image in ("%s/no/such/repo:v1" % reg.host, "%s/%s:nosuchtag" % (reg.host, info.repository),
                  "%s/%s@sha256:%s" % (reg.host, info.repository, "0" * 64)):
        result = run("docker_registry_manifest", reg, image)
        assert_clean_failure(result)
        assert "not found" in result["msg"], result["msg"]


def test_unknown_platform_lists_offer(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["docker-list"]
    result = run("docker_registry_manifest", registry_anonymous, info.image(registry_anonymous.host),
                 platform="linux/s390x")
    assert_clean_failure(result)
    assert "linux/s390x" in result["msg"] and "linux/arm64/v8" in result["msg"]


def test_single_platform_image_for_other_arch(registry_anonymous, seeded):
    info = seeded(registry_anonymous)["docker-simple"]
    result = run("docker_registry_manifest", registry_anonymous, info.image(registry_anonymous.host),
                 platform="linux/arm64")
    assert_clean_failure(result)
    assert "linux/amd64 only" in result["msg"]


def test_wrong_password_never_printed(registry_basic, seeded):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    secret = "Wr0ng-S3cret-pw"
    args = dict(auth_args(reg), image=info.image(reg.host), username=reg.username, password=secret)
    result = run_module("docker_registry_manifest", args)
    assert_clean_failure(result, secret)
    assert "rejected the credentials" in result["msg"]


def test_missing_credentials(registry_basic, seeded):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    result = run_module("docker_registry_manifest", dict(auth_args(reg, with_credentials=False),
                                                         image=info.image(reg.host)))
    assert_clean_failure(result)
    assert "requires authentication" in result["msg"]


def test_token_mode_wrong_password(registry_token, seeded):
    reg = registry_token
    info = seeded(reg)["docker-simple"]
    secret = "N0t-the-pw"
    result = run_module("docker_registry_manifest", {"image": info.image(reg.host), "username": reg.username,
                                                     "password": secret})
    assert_clean_failure(result, secret)
    assert "rejected the credentials" in result["msg"]


def test_token_mode_with_credentials(registry_token, seeded):
    reg = registry_token
    info = seeded(reg)["docker-simple"]
    result = run_module("docker_registry_manifest", {"image": info.image(reg.host), "username": reg.username,
                                                     "password": reg.password})
    assert result["rc"] == 0, result
    assert reg.password not in result["stdout_raw"]


def test_untrusted_tls(registry_basic, seeded):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    result = run_module("docker_registry_manifest", {"registry": "https://" + reg.host,
                                                     "image": info.repository + ":" + info.tag,
                                                     "username": reg.username, "password": reg.password})
    assert_clean_failure(result, reg.password)
    assert "certificate verify failed" in result["msg"] and "ca_path" in result["msg"]


def test_validate_certs_false(registry_basic, seeded):
    reg = registry_basic
    info = seeded(reg)["docker-simple"]
    result = run_module("docker_registry_manifest", {"registry": "https://" + reg.host,
                                                     "image": info.repository + ":" + info.tag,
                                                     "username": reg.username, "password": reg.password,
                                                     "validate_certs": False})
    assert result["rc"] == 0, result


def test_mtls_without_client_cert(registry_mtls, seeded):
    reg = registry_mtls
    info = seeded(reg)["docker-simple"]
    result = run_module("docker_registry_manifest", {"image": info.image(reg.host), "ca_path": reg.ca_path})
    assert_clean_failure(result)
    assert "client_cert" in result["msg"]


def test_unreachable_registry():
    result = run_module("docker_registry_manifest", {"registry": "http://127.0.0.1:9", "image": "x", "retries": 0})
    assert_clean_failure(result)
    assert "cannot reach" in result["msg"]


def test_registry_mirrors_for_docker_hub_references(fresh_registry, seeded):
    from testbed.builder import build_kind, push_image
    mirror = fresh_registry("anonymous")
    empty = fresh_registry("anonymous")
    obj, _extra = build_kind("oci-simple")
    push_image(mirror.session(), mirror.url, "library/demo", obj, tags=["1.0"])
    result = run_module("docker_registry_manifest", {"image": "demo:1.0",
                                                     "registry_mirrors": [empty.url, mirror.url]})
    assert result["rc"] == 0, result
    assert result["source"] == mirror.url
    assert result["image"] == "registry-1.docker.io/library/demo:1.0"
    assert result["digest"] == obj.digest
    assert mirror.count("GET", r"/v2/library/demo/manifests/1.0") == 1
    assert empty.count(None, r"/v2/library/demo/manifests/1.0") == 1
    # an image no mirror has falls through to Docker Hub itself (unreachable here): a clean error
    missing = run_module("docker_registry_manifest", {"image": "nothere:1", "registry_mirrors": [mirror.url],
                                                      "retries": 0, "timeout": 5})
    assert_clean_failure(missing)
    assert "registry-1.docker.io" in missing["msg"]
    # mirrors are for Docker Hub references only
    other = run_module("docker_registry_manifest", {"image": "%s/library/demo:1.0" % empty.host,
                                                    "registry_mirrors": [mirror.url]})
    assert_clean_failure(other)
    assert "not found" in other["msg"]
