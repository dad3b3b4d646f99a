"""Run a hocker.registry module the way Ansible does: a Python process given an args file."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYROOT = os.path.join(ROOT, ".build", "pyroot")


def ensure_pyroot():
    coll = os.path.join(PYROOT, "ansible_collections", "hocker")
    link = os.path.join(coll, "registry")
    if not os.path.islink(link):
        os.makedirs(coll, exist_ok=True)
        try:
            os.symlink(ROOT, link)
        except FileExistsError:
            pass
    return PYROOT


# Peak RSS of the module process itself: VmHWM belongs to the process's own address space (ru_maxrss would
# also count the parent's memory inherited through fork before exec).
_RSS_WRAPPER = (
    "import atexit, runpy, sys\n"
    "def _hwm():\n"
    "    with open('/proc/self/status') as f:\n"
    "        for line in f:\n"
    "            if line.startswith('VmHWM:'):\n"
    "                sys.stderr.write('\\nHOCKER_MAXRSS_KB=%d\\n' % int(line.split()[1]))\n"
    "atexit.register(_hwm)\n"
    "sys.argv = [sys.argv[1]] + sys.argv[2:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def module_command(name, args_path, python=None, measure_rss=False):
    modname = "ansible_collections.hocker.registry.plugins.modules." + name
    if measure_rss:
        return [python or sys.executable, "-c", _RSS_WRAPPER, modname, args_path]
    return [python or sys.executable, "-m", modname, args_path]


def run_json_child(command, payload, prefix, pythonpath, env=None, timeout=600, popen_hook=None):
    """Write ``payload`` to a JSON file, run ``command(path)`` on it with ``pythonpath`` first, and return what
    the child printed as JSON (or {"failed": True, "raw": stdout}) plus ``rc``, ``stderr`` and ``stdout_raw``."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(list(pythonpath) + [full_env.get("PYTHONPATH", "")])
    full_env.update(env or {})
    try:
        proc = subprocess.Popen(command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                cwd=tempfile.gettempdir())
        if popen_hook:
            popen_hook(proc)
        out, err = proc.communicate(timeout=timeout)
    finally:
        os.unlink(path)
    text = out.decode("utf-8", "replace")
    try:
        result = json.loads(text)
    except ValueError:
        result = {"failed": True, "raw": text}
    result.update(rc=proc.returncode, stderr=err.decode("utf-8", "replace"), stdout_raw=text)
    return result


def run_module(name, args, check=False, diff=False, env=None, timeout=600, python=None, popen_hook=None,
               measure_rss=False):
    """Run module ``name`` with ``args``; return its JSON result plus ``rc`` and ``stderr``.

    ``measure_rss``: also return ``max_rss_kb``, the module process's peak resident memory.

    A result that is not JSON (a traceback) is returned as {"failed": True, "rc": ..., "raw": stdout}.
    """
    ensure_pyroot()
    payload = dict(args)
    payload["_ansible_check_mode"] = bool(check)
    payload["_ansible_diff"] = bool(diff)
    payload.setdefault("_ansible_remote_tmp", tempfile.gettempdir())
    result = run_json_child(lambda path: module_command(name, path, python, measure_rss),
                            {"ANSIBLE_MODULE_ARGS": payload}, "hocker-args-", [PYROOT], env, timeout, popen_hook)
    if measure_rss:
        marker = result["stderr"].rfind("HOCKER_MAXRSS_KB=")
        if marker >= 0:
            result["max_rss_kb"] = int(result["stderr"][marker:].split("=", 1)[1].split()[0])
    return result
