"""Helpers shared by the end-to-end tests."""
import hashlib

AUTH_MODES = ("anonymous", "basic", "token", "mtls")


def auth_args(reg, with_credentials=True):
    """Module arguments that reach ``reg`` (TLS material, and credentials when it needs them)."""
    args = {}
    if reg.ca_path:
        args["ca_path"] = reg.ca_path
    if reg.mode == "mtls":
        args["client_cert"] = reg.client_cert
        args["client_key"] = reg.client_key
    if with_credentials and reg.mode == "basic":
        args["username"] = reg.username
        args["password"] = reg.password
    return args


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def assert_clean_failure(result, *secrets):
    """A failure with a message, no traceback, and no secret anywhere in the output."""
    assert result.get("failed") is True, result
    assert result["rc"] != 0
    assert result.get("msg"), result
    assert "Traceback" not in result["stdout_raw"] and "Traceback" not in result["stderr"], result
    for secret in secrets:
        if secret:
            assert secret not in result["stdout_raw"] and secret not in result["stderr"]


def warning_texts(result):
    """The warnings of a module result as strings (ansible-core 2.19+ returns structured warnings)."""
    texts = []
    for warning in result.get("warnings") or []:
        if isinstance(warning, dict):
            warning = (warning.get("event") or {}).get("msg") or warning.get("msg") or str(warning)
        texts.append(str(warning))
    return texts
