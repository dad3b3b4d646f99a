"""Benchmark hocker.registry's docker_registry_image / docker_registry_layer against skopeo and curl.

Everything runs against ONE local docker-registry (tests/testbed) in one run, as paired runs: for every
repetition the tools are run back to back on the same image, in alternating order (forward on even,
backward on odd repetitions), and each ratio is the median of the per-repetition ratios.

Images (tests/testbed/builder.py kinds):
  (a) ``big``          ~400 MB of incompressible data in 5 gzip layers
  (b) ``many-layers``  40 small gzip layers
  (c) ``realistic``    ~500 MB of real files (/usr/share, /usr/lib/python3) in 5 gzip layers

Cases per image:
  hocker uncompressed   docker_registry_image, layers=uncompressed (a process with an args file, as Ansible runs
                        modules; fresh dest, no cache_dir)
  hocker compressed     the same with layers=compressed
  skopeo                skopeo copy --src-tls-verify=false docker://HOST/REPO:TAG docker-archive:DEST
  curl                  one ``curl -s -Z --parallel-max 4`` process fetching every layer blob to /dev/null
                        (4 transfers at a time, like the module's default max_workers): the transfer limit
  curl sequential       the same blobs one after the other (reference only)
Plus:
  layer module          docker_registry_layer on the biggest blob of (a) (raw and decompress=true) vs curl of
                        that one blob
  unchanged re-run      docker_registry_image on (c) again with an up-to-date dest: time and blob GETs seen in
                        the registry's access log
  ansible ad-hoc        ``ansible localhost -m hocker.registry.docker_registry_image -a ...`` (reported only)

Peak RSS: VmHWM of the module process (tests/testbed/modrun.py's wrapper); ``/usr/bin/time -f %M`` for
skopeo, curl and ansible (the largest process of the tree).

Usage:
  python benchmarks/run.py            # full run (about 10 minutes on 2 cores)
  python benchmarks/run.py --quick    # smaller images, 3 repetitions (a couple of minutes)
  python benchmarks/run.py --smoke    # tiny images, 1 repetition (used by tests/e2e/test_benchmark_smoke.py)
Run it with the dev venv's python (it needs requests and ansible-core): /tmp/venv312/bin/python.
"""

from __future__ import print_function

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import requests  # noqa: E402

from testbed import modrun  # noqa: E402
from testbed import builder  # noqa: E402
from testbed.registry import Registry  # noqa: E402

MB = 1000 * 1000
MiB = 1024 * 1024
TIME = "/usr/bin/time"
CURL_PARALLEL = 4

IMAGES = (("a", "big"), ("b", "many-layers"), ("c", "realistic"))
IMAGE_TITLES = {"a": "(a) big", "b": "(b) 40 layers", "c": "(c) realistic"}

PROFILES = {
    #          big_size     realistic_size  reps
    "full": (400 * MB, 500 * MB, 5),
    "quick": (100 * MB, 100 * MB, 3),
    "smoke": (2 * MB, 2 * MB, 1),
}


# ---------------------------------------------------------------------------------------------------------
# running things
# ---------------------------------------------------------------------------------------------------------
class Run(object):
    def __init__(self, seconds, rss_kb, rc, detail=None, cpu=None):
        self.seconds = seconds
        self.rss_kb = rss_kb
        self.rc = rc
        self.detail = detail or {}
        self.cpu = cpu          # user + system seconds of the process tree


def _run_timed(cmd, env=None, cwd=None):
    """Run ``cmd`` under /usr/bin/time; return (CompletedProcess, wall seconds, max RSS KiB, CPU seconds)."""
    fd, stats_path = tempfile.mkstemp(prefix="hocker-bench-time-")
    os.close(fd)
    try:
        start = time.perf_counter()
        proc = subprocess.run([TIME, "-f", "HOCKER_TIME %M %U %S", "-o", stats_path] + cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env, cwd=cwd, check=False)
        seconds = time.perf_counter() - start
        with open(stats_path) as f:
            lines = [line.split() for line in f.read().splitlines() if line.startswith("HOCKER_TIME ")]
        rss = cpu = None
        if lines:
            rss = int(lines[-1][1])
            cpu = float(lines[-1][2]) + float(lines[-1][3])
    finally:
        os.unlink(stats_path)
    return proc, seconds, rss, cpu


