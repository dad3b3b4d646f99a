"""Fleet benchmark: one image delivered to N hosts over SSH, four ways.

Hosts: the test bed's private sshd on a loopback port (tests/testbed/sshd.py), N = 1, 2, 4, 8 inventory hosts
(each with its own ssh connection, store and dest directory), ansible-playbook with ``--forks 8``. One local
docker-registry (http) serves the images:

  image 1   ``big``: 400 MB of incompressible data in 5 gzip layers of 80 MB (benchmarks/run.py's image (a))
  image 2   its first 4 layers plus a new 40 MB layer (sent to hosts that have image 1)

Cases, each from fresh host stores and a fresh controller directory, image 1 then image 2:

  (a) direct      every host runs docker_registry_image (layers: compressed, cache_dir: its own store)
                  against the registry
  (b) relay       docker_registry_image once on the controller (run_once, into a controller store), then
                  store_sync to every host, then docker_registry_image offline on every host (layers:
                  compressed) - what ``transport: relay`` of the image_deploy role does
  (b') the same as (b) with Ansible's pipelining on (ANSIBLE_PIPELINING=1: each module runs in one ssh
                  round trip instead of three)
  (c) kubespray   ``skopeo copy docker://... docker-archive:...`` once on the controller, then
                  ansible.builtin.copy of the whole archive to every host (kubespray's download_run_once)
  (c') the same as (c) with ``ssh_args`` without ``-C`` (Ansible's default ssh_args ask for compression, which
                  OpenSSH servers grant: every byte of (a)-(c) through Ansible's own connection goes through zlib)
  (d) floor       the bytes a host needs (image 1: the image's blobs, 400 MB; image 2: its new blobs) streamed
                  to every host at once with plain ``ssh host 'cat > file'`` (no Ansible)

Reported per row: wall time, bytes the registry served (its access log), bytes sent to the hosts (all hosts
together). Every case starts without ssh connections (the previous case's are closed).

Usage:
  python benchmarks/fleet.py              # 400 MB, N = 1, 2, 4, 8 (about 15 minutes on 2 cores)
  python benchmarks/fleet.py --quick      # 100 MB, N = 1, 2, 4, 8
  python benchmarks/fleet.py --smoke      # 2 MB, N = 2 (what tests/e2e/test_fleet_benchmark_smoke.py runs)
Needs openssh-server (the private sshd), skopeo, and a Python with ansible-core and requests (the dev venv).
"""

from __future__ import print_function

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

import requests  # noqa: E402

from testbed import builder  # noqa: E402
from testbed.registry import Registry  # noqa: E402
from testbed.sshd import SSHServer  # noqa: E402

import run as single  # noqa: E402  (benchmarks/run.py: machine description)

MB = 1000 * 1000
PROFILES = {
    #          image size   fleet sizes
    "full": (400 * MB, (1, 2, 4, 8)),
    "quick": (100 * MB, (1, 2, 4, 8)),
    "smoke": (2 * MB, (2,)),
}
CASES = ("a", "b", "b2", "c", "c2", "d", "d2")
CASE_TITLES = {"a": "(a) direct", "b": "(b) relay", "b2": "(b') relay, pipelining", "c": "(c) kubespray",
               "c2": "(c') kubespray, no -C", "d": "(d) ssh cat", "d2": "(d') ssh cat + fsync"}
