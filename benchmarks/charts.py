"""PNG charts of benchmark results (matplotlib, no display needed).

    python benchmarks/charts.py RESULTS [--out DIR] [--prefix NAME]
    python benchmarks/charts.py --fleet FLEET.json [--out DIR] [--prefix NAME]

``RESULTS`` is what ``benchmarks/run.py`` wrote: the raw ``<date>.json`` beside its report, or a Markdown
report holding its table (``benchmarks/results/<date>.md``, or ``docs/performance.md`` itself, so the
charts show exactly the numbers of the table they illustrate). Two charts are written:

* ``<prefix>-wall-time.png``: median wall time of every case of images (a), (b) and (c), the module beside
  skopeo and curl;
* ``<prefix>-memory.png``: peak RSS of the same cases.

``--fleet`` draws the fleet benchmark (direct and relay transports of the image_deploy role, the kubespray
way, the plain-ssh floor) against the number of hosts N into ``<prefix>-fleet.png``: wall time, and the
bytes the registry served. ``FLEET.json`` is a list of rows, or ``{"rows": [...]}``, each row a dict:

    {"transport": "direct" | "relay" | "kubespray" | "floor",   # the way the images got to the hosts
     "hosts": 8,                                                 # N ("n" is accepted too)
     "seconds": 21.0,                                            # wall time ("wall_s" is accepted too)
     "registry_bytes": 412000000}                                # optional: bytes the registry served

:func:`fleet_chart` takes those rows directly, for the fleet benchmark to call.
"""
import argparse
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

IMAGES = ["(a) big", "(b) 40 layers", "(c) realistic"]
# the cases drawn, in order, with their colours: the module's rows, then the tools it is compared with
CASES = [
    ("hocker uncompressed", "module, uncompressed layers", "#1f5fa8"),
    ("hocker compressed", "module, compressed layers", "#6aa3e0"),
    ("hocker uncompressed, zlib", "module, uncompressed, zlib inflate", "#a9c8ec"),
    ("skopeo", "skopeo copy", "#d9822b"),
    ("curl", "curl of the blobs (4 parallel)", "#5b9c4b"),
]
FLEET_STYLE = {
    "direct": ("transport: direct", "#1f5fa8", "o"),
    "relay": ("transport: relay", "#6aa3e0", "s"),
    "kubespray": ("kubespray way (skopeo + copy)", "#d9822b", "^"),
    "floor": ("floor: ssh cat to every host", "#777777", "x"),
}
# PNG metadata without the matplotlib version or a date: the same numbers give the same file
PNG_METADATA = {"Software": None}


# ------------------------------------------------------------------------------------------ reading
def _number(text):
    text = text.strip()
    if not text or text == "-":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_results(path):
    """{(image, case): {"seconds": median, "rss_mib": peak}} from run.py's JSON or a Markdown table."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    if path.endswith(".json"):
        for row in json.loads(text)["rows"]:
            seconds = [s for s in row.get("seconds") or [] if s is not None]
            rss = [r for r in row.get("rss_kb") or [] if r is not None]
            out[(row["image"], row["case"])] = {
                "seconds": statistics.median(seconds) if seconds else None,
                "rss_mib": max(rss) / 1024.0 if rss else None,
            }
        return out
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None if not line.strip() else header
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["image", "case"]:
            header = cells
            continue
        if header is None or set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        out[(row["image"], row["case"])] = {"seconds": _number(row.get("median s", "")),
                                            "rss_mib": _number(row.get("peak RSS MiB", ""))}
    if not out:
        raise ValueError("%s has no benchmark table (a line starting with '| image | case |')" % path)
    return out


# ------------------------------------------------------------------------------------------ drawing
def _grouped_bars(results, key, ylabel, title, out_png):
    cases = [c for c in CASES if any((image, c[0]) in results for image in IMAGES)]
    images = [image for image in IMAGES if any((image, c[0]) in results for c in cases)]
    if not cases or not images:
        raise ValueError("no rows of images %s in the results" % ", ".join(IMAGES))
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    width = 0.8 / len(cases)
    for i, (case, label, colour) in enumerate(cases):
        xs, ys = [], []
        for j, image in enumerate(images):
            value = (results.get((image, case)) or {}).get(key)
            if value is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(value)
        bars = ax.bar(xs, ys, width * 0.92, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f" if key == "seconds" else "%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(images)))
    ax.set_xticklabels(images)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.margins(y=0.12)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3)
    fig.tight_layout()
    fig.savefig(out_png, metadata=PNG_METADATA)
    plt.close(fig)
    return out_png


def image_charts(results, out_dir, prefix="performance"):
    """Write the wall-time and memory charts of ``results`` (see :func:`read_results`); returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    return [
        _grouped_bars(results, "seconds", "median wall time (s), lower is better",
                      "docker_registry_image beside skopeo and curl: wall time",
                      os.path.join(out_dir, prefix + "-wall-time.png")),
        _grouped_bars(results, "rss_mib", "peak resident memory (MiB)",
                      "docker_registry_image beside skopeo and curl: peak memory",
                      os.path.join(out_dir, prefix + "-memory.png")),
    ]


