"""Module restore_cutover, driven through main(), on real SQLite databases with a stale write-ahead log.

The live database is left with committed transactions still in its -wal (its writer died without a
checkpoint), which is what a crashed or killed service leaves. Cutover must keep that -wal with the
live database (in the safety copy) and never let it be replayed onto the restored one; rollback must
bring both back together. Databases are read with the sqlite3 CLI, from scratch copies so that
reading never checkpoints (changes) the files under test.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from module_driver import failed, run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.ops import cutover as cutover_utils

pytestmark = pytest.mark.timeout(120)

AS_ROOT = os.geteuid() == 0
SIDECARS = ("-wal", "-shm", "-journal")

_CRASHING_WRITER = r"""
import os, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA wal_autocheckpoint=0")
for number in range(int(sys.argv[2])):
    connection.execute("BEGIN IMMEDIATE")
    txn = connection.execute("SELECT coalesce(max(txn), 0) + 1 FROM t").fetchone()[0]
    for _attempt in range(2):
        connection.execute("INSERT INTO t(txn, payload) VALUES (?, randomblob(300))", (txn,))
    connection.execute("COMMIT")
os._exit(0)  # die without closing: the committed transactions stay in the -wal only
"""


def crash_after(path, transactions: int) -> None:
    """A writer (another process) commits ``transactions`` and dies, leaving them in PATH-wal."""
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path), str(transactions)], check=True)
    assert os.path.getsize(str(path) + "-wal") > 0


def read_db(path) -> dict:
    """integrity_check and row count of the database at ``path`` with its side files, read from a scratch copy."""
    scratch = tempfile.mkdtemp(prefix="nodekeep-read-")
    try:
        copy = os.path.join(scratch, "db")
        for suffix in ("",) + SIDECARS:
            if os.path.exists(str(path) + suffix):
                shutil.copy2(str(path) + suffix, copy + suffix)
        out = subprocess.run(
            ["sqlite3", copy, "PRAGMA integrity_check; SELECT count(*) FROM t;"],
            capture_output=True,
            text=True,
            check=False,  # a damaged database is a result here, not an error
        )
        lines = out.stdout.splitlines()
        if out.returncode != 0 or len(lines) != 2 or not lines[1].isdigit():
            return {"integrity": (out.stdout + out.stderr).strip(), "count": -1}  # damaged
        return {"integrity": lines[0], "count": int(lines[1])}
    finally:
        shutil.rmtree(scratch)


def state(*directories) -> dict:
    """Every file under the directories with its sha256: compare before/after to prove nothing moved or changed."""
    found = {}
    for directory in directories:
        for root, _dirs, files in os.walk(directory):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


def cut(args: dict, check_mode: bool = False) -> dict:
    """The module as the restore role runs it: the service was stopped and a health check follows."""
    if args.get("state", "cutover") == "cutover" and args:
        args = dict({"service": "app", "health_command": "true"}, **args)
    return run_module("restore_cutover", args, check_mode=check_mode)


@pytest.fixture
def site(tmp_path, dbtools):
    """Live /srv/app/app.db (200 rows + 100 rows only in its stale -wal) and a staged restore (100 rows)."""
    live_dir = tmp_path / "srv" / "app"
    live_dir.mkdir(parents=True)
    path = live_dir / "app.db"
    dbtools.make(path, rows=200, payload=300, journal_mode="wal")
    crash_after(path, 50)
    os.chmod(path, 0o640)
    if AS_ROOT:
        os.chown(path, 1234, 1234)
    staging_dir = tmp_path / "staging" / "srv" / "app"
    staging_dir.mkdir(parents=True)
    staged = staging_dir / "app.db"
    dbtools.make(staged, rows=100, payload=300, journal_mode="wal")
    assert read_db(path) == {"integrity": "ok", "count": 300}
    assert read_db(staged) == {"integrity": "ok", "count": 100}
    return path, staged


def test_the_hazard_is_real(site, tmp_path):
    """Control: dropping the restored file beside the live -wal corrupts it. This is what the module prevents."""
    path, staged = site
    naive = tmp_path / "naive"
    naive.mkdir()
    shutil.copy(staged, naive / "app.db")
    for suffix in ("-wal", "-shm"):
        shutil.copy(str(path) + suffix, str(naive / "app.db") + suffix)
    assert read_db(naive / "app.db") != {"integrity": "ok", "count": 100}


def test_cutover_then_rollback(site, tmp_path):
    path, staged = site
    args = {"path": str(path), "staged": str(staged)}
    before = state(tmp_path)

    planned = succeeded(cut(args, check_mode=True))
    assert planned["changed"] is True and ".nodekeep-pre-restore-" in planned["safety_copy"]
    assert planned["sidecars"] == [str(path) + "-wal", str(path) + "-shm"]
    assert state(tmp_path) == before

    result = succeeded(cut(args))
    safety = result["safety_copy"]
    assert result["changed"] is True and result["kind"] == "file" and result["copied"] is False
    assert result["sidecars"] == [str(path) + "-wal", str(path) + "-shm"]
    assert [os.path.exists(str(path) + s) for s in SIDECARS] == [False, False, False]  # no stale WAL beside it
    assert read_db(path) == {"integrity": "ok", "count": 100}  # exactly the restored database
    assert read_db(safety) == {"integrity": "ok", "count": 300}  # the live DB kept whole, WAL included
    assert not staged.exists()
    info = os.stat(path)
    assert oct(info.st_mode & 0o777) == "0o640" and result["attributes"]["mode"] == "0640"
    if AS_ROOT:
        assert (info.st_uid, info.st_gid) == (1234, 1234)
        assert (result["uid"], result["gid"]) == (1234, 1234)  # Ansible's file facts of path

    crash_after(path, 10)  # the service ran on the restored DB, then the health check failed
    assert read_db(path)["count"] == 120

    planned = succeeded(cut({"path": str(path), "state": "rollback"}, check_mode=True))
    assert planned["safety_copy"] == safety and os.path.exists(safety)

    back = succeeded(cut({"path": str(path), "state": "rollback"}))
    assert back["changed"] is True and back["safety_copy"] == safety
    failed_copy = back["failed_copy"]
    assert ".nodekeep-failed-" in failed_copy
    assert read_db(path) == {"integrity": "ok", "count": 300}  # the original, with its own WAL
    assert read_db(failed_copy) == {"integrity": "ok", "count": 120}  # kept, with its WAL
    assert os.path.getsize(failed_copy + "-wal") > 0
    assert not os.path.exists(safety) and not os.path.exists(safety + "-wal")

    failed(cut({"path": str(path), "state": "rollback"}), "no safety copy")
    failed(cut(args), str(staged), "does not exist", "moved into place")


def test_a_failure_in_the_middle_leaves_the_live_data_in_place(site, tmp_path, monkeypatch):
    path, staged = site
    before = state(tmp_path)

    def broken(renames, source, target):
        assert not os.path.exists(target)  # the live data really was moved aside at this point
        raise OSError(errno.EIO, "Input/output error", target)

    monkeypatch.setattr(cutover_utils, "_switch_in", broken)
    message = failed(cut({"path": str(path), "staged": str(staged)}), "cutover", "Input/output error", "put back")
    assert "nothing was lost" in message
    assert state(tmp_path) == before
    assert read_db(path) == {"integrity": "ok", "count": 300}


def test_a_failed_copy_from_another_filesystem_touches_nothing(site, tmp_path, monkeypatch):
    path, _staged = site
    shm = tempfile.mkdtemp(prefix="nodekeep-test-", dir="/dev/shm") if os.path.isdir("/dev/shm") else None
    if shm is None or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to stage on")
    try:
        staged = os.path.join(shm, "app.db")
        shutil.copy(_staged, staged)
        before = state(tmp_path, shm)
        real_copy = cutover_utils._copy_file

        def copy_then_fail(src, dest):
            real_copy(src, dest)
            raise OSError(errno.ENOSPC, "No space left on device", dest)

        monkeypatch.setattr(cutover_utils, "_copy_file", copy_then_fail)
        failed(cut({"path": str(path), "staged": staged}), "no space left", "put back")
        assert state(tmp_path, shm) == before

        monkeypatch.undo()
        result = succeeded(cut({"path": str(path), "staged": staged, "mode": "0600"}))
        assert result["copied"] is True and os.path.exists(staged)
        assert read_db(path) == {"integrity": "ok", "count": 100}
        assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    finally:
        shutil.rmtree(shm)


def test_a_directory_from_another_filesystem(tmp_path):
    shm = tempfile.mkdtemp(prefix="nodekeep-test-", dir="/dev/shm") if os.path.isdir("/dev/shm") else None
    if shm is None or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to stage on")
    try:
        live = tmp_path / "blobs"
        (live / "old").mkdir(parents=True)
        (live / "old" / "blob").write_text("old")
        staged = os.path.join(shm, "blobs")
        os.makedirs(os.path.join(staged, "ab", "cd"))
        with open(os.path.join(staged, "ab", "cd", "blob"), "wb") as handle:
            handle.write(os.urandom(100000))
        os.symlink("ab/cd/blob", os.path.join(staged, "latest"))
        args = {"path": str(live), "staged": staged, "mode": "0750"}
        if AS_ROOT:
            args.update(owner="nobody", group="1234")
        result = succeeded(cut(args))
        assert result["kind"] == "directory" and result["copied"] is True
        assert os.readlink(live / "latest") == "ab/cd/blob"
        assert (live / "latest").read_bytes() == Path(os.path.join(staged, "ab", "cd", "blob")).read_bytes()
        assert oct(os.stat(live).st_mode & 0o777) == "0o750"
        if AS_ROOT:
            for root, dirs, files in os.walk(live):
                for name in dirs + files:
                    info = os.lstat(os.path.join(root, name))
                    assert (info.st_uid, info.st_gid) == (65534, 1234)
        assert (tmp_path / os.path.basename(result["safety_copy"]) / "old" / "blob").read_text() == "old"
        assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []
    finally:
        shutil.rmtree(shm)


@pytest.mark.parametrize(
    "args, needles",
    [
        ({"staged": "relative/app.db"}, ["absolute"]),
        ({"state": "cutover"}, ["staged"]),
        ({"safety_copy": "/dev/shm/nodekeep-safety.db"}, ["same filesystem"]),
        ({"owner": "no-such-user-nodekeep"}, ["does not exist on this host"]),
        ({"mode": "rw-r-----"}, ["not an octal mode"]),
    ],
    ids=["relative", "no-staged", "safety-elsewhere", "unknown-owner", "bad-mode"],
)
def test_refusals_touch_nothing(site, tmp_path, args, needles):
    path, staged = site
    full = {"path": str(path), "staged": str(staged)}
    full.update(args)
    if args == {"state": "cutover"}:
        full.pop("staged")
    before = state(tmp_path)
    if "safety_copy" in args and not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    failed(cut(full), *needles)
    assert state(tmp_path) == before
