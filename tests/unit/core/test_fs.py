"""core/fs.py: modes, owners, the one file SHA-256, write-once placing, atomic writes, private dirs."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import fs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RepositoryError,
    RestoreError,
)


class TestModes:
    @pytest.mark.parametrize(
        ("value", "mode"), [("0640", 0o640), (" 600 ", 0o600), (0o755, 0o755), (None, None), ("", None)]
    )
    def test_parse(self, value, mode):
        assert fs.parse_mode(value) == mode

    @pytest.mark.parametrize("value", ["u+rw", "0999", True, "17777", -1])
    def test_refused_naming_the_option(self, value):
        with pytest.raises(CaptureError, match="backup_mode"):
            fs.parse_mode(value, "backup_mode")

    def test_format(self):
        assert fs.format_mode(0o640) == "0640" and fs.format_mode(0o4755) == "4755" and fs.format_mode(None) is None


class TestIds:
    def test_numeric_and_named(self):
        assert fs.resolve_uid("4321") == 4321 and fs.resolve_gid(77) == 77
        assert fs.resolve_uid("root") == 0 and fs.resolve_gid("root") == 0
        assert fs.resolve_uid(None) is None and fs.resolve_gid("") is None

    def test_unknown_names(self):
        with pytest.raises(CaptureError, match="user 'no-such-user-nodekeep' does not exist"):
            fs.resolve_uid("no-such-user-nodekeep")
        with pytest.raises(CaptureError, match="group 'no-such-group-nodekeep' does not exist"):
            fs.resolve_gid("no-such-group-nodekeep")


def test_sha256_file(tmp_path):
    data = os.urandom(9 << 20)
    (tmp_path / "f").write_bytes(data)
    assert fs.sha256_file(str(tmp_path / "f")) == (len(data), hashlib.sha256(data).hexdigest())


def test_stream_digest_copies_what_it_hashes():
    data = os.urandom((4 << 20) + 17)
    sink = io.BytesIO()
    assert fs.stream_digest(io.BytesIO(data), sink) == (len(data), hashlib.sha256(data).hexdigest())
    assert sink.getvalue() == data
    assert fs.stream_digest(io.BytesIO(b"")) == (0, hashlib.sha256(b"").hexdigest())


class TestPlace:
    def test_never_overwrites_without_replace(self, tmp_path):
        dest = tmp_path / "out"
        dest.write_bytes(b"old")
        temp = fs.temp_path(str(dest))
        assert os.path.dirname(temp) == str(tmp_path) and os.path.basename(temp).startswith(".out.nodekeep-")
        with open(temp, "wb") as handle:
            handle.write(b"new")
        with pytest.raises(CaptureError, match="appeared while it was being written"):
            fs.place_file(temp, str(dest))
        assert dest.read_bytes() == b"old" and os.path.exists(temp)
        fs.place_file(temp, str(dest), replace=True)
        assert dest.read_bytes() == b"new" and not os.path.exists(temp)

    def test_links_a_new_name(self, tmp_path):
        temp = tmp_path / ".t"
        temp.write_bytes(b"x")
        fs.place_file(str(temp), str(tmp_path / "final"))
        assert sorted(os.listdir(tmp_path)) == ["final"]

    def test_parent_must_exist(self, tmp_path):
        with pytest.raises(CaptureError, match="does not exist"):
            fs.check_parent_writable(str(tmp_path / "missing" / "f"), "copy")
        assert fs.check_parent_writable(str(tmp_path / "f")) == str(tmp_path)


def test_atomic_write_sets_the_mode_and_leaves_no_temp(tmp_path):
    final = tmp_path / "record.json"
    final.write_text("old")
    assert fs.atomic_write(str(final), "new", 0o600, "record") == str(final)
    assert final.read_text() == "new" and final.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["record.json"]
    with pytest.raises(NodekeepError):
        fs.atomic_write(str(tmp_path / "missing" / "x"), "x", 0o600, "record")


def test_set_owner_mode_recursive(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_text("x")
    uid, gid = os.getuid(), os.getgid()
    fs.set_owner_mode(str(tmp_path / "d"), uid, gid, 0o750, recursive=True)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "d" / "e" / "f").stat().st_uid == uid


def test_require_absolute():
    assert fs.require_absolute("/a/b/../c", "restore_to") == "/a/c"
    with pytest.raises(RestoreError, match="restore_to must be an absolute path"):
        fs.require_absolute("a/b", "restore_to")


def test_makedirs_private(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    fs.makedirs_private(str(target))
    for path in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert path.stat().st_mode & 0o777 == 0o700
    fs.makedirs_private(str(target))  # existing: nothing to do


def test_private_temp_dir_refuses_a_shared_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(fs.tempfile, "tempdir", None)
    path = fs.private_temp_dir()
    assert path == str(tmp_path / ("nodekeep-scratch-%d" % os.getuid()))
    assert os.stat(path).st_mode & 0o777 == 0o700
    os.chmod(path, 0o777)
    with pytest.raises(RepositoryError, match="is not a private directory"):
        fs.private_temp_dir()


def test_discard_temp(tmp_path):
    path = tmp_path / "t"
    handle = open(path, "wb")  # noqa: SIM115
    fs.discard_temp(handle, str(path))
    assert handle.closed and not path.exists()
    fs.discard_temp(handle, str(path))  # twice: nothing left to do, no error


@pytest.mark.parametrize(
    ("root", "path", "inside"),
    [
        ("/a/b", "/a/b", True),
        ("/a/b", "/a/b/c", True),
        ("/a/b", "/a/bc", False),
        ("/a/b/", "/a/b/c", True),
        ("/", "/x", True),
    ],
)
def test_is_within(root, path, inside):
    assert fs.is_within(root, path) is inside


def test_is_within_real_follows_links(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "escape").symlink_to(tmp_path / "out")
    assert fs.is_within(str(tmp_path / "in"), str(tmp_path / "in" / "escape"))
    assert not fs.is_within(str(tmp_path / "in"), str(tmp_path / "in" / "escape"), real=True)
