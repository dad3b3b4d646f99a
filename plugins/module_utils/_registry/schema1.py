# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Docker image manifest schema 1 (signed and unsigned): reading, digest, conversion to schema 2.

PRIVATE to the hocker.registry collection: may change at any time.

Schema 1 is the manifest format of docker 1.3 to 1.9 (deprecated since 2017, refused by docker 26 and later
by default). A manifest lists ``fsLayers`` (blob digests, top layer first) and, for each, a ``history``
entry whose ``v1Compatibility`` string holds a JSON object: the legacy v1 image of that step (``id``,
``parent``, ``created``, ``container_config.Cmd``, ``throwaway`` for a step without a layer); the top entry
also holds the image configuration. It has no config blob and no layer sizes.

A signed manifest (``application/vnd.docker.distribution.manifest.v1+prettyjws``) is a JWS "pretty
signature": the payload with a ``"signatures"`` member inserted before its closing brace. Each signature's
protected header says how to get the payload back: ``formatLength`` bytes of the document, then the
base64url-decoded ``formatTail``. The manifest's digest is the digest of that payload, which is what
distribution stores (it re-signs the payload with its own key on every GET, so the served bytes change while
the digest does not). An unsigned manifest (``application/vnd.docker.distribution.manifest.v1+json``) is its
own payload. Signatures are not verified: their keys are self-asserted, so they prove nothing that the
digest does not.

API
---
``parse_schema1(raw, content_type=None, expected_digest=None, what="manifest") -> Schema1``
    Validate everything (size, JSON, duplicate keys, the JWS envelope against its payload, fsLayers/history
    lengths, blob digests, v1Compatibility objects with a size and depth cap, v1 ids and their parent chain)
    and verify ``expected_digest`` against the payload. Consecutive entries with the same v1 id are merged
    (the older one dropped), as docker and containers/image do. Raises ``ManifestError`` /
    ``DigestMismatch``.
``is_schema1(data=None, content_type=None) -> bool``: a schema 1 media type, or a parsed document that looks
    like one (``schemaVersion`` 1, ``fsLayers`` or ``signatures``).
``schema1_payload(raw) -> bytes`` and ``schema1_digest(raw) -> str``: the payload / its sha256 digest.

``Schema1`` attributes: ``raw`` (the bytes as served), ``payload``, ``digest``, ``media_type``, ``signed``,
``name``, ``tag``, ``architecture``, ``fs_layers`` (blob digests, top first, throwaway entries included),
``history`` (the v1Compatibility texts, top first), ``throwaway`` (flags, top first), ``platform`` (dict
``os``/``architecture``[/``variant``] from the top entry), ``layers`` (descriptors ``{mediaType, digest}``
of the layers in schema 2 order, base first, without the throwaway entries: what to fetch; no sizes: schema 1
has none), ``docker_version``.
``Schema1.schema2_config(diff_ids) -> bytes``
    The schema 2 image config, byte for byte as containers/image (skopeo, podman) converts it: the top
    entry's v1Compatibility without its v1-only fields, ``rootfs.diff_ids`` (one per entry of ``layers``: the
    digests of the uncompressed layers, known only once they were fetched) and one ``history`` item per
    entry, base first, ``empty_layer`` for throwaway ones. Images from docker before 1.8.3 get their top
    entry re-encoded through the v1 image structure first, as containers/image does.
``Schema1.schema2_manifest(config, sizes) -> bytes``
    A docker schema 2 manifest for that config (bytes from ``schema2_config()``) and the layers (``sizes``:
    the blob size of each entry of ``layers``), serialised as containers/image does.
``Schema1.to_schema2(diff_ids, sizes) -> (config, manifest)``: both.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import hashlib
import json
import re

from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch, ManifestError

MEDIA_TYPE_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MEDIA_TYPE_UNSIGNED = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPES = (MEDIA_TYPE_UNSIGNED, MEDIA_TYPE_SIGNED)
SCHEMA2_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA2_CONFIG = "application/vnd.docker.container.image.v1+json"
SCHEMA2_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# the gzip of an empty tar that docker and distribution give every throwaway entry
EMPTY_LAYER_DIGEST = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_V1_COMPATIBILITY_SIZE = 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_SIGNATURES = 64

