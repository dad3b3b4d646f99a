# -*- coding: utf-8 -*-
# Copyright: hocker.registry contributors
# Apache License 2.0 (see LICENSE)
"""Nix expressions for registry images (hocker's ``docker2nix``), and Nix's base-32.

PRIVATE to the hocker.registry collection: may change at any time.

Two output formats, both pinned by registry digests (a tag is resolved once, by the caller, before the
expression is made; the emitter only sees one image manifest, docker schema 2 or OCI):

``fetchdocker``
    hocker-compatible output for nixpkgs' ``fetchdocker`` / ``fetchDockerConfig`` / ``fetchDockerLayer``
    (``pkgs/build-support/fetchdocker``). ``sha256`` attributes are the registry digests in Nix's base-32.
    Name mapping (see :func:`fetchdocker_names`): nixpkgs' fetchers call hocker with
    ``"<repository>/<imageName>"`` and hocker joins that onto the path of the ``registry`` URL, while the
    nixpkgs asserts forbid ``/`` inside ``repository`` and ``imageName`` (they become store path names).
    So the *last two* segments of ``v2/<repository path>`` become ``repository`` and ``imageName`` and the
    segments before them stay in the ``registry`` URL:

    ==================  =========================  ============  =========
    repository path      registry                   repository    imageName
    ==================  =========================  ============  =========
    ``library/debian``   ``https://host/v2/``        ``library``   ``debian``
    ``alpine``           ``https://host/``           ``v2``        ``alpine``
    ``a/b/c``            ``https://host/v2/a/``      ``b``         ``c``
    ==================  =========================  ============  =========

    Every row makes hocker request ``https://host/v2/<repository path>/...``.

``fetchurl``
    A self-contained expression (no hocker binary): one fixed-output derivation per blob (config and each
    layer; ``outputHash`` = the registry digest as SRI, flat) fetched by a small bash + curl builder that
    performs the registry token flow, and a derivation that assembles a ``docker load`` / ``podman load``
    archive (``manifest.json``, ``repositories``, the config and the still-compressed layers). It uses
    ``builtins.derivation`` only (no stdenv), with tools taken from the ``pkgs`` argument. Credentials come
    from the builder's environment at build time (``impureEnvVars``) or a file outside the store; they are
    never written into the expression.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import re

from ansible_collections.hocker.registry.plugins.module_utils._registry import jsonutil
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    InvalidReference,
    ManifestError,
)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import (
    DOCKER_HUB_HOST,
    parse_registry_url,
)

NIX_BASE32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"
FORMATS = ("fetchdocker", "fetchurl")

#: Environment variables the fetchurl blob fetcher reads from the builder's environment (impureEnvVars).
CREDENTIAL_ENV_VARS = (
    "HOCKER_REGISTRY_USERNAME",
    "HOCKER_REGISTRY_PASSWORD",
    "HOCKER_REGISTRY_TOKEN",
    "HOCKER_REGISTRY_CREDENTIALS_FILE",
    "HOCKER_REGISTRY_CA_FILE",
    # the names nixpkgs' fetchdocker uses, accepted as fallbacks
    "DOCKER_USER",
    "DOCKER_PASS",
    "DOCKER_TOKEN",
)
PROXY_ENV_VARS = (
    "http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY", "NO_PROXY",
)

_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256|sha512):([0-9a-f]+)$")
_BARE_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_STORE_NAME_BAD = re.compile(r"[^A-Za-z0-9+\-._?=]")

# Layer media type -> file suffix in the assembled archive (docker/podman load sniff the compression).
_LAYER_SUFFIXES = (
    ("zstd", ".tar.zst"),
    ("gzip", ".tar.gz"),
)


# ---------------------------------------------------------------------------------------------------------
# Encoding helpers
# ---------------------------------------------------------------------------------------------------------

def nix_base32(data):
    """Encode ``data`` (bytes) the way Nix prints hashes in base-32.

    Nix's base-32 is not RFC 4648: it uses the alphabet ``0123456789abcdfghijklmnpqrsvwxyz`` and reads
    the bits starting from the *end* of the byte string (character 0 holds the most significant bits of
    the last bytes), without padding. A 32-byte sha256 gives 52 characters.
    """
    data = bytes(data)
    length = (len(data) * 8 + 4) // 5
    chars = []
    for n in range(length - 1, -1, -1):
        bit = n * 5
        i, j = divmod(bit, 8)
        c = data[i] >> j
        if i + 1 < len(data):
            c |= data[i + 1] << (8 - j)
        chars.append(NIX_BASE32_ALPHABET[c & 0x1F])
    return "".join(chars)


def nix_base32_decode(text):
    """Inverse of :func:`nix_base32` (raises ValueError on characters outside the alphabet)."""
    size = len(text) * 5 // 8
    value = 0
    for ch in text:
        digit = NIX_BASE32_ALPHABET.find(ch)
        if digit < 0:
            raise ValueError("invalid Nix base-32 character %r" % (ch,))
        value = (value << 5) | digit
    if value >> (size * 8):
        raise ValueError("invalid Nix base-32 string (bits beyond the hash)")
    # character 0 holds the most significant bits of the *last* byte: the bytes are little-endian
    return value.to_bytes(size, "little")


def split_digest(digest, algorithms=("sha256", "sha512")):
    """Validate ``digest`` and return ``(algorithm, hex)``.

    Accepts ``sha256:<hex>`` / ``sha512:<hex>`` and, like hocker, a bare 64-digit sha256 hex string.
    Raises ManifestError for anything else (a digest is the only registry value that reaches URLs and
    file names unescaped, so it is checked strictly).
    """
    if isinstance(digest, str) and _BARE_HEX_RE.fullmatch(digest):
        algorithm, hexpart = "sha256", digest
    else:
        match = _DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
        if not match or len(match.group(2)) != _DIGEST_HEX_LENGTHS[match.group(1)]:
            raise ManifestError("invalid digest %r: expected sha256:<64 lowercase hex digits>" % (digest,))
        algorithm, hexpart = match.group(1), match.group(2)
    if algorithm not in algorithms:
        raise ManifestError("digest %s: only %s digests can be used here" % (digest, "/".join(algorithms)))
    return algorithm, hexpart


def nix_base32_digest(digest):
    """``sha256:<hex>`` (or bare hex) -> the 52-character Nix base-32 form ``nix-hash --to-base32`` gives."""
    _algorithm, hexpart = split_digest(digest)
    return nix_base32(bytes.fromhex(hexpart))


def sri(digest):
    """``sha256:<hex>`` (or bare sha256 hex, or ``sha512:<hex>``) -> SRI ``sha256-<base64>``."""
    algorithm, hexpart = split_digest(digest)
    return "%s-%s" % (algorithm, base64.b64encode(bytes.fromhex(hexpart)).decode("ascii"))


_NIX_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "$": "\\$",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def nix_string(value):
    """Return ``value`` as a Nix double-quoted string literal that evaluates to exactly ``value``.

    Backslash, double quote, every ``$`` (so ``${`` can never start an interpolation), newline, carriage
    return and tab are escaped. NUL cannot be represented in a Nix string and raises ValueError.
    """
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:
        raise ValueError("a NUL character cannot be written into a Nix string")
    return '"' + "".join(_NIX_ESCAPES.get(ch, ch) for ch in value) + '"'


def nix_indented_string(text, indent):
    """Return ``text`` as a Nix indented string (``''...''``) indented by ``indent`` spaces.

    ``${`` is written as ``''${`` so the value is taken literally. Used only for the builder scripts,
    which are constant text of this module; text containing ``''``, ``'${``, a trailing ``'``, a tab, CR
    or NUL is refused (ValueError).
    """
    if any(bad in text for bad in ("\x00", "\t", "\r", "''", "'${")) or text.endswith("'"):
        # these would need escapes that interact with each other; the scripts never contain them
        raise ValueError("unsupported character sequence in indented string")
    body = text.replace("${", "''${")
    pad = " " * indent
    lines = ["''"]
    parts = body.split("\n")
    for line in parts[:-1]:
        lines.append((pad + line) if line else "")
    # the closing line: text that ends with a newline leaves a whitespace-only last line, which Nix drops
    closing = parts[-1] + "''"
    lines.append((pad + closing) if parts[-1] else (pad[:-2] + closing if indent >= 2 else closing))
    return "\n".join(lines)


def nix_comment(text):
    """A single-line ``#`` comment body: control characters (newlines included) become ``?``."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", str(text))


def store_name(text):
    """Make ``text`` usable as (part of) a Nix store path name: other characters become ``-``."""
    name = _STORE_NAME_BAD.sub("-", text).lstrip(".")
    return name[:200] or "image"


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------

def registry_base(registry_url):
    """``https://host[:port][/v2[/]]`` (or a bare host, meaning https) -> ``scheme://host[:port]``."""
    scheme, host = parse_registry_url(registry_url)
    return "%s://%s" % (scheme, host)


def _check_repository_path(repository_path):
    if not isinstance(repository_path, str) or not repository_path.strip("/"):
        raise InvalidReference("repository path %r is empty" % (repository_path,))
    segments = repository_path.strip("/").split("/")
    if any(not s or s in (".", "..") for s in segments):
        raise InvalidReference("repository path %r has an empty or relative segment" % (repository_path,))
    return segments


def _image_manifest(manifest):
    """Accept a dict, JSON bytes/str or an object with ``.data`` (Manifest); return the dict."""
    data = getattr(manifest, "data", manifest)
    if isinstance(data, (bytes, bytearray, str)):
        data = jsonutil.loads(data, "the manifest")
    if not isinstance(data, dict):
        raise ManifestError("the manifest is not a JSON object")
    if "schemaVersion" not in data:
        raise ManifestError("the manifest has no schemaVersion")
    if data.get("schemaVersion") != 2:
        raise ManifestError("expected a schemaVersion 2 image manifest but got version %r"
                            % (data.get("schemaVersion"),))
    if data.get("mediaType") in _INDEX_TYPES or "manifests" in data:
        raise ManifestError("the manifest is an image index (multi-platform); select a platform's image "
                            "manifest first")
    config = data.get("config")
    layers = data.get("layers")
    if not isinstance(config, dict) or "digest" not in config:
        raise ManifestError("the manifest has no config descriptor")
    if not isinstance(layers, list) or not all(isinstance(d, dict) and "digest" in d for d in layers):
        raise ManifestError("the manifest has no valid layers list")
    return data


def fetchdocker_names(registry_url, repository_path):
    """Map a registry and repository path onto fetchdocker's ``registry``/``repository``/``imageName``.

    Returns a dict with those three keys. The last two segments of ``v2/<repository path>`` become
    ``repository`` and ``imageName`` (neither may contain ``/`` in nixpkgs); earlier segments are kept in
    the ``registry`` URL, whose path hocker uses in place of ``/v2``. See the module docstring for a table.
    """
    base = registry_base(registry_url)
    segments = ["v2"] + _check_repository_path(repository_path)
    prefix = segments[:-2]
    registry = base + "/" + "".join(s + "/" for s in prefix)
    return {"registry": registry, "repository": segments[-2], "imageName": segments[-1]}


def familiar_name(registry_url, repository_path):
    """The name ``docker images`` shows: ``debian`` for Docker Hub official images, ``host:port/app``."""
    _scheme, host = parse_registry_url(registry_url)
    path = "/".join(_check_repository_path(repository_path))
    if host == DOCKER_HUB_HOST:
        if path.startswith("library/") and path.count("/") == 1:
            return path[len("library/"):]
        return path
    return "%s/%s" % (host, path)


# ---------------------------------------------------------------------------------------------------------
# format: fetchdocker (hocker docker2nix)
# ---------------------------------------------------------------------------------------------------------

def fetchdocker_expression(registry_url, repository_path, tag, manifest, name=None):
    """hocker ``docker2nix`` output for nixpkgs' ``fetchdocker``.

    ``registry_url``: e.g. ``https://registry-1.docker.io/v2/``; ``repository_path``: ``library/debian``;
    ``tag``: the tag the image was resolved from (fetchDockerConfig re-resolves it at build time, its
    hash pins the result); ``manifest``: the image manifest (dict, JSON bytes or Manifest); ``name``:
    hocker's ``--altImageName`` (default: ``imageName``).
    Only sha256 digests can be used (hocker-layer takes 64 hex digits).
    """
    if not tag:
        raise InvalidReference("format fetchdocker needs a tag (fetchDockerConfig fetches the config by tag); "
                               "use format fetchurl for an image named only by digest")
    data = _image_manifest(manifest)
    names = fetchdocker_names(registry_url, repository_path)
    if name is None:
        name = names["imageName"]
    config_hash = nix_base32_digest(_sha256_only(data["config"]["digest"]))
    lines = [
        "{ fetchDockerConfig",
        "  , fetchDockerLayer",
        "  , fetchdocker }:",
        "  fetchdocker rec {",
        "    name = %s;" % nix_string(name),
        "    registry = %s;" % nix_string(names["registry"]),
        "    repository = %s;" % nix_string(names["repository"]),
        "    imageName = %s;" % nix_string(names["imageName"]),
        "    tag = %s;" % nix_string(tag),
        "    imageConfig = fetchDockerConfig {",
        "      inherit tag registry repository imageName;",
        "      sha256 = %s;" % nix_string(config_hash),
        "      };",
        "    imageLayers = let",
    ]
    refs = []
    for position, layer in enumerate(data["layers"]):
        _algorithm, hexpart = split_digest(_sha256_only(layer["digest"]))
        var = "layer%d" % position
        refs.append(var)
        lines.extend([
            "      %s = fetchDockerLayer {" % var,
            "        inherit registry repository imageName;",
            "        layerDigest = %s;" % nix_string(hexpart),
            "        sha256 = %s;" % nix_string(nix_base32(bytes.fromhex(hexpart))),
            "        };",
        ])
    lines.append("    in [ %s ];" % " ".join(refs) if refs else "    in [ ];")
    lines.append("    }")
    return "\n".join(lines) + "\n"


def _sha256_only(digest):
    split_digest(digest, algorithms=("sha256",))
    return digest


# ---------------------------------------------------------------------------------------------------------
# format: fetchurl (self-contained)
# ---------------------------------------------------------------------------------------------------------

# bash, run as the builder of every blob derivation. Inputs (derivation attributes): url, scope, cacert,
# credentialsFile, out. Secrets only travel through curl's --config on stdin, never on a command line.
FETCH_SCRIPT = r"""set -euo pipefail
fail() { echo "hocker-fetch: $*" >&2; rm -f "$out" "$TMPDIR/token.json"; exit 1; }
creds_hint="set HOCKER_REGISTRY_USERNAME and HOCKER_REGISTRY_PASSWORD (or HOCKER_REGISTRY_TOKEN, or"
creds_hint="$creds_hint HOCKER_REGISTRY_CREDENTIALS_FILE) in the builder environment"

user=${HOCKER_REGISTRY_USERNAME:-${DOCKER_USER:-}}
pass=${HOCKER_REGISTRY_PASSWORD:-${DOCKER_PASS:-}}
token=${HOCKER_REGISTRY_TOKEN:-${DOCKER_TOKEN:-}}
credfile=${HOCKER_REGISTRY_CREDENTIALS_FILE:-${credentialsFile:-}}
if [ -z "$user$pass$token" ] && [ -n "$credfile" ]; then
  [ -r "$credfile" ] || fail "credentials file $credfile is not readable by the builder"
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    case $line in
      USERNAME=*|DOCKER_USER=*) user=${line#*=} ;;
      PASSWORD=*|DOCKER_PASS=*) pass=${line#*=} ;;
      BEARER_TOKEN=*|DOCKER_TOKEN=*) token=${line#*=} ;;
    esac
  done < "$credfile"
fi
ca=${HOCKER_REGISTRY_CA_FILE:-${cacert:-}}
if [ -n "$ca" ] && [ ! -r "$ca" ]; then ca=; fi

# curl config syntax: a quoted value escapes backslash and double quote
quote() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
bearer() { printf 'header = "Authorization: Bearer %s"' "$(quote "$1")"; }
basic() { printf 'user = "%s"' "$(quote "$user:$pass")"; }
# get AUTH-CONFIG URL FILE [curl args...]: prints the HTTP status of the final response
get() {
  local auth=$1 url=$2 file=$3
  shift 3
  printf '%s\n' "$auth" | curl -q --config - --silent --show-error --location --retry 3 \
    --connect-timeout 30 ${ca:+--cacert "$ca"} --dump-header "$TMPDIR/headers" \
    --output "$file" --write-out '%{http_code}' "$@" "$url"
}

auth=
if [ -n "$token" ]; then auth=$(bearer "$token"); fi
status=$(get "$auth" "$url" "$out") || fail "GET $url failed"
if [ "$status" = 401 ] && [ -z "$token" ]; then
  challenges=$(tr -d '\r' < "$TMPDIR/headers" | grep -i '^www-authenticate:' || true)
  challenge=$(printf '%s\n' "$challenges" | grep -i '^www-authenticate:[[:space:]]*bearer' | tail -n 1 || true)
  if [ -n "$challenge" ]; then
    param() {
      printf '%s\n' "$challenge" | grep -o -i "[[:space:],]$1=\"[^\"]*\"" | head -n 1 | sed -e 's/^[^"]*"//' -e 's/"$//'
    }
    realm=$(param realm)
    service=$(param service)
    want=$(param scope)
    [ -n "$realm" ] || fail "the registry's bearer challenge names no realm"
    [ -n "$want" ] || want=$scope
    tauth=
    if [ -n "$user$pass" ]; then tauth=$(basic); fi
    tstatus=$(get "$tauth" "$realm" "$TMPDIR/token.json" --get \
      ${service:+--data-urlencode "service=$service"} --data-urlencode "scope=$want") \
      || fail "token request to $realm failed"
    if [ "$tstatus" != 200 ]; then
      if [ -n "$user$pass" ]; then
        fail "token request to $realm: HTTP $tstatus (are the credentials right?)"
      fi
      fail "token request to $realm: HTTP $tstatus (credentials needed? $creds_hint)"
    fi
    body=$(tr -d '\n' < "$TMPDIR/token.json")
    rm -f "$TMPDIR/token.json"
    tok=$(printf '%s' "$body" | sed -n -e 's/.*"token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
    if [ -z "$tok" ]; then
      tok=$(printf '%s' "$body" | sed -n -e 's/.*"access_token"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
    fi
    [ -n "$tok" ] || fail "the token response from $realm has no token"
    auth=$(bearer "$tok")
  elif printf '%s\n' "$challenges" | grep -q -i '^www-authenticate:[[:space:]]*basic'; then
    [ -n "$user$pass" ] || fail "$url needs credentials: $creds_hint"
    auth=$(basic)
  else
    fail "GET $url: HTTP 401 without a usable WWW-Authenticate challenge"
  fi
  status=$(get "$auth" "$url" "$out") || fail "GET $url failed"
fi
if [ "$status" != 200 ]; then
  echo "hocker-fetch: GET $url: HTTP $status" >&2
  head -c 2000 "$out" >&2 || true
  echo >&2
  if [ "$status" = 401 ] || [ "$status" = 403 ]; then
    if [ -z "$user$pass$token" ]; then
      fail "access denied; credentials needed? $creds_hint"
    fi
    fail "access denied: the credentials were rejected or may not pull this repository"
  fi
  fail "download failed"
fi
"""

# bash, run as the builder of the archive derivation. Inputs: blobs, members (space-separated lists of the
# same length), manifestJson, repositoriesJson, out.
ASSEMBLE_SCRIPT = r"""set -euo pipefail
set -f
files=($blobs)
names=($members)
[ "${#files[@]}" = "${#names[@]}" ] || { echo "hocker-assemble: blobs/members mismatch" >&2; exit 1; }
mkdir root
for i in "${!files[@]}"; do
  ln -s "${files[$i]}" "root/${names[$i]}"
done
printf '%s' "$manifestJson" > root/manifest.json
printf '%s' "$repositoriesJson" > root/repositories
cd root
tar --create --dereference --format=gnu --owner=0 --group=0 --numeric-owner --mtime=@0 \
  --mode=u=rw,go=r --file "$out" manifest.json repositories "${names[@]}"
"""


def _layer_suffix(media_type):
    media_type = (media_type or "").lower()
    for marker, suffix in _LAYER_SUFFIXES:
        if marker in media_type:
            return suffix
    if media_type.endswith("+json") or media_type.endswith(".json"):
        return ".json"
    if media_type.endswith(".tar") or "rootfs.diff.tar" == media_type.rsplit(".", 1)[-1]:
        return ".tar"
    if media_type in ("application/vnd.oci.image.layer.v1.tar",
                      "application/vnd.docker.image.rootfs.diff.tar"):
        return ".tar"
    # docker schema2 default and anything unknown: gzip is by far the most common
    return ".tar.gz"


def fetchurl_expression(registry_url, repository_path, tag, manifest, manifest_digest=None, repo_tags=None,
                        name=None, image=None, platform=None):
    """A self-contained Nix expression that fetches every blob by digest and assembles a docker-archive.

    ``registry_url``: the registry base URL the blobs are fetched from (``http://127.0.0.1:5000``,
    ``https://registry-1.docker.io/v2/``); ``repository_path``: ``library/debian``; ``tag``: the tag the
    manifest was resolved from (or None); ``manifest``: the image manifest; ``manifest_digest``: its digest
    (recorded as ``imageDigest``); ``repo_tags``: names written into ``manifest.json`` (default: the
    familiar name with the tag, none without a tag); ``name``: store name stem (default from the
    repository path); ``image``/``platform``: only written into the header comment.

    The expression is a function ``{ pkgs ? import <nixpkgs> { }, ... }`` returning the archive derivation
    (with extra attributes ``imageConfig``, ``imageLayers``, ``imageDigest``, ``configDigest``,
    ``repoTags``).
    """
    data = _image_manifest(manifest)
    base = registry_base(registry_url)
    segments = _check_repository_path(repository_path)
    path = "/".join(segments)
    familiar = familiar_name(registry_url, path)
    if repo_tags is None:
        repo_tags = ["%s:%s" % (familiar, tag)] if tag else []
    if isinstance(repo_tags, str):
        repo_tags = [repo_tags]
    if manifest_digest is not None:
        split_digest(manifest_digest)
    if name is None:
        stem = (familiar if base.endswith("://" + DOCKER_HUB_HOST) else path).replace("/", "-")
        suffix = tag if tag else split_digest(manifest_digest or data["config"]["digest"])[1][:12]
        name = "%s-%s" % (stem, suffix)
    archive_name = "docker-image-%s.tar" % store_name(name)

    config_digest = data["config"]["digest"]
    config_hex = split_digest(config_digest)[1]
    blobs = []        # (var, store name, digest, member name)
    members = {}      # digest -> member name (deduplicated)
    seen_vars = {}

    def add_blob(var, digest, member, nix_name):
        if digest in seen_vars:
            return seen_vars[digest]
        seen_vars[digest] = var
        members[digest] = member
        blobs.append((var, nix_name, digest, member))
        return var

    add_blob("config", config_digest, "%s.json" % config_hex,
             "docker-config-%s.json" % config_hex)
    layer_vars = []
    layer_members = []
    for position, layer in enumerate(data["layers"]):
        digest = layer["digest"]
        _alg, hexpart = split_digest(digest)
        suffix = _layer_suffix(layer.get("mediaType"))
        var = add_blob("layer%d" % position, digest, hexpart + suffix, "docker-layer-%s%s" % (hexpart, suffix))
        layer_vars.append(var)
        layer_members.append(members[digest])
    top_id = split_digest(data["layers"][-1]["digest"])[1] if data["layers"] else config_hex

    scope = "repository:%s:pull" % path
    header = [
        "# Generated by hocker.registry (docker_registry_nix, format fetchurl). Do not edit.",
        "# Image: %s" % nix_comment(image or "%s/%s%s" % (base.split("://", 1)[1], path, ":" + tag if tag else "")),
    ]
    if platform:
        header.append("# Platform: %s" % nix_comment(platform))
    if manifest_digest:
        header.append("# Manifest: %s" % manifest_digest)
    header.append("# Config (image id): %s" % config_digest)
    header.extend([
        "#",
        "# Every blob is a fixed-output derivation whose hash is its registry digest. Build with",
        "#   nix-build THIS.nix   (or import it with { pkgs = ...; })",
        "# and load with  docker load -i result  or  podman load -i result.",
        "# Credentials are read at build time from the builder's environment (HOCKER_REGISTRY_USERNAME,",
        "# HOCKER_REGISTRY_PASSWORD, HOCKER_REGISTRY_TOKEN, HOCKER_REGISTRY_CREDENTIALS_FILE; with a Nix",
        "# daemon: the daemon's environment) or from the credentialsFile argument (a string path outside",
        "# the store); they are never part of this file.",
    ])
    impure = " ".join(nix_string(v) for v in CREDENTIAL_ENV_VARS + PROXY_ENV_VARS)
    out = header + [
        "{ pkgs ? import <nixpkgs> { }",
        ", system ? pkgs.stdenv.hostPlatform.system or builtins.currentSystem",
        ', shell ? "${pkgs.bash}/bin/bash"',
        ", tools ? [ pkgs.coreutils pkgs.curl pkgs.gnugrep pkgs.gnused pkgs.gnutar ]",
        ', cacert ? "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"',
        ", credentialsFile ? null",
        ", repoTags ? [ %s ]" % " ".join(nix_string(t) for t in repo_tags) if repo_tags else ", repoTags ? [ ]",
        "}:",
        "",
        "# A Nix path literal would copy the credentials into the world-readable store: only strings.",
        "assert credentialsFile == null || builtins.isString credentialsFile;",
        "",
        "let",
        "  registry = %s;" % nix_string(base),
        "  repository = %s;" % nix_string(path),
        "  scope = %s;" % nix_string(scope),
        '  toolPath = builtins.concatStringsSep ":" (map (p: "${p}/bin") tools);',
        '  fetchScript = builtins.toFile "hocker-fetch-blob.sh" %s;' % nix_indented_string(FETCH_SCRIPT, 4),
        '  assembleScript = builtins.toFile "hocker-docker-archive.sh" %s;'
        % nix_indented_string(ASSEMBLE_SCRIPT, 4),
        "  fetchBlob = { name, digest, hash }: derivation {",
        "    inherit name system scope cacert;",
        "    builder = shell;",
        "    args = [ fetchScript ];",
        "    PATH = toolPath;",
        '    url = "${registry}/v2/${repository}/blobs/${digest}";',
        '    credentialsFile = if credentialsFile == null then "" else credentialsFile;',
        '    outputHashMode = "flat";',
        '    outputHashAlgo = builtins.head (builtins.match "([a-z0-9]+)-.*" hash);',
        "    outputHash = hash;",
        "    impureEnvVars = [ %s ];" % impure,
        "    preferLocalBuild = true;",
        "  };",
    ]
    for var, nix_name, digest, _member in blobs:
        out.extend([
            "  %s = fetchBlob {" % var,
            "    name = %s;" % nix_string(nix_name),
            "    digest = %s;" % nix_string(digest if ":" in digest else "sha256:" + digest),
            "    hash = %s;" % nix_string(sri(digest)),
            "  };",
        ])
    member_list = [m for _v, _n, _d, m in blobs]
    out.extend([
        "  layerFiles = [ %s ];" % " ".join(nix_string(m) for m in layer_members) if layer_members
        else "  layerFiles = [ ];",
        "  parseTag = t:",
        '    let m = builtins.match "(.+):([A-Za-z0-9_][A-Za-z0-9_.-]*)" t;',
        '    in if m == null then throw "repoTags: ${t} is not NAME:TAG" else m;',
        "  repositories = builtins.foldl' (acc: t:",
        "    let m = parseTag t; n = builtins.elemAt m 0; in",
        "    acc // { ${n} = (acc.${n} or { }) // { ${builtins.elemAt m 1} = %s; }; }) { } repoTags;"
        % nix_string(top_id),
        "  archive = derivation {",
        "    name = %s;" % nix_string(archive_name),
        "    inherit system;",
        "    builder = shell;",
        "    args = [ assembleScript ];",
        "    PATH = toolPath;",
        "    blobs = [ %s ];" % " ".join(v for v, _n, _d, _m in blobs),
        "    members = [ %s ];" % " ".join(nix_string(m) for m in member_list),
        "    manifestJson = builtins.toJSON [ {",
        "      Config = %s;" % nix_string(members[config_digest]),
        "      RepoTags = repoTags;",
        "      Layers = layerFiles;",
        "    } ];",
        "    repositoriesJson = builtins.toJSON repositories;",
        "  };",
        "in",
        "archive // {",
        "  imageConfig = config;",
        "  imageLayers = [ %s ];" % " ".join(layer_vars) if layer_vars else "  imageLayers = [ ];",
        "  imageDigest = %s;" % (nix_string(manifest_digest) if manifest_digest else "null"),
        "  configDigest = %s;" % nix_string(config_digest),
        "  inherit repoTags;",
        "}",
    ])
    return "\n".join(out) + "\n"


def nix_expression(fmt, registry_url, repository_path, tag, manifest, **kwargs):
    """Dispatch on ``fmt`` (``fetchdocker`` or ``fetchurl``)."""
    if fmt == "fetchdocker":
        allowed = ("name",)
        return fetchdocker_expression(registry_url, repository_path, tag, manifest,
                                      **dict((k, v) for k, v in kwargs.items() if k in allowed))
    if fmt == "fetchurl":
        return fetchurl_expression(registry_url, repository_path, tag, manifest, **kwargs)
    raise ValueError("unknown Nix format %r (expected one of %s)" % (fmt, ", ".join(FORMATS)))
