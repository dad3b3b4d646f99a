"""The benchmark harness (benchmarks/run.py) in its smallest mode, so that it cannot rot.

Timings are not asserted (they belong to the benchmark, not to tests): only that one run produced the whole
table.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGES = ["(a) big", "(b) 40 layers", "(c) realistic"]
IMAGE_CASES = ["hocker uncompressed", "hocker compressed", "hocker uncompressed, job", "hocker uncompressed, zlib",
               "hocker uncompressed, not placed", "skopeo", "curl", "curl sequential", "ansible ad-hoc, uncompressed"]


def test_benchmark_smoke(tmp_path):
    report = tmp_path / "report.md"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke",
                           "--output", str(report)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-5000:]
    text = report.read_text()
    assert text == proc.stdout.decode().strip() + "\n"
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| (")]
    cells = [[c.strip() for c in row] for row in rows]
    seen = set((row[0], row[1]) for row in cells)
    for image in IMAGES:
        for case in IMAGE_CASES:
            assert (image, case) in seen, (image, case, sorted(seen))
    layer_rows = [row for row in cells if row[0].startswith("(a) big biggest blob")]
    assert [row[1] for row in layer_rows] == ["layer module", "layer module, decompress", "curl (one blob)"]
    rerun = [row for row in cells if row[1] == "unchanged re-run (uncompressed)"]
    assert len(rerun) == 1 and "0 blob requests" in rerun[0][8]
    for row in cells:
        assert row[2] != "-", row            # every row has a measured median
        assert row[5] != "-", row            # and CPU time
        if row[1].startswith(("hocker", "layer", "unchanged")):
            assert row[6] != "-", row        # and the module's peak RSS
    assert "Machine:" in text and "python benchmarks/run.py --smoke" in text
    raw = json.loads((tmp_path / "report.json").read_text())
    assert raw["profile"] == "smoke" and raw["reps"] == 1
    assert len(raw["rows"]) == len(rows)
