"""benchmarks/charts.py: the PNG charts of docs/performance.md and of the fleet benchmark."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import charts  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG and os.path.getsize(path) > 10000


def test_performance_page_charts(tmp_path):
    page = os.path.join(ROOT, "docs", "performance.md")
    results = charts.read_results(page)
    assert results[("(c) realistic", "skopeo")]["seconds"] > 0
    assert results[("(a) big", "hocker uncompressed")]["rss_mib"] > 0
    written = charts.image_charts(results, str(tmp_path))
    assert [os.path.basename(p) for p in written] == ["performance-wall-time.png", "performance-memory.png"]
    assert all(is_png(p) for p in written)
    # the page shows the committed charts
    with open(page) as f:
        text = f.read()
    for name in ("performance-wall-time.png", "performance-memory.png"):
        assert "](images/%s)" % name in text
        assert is_png(os.path.join(ROOT, "docs", "images", name))


def test_charts_from_run_json(tmp_path):
    rows = []
    for image in charts.IMAGES:
        for case, _label, _colour in charts.CASES:
            rows.append({"image": image, "case": case, "seconds": [1.0, 2.0, 3.0], "rss_kb": [10240, 20480, None]})
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"profile": "smoke", "rows": rows}))
    results = charts.read_results(str(path))
    assert results[("(a) big", "curl")] == {"seconds": 2.0, "rss_mib": 20.0}
    assert charts.main([str(path), "--out", str(tmp_path / "out"), "--prefix", "x"]) == 0
    assert is_png(str(tmp_path / "out" / "x-wall-time.png")) and is_png(str(tmp_path / "out" / "x-memory.png"))


def test_fleet_chart(tmp_path):
    rows = [{"transport": t, "hosts": n, "seconds": s * n, "registry_bytes": 4e8 * (n if t == "direct" else 1)}
            for t, s in (("direct", 2.5), ("relay", 1.5), ("kubespray", 11.0)) for n in (1, 2, 4, 8)]
    rows.append({"transport": "floor", "n": 8, "wall_s": 14.6})
    out = charts.fleet_chart(rows, str(tmp_path / "fleet.png"))
    assert is_png(out)
    with pytest.raises(ValueError):
        charts.fleet_chart([{"transport": "relay", "hosts": 2}], str(tmp_path / "bad.png"))