# fields of a v1Compatibility object that schema 2 has no place for (containers/image drops the same)
_V1_ONLY = ("id", "parent", "parent_id", "layer_id", "throwaway", "Size")

_DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_V1_ID_RE = re.compile(r"^[a-f0-9]{64}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
_RFC3339_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|([+-])(\d{2}):(\d{2}))$")
_INT_RE = re.compile(r"^-?(?:0|[1-9]\d*)$")
_ZERO_TIME = "0001-01-01T00:00:00Z"


# ---------------------------------------------------------------------------------------------------------
# JSON helpers: strict parsing, and writing JSON the way Go's encoding/json does
# ---------------------------------------------------------------------------------------------------------
def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key %r" % key)
        out[key] = value
    return out


def _depth(text):
    """The deepest nesting of arrays/objects in a JSON text (strings skipped)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _loads(text, what):
    """Parse JSON text (str or UTF-8 bytes) strictly: valid UTF-8, no duplicate keys, bounded depth."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError("%s is not valid UTF-8" % what)
    if _depth(text) > MAX_JSON_DEPTH:
        raise ManifestError("%s nests JSON deeper than %d levels" % (what, MAX_JSON_DEPTH))
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise ManifestError("%s is not valid JSON: %s" % (what, exc))


_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _go_html_escape(text):
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text


def _go_string(value):
    """A JSON string as Go writes it (UTF-8 kept; ``<``, ``>``, ``&``, U+2028, U+2029 escaped)."""
    return _go_html_escape(json.dumps(value, ensure_ascii=False))


def _go_compact(text):
    """A JSON text as Go's json.Compact with HTML escaping leaves it (encoding/json does this to every
    json.RawMessage it writes): white space outside strings removed, escapes and numbers kept as written."""
    out = []
    in_string = escaped = False
    for char in text:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif char not in " \t\r\n":
            out.append(char)
    return _go_html_escape("".join(out))


def _skip_ws(text, pos):
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _raw_members(text, what):
    """``[(key, raw value text)]`` of the JSON object ``text`` (already validated), in document order."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if text[pos:pos + 1] != "{":
        raise ManifestError("%s is not a JSON object" % what)
    pos = _skip_ws(text, pos + 1)
    members = []
    if text[pos:pos + 1] == "}":
        return members
    while True:
        key, pos = json.decoder.scanstring(text, pos + 1)
        pos = _skip_ws(text, pos)
        pos = _skip_ws(text, pos + 1)   # the colon
        _value, end = decoder.raw_decode(text, pos)
        members.append((key, text[pos:end]))
        pos = _skip_ws(text, end)
        if text[pos] == "}":
            return members
        pos = _skip_ws(text, pos + 1)   # the comma


def _go_time(value, what):
    """An RFC 3339 time string (or null/absent) as Go's time.Time writes it back after reading it."""
    if value is None:
        return _ZERO_TIME
    match = _RFC3339_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ManifestError("%s has an invalid created time %r" % (what, value))
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= _days(year, month) and hour < 24 and minute < 60 and second < 60):
        raise ManifestError("%s has an invalid created time %r" % (what, value))
    text = "%04d-%02d-%02dT%02d:%02d:%02d" % (year, month, day, hour, minute, second)
    fraction = (match.group(7) or "")[:9].rstrip("0")
    if fraction:
        text += "." + fraction
    if match.group(8) == "Z":
        return text + "Z"
    hours, minutes = int(match.group(10)), int(match.group(11))
    if hours >= 24 or minutes >= 60:
        raise ManifestError("%s has an invalid created time %r" % (what, value))
    if hours == 0 and minutes == 0:
        return text + "Z"
    return text + "%s%02d:%02d" % (match.group(9), hours, minutes)


def _days(year, month):
    if month == 2:
        return 29 if (year % 4 == 0 and year % 100 != 0) or year % 400 == 0 else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _version_less(left, right):
    """moby's versions.LessThan: dotted parts compared as integers (a part that is not one counts as 0)."""
    a, b = left.split("."), right.split(".")
    for i in range(max(len(a), len(b))):
        x = int(a[i]) if i < len(a) and re.match(r"^[+-]?\d+$", a[i]) else 0
        y = int(b[i]) if i < len(b) and re.match(r"^[+-]?\d+$", b[i]) else 0
        if x != y:
            return x < y
    return False


