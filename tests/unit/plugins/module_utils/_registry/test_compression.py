"""Unit tests for the streaming decompressor (gzip, multi-member gzip, zstd frames, identity, bombs)."""
import gzip
import hashlib
import io
import os
import random
import zlib

import pytest
import zstandard

from ansible_collections.hocker.registry.plugins.module_utils._registry import compression as c
from ansible_collections.hocker.registry.plugins.module_utils._registry import sinks
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import DigestMismatch, LimitExceeded

RNG = random.Random(1234)
DATA = bytes(RNG.getrandbits(8) for _i in range(200000)) + b"layer-data " * 300000 + b"tail"
SKIPPABLE = b"\x5a\x2a\x4d\x18" + (6).to_bytes(4, "little") + b"ignore"


INFLATER = {"name": "auto"}


@pytest.fixture(autouse=True, params=["zlib", "isal"])
def inflate_backend(request):
    """Every test runs with the standard library's zlib and with ISA-L (python-isal, in the CI venv), chosen
    in-process with the inflater option."""
    if request.param == "isal":
        import isal.isal_zlib  # noqa: F401  (the CI venv installs it: fail, never skip, when it is missing)
    INFLATER["name"] = "auto" if request.param == "isal" else "zlib"
    assert c.inflate_backend(INFLATER["name"]) == request.param
    return request.param


def decompressor(kind="auto", **kwargs):
    return c.Decompressor(kind, inflater=INFLATER["name"], **kwargs)


def decompress_stream(src, dst, **kwargs):
    return sinks.decompress_stream(src, dst, inflater=INFLATER["name"], **kwargs)


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(blob, kind="auto", step=65536, chunk_size=c.CHUNK_SIZE):
    dec = decompressor(kind, chunk_size=chunk_size)
    out = []
    peak = 0
    for i in range(0, len(blob), step):
        for chunk in dec.feed(blob[i:i + step]):
            peak = max(peak, len(chunk))
            out.append(bytes(chunk))
    for chunk in dec.finish():
        peak = max(peak, len(chunk))
        out.append(bytes(chunk))
    return b"".join(out), peak, dec


def multi_gzip(data, parts=3):
    size = len(data) // parts + 1
    return b"".join(gzip.compress(data[i:i + size], mtime=0) for i in range(0, len(data), size))


def multi_zstd(data, parts=3):
    size = len(data) // parts + 1
    cctx = zstandard.ZstdCompressor(level=3)
    frames = [cctx.compress(data[i:i + size]) for i in range(0, len(data), size)]
    return SKIPPABLE + (SKIPPABLE.join(frames)) + SKIPPABLE


@pytest.mark.parametrize("head,kind", [
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x50\x2a\x4d\x18", "zstd"),
    (b"\x5f\x2a\x4d\x18", "zstd"),
    (b"\x60\x2a\x4d\x18", "none"),
    (b"ustar", "none"),
    (b"", "none"),
    (b"\x1f", "none"),
])
def test_detect(head, kind):
    assert c.detect(head) == kind


@pytest.mark.parametrize("step", [1, 3, 4096, 1 << 20, 1 << 24])
def test_gzip_any_feed_size(step):
    blob = gzip.compress(DATA[:300000] if step == 1 else DATA, mtime=0)
    want = DATA[:300000] if step == 1 else DATA
    out, peak, dec = run(blob, "auto", step)
    assert out == want
    assert dec.kind == "gzip"
    assert peak <= c.CHUNK_SIZE


@pytest.mark.parametrize("step", [5, 65536, 1 << 24])
def test_multi_member_gzip(step):
    blob = multi_gzip(DATA, parts=5)
    out, _peak, _dec = run(blob, "gzip", step)
    assert out == DATA
    # zlib alone stops after the first member: make sure we did not
    assert zlib.decompressobj(31).decompress(blob) != DATA


def test_gzip_nul_padding_is_tolerated_but_garbage_is_not():
    blob = gzip.compress(DATA, mtime=0)
    assert run(blob + b"\0" * 1000)[0] == DATA
    with pytest.raises(c.DecompressionError):
        run(blob + b"garbage!")


def test_truncated_gzip_fails():
    blob = gzip.compress(DATA, mtime=0)
    with pytest.raises(c.DecompressionError):
        run(blob[:-8], "gzip")


def test_corrupt_gzip_fails():
    blob = bytearray(gzip.compress(DATA, mtime=0))
    blob[100:110] = b"\xff" * 10
    with pytest.raises(c.DecompressionError):
        run(bytes(blob), "gzip")


@pytest.mark.parametrize("step", [7, 65536, 1 << 24])
def test_zstd_multi_frame_and_skippable(step):
    blob = multi_zstd(DATA, parts=4)
    assert c.detect(blob) == "zstd"
    out, peak, dec = run(blob, "auto", step)
    assert out == DATA
    assert dec.kind == "zstd"
    assert peak <= c.CHUNK_SIZE


def test_none_passthrough_in_bounded_chunks():
    out, peak, dec = run(DATA, "auto", 1 << 24, chunk_size=100000)
    assert out == DATA
    assert dec.kind == "none"
    assert peak == 100000


