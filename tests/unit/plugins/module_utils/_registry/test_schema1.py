"""Docker schema 1: payload and digest of signed manifests, validation of untrusted input, and the schema 2
config/manifest conversion checked byte for byte against skopeo's.

The fixtures in fixtures/schema1/ were made by the test bed's builder (a docker 1.10+-style signed manifest with
throwaway entries, a docker 1.9-style unsigned one with nanosecond and offset times, a docker 1.8.2 one with a
rich config) and pushed to distribution 2.8.2; ``*.served.json`` is what the registry served back (re-signed
with its own key), and ``*.config.json``, ``*.schema2.json`` and the ``digest`` in ``*.meta.json`` are skopeo
1.9.3's (docker-archive config, ``copy --format v2s2`` to ``dir:``, ``inspect``).
"""
import base64
import hashlib
import json
import os

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import schema1 as s1
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch, ManifestError

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "schema1")
CASES = ("signed", "unsigned", "legacy")
EMPTY = s1.EMPTY_LAYER_DIGEST


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as handle:
        return handle.read()


def meta(case):
    return json.loads(fixture(case + ".meta.json"))


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hexid(n):
    return hashlib.sha256(str(n).encode()).hexdigest()


def v1(n, parent=None, **fields):
    """A v1Compatibility text: id from ``n``, parent from ``parent`` (numbers)."""
    obj = {"id": hexid(n)}
    if parent is not None:
        obj["parent"] = hexid(parent)
    obj.update(fields)
    return json.dumps(obj, separators=(",", ":"))


def blob(n):
    return "sha256:" + hashlib.sha256(b"blob %d" % n).hexdigest()


def manifest(entries, blobs=None, **top):
    """An unsigned manifest: ``entries`` are v1Compatibility texts, top first."""
    blobs = blobs or [blob(i) for i in range(len(entries))]
    doc = {"schemaVersion": 1, "name": "app", "tag": "v1", "architecture": "amd64"}
    doc.update(top)
    doc["fsLayers"] = [{"blobSum": b} for b in blobs]
    doc["history"] = [{"v1Compatibility": e} for e in entries]
    return json.dumps(doc, indent=3).encode()


def protected(length, tail, **extra):
    header = {"formatLength": length, "formatTail": b64url(tail), "time": "2024-01-01T00:00:00Z"}
    header.update(extra)
    return b64url(json.dumps(header).encode())


def sign(payload, signatures=1, header=None):
    """A JWS pretty signature envelope around ``payload`` (signature bytes are not checked by anyone)."""
    length = len(payload.rstrip()) - 1
    length = len(payload[:length].rstrip())
    tail = payload[length:]
    blocks = [{"header": {"alg": "ES256"}, "signature": b64url(b"sig%d" % i),
               "protected": header or protected(length, tail)} for i in range(signatures)]
    return payload[:length] + b',\n   "signatures": ' + json.dumps(blocks).encode() + b"\n}"


SIMPLE = [v1(2, 1, created="2024-01-01T00:00:02Z", container_config={"Cmd": ["run b"]}, os="linux",
             architecture="amd64", config={"Cmd": ["/b"]}),
          v1(1, 0, created="2024-01-01T00:00:01Z", container_config={"Cmd": ["ENV x"]}, throwaway=True),
          v1(0, created="2024-01-01T00:00:00Z", container_config={"Cmd": ["ADD base"]})]


# ---- the fixtures: digests, layers and the conversion agree with distribution and skopeo ---------------------

@pytest.mark.parametrize("case", CASES)
def test_fixture_digest_layers_and_conversion(case):
    raw = fixture(case + ".json")
    info = meta(case)
    parsed = s1.parse_schema1(raw, info["media_type"], expected_digest=info["digest"])
    assert parsed.digest == info["digest"]
    assert parsed.media_type == info["media_type"]
    assert parsed.signed is (case != "unsigned")
    assert [layer["digest"] for layer in parsed.layers] == info["layers"]
    assert {layer["mediaType"] for layer in parsed.layers} == {s1.SCHEMA2_LAYER}
    assert parsed.throwaway == [True, False, True, False]
    assert parsed.fs_layers[0] == parsed.fs_layers[2] == EMPTY
    assert parsed.platform == {"os": "linux", "architecture": "amd64"}
    config = parsed.schema2_config(info["diff_ids"])
    assert config == fixture(case + ".config.json")
    assert parsed.schema2_manifest(config, info["sizes"]) == fixture(case + ".schema2.json")
    assert parsed.to_schema2(info["diff_ids"], info["sizes"]) == (config, fixture(case + ".schema2.json"))
    history = json.loads(config)["history"]
    assert [h.get("empty_layer", False) for h in history] == [False, True, False, True]   # base first