# ---------------------------------------------------------------------------------------------------------
# the JWS envelope
# ---------------------------------------------------------------------------------------------------------
def _b64url_decode(text, what):
    if not isinstance(text, str) or not _B64URL_RE.match(text):
        raise ManifestError("%s is not base64url" % what)
    text = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ManifestError("%s is not base64url" % what)


def _signed_payload(raw, signatures, what):
    """The payload of a signed manifest, from the protected headers of its signatures."""
    if not isinstance(signatures, list) or not signatures:
        raise ManifestError("%s has an empty or invalid signatures list" % what)
    if len(signatures) > MAX_SIGNATURES:
        raise ManifestError("%s has more than %d signatures" % (what, MAX_SIGNATURES))
    length = tail = None
    for position, signature in enumerate(signatures):
        where = "signature %d of %s" % (position, what)
        if not isinstance(signature, dict):
            raise ManifestError("%s is not a JSON object" % where)
        header = _loads(_b64url_decode(signature.get("protected"), "the protected header of " + where),
                        "the protected header of " + where)
        if not isinstance(header, dict):
            raise ManifestError("the protected header of %s is not a JSON object" % where)
        this_length = header.get("formatLength")
        if isinstance(this_length, float) and this_length.is_integer():
            this_length = int(this_length)
        if not isinstance(this_length, int) or isinstance(this_length, bool) or not 0 <= this_length <= len(raw):
            raise ManifestError("%s has an invalid formatLength" % where)
        this_tail = _b64url_decode(header.get("formatTail"), "the formatTail of " + where)
        if length is None:
            length, tail = this_length, this_tail
        elif (length, tail) != (this_length, this_tail):
            raise ManifestError("the signatures of %s disagree on the signed payload" % what)
    return raw[:length] + tail


def schema1_payload(raw, what="manifest"):
    """The signed payload of schema 1 manifest bytes (the bytes themselves when unsigned)."""
    document = _loads(raw, what)
    if isinstance(document, dict) and "signatures" in document:
        return _signed_payload(raw, document["signatures"], what)
    return raw


def schema1_digest(raw, algorithm="sha256"):
    return "%s:%s" % (algorithm, hashlib.new(algorithm, schema1_payload(raw)).hexdigest())


