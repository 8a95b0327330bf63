"""ops/cutover.py: restore cutover and rollback, on real files.

The promise under test: the live data is only ever renamed (never copied and deleted), a failure at any
step puts everything back, nothing is ever deleted, and a stale -wal never lands beside a restored DB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import cutover as cut


def guarded_cutover(*args, **kwargs):
    """A cutover as the restore role runs it: after its service was stopped, with a health check."""
    kwargs.setdefault("service", "app")
    kwargs.setdefault("health_command", "true")
    return cut.cutover(*args, **kwargs)


pytestmark = pytest.mark.timeout(60)

AS_ROOT = os.geteuid() == 0
NOW = 1_700_000_000.0  # 20231114T221320Z


def digest(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def listing(directory) -> dict:
    """{name: sha256 or '<dir>'} of a directory's direct entries: the whole visible state."""
    found = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        found[name] = "<dir>" if os.path.isdir(path) else digest(path)
    return found


@pytest.fixture
def other_fs():
    """A directory on another filesystem (/dev/shm is tmpfs) to stage on."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    directory = tempfile.mkdtemp(prefix="nodekeep-test-", dir="/dev/shm")
    try:
        if os.stat(directory).st_dev == os.stat(tempfile.gettempdir()).st_dev:
            pytest.skip("/dev/shm is on the same filesystem as the temporary directory")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def live(tmp_path):
    """A live 'database' with -wal and -shm beside it, and a staged copy in a staging tree."""
    data = tmp_path / "srv" / "app"
    data.mkdir(parents=True)
    (data / "app.db").write_bytes(b"LIVE" * 1000)
    (data / "app.db-wal").write_bytes(b"STALE-WAL")
    (data / "app.db-shm").write_bytes(b"SHM")
    os.chmod(data / "app.db", 0o640)
    if AS_ROOT:
        os.chown(data / "app.db", 1234, 4321)
    staging = tmp_path / "staging" / "srv" / "app"
    staging.mkdir(parents=True)
    (staging / "app.db").write_bytes(b"RESTORED" * 1000)
    os.chmod(staging / "app.db", 0o600)
    return data / "app.db", staging / "app.db"


class TestCutover:
    def test_file_with_sidecars(self, live):
        path, staged = live
        result = guarded_cutover(str(path), str(staged), now=NOW)
        safety = str(path) + ".nodekeep-pre-restore-20231114T221320Z"
        assert result["safety_copy"] == safety and result["copied"] is False and result["kind"] == "file"
        assert result["sidecars"] == [str(path) + "-wal", str(path) + "-shm"]
        assert path.read_bytes() == b"RESTORED" * 1000
        assert not os.path.exists(str(path) + "-wal") and not os.path.exists(str(path) + "-shm")
        assert Path(safety).read_bytes() == b"LIVE" * 1000
        assert Path(safety + "-wal").read_bytes() == b"STALE-WAL"
        assert Path(safety + "-shm").read_bytes() == b"SHM"
        assert not staged.exists()  # moved, not copied: same filesystem
        info = os.stat(path)
        assert oct(info.st_mode & 0o7777) == "0o640"  # taken from the live file
        assert result["attributes"]["from_live"] == ["owner", "group", "mode"]
        if AS_ROOT:
            assert (info.st_uid, info.st_gid) == (1234, 4321)

    def test_given_attributes_win(self, live):
        path, staged = live
        result = guarded_cutover(str(path), str(staged), owner="0", mode=0o644, now=NOW)
        assert result["attributes"] == {
            "uid": 0,
            "gid": 4321 if AS_ROOT else os.getegid(),
            "mode": "0644",
            "from_live": ["group"],
        }
        assert oct(os.stat(path).st_mode & 0o7777) == "0o644"

    def test_without_sidecars_they_stay(self, live):
        path, staged = live
        result = guarded_cutover(str(path), str(staged), sqlite_sidecars=False, now=NOW)
        assert result["sidecars"] == []
        assert os.path.exists(str(path) + "-wal")

    def test_a_stale_wal_without_a_live_file_is_moved_too(self, live):
        path, staged = live
        os.rename(path, str(path) + ".elsewhere")
        result = guarded_cutover(str(path), str(staged), now=NOW)
        assert result["sidecars"] == [str(path) + "-wal", str(path) + "-shm"]
        assert not os.path.exists(str(path) + "-wal")
        assert path.read_bytes() == b"RESTORED" * 1000

    def test_no_live_data_at_all(self, tmp_path):
        (tmp_path / "staged.db").write_bytes(b"R")
        result = guarded_cutover(str(tmp_path / "app.db"), str(tmp_path / "staged.db"))
        assert result["safety_copy"] is None and (tmp_path / "app.db").read_bytes() == b"R"

    def test_a_directory(self, tmp_path):
        live_dir = tmp_path / "data"
        (live_dir / "blobs").mkdir(parents=True)
        (live_dir / "blobs" / "a").write_text("old")
        staged = tmp_path / "staging" / "data"
        (staged / "blobs").mkdir(parents=True)
        (staged / "blobs" / "b").write_text("new")
        os.symlink("blobs/b", staged / "latest")
        result = guarded_cutover(str(live_dir), str(staged), now=NOW)
        assert result["kind"] == "directory" and result["sidecars"] == []
        assert (live_dir / "latest").read_text() == "new"
        assert (tmp_path / ("data.nodekeep-pre-restore-20231114T221320Z") / "blobs" / "a").read_text() == "old"

    @pytest.mark.parametrize("kind", ["file", "directory"])
    def test_staged_on_another_filesystem_is_copied_beside_the_live_path(self, tmp_path, other_fs, kind):
        path = tmp_path / "live"
        staged = os.path.join(other_fs, "staged")
        if kind == "file":
            path.write_bytes(b"old")
            with open(staged, "wb") as handle:
                handle.write(os.urandom(200000))
            want = digest(staged)
        else:
            path.mkdir()
            (path / "old").write_text("old")
            os.makedirs(os.path.join(staged, "sub"))
            with open(os.path.join(staged, "sub", "f"), "wb") as handle:
                handle.write(b"new")
            os.chmod(os.path.join(staged, "sub"), 0o750)
            os.utime(os.path.join(staged, "sub"), ns=(10**18, 10**18 + 5))
        result = guarded_cutover(str(path), staged, now=NOW)
        assert result["copied"] is True
        assert os.path.exists(staged)  # the staged copy is left as it was
        if kind == "file":
            assert digest(path) == want
        else:
            assert (path / "sub" / "f").read_bytes() == b"new"
            info = os.stat(path / "sub")
            assert oct(info.st_mode & 0o777) == "0o750" and info.st_mtime_ns == 10**18 + 5
        assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []

    def test_check_mode_touches_nothing(self, live, tmp_path):
        path, staged = live
        before = (listing(path.parent), listing(staged.parent))
        plan = guarded_cutover(str(path), str(staged), now=NOW, check_only=True)
        assert plan["changed"] and plan["safety_copy"].endswith("pre-restore-20231114T221320Z")
        assert plan["attributes"]["mode"] == "0640"
        assert (listing(path.parent), listing(staged.parent)) == before


class TestCutoverFailures:
    def test_a_failure_in_the_middle_puts_everything_back(self, live, monkeypatch):
        path, staged = live
        before = (listing(path.parent), listing(staged.parent))

        def broken(renames, source, target):
            raise OSError(errno.EIO, "Input/output error", target)

        monkeypatch.setattr(cut, "_switch_in", broken)
        with pytest.raises(RestoreError) as excinfo:
            guarded_cutover(str(path), str(staged), now=NOW)
        assert "put back in place" in excinfo.value.remedy and "Input/output error" in excinfo.value.message
        assert (listing(path.parent), listing(staged.parent)) == before

    def test_a_failure_after_a_copy_removes_only_the_copy(self, tmp_path, other_fs, monkeypatch):
        path = tmp_path / "live.db"
        path.write_bytes(b"live")
        staged = os.path.join(other_fs, "staged.db")
        with open(staged, "wb") as handle:
            handle.write(b"staged")

        def broken(renames, source, target):
            raise OSError(errno.ENOSPC, "No space left on device", target)

        monkeypatch.setattr(cut, "_switch_in", broken)
        with pytest.raises(RestoreError, match="no space left"):
            guarded_cutover(str(path), staged, now=NOW)
        assert os.listdir(tmp_path) == ["live.db"] and path.read_bytes() == b"live"
        assert Path(staged).read_bytes() == b"staged"

    def test_when_putting_back_fails_too_the_message_says_where_everything_is(self, live, monkeypatch):
        path, staged = live
        real_rename = os.rename
        calls = []

        def rename(src, dst):
            calls.append((src, dst))
            if str(dst) == str(path):  # the switch-in and every put-back onto the live name fail
                raise OSError(errno.EIO, "Input/output error")
            return real_rename(src, dst)

        monkeypatch.setattr(cut.os, "rename", rename)
        with pytest.raises(RestoreError) as excinfo:
            guarded_cutover(str(path), str(staged), now=NOW)
        message = excinfo.value.message
        assert "putting everything back failed" in message
        assert str(path) + ".nodekeep-pre-restore-20231114T221320Z (should be %s" % path in message
        assert "by hand" in excinfo.value.remedy

    @pytest.mark.parametrize(
        "arrange, needle",
        [
            (lambda path, staged: os.unlink(staged), "does not exist"),
            (lambda path, staged: (os.unlink(staged), os.mkdir(staged)), "is a file but the staged copy"),
            (lambda path, staged: Path(str(staged) + "-wal").write_bytes(b"frames"), "not self-contained"),
            (lambda path, staged: Path(str(path) + ".nodekeep-pre-restore-20231114T221320Z").touch(), "already exists"),
        ],
        ids=["staged-missing", "kinds-differ", "staged-wal", "safety-exists"],
    )
    def test_refusals_touch_nothing(self, live, arrange, needle):
        path, staged = live
        arrange(path, staged)
        before = (listing(path.parent), listing(staged.parent))
        with pytest.raises(RestoreError) as excinfo:
            guarded_cutover(str(path), str(staged), now=NOW)
        assert needle in excinfo.value.message and excinfo.value.remedy
        assert (listing(path.parent), listing(staged.parent)) == before

    def test_a_symlinked_live_path_is_refused(self, live, tmp_path):
        path, staged = live
        os.symlink(path, tmp_path / "link.db")
        with pytest.raises(RestoreError, match="is a symlink"):
            guarded_cutover(str(tmp_path / "link.db"), str(staged))

    def test_the_safety_copy_must_stay_on_the_same_filesystem(self, live, other_fs):
        path, staged = live
        before = listing(path.parent)
        with pytest.raises(RestoreError, match="same filesystem"):
            guarded_cutover(str(path), str(staged), safety_copy=os.path.join(other_fs, "safety.db"))
        assert listing(path.parent) == before and os.listdir(other_fs) == []

    def test_relative_and_overlapping_paths(self, live, tmp_path):
        _path, staged = live
        with pytest.raises(RestoreError, match="absolute"):
            guarded_cutover("app.db", str(staged))
        with pytest.raises(RestoreError, match="overlap"):
            guarded_cutover(str(tmp_path), str(staged))


class TestRollback:
    def test_rollback_after_cutover(self, live):
        path, staged = live
        first = guarded_cutover(str(path), str(staged), now=NOW)
        (path.parent / "app.db-wal").write_bytes(b"WAL OF THE RESTORED DB")  # the service ran
        result = cut.rollback(str(path), now=NOW + 60)
        failed = str(path) + ".nodekeep-failed-20231114T221420Z"
        assert result["safety_copy"] == first["safety_copy"] and result["failed_copy"] == failed
        assert path.read_bytes() == b"LIVE" * 1000
        assert Path(str(path) + "-wal").read_bytes() == b"STALE-WAL"
        assert Path(failed).read_bytes() == b"RESTORED" * 1000
        assert Path(failed + "-wal").read_bytes() == b"WAL OF THE RESTORED DB"
        assert result["sidecars"] == [str(path) + "-wal", str(path) + "-shm"]
        assert not os.path.exists(first["safety_copy"])
        with pytest.raises(RestoreError, match="no safety copy"):
            cut.rollback(str(path), now=NOW + 120)

    def test_the_newest_safety_copy_is_used(self, tmp_path):
        path = tmp_path / "app.db"
        for stamp in ("20240101T000000Z", "20250101T000000Z", "20230101T000000Z"):
            (tmp_path / ("app.db.nodekeep-pre-restore-" + stamp)).write_text(stamp)
        (tmp_path / "app.db.nodekeep-pre-restore-20990101T000000Z-wal").write_text("a sidecar, not a copy")
        assert cut.find_safety_copy(str(path)).endswith("20250101T000000Z")
        cut.rollback(str(path))
        assert path.read_text() == "20250101T000000Z"

    def test_a_failed_rollback_puts_everything_back(self, live, monkeypatch):
        path, staged = live
        guarded_cutover(str(path), str(staged), now=NOW)
        before = listing(path.parent)
        real_rename = os.rename

        def rename(src, dst):
            if str(src).endswith("pre-restore-20231114T221320Z"):
                raise OSError(errno.EIO, "Input/output error")
            return real_rename(src, dst)

        monkeypatch.setattr(cut.os, "rename", rename)
        with pytest.raises(RestoreError, match="put back as it was"):
            cut.rollback(str(path), now=NOW + 60)
        assert listing(path.parent) == before

    def test_check_mode_touches_nothing(self, live):
        path, staged = live
        guarded_cutover(str(path), str(staged), now=NOW)
        before = listing(path.parent)
        plan = cut.rollback(str(path), now=NOW + 60, check_only=True)
        assert plan["changed"] and plan["failed_copy"].endswith("failed-20231114T221420Z")
        assert listing(path.parent) == before