@pytest.mark.parametrize("case", ["signed", "legacy"])
def test_served_bytes_were_re_signed_but_keep_the_digest(case):
    raw, served = fixture(case + ".json"), fixture(case + ".served.json")
    assert raw != served   # the registry's signature, not ours
    assert json.loads(served)["signatures"] != json.loads(raw)["signatures"]
    assert s1.schema1_payload(served) == s1.schema1_payload(raw)
    assert s1.schema1_digest(served) == s1.schema1_digest(raw) == meta(case)["digest"]
    parsed = s1.parse_schema1(served, s1.MEDIA_TYPE_SIGNED, expected_digest=meta(case)["digest"])
    assert parsed.raw is served
    assert sha(parsed.payload) == parsed.digest != sha(served)
    assert b'"signatures"' not in parsed.payload


def test_unsigned_digest_is_the_bytes():
    raw = fixture("unsigned.json")
    assert s1.schema1_payload(raw) is raw
    assert s1.parse_schema1(raw).digest == sha(raw) == meta("unsigned")["digest"]
    assert s1.parse_schema1(raw).media_type == s1.MEDIA_TYPE_UNSIGNED


def test_signing_the_unsigned_manifest_keeps_its_digest():
    raw = manifest(SIMPLE)
    signed = sign(raw)
    assert s1.parse_schema1(signed).digest == s1.parse_schema1(raw).digest == sha(raw)
    assert s1.parse_schema1(signed).payload == raw
    # several signatures over one payload are fine
    assert s1.parse_schema1(sign(raw, signatures=3)).digest == sha(raw)


def test_digest_verification():
    raw = fixture("signed.served.json")
    digest = meta("signed")["digest"]
    with pytest.raises(DigestMismatch):
        s1.parse_schema1(raw, expected_digest=sha(raw))   # the digest of the whole bytes is not the digest
    with pytest.raises(DigestMismatch):
        s1.parse_schema1(raw, expected_digest="sha256:" + "0" * 64)
    payload = s1.schema1_payload(raw)
    sha512 = "sha512:" + hashlib.sha512(payload).hexdigest()
    assert s1.parse_schema1(raw, expected_digest=sha512).digest == sha512
    with pytest.raises(ManifestError, match="not a sha256"):
        s1.parse_schema1(raw, expected_digest="md5:abc")
    assert s1.parse_schema1(raw, expected_digest=digest).digest == digest


def test_media_type_from_content_type_or_content():
    raw = manifest(SIMPLE)
    assert s1.parse_schema1(raw, "application/json").media_type == s1.MEDIA_TYPE_UNSIGNED
    assert s1.parse_schema1(sign(raw), None).media_type == s1.MEDIA_TYPE_SIGNED
    assert s1.parse_schema1(raw, s1.MEDIA_TYPE_SIGNED + "; charset=utf-8").media_type == s1.MEDIA_TYPE_SIGNED
    assert s1.is_schema1(content_type=s1.MEDIA_TYPE_UNSIGNED)
    assert s1.is_schema1(json.loads(raw))
    assert s1.is_schema1({"signatures": []})
    assert not s1.is_schema1({"schemaVersion": 2, "layers": []}, "application/vnd.oci.image.manifest.v1+json")
    assert not s1.is_schema1(None, None)


# ---- the signed envelope: anything that makes the payload ambiguous is refused ------------------------------

def test_envelope_errors():
    raw = manifest(SIMPLE)
    good = sign(raw)
    length = len(raw) - 2
    cases = [
        (good.replace(b'"signatures": [', b'"signatures": [], "x": ['), "empty or invalid signatures"),
        (sign(raw, header=protected(len(good) + 10, b"\n}")), "invalid formatLength"),
        (sign(raw, header=protected(-1, b"\n}")), "invalid formatLength"),
        (sign(raw, header=protected("12", b"\n}")), "invalid formatLength"),
        (sign(raw, header=b64url(b"not json")), "protected header"),
        (sign(raw, header="***"), "not base64url"),
        (sign(raw, header=b64url(b'{"formatLength": %d}' % length)), "formatTail"),
        (sign(raw, header=protected(length - 5, b"\n}")), "not valid JSON|differs"),
    ]
    for data, message in cases:
        with pytest.raises(ManifestError, match=message):
            s1.parse_schema1(data)
    two = json.loads(sign(raw, signatures=2))
    two["signatures"][1]["protected"] = protected(length, b"  \n}")
    with pytest.raises(ManifestError, match="disagree"):
        s1.parse_schema1(raw[:length] + b',\n   "signatures": ' + json.dumps(two["signatures"]).encode() + b"\n}")


