import json

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import manifest as m
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch, ManifestError


def raw(obj):
    return json.dumps(obj, indent=3).encode()


IMAGE = {"schemaVersion": 2, "config": {"mediaType": m.OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
         "layers": []}


def test_exact_bytes_hashed():
    data = raw(IMAGE)
    parsed = m.parse_manifest(data, m.OCI_MANIFEST)
    assert parsed.digest == m.compute_digest(data)
    assert parsed.raw is data


def test_media_type_from_content_type_then_field_then_shape():
    assert m.parse_manifest(raw(IMAGE), "application/vnd.oci.image.manifest.v1+json; charset=utf-8").media_type \
        == m.OCI_MANIFEST
    docker = dict(IMAGE, mediaType=m.DOCKER_MANIFEST)
    assert m.parse_manifest(raw(docker), "application/json").media_type == m.DOCKER_MANIFEST
    assert m.parse_manifest(raw(IMAGE), "text/plain").media_type == m.OCI_MANIFEST
    shaped = dict(IMAGE, config={"mediaType": m.DOCKER_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2})
    assert m.parse_manifest(raw(shaped), None).media_type == m.DOCKER_MANIFEST
    index = {"schemaVersion": 2, "manifests": []}
    assert m.parse_manifest(raw(index), None).is_index


def test_mismatch_between_header_and_field():
    docker = dict(IMAGE, mediaType=m.DOCKER_MANIFEST)
    with pytest.raises(ManifestError, match="does not match its mediaType"):
        m.parse_manifest(raw(docker), m.OCI_MANIFEST)


def test_unreadable_schema1_rejected():
    with pytest.raises(ManifestError, match="schema 1"):
        m.parse_manifest(raw({"schemaVersion": 1, "fsLayers": []}), "application/json")
    with pytest.raises(ManifestError, match="schema 1"):
        m.parse_manifest(b"{}", m.DOCKER_SCHEMA1[1])


def test_digest_checked():
    with pytest.raises(DigestMismatch):
        m.parse_manifest(raw(IMAGE), m.OCI_MANIFEST, expected_digest="sha256:" + "1" * 64)


def test_size_cap():
    with pytest.raises(ManifestError, match="4 MiB"):
        m.parse_manifest(b" " * (4 * 1024 * 1024 + 1), m.OCI_MANIFEST)


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b"\xff\xfe", raw({"schemaVersion": 2, "mediaType": "x"})])
def test_garbage(data):
    with pytest.raises(ManifestError):
        m.parse_manifest(data, "application/json")