def is_schema1(data=None, content_type=None):
    """True for a schema 1 media type, or a parsed manifest shaped like schema 1."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype in MEDIA_TYPES:
        return True
    if not isinstance(data, dict):
        return False
    if data.get("mediaType") in MEDIA_TYPES:
        return True
    return data.get("schemaVersion") == 1 or "fsLayers" in data or "signatures" in data


# ---------------------------------------------------------------------------------------------------------
# v1Compatibility entries
# ---------------------------------------------------------------------------------------------------------
_ENTRY_FIELDS = (("id", None, False), ("parent", None, False), ("comment", None, False), ("created", None, False),
                 ("container_config", None, False), ("author", None, False), ("throwaway", None, False))


def _read_entry(text, what):
    """Parse one v1Compatibility text into the fields the conversion uses (names matched and types checked
    as Go decodes them)."""
    if not isinstance(text, str):
        raise ManifestError("%s is not a string" % what)
    if len(text.encode("utf-8")) > MAX_V1_COMPATIBILITY_SIZE:
        raise ManifestError("%s is larger than %d bytes" % (what, MAX_V1_COMPATIBILITY_SIZE))
    obj = _loads(text, what)
    if not isinstance(obj, dict):
        raise ManifestError("%s is not a JSON object" % what)
    found = _match_fields(obj, _ENTRY_FIELDS)
    entry = dict((key, _decode_go(found.get(key), _STRING, "%s: %s" % (what, key)) or "")
                 for key in ("id", "parent", "comment", "author"))
    entry["created"] = _go_time(found.get("created"), what)
    entry["throwaway"] = bool(_decode_go(found.get("throwaway"), _BOOL, what + ": throwaway"))
    if not _V1_ID_RE.match(entry["id"]):
        raise ManifestError("%s has an invalid v1 id %r" % (what, entry["id"][:80]))
    container_config = found.get("container_config")
    if container_config is not None and not isinstance(container_config, dict):
        raise ManifestError("%s: container_config is not an object" % what)
    cmd = _match_fields(container_config or {}, (("Cmd", None, False),)).get("Cmd")
    cmd = _decode_go(cmd, _STRINGS, what + ": container_config.Cmd")
    entry["created_by"] = " ".join(cmd or [])
    entry["object"] = obj
    return entry


# ---------------------------------------------------------------------------------------------------------
# docker before 1.8.3: the top entry goes through the v1 image structure (re-encoded as Go writes it)
# ---------------------------------------------------------------------------------------------------------
_STRING, _BOOL, _INT, _STRINGS, _STRSLICE, _SET, _LABELS, _HEALTH, _INTPTR = range(9)
# (field, kind, omitempty) in the order Go writes them
_CONFIG_FIELDS = (
    ("Hostname", _STRING, False), ("Domainname", _STRING, False), ("User", _STRING, False),
    ("AttachStdin", _BOOL, False), ("AttachStdout", _BOOL, False), ("AttachStderr", _BOOL, False),
    ("ExposedPorts", _SET, True), ("Tty", _BOOL, False), ("OpenStdin", _BOOL, False),
    ("StdinOnce", _BOOL, False), ("Env", _STRINGS, False), ("Cmd", _STRSLICE, False),
    ("Healthcheck", _HEALTH, True), ("ArgsEscaped", _BOOL, True), ("Image", _STRING, False),
    ("Volumes", _SET, False), ("WorkingDir", _STRING, False), ("Entrypoint", _STRSLICE, False),
    ("NetworkDisabled", _BOOL, True), ("MacAddress", _STRING, True), ("OnBuild", _STRINGS, False),
    ("Labels", _LABELS, False), ("StopSignal", _STRING, True), ("StopTimeout", _INTPTR, True),
    ("Shell", _STRSLICE, True),
)
_HEALTH_FIELDS = (("Test", _STRINGS, True), ("StartPeriod", _INT, True), ("StartInterval", _INT, True),
                  ("Interval", _INT, True), ("Timeout", _INT, True), ("Retries", _INT, True))


def _match_fields(obj, fields):
    """Go's decoding into a struct: each key goes to the field of that name (exact, else ASCII
    case-insensitive); later keys win; unknown keys are dropped."""
    names = dict((name.lower(), name) for name, _kind, _omit in fields)
    exact = set(name for name, _kind, _omit in fields)
    found = {}
    for key, value in obj.items():
        if key in exact:
            found[key] = value
        elif key.isascii() and key.lower() in names:
            found[names[key.lower()]] = value
    return found


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_go(value, kind, what):
    """A value decoded into a Go field of ``kind`` (None = the zero value / nil); ManifestError when Go
    would refuse it."""
    if value is None:
        return None
    if kind == _STRING:
        if not isinstance(value, str):
            raise ManifestError("%s is not a string" % what)
        return value
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise ManifestError("%s is not a boolean" % what)
        return value
    if kind in (_INT, _INTPTR):
        if not _is_int(value):
            raise ManifestError("%s is not an integer" % what)
        return value
    if kind == _STRSLICE and isinstance(value, str):
        return [value]
    if kind in (_STRINGS, _STRSLICE):
        if not isinstance(value, list) or not all(v is None or isinstance(v, str) for v in value):
            raise ManifestError("%s is not a list of strings" % what)
        return [v or "" for v in value]
    if kind in (_SET, _LABELS):
        if not isinstance(value, dict):
            raise ManifestError("%s is not an object" % what)
        for item in value.values():
            if kind == _SET and item is not None and not isinstance(item, dict):
                raise ManifestError("%s is not a set of objects" % what)
            if kind == _LABELS and item is not None and not isinstance(item, str):
                raise ManifestError("%s is not a map of strings" % what)
        return dict((k, v or ({} if kind == _SET else "")) for k, v in value.items())
    if kind == _HEALTH:
        if not isinstance(value, dict):
            raise ManifestError("%s is not an object" % what)
        return _decode_struct(value, _HEALTH_FIELDS, what)
    raise AssertionError(kind)


def _decode_struct(obj, fields, what):
    found = _match_fields(obj, fields)
    return dict((name, _decode_go(found.get(name), kind, "%s.%s" % (what, name)))
                for name, kind, _omit in fields)


def _encode_go(value, kind):
    if kind == _STRING:
        return _go_string(value or "")
    if kind == _BOOL:
        return "true" if value else "false"
    if kind in (_INT, _INTPTR):
        return str(value or 0)
    if value is None:
        return "null"
    if kind in (_STRINGS, _STRSLICE):
        return "[" + ",".join(_go_string(v) for v in value) + "]"
    if kind == _SET:
        return "{" + ",".join(_go_string(k) + ":{}" for k in sorted(value, key=_go_key)) + "}"
    if kind == _LABELS:
        return "{" + ",".join(_go_string(k) + ":" + _go_string(value[k]) for k in sorted(value, key=_go_key)) + "}"
    if kind == _HEALTH:
        return _encode_struct(value, _HEALTH_FIELDS)
    raise AssertionError(kind)


def _omitted(value, kind):
    if kind in (_INTPTR, _HEALTH):
        return value is None
    if kind in (_STRINGS, _STRSLICE, _SET, _LABELS):
        return not value
    return not value   # "", False, 0, None


def _encode_struct(values, fields):
    parts = []
    for name, kind, omitempty in fields:
        value = values.get(name)
        if omitempty and _omitted(value, kind):
            continue
        parts.append(_go_string(name) + ":" + _encode_go(value, kind))
    return "{" + ",".join(parts) + "}"


def _go_key(key):
    return key.encode("utf-8")


def _legacy_top_members(obj, what):
    """The members the v1 image structure keeps of the top entry (docker before 1.8.3), encoded as Go
    writes them; the v1-only ones are dropped right after, so they are not produced at all."""
    fields = (("id", _STRING, True), ("parent", _STRING, True), ("comment", _STRING, True),
              ("created", None, False), ("container", _STRING, True), ("container_config", None, False),
              ("docker_version", _STRING, True), ("author", _STRING, True), ("config", None, True),
              ("architecture", _STRING, True), ("variant", _STRING, True), ("os", _STRING, True),
              ("Size", _INT, True))
    found = _match_fields(obj, fields)
    members = []
    for name, kind, omitempty in fields:
        value = found.get(name)
        where = "%s: %s" % (what, name)
        if name == "created":
            members.append((name, _go_string(_go_time(value, what))))
        elif name in ("container_config", "config"):
            if value is not None and not isinstance(value, dict):
                raise ManifestError("%s is not an object" % where)
            if value is None and name == "config":
                continue
            members.append((name, _encode_struct(_decode_struct(value or {}, _CONFIG_FIELDS, where),
                                                 _CONFIG_FIELDS)))
        else:
            value = _decode_go(value, kind, where)
            if not (omitempty and _omitted(value, kind)):
                members.append((name, _encode_go(value, kind)))
    return [(k, v) for k, v in members if k not in _V1_ONLY]


# ---------------------------------------------------------------------------------------------------------
# the manifest
# ---------------------------------------------------------------------------------------------------------
class Schema1:
    """A parsed, validated schema 1 manifest (see the module documentation)."""

    def __init__(self, raw, payload, digest, media_type, signed, document, entries, fs_layers, history):
        self.raw = raw
        self.payload = payload
        self.digest = digest
        self.media_type = media_type
        self.signed = signed
        self.data = document
        self.name = document.get("name") or ""
        self.tag = document.get("tag") or ""
        self.architecture = document.get("architecture") or ""
        self._entries = entries            # top first
        self.fs_layers = fs_layers         # top first
        self.history = history             # top first (v1Compatibility texts)
        self.throwaway = [e["throwaway"] for e in entries]
        top = entries[0]["object"]
        self.docker_version = top.get("docker_version") if isinstance(top.get("docker_version"), str) else ""

    @property
    def size(self):
        return len(self.raw)

    @property
    def platform(self):
        """``{os, architecture[, variant]}`` of the top entry (architecture else the manifest's, else amd64,
        the only one docker 1.x made; os else linux)."""
        top = self._entries[0]["object"]
        plat = {"os": top.get("os") if isinstance(top.get("os"), str) and top.get("os") else "linux",
                "architecture": (top.get("architecture") if isinstance(top.get("architecture"), str) else "")
                or self.architecture or "amd64"}
        if isinstance(top.get("variant"), str) and top.get("variant"):
            plat["variant"] = top["variant"]
        return plat

    @property
    def layers(self):
        """The layers to fetch, base first, without the throwaway entries (descriptors without size)."""
        return [{"mediaType": SCHEMA2_LAYER, "digest": digest}
                for digest, throwaway in reversed(list(zip(self.fs_layers, self.throwaway))) if not throwaway]

    def history_items(self):
        """The schema 2 history, base first, as ``(created, author, created_by, comment, empty_layer)``."""
        return [(e["created"], e["author"], e["created_by"], e["comment"], e["throwaway"])
                for e in reversed(self._entries)]

    def schema2_config(self, diff_ids):
        """The schema 2 config bytes (see the module documentation)."""
        diff_ids = list(diff_ids)
        if len(diff_ids) != len(self.layers):
            raise ManifestError("the schema 1 manifest %s has %d layers but %d diff_ids were given"
                                % (self.digest, len(self.layers), len(diff_ids)))
        for diff_id in diff_ids:
            if not isinstance(diff_id, str) or not _DIGEST_RE.match(diff_id):
                raise ManifestError("invalid diff_id %r" % (diff_id,))
        what = "the top v1Compatibility of %s" % self.digest
        legacy = _legacy_top_members(self._entries[0]["object"], what)   # also: what Go would refuse to decode
        if self.docker_version and _version_less(self.docker_version, "1.8.3"):
            members = legacy
        else:
            members = [(k, _go_compact(v)) for k, v in _raw_members(self.history[0], what) if k not in _V1_ONLY]
        history = []
        for created, author, created_by, comment, empty in self.history_items():
            item = ['"created":' + _go_string(created)]
            if author:
                item.append('"author":' + _go_string(author))
            if created_by:
                item.append('"created_by":' + _go_string(created_by))
            if comment:
                item.append('"comment":' + _go_string(comment))
            if empty:
                item.append('"empty_layer":true')
            history.append("{" + ",".join(item) + "}")
        rootfs = '{"type":"layers"'
        if diff_ids:
            rootfs += ',"diff_ids":[' + ",".join(_go_string(d) for d in diff_ids) + "]"
        rootfs += "}"
        values = dict(members)
        values["rootfs"] = rootfs
        values["history"] = "[" + ",".join(history) + "]"
        text = "{" + ",".join(_go_string(k) + ":" + values[k] for k in sorted(values, key=_go_key)) + "}"
        return text.encode("utf-8")

    def schema2_manifest(self, config, sizes):
        """A docker schema 2 manifest for ``config`` (bytes from :meth:`schema2_config`) and the layers of
        sizes ``sizes``."""
        layers = self.layers
        sizes = list(sizes)
        if len(sizes) != len(layers) or not all(_is_int(s) and s >= 0 for s in sizes):
            raise ManifestError("the schema 1 manifest %s needs one size per layer (%d)" % (self.digest, len(layers)))
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        parts = ['{"mediaType":%s,"size":%d,"digest":%s}'
                 % (_go_string(SCHEMA2_LAYER), size, _go_string(layer["digest"])) for layer, size in zip(layers, sizes)]
        text = ('{"schemaVersion":2,"mediaType":%s,"config":{"mediaType":%s,"size":%d,"digest":%s},"layers":%s}'
                % (_go_string(SCHEMA2_MANIFEST), _go_string(SCHEMA2_CONFIG), len(config), _go_string(config_digest),
                   ("[" + ",".join(parts) + "]") if parts else "null"))
        return text.encode("utf-8")

    def to_schema2(self, diff_ids, sizes):
        """``(config bytes, manifest bytes)`` of the schema 2 image."""
        config = self.schema2_config(diff_ids)
        return config, self.schema2_manifest(config, sizes)


def parse_schema1(raw, content_type=None, expected_digest=None, what="manifest"):
    """Parse and validate schema 1 manifest bytes as served (see the module documentation)."""
    if not isinstance(raw, bytes):
        raise ManifestError("%s is not bytes" % what)
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError("%s is larger than the 4 MiB limit" % what)
    if expected_digest is not None and (not isinstance(expected_digest, str) or not _DIGEST_RE.match(expected_digest)):
        raise ManifestError("cannot verify %s against %r: not a sha256/sha512 digest" % (what, expected_digest))
    outer = _loads(raw, what)
    if not isinstance(outer, dict):
        raise ManifestError("%s is not a JSON object" % what)
    signed = "signatures" in outer
    if signed:
        payload = _signed_payload(raw, outer["signatures"], what)
        document = _loads(payload, "the signed payload of %s" % what)
        without = dict((k, v) for k, v in outer.items() if k != "signatures")
        if document != without:
            raise ManifestError("the signed payload of %s differs from the manifest around it" % what)
    else:
        payload, document = raw, outer
    algorithm = expected_digest.split(":", 1)[0] if expected_digest else "sha256"
    digest = "%s:%s" % (algorithm, hashlib.new(algorithm, payload).hexdigest())
    if expected_digest and digest != expected_digest:
        raise DigestMismatch("%s does not match the requested digest: expected %s, got %s"
                             % (what, expected_digest, digest))
    version = document.get("schemaVersion")
    if version != 1 or isinstance(version, bool):
        raise ManifestError("%s is not a schema 1 manifest (schemaVersion %r)" % (what, version))
    for key in ("name", "tag", "architecture"):
        if document.get(key) is not None and not isinstance(document[key], str):
            raise ManifestError("%s: %s is not a string" % (what, key))
    fs_layers, history = document.get("fsLayers"), document.get("history")
    if not isinstance(fs_layers, list) or not fs_layers:
        raise ManifestError("%s has no fsLayers" % what)
    if not isinstance(history, list) or len(history) != len(fs_layers):
        raise ManifestError("%s has %s history entries for %d fsLayers" % (
            what, len(history) if isinstance(history, list) else "no", len(fs_layers)))
    blobs, texts, entries = [], [], []
    for position, (layer, item) in enumerate(zip(fs_layers, history)):
        blob = layer.get("blobSum") if isinstance(layer, dict) else None
        if not isinstance(blob, str) or not _DIGEST_RE.match(blob):
            raise ManifestError("fsLayer %d of %s has an invalid blobSum %r" % (position, what, blob))
        text = item.get("v1Compatibility") if isinstance(item, dict) else None
        entry = _read_entry(text, "history entry %d of %s" % (position, what))
        blobs.append(blob)
        texts.append(text)
        entries.append(entry)
    _check_chain(entries, what)
    # consecutive entries with one id are one step recorded twice: keep the newest (top-most)
    position = len(entries) - 2
    while position >= 0:
        if entries[position]["id"] == entries[position + 1]["id"]:
            del entries[position], blobs[position], texts[position]
        position -= 1
    if content_type:
        ctype = content_type.split(";", 1)[0].strip().lower()
    else:
        ctype = ""
    media_type = ctype if ctype in MEDIA_TYPES else (MEDIA_TYPE_SIGNED if signed else MEDIA_TYPE_UNSIGNED)
    return Schema1(raw, payload, digest, media_type, signed, document, entries, blobs, texts)


def _check_chain(entries, what):
    """v1 ids: no id used twice except by neighbours, each entry the child of the next, the base parentless."""
    if entries[-1]["parent"]:
        raise ManifestError("%s: the base history entry has a parent" % what)
    seen, last = set(), None
    for entry in entries:
        if entry["id"] != last and entry["id"] in seen:
            raise ManifestError("%s: v1 id %s appears more than once" % (what, entry["id"]))
        seen.add(entry["id"])
        last = entry["id"]
    for upper, lower in zip(entries, entries[1:]):
        if upper["id"] != lower["id"] and upper["parent"] != lower["id"]:
            raise ManifestError("%s: history entry %s does not follow %s" % (what, upper["id"], lower["id"]))
