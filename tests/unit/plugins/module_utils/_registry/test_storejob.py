import os

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry.storejob import StoreRequest, store_job
from ansible_collections.hocker.registry.plugins.module_utils._registry.upkeep import StoreError


def test_absent_refuses_other_options(tmp_path):
    with pytest.raises(StoreError, match="^verify, keep cannot be combined with state=absent$"):
        store_job(StoreRequest(path=str(tmp_path), state="absent", verify=True, keep=[]))


def test_keep_needs_prune_or_max_size(tmp_path):
    with pytest.raises(StoreError, match="^keep needs prune=true or max_size$"):
        store_job(StoreRequest(path=str(tmp_path / "s"), keep=["debian:12"]))
    assert not os.path.exists(str(tmp_path / "s"))


def test_check_mode_on_a_missing_store_creates_nothing(tmp_path):
    path = str(tmp_path / "s")
    result = store_job(StoreRequest(path=path, max_size="1K", check_mode=True, diff=True))
    assert result["changed"] is True and result["fits"] is True and result["max_size"] == 1024
    assert result["images"] == [] and result["size"] == 0 and "path" not in result
    assert result["diff"]["before"] == {"path": path, "exists": False}
    assert not os.path.exists(path)


def test_create_upkeep_and_remove(tmp_path):
    path = str(tmp_path / "s")
    created = store_job(StoreRequest(path=path, diff=True))
    assert created["changed"] is True and created["blobs"] == 0 and "verified" not in created
    assert created["diff"] == {"before": {"path": path, "exists": False, "size": 0, "blobs": 0, "images": []},
                               "after": {"size": 0, "blobs": 0, "images": [], "path": path, "exists": True}}
    again = store_job(StoreRequest(path=path, verify=True, prune=True, keep=[], min_age="0"))
    assert again["changed"] is False and again["verified"] == 0
    gone = store_job(StoreRequest(path=path, state="absent", diff=True))
    assert gone == {"changed": True, "diff": {"before": {"path": path, "exists": True},
                                              "after": {"path": path, "exists": False}}}
    assert not os.path.exists(path)