def _fleet_rows(rows):
    out = []
    for row in rows:
        transport = row.get("transport")
        hosts = row.get("hosts", row.get("n"))
        seconds = row.get("seconds", row.get("wall_s"))
        if transport is None or hosts is None or seconds is None:
            raise ValueError("fleet row without transport, hosts or seconds: %r" % (row,))
        out.append((str(transport), int(hosts), float(seconds), row.get("registry_bytes")))
    return out


def fleet_chart(rows, out_png, title="Deploying to N hosts"):
    """Wall time and registry bytes against the number of hosts, one line per transport."""
    rows = _fleet_rows(rows)
    if not rows:
        raise ValueError("no fleet rows")
    fig, (ax_time, ax_bytes) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    for transport in sorted({r[0] for r in rows}, key=lambda t: list(FLEET_STYLE).index(t) if t in FLEET_STYLE else 99):
        label, colour, marker = FLEET_STYLE.get(transport, (transport, None, "o"))
        points = sorted((n, s, b) for t, n, s, b in rows if t == transport)
        ax_time.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=label, color=colour,
                     linestyle="--" if transport == "floor" else "-")
        with_bytes = [p for p in points if p[2] is not None]
        if with_bytes and transport != "floor":
            ax_bytes.plot([p[0] for p in with_bytes], [p[2] / 1e6 for p in with_bytes], marker=marker, label=label,
                          color=colour)
    hosts = sorted({r[1] for r in rows})
    for ax, ylabel in ((ax_time, "wall time (s)"), (ax_bytes, "bytes served by the registry (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(hosts)
        ax.set_xticklabels([str(n) for n in hosts])
        ax.set_xlabel("hosts (N)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
    ax_time.set_title("wall time", fontsize=10)
    ax_bytes.set_title("registry traffic", fontsize=10)
    ax_time.legend(fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, metadata=PNG_METADATA)
    plt.close(fig)
    return out_png


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("results", nargs="?", help="run.py's .json, or a Markdown file with its table")
    parser.add_argument("--fleet", help="the fleet benchmark's rows (JSON)")
    parser.add_argument("--out", default=".", help="directory for the PNG files (default: here)")
    parser.add_argument("--prefix", default="performance", help="file name prefix (default: performance)")
    args = parser.parse_args(argv)
    if not args.results and not args.fleet:
        parser.error("give a results file, --fleet, or both")
    written = []
    if args.results:
        written += image_charts(read_results(args.results), args.out, args.prefix)
    if args.fleet:
        with open(args.fleet, encoding="utf-8") as f:
            data = json.load(f)
        rows = data["rows"] if isinstance(data, dict) else data
        written.append(fleet_chart(rows, os.path.join(args.out, args.prefix + "-fleet.png")))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
