"""assets/sqlite_db.py's standalone copy (backup_sqlite, module sqlite_backup) on real databases: the copy is
one committed state, private until its mode is set, never replaces a file without force."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite_db
from ansible_collections.nodekeep.backup.plugins.module_utils.core import fs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError

pytestmark = pytest.mark.timeout(60)

AS_ROOT = os.geteuid() == 0


def digest(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


# --------------------------------------------------------------------------
# backup_sqlite (module sqlite_backup)
# --------------------------------------------------------------------------


@pytest.fixture
def small_db(tmp_path, dbtools):
    return dbtools.make(tmp_path / "live.db", rows=200, payload=100, journal_mode="wal")


class TestBackupSqlite:
    def test_a_copy(self, small_db, tmp_path, dbtools):
        dest = tmp_path / "out" / "copy.db"
        dest.parent.mkdir()
        result = sqlite_db.backup_sqlite(str(small_db.path), str(dest))
        assert result["size"] == os.path.getsize(dest)
        assert digest(dest) not in json.dumps(result) and "sha256" not in result  # no unkeyed digest of the data
        assert result["integrity"] == "ok" and result["journal_mode"] == "wal" and result["replaced"] is False
        assert result["mode"] == "0600" and oct(os.stat(dest).st_mode & 0o777) == "0o600"
        assert os.listdir(dest.parent) == ["copy.db"]
        assert dbtools.consistency(dest)["count"] == 200

    @pytest.mark.skipif(not AS_ROOT, reason="chown needs root")
    def test_owner_group_mode(self, small_db, tmp_path):
        dest = tmp_path / "copy.db"
        sqlite_db.backup_sqlite(str(small_db.path), str(dest), owner="nobody", group="4321", mode=0o640)
        info = os.stat(dest)
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 4321, 0o640)

    def test_the_copy_is_never_readable_by_others_before_its_mode_is_set(self, small_db, tmp_path, monkeypatch):
        seen = []
        real = fs.set_owner_mode

        def spy(path, uid, gid, mode, recursive=False):
            seen.append(os.stat(path).st_mode & 0o777)
            return real(path, uid, gid, mode, recursive)

        monkeypatch.setattr(sqlite_db, "set_owner_mode", spy)
        old = os.umask(0o022)
        try:
            sqlite_db.backup_sqlite(str(small_db.path), str(tmp_path / "copy.db"), mode=0o644)
        finally:
            os.umask(old)
        assert seen == [0o600]
        assert os.stat(tmp_path / "copy.db").st_mode & 0o777 == 0o644

    def test_force_replaces_and_says_so(self, small_db, tmp_path):
        dest = tmp_path / "copy.db"
        dest.write_bytes(b"old copy")
        with pytest.raises(CaptureError, match="already exists"):
            sqlite_db.backup_sqlite(str(small_db.path), str(dest))
        assert dest.read_bytes() == b"old copy"
        result = sqlite_db.backup_sqlite(str(small_db.path), str(dest), force=True)
        assert result["replaced"] is True and dest.read_bytes()[:16] == b"SQLite format 3\x00"

    def test_stale_side_files_at_the_destination_are_refused(self, small_db, tmp_path):
        dest = tmp_path / "copy.db"
        (tmp_path / "copy.db-wal").write_bytes(b"old frames")
        with pytest.raises(CaptureError, match="side files"):
            sqlite_db.backup_sqlite(str(small_db.path), str(dest), force=True)
        assert sorted(os.listdir(tmp_path)) == ["copy.db-wal", "live.db"]

    def test_bad_step_and_timeout(self, small_db, tmp_path):
        with pytest.raises(CaptureError, match="pages_per_step"):
            sqlite_db.plan_sqlite_backup(str(small_db.path), str(tmp_path / "c.db"), pages_per_step=0)
        with pytest.raises(CaptureError, match="busy_timeout"):
            sqlite_db.plan_sqlite_backup(str(small_db.path), str(tmp_path / "c.db"), busy_timeout_ms=-1)

    def test_unknown_owner(self, small_db, tmp_path):
        with pytest.raises(CaptureError, match="does not exist on this host"):
            sqlite_db.plan_sqlite_backup(str(small_db.path), str(tmp_path / "c.db"), owner="no-such-user-nodekeep")


def test_sqlite3_cli_reads_a_copy(tmp_path, dbtools):
    db = dbtools.make(tmp_path / "live.db", rows=100, payload=50, journal_mode="delete")
    sqlite_db.backup_sqlite(str(db.path), str(tmp_path / "copy.db"), pages_per_step=-1, check="quick")
    out = subprocess.run(
        ["sqlite3", str(tmp_path / "copy.db"), "SELECT count(*) FROM t"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "100"