def _timed(cmd, env=None, cwd=None):
    """Run ``cmd`` under /usr/bin/time; return Run (wall seconds measured here, max RSS and CPU from time)."""
    proc, seconds, rss, cpu = _run_timed(cmd, env, cwd)
    if proc.returncode != 0:
        raise RuntimeError("%s failed (rc %d):\n%s\n%s" % (
            " ".join(cmd[:4]), proc.returncode, proc.stdout.decode(errors="replace")[-2000:],
            proc.stderr.decode(errors="replace")[-2000:]))
    return Run(seconds, rss, proc.returncode, {"stdout": proc.stdout}, cpu)


BASELINE = {}   # "pyroot": a directory whose ansible_collections/hocker/registry is another checkout


def baseline_pyroot(checkout):
    """A Python root in which ``ansible_collections.hocker.registry`` is ``checkout`` (another version of the
    collection, e.g. a worktree at an older commit), for paired before/after rows."""
    root = os.path.join(ROOT, ".build", "pyroot-baseline")
    coll = os.path.join(root, "ansible_collections", "hocker")
    os.makedirs(coll, exist_ok=True)
    link = os.path.join(coll, "registry")
    if os.path.islink(link):
        os.unlink(link)
    os.symlink(os.path.abspath(checkout), link)
    return root


