import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry.auth import (
    basic_header, parse_challenges, token_expiry)


@pytest.mark.parametrize("header,expected", [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:samalba/my-app:pull,push"',
     [("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                  "scope": "repository:samalba/my-app:pull,push"})]),
    ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
    ('BEARER Realm="r", Service=s', [("bearer", {"realm": "r", "service": "s"})]),
    ('Basic realm="a", Bearer realm="https://t/x",service="svc"',
     [("basic", {"realm": "a"}), ("bearer", {"realm": "https://t/x", "service": "svc"})]),
    ('Bearer realm="https://t",error="insufficient_scope",scope="repository:a:pull repository:b:pull"',
     [("bearer", {"realm": "https://t", "error": "insufficient_scope",
                  "scope": "repository:a:pull repository:b:pull"})]),
    ('Bearer realm="quoted \\"inner\\" value"', [("bearer", {"realm": 'quoted "inner" value'})]),
    ('Bearer realm="https://h:5001/token" , service = "reg:5000"',
     [("bearer", {"realm": "https://h:5001/token", "service": "reg:5000"})]),
    ("Negotiate", [("negotiate", {})]),
    ("", []),
])
def test_parse_challenges(header, expected):
    assert parse_challenges(header) == expected


def test_expiry_defaults_to_60s():
    assert token_expiry({}, now=1000.0) == 1060.0


def test_expiry_short_lifetime_clamped():
    assert token_expiry({"expires_in": 5}, now=1000.0) == 1060.0


def test_expiry_uses_issued_at():
    body = {"expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"}
    import datetime
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert token_expiry(body, now=start + 10) == start + 300


def test_expiry_fractional_issued_at():
    body = {"expires_in": 120, "issued_at": "2026-01-01T00:00:00.123456789Z"}
    import datetime
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert abs(token_expiry(body, now=start) - (start + 120.123456)) < 0.001


def test_expiry_bad_values():
    assert token_expiry({"expires_in": "soon", "issued_at": "yesterday"}, now=5.0) == 65.0


def test_basic_header():
    assert basic_header("aladdin", "opensesame") == "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