def test_payload_must_be_the_manifest_around_it():
    """A document whose members after formatLength change what it says (here: a second fsLayers list that a
    reader of the whole document would take) is refused, though its payload alone is a fine manifest."""
    raw = manifest(SIMPLE)
    length = len(raw) - 2
    evil = (raw[:length] + b',\n   "fsLayers": [{"blobSum": "%s"}, {"blobSum": "%s"}, {"blobSum": "%s"}]'
            % (blob(7).encode(), blob(8).encode(), blob(9).encode()))
    doc = json.loads(sign(raw))
    evil += b',\n   "signatures": ' + json.dumps(doc["signatures"]).encode() + b"\n}"
    with pytest.raises(ManifestError, match="duplicate key"):
        s1.parse_schema1(evil)
    # a member outside the payload, even a new one, makes the document say more than what was signed
    extra = raw[:length] + b',\n   "extra": 1'
    extra += b',\n   "signatures": ' + json.dumps(doc["signatures"]).encode() + b"\n}"
    with pytest.raises(ManifestError, match="differs from the manifest around it"):
        s1.parse_schema1(extra)


# ---- validation of the manifest and its v1Compatibility entries ---------------------------------------------

def deep(n):
    return "[" * n + "]" * n


@pytest.mark.parametrize("data,message", [
    (b"\xff\xfe", "UTF-8"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 1, "schemaVersion": 1}', "duplicate key"),
    (json.dumps({"schemaVersion": 2, "fsLayers": [], "history": []}).encode(), "not a schema 1"),
    (json.dumps({"schemaVersion": True, "fsLayers": [], "history": []}).encode(), "not a schema 1"),
    (manifest([]), "no fsLayers"),
    (manifest(SIMPLE, blobs=[blob(0), blob(1)]), "history entries for 2 fsLayers"),
    (manifest(SIMPLE, blobs=[blob(0), "sha256:../../etc/passwd", blob(2)]), "invalid blobSum"),
    (manifest(SIMPLE, blobs=[blob(0), blob(1), "SHA256:" + "A" * 64]), "invalid blobSum"),
    (manifest(SIMPLE, name=5), "name is not a string"),
    (manifest(["{not json"] + SIMPLE[1:]), "not valid JSON"),
    (manifest(["[1]"] + SIMPLE[1:]), "not a JSON object"),
    (manifest([v1(2, 1, x=deep(10)).replace('"' + deep(10) + '"', deep(100))] + SIMPLE[1:]), "deeper than"),
    (manifest([v1(2, 1, pad="x" * (1024 * 1024))] + SIMPLE[1:]), "larger than"),
    (manifest([v1(2, 1, pad="x" * (5 * 1024 * 1024))] + SIMPLE[1:]), "4 MiB"),
    (manifest([SIMPLE[0].replace(hexid(2), "abc")] + SIMPLE[1:]), "invalid v1 id"),
    (manifest([SIMPLE[0].replace(hexid(2), hexid(2).upper())] + SIMPLE[1:]), "invalid v1 id"),
    (manifest([v1(2, 5)] + SIMPLE[1:]), "does not follow"),
    (manifest(SIMPLE[:2] + [v1(0, 9)]), "base history entry has a parent"),
    (manifest([v1(0, 1), v1(1, 0), v1(0)]), "more than once"),
    (manifest([v1(2, 1, throwaway="yes")] + SIMPLE[1:]), "throwaway is not a boolean"),
    (manifest([v1(2, 1, created="yesterday")] + SIMPLE[1:]), "invalid created time"),
    (manifest([v1(2, 1, created="2024-02-30T00:00:00Z")] + SIMPLE[1:]), "invalid created time"),
    (manifest([v1(2, 1, created=1700000000)] + SIMPLE[1:]), "invalid created time"),
    (manifest([v1(2, 1, container_config={"Cmd": "run b"})] + SIMPLE[1:]), "not a list of strings"),
    (manifest([v1(2, 1, container_config=[])] + SIMPLE[1:]), "container_config is not an object"),
    (manifest([v1(2, 1, author=["me"])] + SIMPLE[1:]), "author"),
    (manifest([v1(2, 1).replace("{", '{"id":"x",', 1)] + SIMPLE[1:]), "duplicate key"),
])
def test_invalid_manifests(data, message):
    with pytest.raises(ManifestError, match=message):
        s1.parse_schema1(data)


