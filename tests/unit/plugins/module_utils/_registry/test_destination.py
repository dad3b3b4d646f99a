"""The destination layer: what may be replaced, the one safe write, the work directory, records, messages."""
import errno
import os
import stat

import pytest

from ansible_collections.hocker.registry.plugins.module_utils._registry import destination as d
from ansible_collections.hocker.registry.plugins.module_utils._registry.errors import (
    DestinationError, DigestMismatch, NoSpace, TransportError)
from ansible_collections.hocker.registry.plugins.module_utils._registry.reference import parse_reference


def test_devices_fifos_and_directories_are_never_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    for path, what in ((str(fifo), "a fifo"), ("/dev/null", "a character device"), (str(tmp_path), "a directory")):
        with pytest.raises(DestinationError) as exc:
            d.put_bytes(path, b"data")
        assert what in str(exc.value) and "not replaced" in str(exc.value)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert stat.S_ISFIFO(os.stat(str(fifo)).st_mode)


def test_symlinks_only_with_follow(tmp_path):
    target = tmp_path / "real.json"
    target.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(DestinationError) as exc:
        d.put_bytes(str(link), b"new")
    assert "symlink" in str(exc.value) and "follow" in str(exc.value)
    assert d.put_bytes(str(link), b"new", follow=True)[1] is not None
    assert os.path.islink(str(link)) and target.read_bytes() == b"new"
    # a symlink to a device stays refused even with follow
    dev = tmp_path / "devlink"
    dev.symlink_to("/dev/null")
    with pytest.raises(DestinationError):
        d.put_bytes(str(dev), b"x", follow=True)


@pytest.mark.parametrize("path,message", [("", "non-empty"), ("   ", "non-empty"), ("a\0b", "NUL"),
                                          ("/nonexistent-dir/x/file", "does not exist")])
def test_bad_paths(path, message):
    with pytest.raises(DestinationError) as exc:
        d.check_dest(path)
    assert message in str(exc.value)


def test_safe_write_keeps_mode_and_cleans_up(tmp_path):
    dest = tmp_path / "out"
    dest.write_bytes(b"old")
    os.chmod(str(dest), 0o640)

    def failing(handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(DestinationError) as exc:
        d.safe_write(str(dest), failing)
    assert str(tmp_path) in str(exc.value) and "no space left" in str(exc.value)
    assert dest.read_bytes() == b"old" and sorted(os.listdir(str(tmp_path))) == ["out"]
    d.safe_write(str(dest), lambda h: h.write(b"new"))
    assert dest.read_bytes() == b"new" and stat.S_IMODE(os.stat(str(dest)).st_mode) == 0o640


def test_put_bytes_compares_first(tmp_path):
    dest = str(tmp_path / "m.json")
    new, old = d.put_bytes(dest, b"{}", dry_run=True)
    assert old is None and not os.path.exists(dest)
    assert d.put_bytes(dest, b"{}") == (new, None)
    inode = os.stat(dest).st_ino
    assert d.put_bytes(dest, b"{}") == (new, new)
    assert os.stat(dest).st_ino == inode                  # unchanged content: not rewritten


def test_work_dir_keeps_only_partials(tmp_path):
    dest = str(tmp_path / "img.tar")
    work_path = tmp_path / ".img.tar.hocker-work"
    with pytest.raises(TransportError):            # cut off by the network: the partial stays for the next run
        with d.WorkDir(dest) as work:
            open(work.path("aaa.partial"), "wb").close()
            open(work.path("archive"), "wb").close()
            os.mkdir(work.path("out"))
            raise TransportError("connection reset", retryable=True)
    assert sorted(os.listdir(str(work_path))) == ["aaa.partial"]
    with pytest.raises(DestinationError) as exc:       # a second run on the same dest waits for nobody
        with d.WorkDir(str(tmp_path / "other.tar")):
            with d.WorkDir(str(tmp_path / "other.tar")):
                pass
    assert "another run" in str(exc.value)
    with d.WorkDir(dest) as work:
        assert os.listdir(work.dir) == ["aaa.partial"]
        work.done()
    assert sorted(os.listdir(str(tmp_path))) == []
    with pytest.raises(RuntimeError):                  # nothing to resume: nothing stays
        with d.WorkDir(dest):
            raise RuntimeError("failed")
    assert sorted(os.listdir(str(tmp_path))) == []
    with pytest.raises(DigestMismatch):                # refused for what it fetched: the partials go too
        with d.WorkDir(dest) as work:
            open(work.path("bbb.partial"), "wb").close()
            raise DigestMismatch("blob failed verification")
    assert sorted(os.listdir(str(tmp_path))) == []


def test_a_full_disk_keeps_the_partials_and_a_killed_swap_is_undone(tmp_path):
    dest = str(tmp_path / "img.tar")
    work_path = tmp_path / ".img.tar.hocker-work"
    with pytest.raises(NoSpace):                       # room can be made: the download resumes next time
        with d.WorkDir(dest) as work:
            open(work.path("ccc.partial"), "wb").close()
            raise NoSpace("not enough space")
    assert os.listdir(str(work_path)) == ["ccc.partial"]
    # a run killed between moving a directory dest aside and renaming its replacement in: the next run puts
    # the old content back before anything else
    layout = tmp_path / "layout"
    killed = d.WorkDir(str(layout)).__enter__()
    os.mkdir(killed.path(d.RETIRED))
    with open(os.path.join(killed.path(d.RETIRED), "index.json"), "w") as handle:
        handle.write("{}")
    os.mkdir(killed.path("new"))
    os.close(killed.fd)                  # the kill: its lock goes with the process, nothing else is cleaned up
    assert not layout.exists()
    with d.WorkDir(str(layout)) as work:
        assert (layout / "index.json").read_text() == "{}"
        work.done()
    assert sorted(os.listdir(str(tmp_path))) == [".img.tar.hocker-work", ".img.tar.hocker-work.lock", "layout"]


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"),
                                        (errno.EROFS, "read-only")])
def test_os_errors_name_the_path_and_the_cause(code, words):
    message = d.describe_os_error(OSError(code, os.strerror(code), "/srv/images/app.tar"))
    assert "/srv/images/app.tar" in message and words in message
    hidden = d.describe_os_error(OSError(code, os.strerror(code), "/srv/images/.app.tar.x1y2.tmp"))
    assert "/srv/images" in hidden and "temporary file" in hidden


def test_records_answer_only_for_the_same_request(tmp_path):
    path = str(tmp_path / "layer.tar")
    with open(path, "wb") as f:
        f.write(b"content")
    ref = parse_reference("127.0.0.1:5000/app:v1")
    d.remember_output(path, ref, {"platform": "linux/amd64"}, "sha256:" + "1" * 64, {"digest": "x"})
    if d.read_record(path) is None:
        pytest.fail("this file system keeps no user extended attributes: the test needs a disk that does")
    assert d.known_output(path, ref, {"platform": "linux/amd64"}, lambda: "sha256:" + "1" * 64)["result"] == {"digest": "x"}
    assert d.known_output(path, ref, {"platform": "linux/arm64"}, lambda: "sha256:" + "1" * 64) is None
    assert d.known_output(path, ref, {"platform": "linux/amd64"}, lambda: "sha256:" + "2" * 64) is None
    with open(path, "ab") as f:
        f.write(b"changed")
    assert d.known_output(path, ref, {"platform": "linux/amd64"}, lambda: "sha256:" + "1" * 64) is None
