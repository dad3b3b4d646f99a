"""Run the image job of docker_registry_image in a process of its own, with the options the module does not
expose: ``placement`` (auto | always | never) and ``inflater`` (auto | zlib).

Tests and benchmarks compare the ways one archive can be built (laid out before the fetch or assembled after
it; ISA-L or zlib) and must get the same bytes; they pass those choices here explicitly, in-process of the
child, instead of through environment variables. The child speaks like a module run: JSON on stdout with
``changed``, ``failed``, ``msg`` and the job's results, plus ``rc``, ``stderr`` and ``stdout_raw`` added by
``run_image_job``.

    python -m testbed.jobrun ARGS_FILE    # {"args": {module options}, "job": {"placement": ..., "inflater": ...}}
"""
import json
import os
import sys
import time

from testbed.modrun import PYROOT, ensure_pyroot, run_json_child

IMAGE_OPTIONS = ("dest", "format", "layers", "compression", "repo_tags", "max_workers", "force", "verify",
                 "follow", "max_inflation_ratio")


def _main(path):
    from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import RegistryError
    from ansible_collections.hocker.registry.plugins.module_utils._registry.imagejob import ImageJob, ImageRequest
    from ansible_collections.hocker.registry.plugins.module_utils._registry.options import (
        ClientOptions, build_client, open_store)

    with open(path) as handle:
        payload = json.load(handle)
    args, job = payload["args"], payload.get("job") or {}
    warnings = []
    result = {"changed": False}
    started = time.time()
    try:
        options = ClientOptions.from_mapping(args)
        store = open_store(options)
        reference, client = build_client(options, warn=warnings.append, store=store)
        request = ImageRequest(**dict((k, args[k]) for k in IMAGE_OPTIONS if k in args), **job)
        result.update(ImageJob(lambda: client, reference, store, request, options, warnings.append).run())
        result["bytes_downloaded"] = client.bytes_downloaded
        result["requests"] = client.request_counts()
    except RegistryError as exc:
        result.update(failed=True, msg=str(exc))
    except OSError as exc:
        result.update(failed=True, msg="%s: %s" % (exc.filename, exc.strerror))
    result["warnings"] = warnings
    result["elapsed"] = round(time.time() - started, 3)
    sys.stdout.write(json.dumps(result))
    return 1 if result.get("failed") else 0


def run_image_job(args, placement="auto", inflater="auto", env=None, timeout=600, popen_hook=None):
    """Run the job with module-style ``args`` in a child process; returns its JSON result plus ``rc``,
    ``stderr`` and ``stdout_raw`` (like ``modrun.run_module``)."""
    ensure_pyroot()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return run_json_child(lambda path: [sys.executable, "-m", "testbed.jobrun", path],
                          {"args": args, "job": {"placement": placement, "inflater": inflater}}, "hocker-job-",
                          [PYROOT, here], env, timeout, popen_hook)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