NO_COMPRESSION = "-o ControlMaster=auto -o ControlPersist=60s"    # Ansible's default ssh_args without -C
IMAGE_TITLES = {1: "image 1", 2: "image 2 (shares 4 layers)"}
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def log(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------
class Image(object):
    def __init__(self, number, reference, blobs):
        self.number = number
        self.reference = reference
        self.blobs = blobs                   # {digest: size}: manifest, config, layers

    @property
    def size(self):
        return sum(self.blobs.values())


def _manifest(reg, repository):
    r = requests.get("%s/v2/%s/manifests/v1" % (reg.url, repository), headers={"Accept": ACCEPT}, timeout=30)
    return r if r.status_code == 200 else None


def prepare_images(reg, size):
    """Image 1 (benchmarks/run.py's ``big``) and image 2 (its first four layers and a new one)."""
    prefix = "fleet/s%d/" % size
    if _manifest(reg, prefix + "two") is None:
        log("building and pushing the images (%d MB) ..." % (size // MB))
        obj, _extra = builder.build_kind("big", big_size=size)
        new_bytes = random.Random("fleet-new-%d" % size).randbytes(max(1, size // 10))
        new = builder.layer_from_tar(builder.make_tar({"big/new.bin": new_bytes}), level=1)
        two = builder.build_image(obj.layers[:4] + [new], config={"Cmd": ["/bin/true"]})
        session = reg.push_session()
        builder.push_image(session, reg.url, prefix + "one", obj, tags=["v1"])
        builder.push_image(session, reg.url, prefix + "two", two, tags=["v1"])
    images = []
    for number, name in ((1, "one"), (2, "two")):
        r = _manifest(reg, prefix + name)
        manifest = r.json()
        blobs = {r.headers["Docker-Content-Digest"]: len(r.content),
                 manifest["config"]["digest"]: manifest["config"]["size"]}
        for layer in manifest["layers"]:
            blobs[layer["digest"]] = layer["size"]
        images.append(Image(number, "%s/%s%s:v1" % (reg.host, prefix, name), blobs))
    return images


# ---------------------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------------------
def _play(hosts, tasks):
    return json.dumps([{"hosts": ",".join(hosts), "gather_facts": False, "tasks": tasks}])


def _controller(task):
    task.update({"delegate_to": "localhost", "run_once": True,
                 "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}})
    return task


def _dest(image):
    return "{{ hocker_dest_dir }}/image%d.tar" % image.number


class Outcome(object):
    def __init__(self, seconds, registry_bytes, sent_bytes, note=""):
        self.seconds = seconds
        self.registry_bytes = registry_bytes
        self.sent_bytes = sent_bytes
        self.note = note


def _registry_bytes(reg):
    return sum(r["size"] for r in reg.requests() if r["method"] == "GET")


def _playbook(server, hosts, tasks, env=None):
    start = time.perf_counter()
    run = server.run_playbook(_play(hosts, tasks), forks=8, env=env)
    seconds = time.perf_counter() - start
    if run.rc != 0:
        raise RuntimeError("ansible-playbook failed:\n%r" % run)
    return run, seconds


def case_direct(server, reg, hosts, image, ctl):
    run, seconds = _playbook(server, hosts, [{"name": "fetch", "hocker.registry.docker_registry_image": {
        "image": image.reference, "layers": "compressed", "cache_dir": "{{ hocker_store_dir }}",
        "dest": _dest(image)}}])
    registry = _registry_bytes(reg)
    return Outcome(seconds, registry, registry, "hosts fetch from the registry")


def case_relay(server, reg, hosts, image, ctl, env=None):
    tasks = [
        _controller({"name": "controller", "hocker.registry.docker_registry_image": {
            "image": image.reference, "layers": "compressed", "cache_dir": os.path.join(ctl, "store"),
            "dest": os.path.join(ctl, "image%d.tar" % image.number)}}),
        {"name": "sync", "hocker.registry.store_sync": {"src": os.path.join(ctl, "store"),
                                                        "dest": "{{ hocker_store_dir }}",
                                                        "images": [image.reference]}},
        {"name": "assemble", "hocker.registry.docker_registry_image": {
            "image": image.reference, "layers": "compressed", "cache_dir": "{{ hocker_store_dir }}",
            "offline": True, "dest": _dest(image)}},
    ]
    run, seconds = _playbook(server, hosts, tasks, env)
    sent = sum(run.result(h, "sync")["bytes_sent"] for h in hosts)
    parts = {}
    for name in ("controller", "sync", "assemble"):
        parts[name] = max(r["result"].get("elapsed", 0) for r in run.results if r["task"] == name)
    steps = {}
    for step in ("inspect", "transfer", "receive"):
        steps[step] = max(run.result(h, "sync").get("durations", {}).get(step, 0) for h in hosts)
    note = ("controller fetch %.1f s; store_sync %.1f s (inspect %.1f, transfer %.1f, receive %.1f); assembly "
            "%.1f s (slowest host each)" % (parts["controller"], parts["sync"], steps["inspect"], steps["transfer"],
                                            steps["receive"], parts["assemble"]))
    return Outcome(seconds, _registry_bytes(reg), sent, note)


def case_relay_pipelining(server, reg, hosts, image, ctl):
    return case_relay(server, reg, hosts, image, ctl, {"ANSIBLE_PIPELINING": "1"})


def case_kubespray(server, reg, hosts, image, ctl, env=None):
    archive = os.path.join(ctl, "image%d.tar" % image.number)
    tasks = [
        _controller({"name": "skopeo", "ansible.builtin.shell": (
            "rm -f %s && skopeo copy --quiet --src-tls-verify=false docker://%s docker-archive:%s"
            % (archive, image.reference, archive))}),
        {"name": "copy", "ansible.builtin.copy": {"src": archive, "dest": _dest(image)}},
    ]
    _run, seconds = _playbook(server, hosts, tasks, env)
    return Outcome(seconds, _registry_bytes(reg), os.path.getsize(archive) * len(hosts),
                   "the whole archive to every host" + (", ssh_args: %s" % NO_COMPRESSION if env else ""))


def case_kubespray_uncompressed(server, reg, hosts, image, ctl):
    return case_kubespray(server, reg, hosts, image, ctl, {"ANSIBLE_SSH_ARGS": NO_COMPRESSION})


def case_floor(server, reg, hosts, image, ctl, previous=None, durable=False):
    """The bytes a host needs, streamed to every host at once with ``ssh host 'cat > file'``; ``durable``:
    and fsynced there (``sync FILE``), as a store that survives a power cut must."""
    source = os.path.join(ctl, "floor.bin")
    need = image.size if previous is None else sum(s for d, s in image.blobs.items() if d not in previous.blobs)
    with open(source, "wb") as f:
        left = need
        while left:
            block = os.urandom(min(left, 4 * 1024 * 1024))
            f.write(block)
            left -= len(block)
    start = time.perf_counter()
    procs = []
    for host in hosts:
        target = os.path.join(server.dest_dir(host), "floor%d.bin" % image.number)
        with open(source, "rb") as stdin:
            command = "cat > %s && sync %s" % (target, target) if durable else "cat > %s" % target
            procs.append(subprocess.Popen(["ssh", "-F", server.ssh_config, host, command], stdin=stdin))
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError("ssh cat failed")
    seconds = time.perf_counter() - start
    os.unlink(source)
    return Outcome(seconds, 0, need * len(hosts), "%.0f MB per host" % (need / MB))


RUNNERS = {"a": case_direct, "b": case_relay, "b2": case_relay_pipelining, "c": case_kubespray,
           "c2": case_kubespray_uncompressed}


def close_connections(server):
    """Close every ssh connection to the private sshd (the next case starts from none)."""
    for pid in server.sessions():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while server.sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    for host in server.hosts:
        directory = server.control_dir(host)
        for name in os.listdir(directory):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def bench(server, reg, images, fleets, workdir, cases, reps=1):
    """Every case for every fleet size, ``reps`` times: paired runs, forward in even and backward in odd
    repetitions (so that a drift of the machine's load does not favour one case)."""
    rows = []
    for n in fleets:
        hosts = server.hosts[:n]
        for rep in range(reps):
            for case in (cases if rep % 2 == 0 else list(reversed(cases))):
                server.reset_hosts()
                ctl = os.path.join(workdir, "controller")
                shutil.rmtree(ctl, ignore_errors=True)
                os.makedirs(ctl)
                close_connections(server)
                previous = None
                for image in images:
                    reg.clear_log()
                    log("N=%d rep %d %s %s ..." % (n, rep + 1, CASE_TITLES[case], IMAGE_TITLES[image.number]))
                    if case in ("d", "d2"):
                        outcome = case_floor(server, reg, hosts, image, ctl, previous, durable=case == "d2")
                    else:
                        outcome = RUNNERS[case](server, reg, hosts, image, ctl)
                    log("  %.1f s, registry %.0f MB, sent %.0f MB"
                        % (outcome.seconds, outcome.registry_bytes / MB, outcome.sent_bytes / MB))
                    rows.append({"n": n, "rep": rep, "case": case, "image": image.number, "seconds": outcome.seconds,
                                 "registry_bytes": outcome.registry_bytes, "sent_bytes": outcome.sent_bytes,
                                 "note": outcome.note, "load": os.getloadavg()[0]})
                    previous = image
    return rows


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------
def summarise(rows, fleets, cases):
    """One row per (N, case, image): the median time, the median of the per-repetition ratios to (c) and (d),
    the bytes and notes of the median run."""
    out = []
    for n in fleets:
        for case in cases:
            for image in (1, 2):
                runs = [r for r in rows if (r["n"], r["case"], r["image"]) == (n, case, image)]
                if not runs:
                    continue
                ordered = sorted(runs, key=lambda r: r["seconds"])
                middle = ordered[(len(ordered) - 1) // 2]
                row = dict(middle, seconds=statistics.median(r["seconds"] for r in runs), reps=len(runs),
                           registry_max=max(r["registry_bytes"] for r in runs),
                           registry_min=min(r["registry_bytes"] for r in runs),
                           sent_max=max(r["sent_bytes"] for r in runs))
                for ref in ("c", "d"):
                    ratios = []
                    for r in runs:
                        other = [x for x in rows if (x["n"], x["rep"], x["case"], x["image"]) == (n, r["rep"], ref, image)]
                        if other:
                            ratios.append(r["seconds"] / other[0]["seconds"])
                    row["x_" + ref] = statistics.median(ratios) if ratios else None
                out.append(row)
    return out


def _find(rows, n, case, image):
    for row in rows:
        if (row["n"], row["case"], row["image"]) == (n, case, image):
            return row
    return None


def verdicts(rows, images, fleets):
    out = []
    one, two = images
    new = sum(s for d, s in two.blobs.items() if d not in one.blobs)
    relay = [r for r in rows if r["case"] in ("b", "b2")]
    if relay:
        ok = all(r["registry_max"] <= (one.size if r["image"] == 1 else new) + 64 * 1024 and
                 r["registry_min"] >= (one.size if r["image"] == 1 else new) - 64 * 1024 for r in relay)
        out.append(("(b) registry bytes = one copy of each blob, whatever N", ok))
        ok = all(r["sent_max"] == new * r["n"] for r in relay if r["image"] == 2)
        out.append(("(b) second image: only its new blobs reach each host (%.0f MB each)" % (new / MB), ok))
    top = max(fleets)
    for case, ref, limit in (("b", "c", 0.5), ("b", "c2", 0.5), ("b", "d", 1.5), ("b2", "d", 1.5)):
        row = _find(rows, top, case, 1)
        if row is None:
            continue
        if ref in ("c", "d"):
            value = row.get("x_" + ref)
        else:
            other = _find(rows, top, ref, 1)
            value = row["seconds"] / other["seconds"] if other else None
        if value is None:
            continue
        out.append(("%s at N=%d <= %.1fx %s: %.2fx" % (CASE_TITLES[case], top, limit, CASE_TITLES[ref], value),
                    value <= limit))
    return out


def render(rows, images, fleets, info, command, profile, load, reps=1):
    lines = ["| N | case | image | wall s | registry MB | sent to hosts MB | x (c) | x (d) | notes |",
             "|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append("| %d | %s | %s | %.1f | %.0f | %.0f | %s | %s | %s |" % (
            row["n"], CASE_TITLES[row["case"]], IMAGE_TITLES[row["image"]], row["seconds"],
            row["registry_bytes"] / MB, row["sent_bytes"] / MB,
            "%.2f" % row["x_c"] if row.get("x_c") is not None else "-",
            "%.2f" % row["x_d"] if row.get("x_d") is not None else "-", row["note"]))
    checks = ["- %s: %s" % (text, "met" if ok else "MISSED") for text, ok in verdicts(rows, images, fleets)]
    header = [
        "# hocker.registry fleet benchmark, %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "",
        "Command: `%s` (profile %s)" % (command, profile),
        "",
        "Machine: %d CPUs (%s), %s RAM, Linux %s, Python %s; %s" % (
            info["nproc"], info["cpu"], info["memory"], info["kernel"], info["python"], "; ".join(info["tools"])),
        "",
        "Median of %d paired repetitions (cases forward, then backward); x (c), x (d): median of the "
        "per-repetition ratios. Load average (1 min) at the start and the end: %s. Image 1: %.0f MB in %d "
        "blobs; image 2: %.0f MB, of which %.0f MB are new." % (
            reps, load, images[0].size / MB, len(images[0].blobs), images[1].size / MB,
            sum(s for dg, s in images[1].blobs.items() if dg not in images[0].blobs) / MB),
        "",
    ]
    return "\n".join(header + lines + [""] + checks) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="100 MB image")
    mode.add_argument("--smoke", action="store_true", help="2 MB image, N = 2 (checks the harness only)")
    parser.add_argument("--size", type=int, help="bytes of image 1")
    parser.add_argument("--fleets", help="comma-separated fleet sizes (default 1,2,4,8)")
    parser.add_argument("--reps", type=int, default=1, help="paired repetitions (default 1)")
    parser.add_argument("--cases", default="a,b,b2,c,c2,d",
                        help="which cases (default a,b,b2,c,c2,d; d2: the floor with an fsync on the host)")
    parser.add_argument("--registry-workdir", help="keep the registry's storage here (images seeded once)")
    parser.add_argument("--output", help="the Markdown report (default benchmarks/results/fleet-<date>.md)")
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    size, fleets = PROFILES[profile]
    size = args.size or size
    if args.fleets:
        fleets = tuple(int(x) for x in args.fleets.split(","))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for tool in ("skopeo", "ssh", "/usr/sbin/sshd"):
        if not shutil.which(tool):
            parser.error("%s is needed" % tool)
    command = "python benchmarks/fleet.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        sys.argv[1:] if argv is None else argv))
    load_start = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="hocker-fleet-", dir=os.environ.get("HOCKER_BENCH_TMP"))
    reg = Registry("anonymous", workdir=args.registry_workdir)
    server = SSHServer(os.path.join(workdir, "sshd"), hosts=max(fleets))
    try:
        reg.start()
        server.start()
        log("registry at %s, sshd on port %d (%d hosts)" % (reg.url, server.port, max(fleets)))
        images = prepare_images(reg, size)
        runs = bench(server, reg, images, fleets, workdir, cases, args.reps)
        rows = summarise(runs, fleets, cases)
    finally:
        server.stop()
        reg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    load = "%.1f / %.1f" % (load_start, os.getloadavg()[0])
    report = render(rows, images, fleets, single.machine(), command, profile, load, args.reps)
    print(report)
    output = args.output or os.path.join(HERE, "results",
                                         "fleet-" + datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S") + ".md")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        f.write(report)
    with open(os.path.splitext(output)[0] + ".json", "w") as f:
        json.dump({"profile": profile, "size": size, "fleets": list(fleets), "reps": args.reps, "rows": rows,
                   "runs": runs}, f, indent=1)
    log("report written to %s" % output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
