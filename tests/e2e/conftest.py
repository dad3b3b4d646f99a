import pytest


@pytest.fixture(params=["anonymous", "basic", "token", "mtls"])
def any_registry(request, seeded):
    """Each registry mode, seeded with the default images: (registry, {kind: ImageInfo})."""
    reg = request.getfixturevalue("registry_" + request.param)
    return reg, seeded(reg)
