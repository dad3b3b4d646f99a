"""What each module's first run and unchanged re-run cost the registry, read from its access log: a re-run
makes no GET of a manifest or blob (at most HEAD requests; none for a digest reference), with and without
cache_dir. The table this measures is docs/request-cost.md (the test fails when the page says otherwise;
``HOCKER_WRITE_DOCS=1`` rewrites it)."""
import os

import pytest

from testbed.modrun import run_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "request-cost.md")
ROWS = {}

HEADER = """# What each module asks of the registry

Measured from the registry's access log by tests/e2e/test_request_cost.py on the test bed's docker manifest
list (three platforms and an attestation; the module picks linux/amd64): requests of the first run into an
empty `dest`, then of a second run with the same options (an unchanged re-run). `HEAD` is a manifest HEAD,
`GET m` a manifest GET, `GET b` a blob GET (configs included); token requests are not counted (the anonymous
registry needs none). Docker Hub counts manifest GETs as pulls; HEAD requests are free.

| module | options | cache_dir | first run | unchanged re-run |
|---|---|---|---|---|
"""


def cost(requests):
    heads = sum(1 for r in requests if r["method"] == "HEAD")
    manifests = sum(1 for r in requests if r["method"] == "GET" and "/manifests/" in r["path"])
    blobs = sum(1 for r in requests if r["method"] == "GET" and "/blobs/" in r["path"])
    return "%d HEAD, %d GET m, %d GET b" % (heads, manifests, blobs)


CASES = [
    ("docker_registry_manifest", "dest", lambda info, d: {"dest": d + "/m.json"}),
    ("docker_registry_manifest", "dest, image by digest", lambda info, d: {"dest": d + "/m.json", "digest": True}),
    ("docker_registry_config", "dest", lambda info, d: {"dest": d + "/c.json"}),
    ("docker_registry_layer", "layer by digest", lambda info, d: {"dest": d + "/l.tgz", "layer": info.default["layers"][0]["digest"]}),
    ("docker_registry_layer", "layer by index, decompress", lambda info, d: {"dest": d + "/l.tar", "index": -1, "decompress": True}),
    ("docker_registry_image", "docker-archive", lambda info, d: {"dest": d + "/i.tar"}),
    ("docker_registry_image", "oci-dir, layers compressed", lambda info, d: {"dest": d + "/o", "format": "oci-dir", "layers": "compressed"}),
    ("docker_registry_nix", "fetchurl, dest", lambda info, d: {"dest": d + "/i.nix", "format": "fetchurl"}),
]


@pytest.mark.parametrize("store", [False, True], ids=["no-store", "store"])
@pytest.mark.parametrize("case", CASES, ids=["%s-%s" % (c[0], c[1]) for c in CASES])
def test_unchanged_rerun_makes_no_get(case, store, registry_anonymous, seeded, tmp_path):
    reg = registry_anonymous
    info = seeded(reg)["docker-list"]
    module, label, make = case
    args = make(info, str(tmp_path))
    image = info.image(reg.host)
    if args.pop("digest", False):
        image = "%s/%s@%s" % (reg.host, info.repository, info.digest)
    args.update(image=image, platform="linux/amd64")
    if store:
        args["cache_dir"] = str(tmp_path / "store")
    reg.clear_log()
    first = run_module(module, args)
    assert first["rc"] == 0 and first["changed"] is True, first
    first_cost = cost(reg.requests())
    reg.clear_log()
    again = run_module(module, args)
    assert again["rc"] == 0 and again["changed"] is False, again
    requests = reg.requests()
    gets = [r for r in requests if r["method"] == "GET" and ("/manifests/" in r["path"] or "/blobs/" in r["path"])]
    assert gets == [], requests
    assert again["bytes_downloaded"] == 0
    assert again["requests"]["manifest_get"] == 0 and again["requests"]["blob_get"] == 0, again["requests"]
    ROWS[(module, label, store)] = (first_cost, cost(requests))


def test_zz_request_cost_page():
    """docs/request-cost.md is what the runs above measured (run after them, in file order)."""
    assert len(ROWS) == 2 * len(CASES), "run the whole file: %d of %d cases ran" % (len(ROWS), 2 * len(CASES))
    lines = [HEADER]
    for module, label, _make in CASES:
        for store in (False, True):
            first, again = ROWS[(module, label, store)]
            lines.append("| `%s` | %s | %s | %s | %s |\n" % (module, label, "yes" if store else "no", first, again))
    text = "".join(lines)
    if os.environ.get("HOCKER_WRITE_DOCS") == "1":
        with open(DOC, "w") as handle:
            handle.write(text)
    with open(DOC) as handle:
        assert handle.read() == text, "docs/request-cost.md is out of date: run with HOCKER_WRITE_DOCS=1\n" + text