def run_module(name, args, extra_env=None, pyroot=None):
    """Run a module as Ansible does (a python process given an args file); wall time includes start-up."""
    modrun.ensure_pyroot()
    payload = dict(args)
    payload.setdefault("_ansible_check_mode", False)
    payload.setdefault("_ansible_diff", False)
    payload.setdefault("_ansible_remote_tmp", tempfile.gettempdir())
    fd, path = tempfile.mkstemp(prefix="hocker-bench-args-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
    env = dict(os.environ)
    env["PYTHONPATH"] = (pyroot or modrun.PYROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    cmd = modrun.module_command(name, path, measure_rss=True)
    try:
        proc, seconds, _time_rss, cpu = _run_timed(cmd, env=env, cwd=tempfile.gettempdir())
    finally:
        os.unlink(path)
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    try:
        result = json.loads(out)
    except ValueError:
        result = {"failed": True, "raw": out}
    if proc.returncode != 0 or result.get("failed"):
        raise RuntimeError("module %s failed (rc %d): %s\n%s" % (name, proc.returncode, out[-3000:], err[-3000:]))
    rss = None
    marker = err.rfind("HOCKER_MAXRSS_KB=")
    if marker >= 0:
        rss = int(err[marker:].split("=", 1)[1].split()[0])
    return Run(seconds, rss, proc.returncode, result, cpu)


def run_job(args, placement="auto", inflater="auto"):
    """The image job of docker_registry_image in a process of its own (tests/testbed/jobrun.py), with the
    placement and inflater options the module does not expose; wall time includes start-up (without
    ansible-core's)."""
    modrun.ensure_pyroot()
    fd, path = tempfile.mkstemp(prefix="hocker-bench-job-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump({"args": args, "job": {"placement": placement, "inflater": inflater}}, handle)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([modrun.PYROOT, os.path.join(ROOT, "tests"), env.get("PYTHONPATH", "")])
    try:
        proc, seconds, rss, cpu = _run_timed([sys.executable, "-m", "testbed.jobrun", path], env=env,
                                             cwd=tempfile.gettempdir())
    finally:
        os.unlink(path)
    out = proc.stdout.decode("utf-8", "replace")
    try:
        result = json.loads(out)
    except ValueError:
        result = {"failed": True, "raw": out}
    if proc.returncode != 0 or result.get("failed"):
        raise RuntimeError("image job failed (rc %d): %s\n%s" % (proc.returncode, out[-3000:],
                                                                 proc.stderr.decode(errors="replace")[-3000:]))
    return Run(seconds, rss, proc.returncode, result, cpu)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


# ---------------------------------------------------------------------------------------------------------
# the registry and its images
# ---------------------------------------------------------------------------------------------------------
class Target(object):
    """One seeded image: reference parts and layer blob URLs."""

    def __init__(self, key, kind, host, repository, tag, layers):
        self.key = key
        self.kind = kind
        self.host = host
        self.repository = repository
        self.tag = tag
        self.layers = layers        # [{digest, size}]

    @property
    def image(self):
        return "%s/%s:%s" % (self.host, self.repository, self.tag)

    def blob_url(self, digest):
        return "http://%s/v2/%s/blobs/%s" % (self.host, self.repository, digest)

    @property
    def total_size(self):
        return sum(layer["size"] for layer in self.layers)


def _manifest(host, repository, tag):
    accept = ", ".join(["application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.oci.image.manifest.v1+json"])
    r = requests.get("http://%s/v2/%s/manifests/%s" % (host, repository, tag), headers={"Accept": accept},
                     timeout=30)
    if r.status_code != 200:
        return None
    return r.json()


REALISTIC_ROOTS = ["/usr/share/locale", "/usr/share/doc", "/usr/share/man", "/usr/share/i18n", "/usr/share/perl",
                   "/usr/share/vim", "/usr/share/icons", "/usr/share/cmake-3.25", "/usr/share/zoneinfo",
                   "/usr/share/mime", "/usr/share/X11", "/usr/share/perl5", "/usr/share/fonts", "/usr/share/java",
                   "/usr/share/common-licenses", "/usr/lib/python3", "/usr/lib/python3.11"]


def seed_realistic(reg, repository, size):
    """Like the testbed's ``realistic`` kind (real files cut into 5 gzip layers), but with OCI layer media types
    throughout, so that skopeo can convert the manifest for a docker-archive."""
    roots = [r for r in REALISTIC_ROOTS if os.path.isdir(r)]
    tars, _total = builder.tars_of_directories(roots, layer_bytes=size // 5, max_bytes=size)
    layers = [builder.layer_from_tar(t, fmt="oci") for t in tars]
    image = builder.build_image(layers, fmt="oci")
    builder.push_image(reg.push_session(), reg.url, repository, image, tags=["v1"])


def prepare_images(reg, big_size, realistic_size, keys):
    """Seed (or find already seeded) images; returns {key: Target}."""
    prefix = "bench/b%d-r%d/" % (big_size, realistic_size)
    targets = {}
    for key, kind in IMAGES:
        if key not in keys:
            continue
        manifest = _manifest(reg.host, prefix + kind, "v1")
        if manifest is None:
            log("seeding %s (%s) ..." % (IMAGE_TITLES[key], kind))
            start = time.perf_counter()
            if kind == "realistic":
                seed_realistic(reg, prefix + kind, realistic_size)
            else:
                builder.seed(reg, kinds=[kind], repo_prefix=prefix, tags=("v1",), big_size=big_size)
            log("  seeded in %.1f s" % (time.perf_counter() - start))
            manifest = _manifest(reg.host, prefix + kind, "v1")
        layers = [{"digest": d["digest"], "size": d["size"]} for d in manifest["layers"]]
        targets[key] = Target(key, kind, reg.host, prefix + kind, "v1", layers)
    return targets


# ---------------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------------
def case_job(target, dest, layers, placement="auto", inflater="auto"):
    _remove(dest)
    run = run_job({"image": target.image, "dest": dest, "layers": layers}, placement, inflater)
    _remove(dest)
    return run


def case_hocker(target, dest, layers, extra_env=None, pyroot=None):
    _remove(dest)
    run = run_module("docker_registry_image", {"image": target.image, "dest": dest, "layers": layers}, extra_env,
                     pyroot)
    _remove(dest)
    return run


def case_skopeo(target, dest):
    _remove(dest)
    run = _timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "docker://" + target.image,
                  "docker-archive:" + dest])
    _remove(dest)
    return run


def curl_command(urls, parallel=True):
    cmd = ["curl", "-s", "-f", "--noproxy", "*"]
    if len(urls) > 1 and parallel:
        cmd += ["-Z", "--parallel-max", str(CURL_PARALLEL)]
    for url in urls:
        cmd += ["-o", "/dev/null", url]
    return cmd


def case_curl(urls, parallel=True):
    return _timed(curl_command(urls, parallel))


def case_layer(target, digest, dest, decompress):
    _remove(dest)
    run = run_module("docker_registry_layer", {"image": target.image, "layer": digest, "dest": dest,
                                               "decompress": decompress})
    _remove(dest)
    return run


def case_ansible(target, dest, layers):
    _remove(dest)
    env = dict(os.environ)
    env.update({"ANSIBLE_COLLECTIONS_PATH": modrun.ensure_pyroot(), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_HOST_KEY_CHECKING": "0", "ANSIBLE_LOCALHOST_WARNING": "0",
                "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    if not os.path.exists(ansible):
        ansible = shutil.which("ansible") or "ansible"
    run = _timed([ansible, "localhost", "-c", "local", "-m", "hocker.registry.docker_registry_image",
                  "-a", "image=%s dest=%s layers=%s" % (target.image, dest, layers)], env=env)
    _remove(dest)
    return run


class Row(object):
    """One line of the table: the runs of one case, paired with the runs of its reference cases."""

    def __init__(self, image, case, note=""):
        self.image = image
        self.case = case
        self.note = note
        self.runs = []
        self.ratios = {}     # reference name -> [ratio per repetition]
        self.extra = {}

    @property
    def median(self):
        return statistics.median(r.seconds for r in self.runs) if self.runs else None

    @property
    def cpu(self):
        values = [r.cpu for r in self.runs if r.cpu is not None]
        return statistics.median(values) if values else None

    @property
    def rss_mib(self):
        values = [r.rss_kb for r in self.runs if r.rss_kb is not None]
        return max(values) / 1024.0 if values else None

    def ratio(self, ref):
        values = self.ratios.get(ref)
        return statistics.median(values) if values else None


def paired(cases, reps):
    """Run ``cases`` ([(name, callable)]) ``reps`` times in alternating order; return {name: [Run]}."""
    runs = dict((name, []) for name, _fn in cases)
    for rep in range(reps):
        order = cases if rep % 2 == 0 else list(reversed(cases))
        for name, fn in order:
            runs[name].append(fn())
    return runs


def _pair_ratios(row, runs, ref_name, ref_runs):
    row.ratios[ref_name] = [a.seconds / b.seconds for a, b in zip(runs, ref_runs)]


def bench_image(target, workdir, reps, with_ansible):
    title = IMAGE_TITLES[target.key]
    dest = os.path.join(workdir, "dest-%s.tar" % target.key)
    urls = [target.blob_url(layer["digest"]) for layer in target.layers]
    cases = [
        ("hocker uncompressed", lambda: case_hocker(target, dest, "uncompressed")),
        ("hocker compressed", lambda: case_hocker(target, dest, "compressed")),
        ("skopeo", lambda: case_skopeo(target, dest)),
        ("curl", lambda: case_curl(urls)),
        ("curl sequential", lambda: case_curl(urls, parallel=False)),
    ]
    # the module's image job run directly (testbed/jobrun.py): as the module does it, then with each layer
    # written to a work file and copied into the archive afterwards, then with zlib instead of python-isal
    cases.insert(2, ("hocker uncompressed, not placed",
                     lambda: case_job(target, dest, "uncompressed", placement="never")))
    if HAS_ISAL:
        cases.insert(2, ("hocker uncompressed, zlib", lambda: case_job(target, dest, "uncompressed", inflater="zlib")))
    cases.insert(2, ("hocker uncompressed, job", lambda: case_job(target, dest, "uncompressed")))
    if BASELINE.get("pyroot"):
        # the same module from another checkout (--baseline), paired with this one on the same registry
        root = BASELINE["pyroot"]
        cases.insert(2, ("baseline compressed", lambda: case_hocker(target, dest, "compressed", pyroot=root)))
        cases.insert(2, ("baseline uncompressed", lambda: case_hocker(target, dest, "uncompressed", pyroot=root)))
    log("%s: %d layers, %.1f MB of blobs, %d repetitions" % (title, len(target.layers), target.total_size / MB,
                                                             reps))
    runs = paired(cases, reps)
    rows = []
    for name, _fn in cases:
        row = Row(title, name)
        row.runs = runs[name]
        if name != "skopeo":
            _pair_ratios(row, runs[name], "skopeo", runs["skopeo"])
        if name != "curl":
            _pair_ratios(row, runs[name], "curl", runs["curl"])
        if name.startswith(("hocker", "baseline")):
            row.extra["bytes_downloaded"] = runs[name][-1].detail.get("bytes_downloaded")
            _pair_ratios(row, runs[name], "curl sequential", runs["curl sequential"])
            row.note = "%.2fx sequential curl" % row.ratio("curl sequential")
        if name == "curl sequential":
            row.note = "one transfer at a time (reference only)"
        if name.startswith("baseline "):
            row.note = "the module of the --baseline checkout (%s); " % BASELINE.get("label") + row.note
        if name == "hocker uncompressed, job":
            row.note = "the module's image job without the Ansible module around it (the reference of the next " \
                "two rows); " + row.note
        if name == "hocker uncompressed, zlib":
            row.note = "the job with gzip inflated by the standard library's zlib instead of isal; " + row.note
        if name == "hocker uncompressed, not placed":
            row.note = "the job with layers to work files, then copied into the archive (placement=never); " + \
                row.note
        rows.append(row)
    if with_ansible:
        row = Row(title, "ansible ad-hoc, uncompressed", "no target")
        ansible_runs = paired([("ansible", lambda: case_ansible(target, dest, "uncompressed")),
                               ("skopeo", lambda: case_skopeo(target, dest))], reps)
        row.runs = ansible_runs["ansible"]
        _pair_ratios(row, row.runs, "skopeo", ansible_runs["skopeo"])
        rows.append(row)
    for row in rows:
        log("  %-30s %7.3f s" % (row.case, row.median))
    return rows


def bench_layer(target, workdir, reps):
    """docker_registry_layer on the biggest blob of ``target`` vs curl of that blob (issue 5)."""
    biggest = max(target.layers, key=lambda layer: layer["size"])
    dest = os.path.join(workdir, "layer.bin")
    url = target.blob_url(biggest["digest"])
    cases = [
        ("layer", lambda: case_layer(target, biggest["digest"], dest, False)),
        ("layer decompress", lambda: case_layer(target, biggest["digest"], dest, True)),
        ("curl", lambda: case_curl([url])),
    ]
    log("layer module: blob %s (%.1f MB), %d repetitions" % (biggest["digest"][:19], biggest["size"] / MB, reps))
    runs = paired(cases, reps)
    title = "%s biggest blob (%.0f MB)" % (IMAGE_TITLES[target.key], biggest["size"] / MB)
    rows = []
    for name, note in (("layer", "docker_registry_layer"), ("layer decompress", "docker_registry_layer"),
                       ("curl", "curl of the one blob")):
        row = Row(title, {"layer": "layer module", "layer decompress": "layer module, decompress",
                          "curl": "curl (one blob)"}[name], note)
        row.runs = runs[name]
        if name != "curl":
            _pair_ratios(row, runs[name], "curl", runs["curl"])
        row.extra["MB/s"] = biggest["size"] / MB / row.median
        rows.append(row)
    for row in rows:
        log("  %-30s %7.3f s  %6.0f MB/s" % (row.case, row.median, row.extra["MB/s"]))
    return rows


def bench_rerun(reg, target, workdir, reps, full_row, skopeo_row=None):
    """An unchanged re-run: dest is up to date, only the manifest digest is asked for."""
    dest = os.path.join(workdir, "rerun.tar")
    _remove(dest)
    run_module("docker_registry_image", {"image": target.image, "dest": dest, "layers": "uncompressed"})
    row = Row(IMAGE_TITLES[target.key], "unchanged re-run (uncompressed)")
    blob_gets = 0
    requests_seen = []
    for _rep in range(reps):
        reg.clear_log()
        run = run_module("docker_registry_image", {"image": target.image, "dest": dest, "layers": "uncompressed"})
        if run.detail.get("changed"):
            raise RuntimeError("the unchanged re-run reported changed=true")
        seen = reg.requests()
        requests_seen = ["%s %s" % (r["method"], r["path"].rsplit("/", 2)[-2] + "/" + r["path"].rsplit("/", 1)[-1][:19])
                         for r in seen]
        blob_gets += sum(1 for r in seen if "/blobs/" in r["path"])
        row.runs.append(run)
    _remove(dest)
    row.extra["blob_requests"] = blob_gets
    row.extra["requests"] = requests_seen
    if full_row is not None and full_row.median:
        row.extra["of_full"] = row.median / full_row.median
    if skopeo_row is not None and skopeo_row.median:
        row.extra["of_skopeo"] = row.median / skopeo_row.median
    row.note = "%d blob requests; requests per run: %s" % (blob_gets, ", ".join(requests_seen) or "none")
    log("  %-30s %7.3f s (%s)" % (row.case, row.median or 0.0, row.note))
    return row


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------
# the module inflates gzip with isal when this interpreter (the one the module runs with) has it
HAS_ISAL = importlib.util.find_spec("isal") is not None


def _fmt(value, pattern):
    return "-" if value is None else pattern % value


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1024.0 / 1024.0)
                    break
    except OSError:
        pass
    versions = []
    for cmd in (["skopeo", "--version"], ["curl", "--version"], ["docker-registry", "--version"]):
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False).stdout.decode()
            versions.append(out.splitlines()[0].strip())
        except (OSError, IndexError):
            pass
    inflate = "isal %s" % _isal_version() if HAS_ISAL else "zlib %s (isal not installed)" % zlib.ZLIB_RUNTIME_VERSION
    return {"nproc": os.cpu_count(), "cpu": model, "memory": mem, "kernel": platform.release(),
            "python": sys.version.split()[0], "tools": versions, "inflate": inflate}


def _isal_version():
    try:
        from importlib.metadata import version
        return version("isal")
    except Exception:  # pylint: disable=broad-except
        return "?"


TARGETS = {
    ("(a) big", "hocker uncompressed"): ("skopeo", 0.6),
    ("(c) realistic", "hocker uncompressed"): ("skopeo", 0.6),
    ("(b) 40 layers", "hocker uncompressed"): ("skopeo", 0.8),
    ("(a) big", "hocker compressed"): ("curl", 1.5),
    ("(c) realistic", "hocker compressed"): ("curl", 1.5),
}


def render(rows, info, command, profile, load=None):
    out = []
    out.append("| image | case | median s | x skopeo | x curl | CPU s | peak RSS MiB | target | notes |")
    out.append("|---|---|---:|---:|---:|---:|---:|---|---|")
    for row in rows:
        target = TARGETS.get((row.image, row.case)) if profile == "full" else None
        verdict = ""
        if target:
            ref, limit = target
            value = row.ratio(ref)
            verdict = "<= %.1fx %s: %s" % (limit, ref, "met" if value is not None and value <= limit else "MISSED")
        if row.case.startswith("unchanged"):
            share = row.extra.get("of_full")
            ok = share is not None and share <= 0.05 and row.extra.get("blob_requests") == 0
            if profile == "full":
                verdict = "<= 5%% of full, no blob request: %s" % ("met" if ok else "MISSED")
            of_skopeo = row.extra.get("of_skopeo")
            notes = "%s of a full run (%s of skopeo's); %s" % (
                _fmt(share * 100 if share is not None else None, "%.1f%%"),
                _fmt(of_skopeo * 100 if of_skopeo is not None else None, "%.1f%%"), row.note)
        else:
            notes = row.note
        if "MB/s" in row.extra:
            notes = ("%.0f MB/s; " % row.extra["MB/s"]) + notes
        if row.case.startswith(("hocker", "layer", "unchanged")) and row.rss_mib is not None:
            verdict += ("; " if verdict else "") + "RSS < 100 MiB: %s" % ("met" if row.rss_mib < 100 else "MISSED")
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row.image, row.case, _fmt(row.median, "%.3f"), _fmt(row.ratio("skopeo"), "%.2f"),
            _fmt(row.ratio("curl"), "%.2f"), _fmt(row.cpu, "%.2f"), _fmt(row.rss_mib, "%.0f"), verdict,
            notes.strip("; ")))
    header = [
        "# hocker.registry benchmark, %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "",
        "Command: `%s` (profile %s)" % (command, profile),
        "",
        "Machine: %d CPUs (%s), %s RAM, Linux %s, Python %s; %s; gzip inflated by %s" % (
            info["nproc"], info["cpu"], info["memory"], info["kernel"], info["python"], "; ".join(info["tools"]),
            info["inflate"]),
        "",
        "Load average (1 min) at the start and the end of the run: %s (other work on the machine competes for "
        "the same cores)." % (load or "-"),
        "",
        "" if profile == "full" else "Targets are judged only in the full profile (400/500 MB images); this run "
        "used smaller images, where start-up weighs more.",
        "",
        "Median wall time of paired runs (alternating order); ratios are medians of the per-repetition ratios. "
        "x curl: against one curl process fetching every layer blob to /dev/null, %d transfers in parallel "
        "(the transfer limit); `curl sequential` fetches them one after the other. Peak RSS: VmHWM of the "
        "module process; /usr/bin/time's maximum RSS for skopeo, curl and ansible. CPU s: median user + system "
        "seconds (/usr/bin/time) of the process and the children it waited for." % CURL_PARALLEL,
        "",
    ]
    return "\n".join(header + out) + "\n"


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller images (100 MB), 3 repetitions")
    mode.add_argument("--smoke", action="store_true", help="tiny images, 1 repetition (checks the harness only)")
    parser.add_argument("--reps", type=int, help="repetitions (default: 5 full, 3 quick, 1 smoke)")
    parser.add_argument("--big-size", type=int, help="bytes of image (a)")
    parser.add_argument("--realistic-size", type=int, help="bytes of file content in image (c)")
    parser.add_argument("--images", default="a,b,c", help="which images (default a,b,c)")
    parser.add_argument("--no-ansible", action="store_true", help="skip the ad-hoc ansible rows")
    parser.add_argument("--registry-workdir", help="keep the registry's storage here (re-used by later runs, "
                                                   "so images are seeded only once)")
    parser.add_argument("--output", help="the Markdown report (default benchmarks/results/<date>.md)")
    parser.add_argument("--charts", metavar="DIR", help="also draw the results as PNG charts into DIR "
                                                        "(benchmarks/charts.py)")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="also run the module of another checkout of the "
                        "collection (e.g. a git worktree at an older commit), paired with this one")
    args = parser.parse_args(argv)
    if args.baseline:
        BASELINE["pyroot"] = baseline_pyroot(args.baseline)
        BASELINE["label"] = subprocess.run(["git", "-C", args.baseline, "log", "-1", "--format=%h"],
                                           stdout=subprocess.PIPE, check=False).stdout.decode().strip() or args.baseline

    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    big_size, realistic_size, reps = PROFILES[profile]
    big_size = args.big_size or big_size
    realistic_size = args.realistic_size or realistic_size
    reps = args.reps or reps
    keys = [k.strip() for k in args.images.split(",") if k.strip()]
    for tool in ("skopeo", "curl", TIME):
        if not shutil.which(tool):
            parser.error("%s is needed (apt-get install %s)" % (tool, os.path.basename(tool)))
    command = "python benchmarks/run.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        sys.argv[1:] if argv is None else argv))

    load_start = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="hocker-bench-", dir=os.environ.get("HOCKER_BENCH_TMP"))
    reg = Registry("anonymous", workdir=args.registry_workdir)
    rows = []
    try:
        reg.start()
        log("registry at %s" % reg.url)
        targets = prepare_images(reg, big_size, realistic_size, keys)
        by_image = {}
        for key in keys:
            image_rows = bench_image(targets[key], workdir, reps, not args.no_ansible)
            by_image[key] = image_rows
            rows.extend(image_rows)
        if "a" in targets:
            rows.extend(bench_layer(targets["a"], workdir, reps))
        if "c" in targets:
            full = next((r for r in by_image.get("c", []) if r.case == "hocker uncompressed"), None)
            skopeo_row = next((r for r in by_image.get("c", []) if r.case == "skopeo"), None)
            rows.append(bench_rerun(reg, targets["c"], workdir, reps, full, skopeo_row))
    finally:
        reg.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report = render(rows, machine(), command, profile, "%.1f / %.1f" % (load_start, os.getloadavg()[0]))
    print(report)
    output = args.output or os.path.join(HERE, "results", datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ".md")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write(report)
    raw = [{"image": r.image, "case": r.case, "seconds": [x.seconds for x in r.runs], "cpu": [x.cpu for x in r.runs],
            "rss_kb": [x.rss_kb for x in r.runs], "ratios": r.ratios,
            "extra": dict((k, v) for k, v in r.extra.items())} for r in rows]
    with open(os.path.splitext(output)[0] + ".json", "w") as f:
        json.dump({"profile": profile, "big_size": big_size, "realistic_size": realistic_size, "reps": reps,
                   "rows": raw}, f, indent=1)
    log("report written to %s" % output)
    if args.charts:
        sys.path.insert(0, HERE)
        # matplotlib is imported only when charts are asked for
        import charts  # pylint: disable=import-outside-toplevel
        for path in charts.image_charts(charts.read_results(os.path.splitext(output)[0] + ".json"), args.charts):
            log("chart written to %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