def test_top_entry_that_go_cannot_decode_is_refused_at_conversion():
    parsed = s1.parse_schema1(manifest([v1(2, 1, config={"Env": "PATH=/bin"})] + SIMPLE[1:]))
    with pytest.raises(ManifestError, match="Env is not a list of strings"):
        parsed.schema2_config([sha(b"a"), sha(b"b")])
    parsed = s1.parse_schema1(manifest([v1(2, 1, Size="12")] + SIMPLE[1:]))
    with pytest.raises(ManifestError, match="Size is not an integer"):
        parsed.schema2_config([sha(b"a"), sha(b"b")])


def test_not_bytes_and_too_many_signatures():
    with pytest.raises(ManifestError, match="not bytes"):
        s1.parse_schema1(manifest(SIMPLE).decode())
    with pytest.raises(ManifestError, match="more than 64 signatures"):
        s1.parse_schema1(sign(manifest(SIMPLE), signatures=65))


def test_consecutive_duplicate_ids_are_merged():
    entries = [v1(2, 1, created="2024-01-01T00:00:03Z", container_config={"Cmd": ["newer"]}),
               v1(2, 1, created="2024-01-01T00:00:02Z", container_config={"Cmd": ["older"]}),
               SIMPLE[1], SIMPLE[2]]
    parsed = s1.parse_schema1(manifest(entries, blobs=[blob(9), blob(8), EMPTY, blob(0)]))
    assert parsed.fs_layers == [blob(8), EMPTY, blob(0)]   # the upper duplicate is dropped, as docker did
    assert len(parsed.history) == 3
    assert [item[2] for item in parsed.history_items()] == ["ADD base", "ENV x", "older"]


# ---- the conversion, detail by detail ------------------------------------------------------------------------

def convert(entries, diff_ids=None, **top):
    parsed = s1.parse_schema1(manifest(entries, **top))
    if diff_ids is None:
        diff_ids = [sha(b"diff %d" % i) for i in range(len(parsed.layers))]
    return parsed, parsed.schema2_config(diff_ids)


def test_conversion_shape_and_order():
    parsed, config = convert(SIMPLE)
    assert [layer["digest"] for layer in parsed.layers] == [blob(2), blob(0)]   # base first, throwaway gone
    text = config.decode()
    assert text.startswith('{"architecture":"amd64","config":{"Cmd":["/b"]},"container_config":{"Cmd":["run b"]},'
                           '"created":"2024-01-01T00:00:02Z","history":[')
    data = json.loads(config)
    assert list(data) == sorted(data)
    assert "id" not in data and "parent" not in data and "throwaway" not in data
    assert data["rootfs"] == {"type": "layers", "diff_ids": [sha(b"diff 0"), sha(b"diff 1")]}
    assert data["history"] == [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD base"},
                               {"created": "2024-01-01T00:00:01Z", "created_by": "ENV x", "empty_layer": True},
                               {"created": "2024-01-01T00:00:02Z", "created_by": "run b"}]
    assert '"rootfs":{"type":"layers","diff_ids":[' in text and '{"created":"2024-01-01T00:00:01Z","created_by":' \
        '"ENV x","empty_layer":true}' in text
    assert parsed.schema2_config([sha(b"diff 0"), sha(b"diff 1")]) == config   # deterministic