def test_tiny_inputs():
    assert run(b"ab")[0] == b"ab"
    assert run(b"")[0] == b""
    assert run(gzip.compress(b"", mtime=0), step=1)[0] == b""


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_bomb_output_is_bounded(kind):
    size = 1 << 30      # 1 GiB of zeros from a few MiB (gzip) or a few KiB (zstd) of input
    if kind == "gzip":
        obj = zlib.compressobj(1, zlib.DEFLATED, 31)
        zero = bytes(1 << 24)
        blob = b"".join(obj.compress(zero) for _i in range(size // len(zero))) + obj.flush()
    else:
        cctx = zstandard.ZstdCompressor(level=3)
        blob = cctx.compress(bytes(size))
    assert len(blob) < size // 100
    dec = decompressor(kind, chunk_size=1 << 20)
    total = 0
    peak = 0
    # feed the whole bomb at once: the output must still come in bounded chunks
    for chunk in dec.feed(blob):
        total += len(chunk)
        peak = max(peak, len(chunk))
    for chunk in dec.finish():
        total += len(chunk)
        peak = max(peak, len(chunk))
    assert total == size
    assert peak <= 1 << 20


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("as_path", [False, True])
def test_decompress_stream_hashes_both_sides(tmp_path, kind, as_path):
    if kind == "gzip":
        blob = multi_gzip(DATA)
    elif kind == "zstd":
        blob = multi_zstd(DATA)
    else:
        blob = DATA
    src = tmp_path / "blob"
    src.write_bytes(blob)
    dst = tmp_path / "out.tar"
    if as_path:
        res = decompress_stream(str(src), str(dst), read_size=100000)
    else:
        with open(str(src), "rb") as s, open(str(dst), "wb") as d:
            res = decompress_stream(s, d)
    assert dst.read_bytes() == DATA
    assert res.kind == kind
    assert res.digest == sha(blob)
    assert res.size == len(blob)
    assert res.diff_id == sha(DATA)
    assert res.uncompressed_size == len(DATA)


def test_decompress_stream_without_readinto_and_without_dst():
    class Src(object):
        def __init__(self, data):
            self.f = io.BytesIO(data)

        def read(self, n):
            return self.f.read(min(n, 4000))

    blob = gzip.compress(DATA, mtime=0)
    res = decompress_stream(Src(blob), None, kind="gzip")
    assert res.diff_id == sha(DATA)
    assert res.digest == sha(blob)


def test_decompress_stream_verifies_expected(tmp_path):
    blob = gzip.compress(DATA, mtime=0)
    res = decompress_stream(io.BytesIO(blob), None, expected_digest=sha(blob), expected_diff_id=sha(DATA))
    assert res.diff_id == sha(DATA)
    with pytest.raises(DigestMismatch):
        decompress_stream(io.BytesIO(blob), None, expected_diff_id=sha(b"other"))
    with pytest.raises(DigestMismatch):
        decompress_stream(io.BytesIO(blob), None, expected_digest=sha(b"other"))


def test_missing_zstandard_raises_missing_library(monkeypatch):
    import sys
    from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import MissingLibrary
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(MissingLibrary) as exc:
        decompressor("zstd")
    assert "zstandard" in str(exc.value)
    # gzip still works without it
    assert run(gzip.compress(b"x" * 10, mtime=0))[0] == b"x" * 10


def test_unknown_kind_rejected():
    with pytest.raises(ValueError):
        decompressor("bzip2")
    assert os.path.exists(c.__file__)


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_unpacker_sink_hashes_both_sides(kind):
    blob = {"gzip": multi_gzip(DATA), "zstd": multi_zstd(DATA), "none": DATA}[kind]
    out = io.BytesIO()

    class Out:
        write = out.write

        def close(self):
            pass

        def abandon(self):
            pass

    sink = sinks.Unpacker(Out(), hash_input=True, inflater=INFLATER["name"])
    for i in range(0, len(blob), 100003):
        assert sink.write(blob[i:i + 100003]) == len(blob[i:i + 100003])
    res = sink.close()
    assert out.getvalue() == DATA
    assert (res.kind, res.digest, res.size, res.diff_id, res.uncompressed_size) == (
        kind, sha(blob), len(blob), sha(DATA), len(DATA))


def test_unpacker_stops_a_bomb_at_its_ratio():
    """A layer that inflates past its bounds stops at once, naming the layer and the limit."""
    obj = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = obj.compress(bytes(64 << 20)) + obj.flush()
    bounds = sinks.InflateBounds("layer sha256:x", len(blob), max_ratio=100, floor=1 << 20)
    sink = sinks.Unpacker(None, "sha256:x", bounds=bounds, inflater=INFLATER["name"])
    with pytest.raises(LimitExceeded) as exc:
        sink.write(blob)
    assert "layer sha256:x" in str(exc.value) and "max_inflation_ratio" in str(exc.value)
    assert sink.produced < 64 << 20


def test_unpacker_stops_before_the_disk_is_full(monkeypatch, tmp_path):
    class Full:
        f_bavail = 10
        f_frsize = 4096

    monkeypatch.setattr(sinks.os, "statvfs", lambda path: Full())
    bounds = sinks.InflateBounds("layer sha256:y", 1000, max_ratio=0, space_path=str(tmp_path))
    sink = sinks.Unpacker(None, "sha256:y", bounds=bounds, inflater=INFLATER["name"])
    with pytest.raises(LimitExceeded) as exc:
        sink.write(gzip.compress(bytes(80 << 20), mtime=0))
    assert "not enough space" in str(exc.value) and str(tmp_path) in str(exc.value)