def test_conversion_keeps_raw_values_and_escapes_like_go():
    top = ('{ "id" : "%s", "parent":"%s", "config" : {"Env": ["A=<&>", "B=\\u00e9", "C=\u00e9\u2028"], "N": 1.50},'
           ' "Size": 3, "parent_id": "x", "layer_id": "y", "SIZE": 4, "os": "linux", "architecture": "arm64",'
           ' "variant": "v8", "container_config": {"Cmd": ["a && b", "<c>"]}, "author": "Jane <j@x>",'
           ' "comment": "tab\\there"}' % (hexid(2), hexid(1)))
    parsed, config = convert([top] + SIMPLE[1:])
    text = config.decode("utf-8")
    # raw values: white space gone, number and \u00e9 as written, HTML characters and U+2028 escaped
    assert '"config":{"Env":["A=\\u003c\\u0026\\u003e","B=\\u00e9","C=\u00e9\\u2028"],"N":1.50}' in text
    assert '"SIZE":4' in text and '"Size"' not in text and "parent_id" not in text and "layer_id" not in text
    history = json.loads(config)["history"]
    assert history[-1] == {"created": "0001-01-01T00:00:00Z", "author": "Jane <j@x>", "created_by": "a && b <c>",
                           "comment": "tab\there"}
    assert ('"author":"Jane \\u003cj@x\\u003e","created_by":"a \\u0026\\u0026 b \\u003cc\\u003e",'
            '"comment":"tab\\there"') in text
    assert parsed.platform == {"os": "linux", "architecture": "arm64", "variant": "v8"}
    assert text.index('"SIZE"') < text.index('"architecture"')   # byte order: upper case first


@pytest.mark.parametrize("created,expected", [
    ("2015-11-20T18:07:52.120000000Z", "2015-11-20T18:07:52.12Z"),
    ("2015-11-20T18:07:52.000000000Z", "2015-11-20T18:07:52Z"),
    ("2015-11-20T18:07:52.1234567891234Z", "2015-11-20T18:07:52.123456789Z"),
    ("2015-11-20T19:07:52.5+01:00", "2015-11-20T19:07:52.5+01:00"),
    ("2015-11-20T18:07:52+00:00", "2015-11-20T18:07:52Z"),
    ("2016-02-29T00:00:00-05:30", "2016-02-29T00:00:00-05:30"),
    (None, "0001-01-01T00:00:00Z"),
])
def test_history_times_as_go_writes_them(created, expected):
    entries = [v1(2, 1, created=created)] + SIMPLE[1:]
    _parsed, config = convert(entries)
    assert json.loads(config)["history"][-1]["created"] == expected
    assert json.loads(config)["created"] == created   # the top-level value is kept as written


def test_no_layers_at_all():
    entries = [v1(1, 0, throwaway=True, os="linux"), v1(0, throwaway=True)]
    parsed, config = convert(entries, diff_ids=[])
    assert parsed.layers == []
    assert json.loads(config)["rootfs"] == {"type": "layers"}   # diff_ids is omitted when empty, as in Go
    assert parsed.schema2_manifest(config, []).endswith(b'"layers":null}')


def test_conversion_argument_errors():
    parsed = s1.parse_schema1(manifest(SIMPLE))
    with pytest.raises(ManifestError, match="2 layers but 1 diff_ids"):
        parsed.schema2_config([sha(b"a")])
    with pytest.raises(ManifestError, match="invalid diff_id"):
        parsed.schema2_config([sha(b"a"), "sha256:xyz"])
    config = parsed.schema2_config([sha(b"a"), sha(b"b")])
    with pytest.raises(ManifestError, match="one size per layer"):
        parsed.schema2_manifest(config, [1])
    with pytest.raises(ManifestError, match="one size per layer"):
        parsed.schema2_manifest(config, [1, -1])


def test_legacy_docker_versions():
    """docker before 1.8.3 (by moby's version comparison) gets the v1 image structure; others the raw values."""
    for version, legacy in (("1.8.2", True), ("1.8.2-fc22", True), ("1.6.0-rc1", True), ("1.8.3", False),
                            ("1.10.0", False), ("", False)):
        top = v1(2, 1, docker_version=version, config={"Cmd": ["/b"], "Zzz": 1}) if version else v1(2, 1)
        _parsed, config = convert([top] + SIMPLE[1:])
        data = json.loads(config)
        if legacy:
            assert "Zzz" not in data["config"] and data["config"]["Hostname"] == ""
            assert data["container_config"]["Cmd"] is None
        else:
            assert data.get("config", {}).get("Zzz", 1) == 1 and "container_config" not in data


def test_defaults_and_attributes():
    parsed = s1.parse_schema1(manifest([v1(0)], architecture="arm"))
    assert parsed.platform == {"os": "linux", "architecture": "arm"}
    assert s1.parse_schema1(manifest([v1(0)], architecture="")).platform["architecture"] == "amd64"
    assert parsed.name == "app" and parsed.tag == "v1" and parsed.size == len(parsed.raw)
    assert parsed.history == [v1(0)]


def test_pure_module():
    with open(s1.__file__) as handle:
        source = handle.read()
    assert "import ansible" not in source and "from ansible." not in source
