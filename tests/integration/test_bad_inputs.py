"""Bad input: each is a clear error naming the problem, and nothing is lost (earlier epochs intact, no target written).

Real conditions only: a missing file, a non-database, a database locked by another process, a read-only
mount, a full tmpfs, wrong keys, a tampered epoch. Mounting needs root (CI runs as root); those tests
skip, saying why, only when mounting is impossible.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from integration_helpers import mounted

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    ManifestError,
    NodekeepError,
    RepositoryError,
    SealError,
    UnsealError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import restore_epoch, verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import resolve_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _read_only(path):
    """Make an existing directory read-only for everyone, root included: a read-only bind mount."""
    with mounted(path, "--bind", source=str(path)):
        proc = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip("cannot remount %s read-only: %s" % (path, proc.stderr.strip()))
        yield path


@pytest.fixture
def baseline(node, tmp_path, dbtools, tree):
    """One complete epoch of a small DB, and a snapshot of the whole repository to compare with."""
    db = dbtools.make(tmp_path / "app.db", rows=100, payload=200, journal_mode="delete")
    manifest = node.backup([node.sqlite_asset(db.path)])
    return db, manifest


def _assert_nothing_lost(node, manifest, before: dict, tree) -> None:
    assert tree(node.repository.root) == before
    assert node.repository.complete_epochs(node.name) == [manifest.epoch]
    assert node.repository.incomplete_epochs(node.name) == []
    report = node.verify(manifest.epoch)
    assert report["ok"], report


# --------------------------------------------------------------------------
# the source
# --------------------------------------------------------------------------


class TestSource:
    def test_a_missing_database(self, node, baseline, tmp_path, tree, clear_error):
        _db, manifest = baseline
        before = tree(node.repository.root)
        missing = tmp_path / "no-such" / "app.db"
        with pytest.raises(CaptureError) as excinfo:
            node.backup([node.sqlite_asset(missing)])
        clear_error(excinfo.value, str(missing), "does not exist")
        _assert_nothing_lost(node, manifest, before, tree)

    @pytest.mark.parametrize(
        "content, needle",
        [
            (b"this is a text file, not a database\n" * 100, "not an SQLite database"),
            (b"", "empty"),
            (b"SQLite format 3\x00" + os.urandom(8192), ""),
        ],
        ids=["text", "empty", "corrupt-after-header"],
    )
    def test_a_file_that_is_not_a_database(self, node, baseline, tmp_path, tree, clear_error, content, needle):
        _db, manifest = baseline
        before = tree(node.repository.root)
        path = tmp_path / "fake.db"
        path.write_bytes(content)
        with pytest.raises(NodekeepError) as excinfo:
            node.backup([node.sqlite_asset(path)])
        clear_error(excinfo.value, str(path), needle)
        assert path.read_bytes() == content  # the source is never written
        _assert_nothing_lost(node, manifest, before, tree)

    def test_a_directory_instead_of_a_database(self, node, baseline, tmp_path, tree, clear_error):
        _db, manifest = baseline
        before = tree(node.repository.root)
        with pytest.raises(CaptureError) as excinfo:
            node.backup([node.sqlite_asset(tmp_path)])
        clear_error(excinfo.value, str(tmp_path), "directory")
        _assert_nothing_lost(node, manifest, before, tree)

    def test_a_database_locked_past_the_busy_timeout(self, node, baseline, tmp_path, tree, clear_error, dbtools):
        _db, manifest = baseline
        locked = dbtools.make(tmp_path / "locked.db", rows=100, journal_mode="delete")
        before = tree(node.repository.root)
        with _exclusive_lock(locked.path) as holder:
            started = time.monotonic()
            with pytest.raises(CaptureError) as excinfo:
                node.backup([node.sqlite_asset(locked.path, busy_timeout=300)])
            waited = time.monotonic() - started
            assert holder.poll() is None  # the lock was held all along
        clear_error(excinfo.value, str(locked.path), "locked", "busy timeout")
        assert 0.25 <= waited < 10, waited
        _assert_nothing_lost(node, manifest, before, tree)
        # once the lock is gone the same backup works
        node.backup([node.sqlite_asset(locked.path, busy_timeout=300)])

    def test_a_lock_released_within_the_busy_timeout_is_waited_for(self, node, tmp_path, dbtools):
        """The order is explicit: the lock is released only once the backup is inside its locked read.

        (It was a 0.7 s hold racing the backup's start: on a slow box the backup began after the release and
        never waited. Now the backup cannot finish before the release, and the release happens only after it
        reached the read that needs the lock.)
        """
        locked = dbtools.make(tmp_path / "locked.db", rows=100, journal_mode="delete")
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["manifest"] = node.backup([node.sqlite_asset(locked.path, busy_timeout=600000)])
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                outcome["error"] = exc

        with _exclusive_lock(locked.path) as holder:
            worker = threading.Thread(target=run)
            worker.start()
            assert _reaches(worker, "_pinned_source"), outcome  # blocked on the held lock, not failed
            assert "manifest" not in outcome and holder.poll() is None
            holder.stdin.close()  # release: the locker rolls back and exits
            worker.join()
        assert "error" not in outcome, outcome.get("error")
        assert node.verify(outcome["manifest"].epoch)["ok"]

    @pytest.mark.parametrize(
        "assets, needle",
        [
            ([], "no assets"),
            ([{"name": "x", "type": "nosuchtype", "path": "/var/lib/x.db"}], "unknown asset type"),
            ([{"name": "x", "type": "sqlite", "path": "relative/x.db"}], "absolute path"),
            ([{"name": "x", "type": "sqlite"}], "has no path"),
            ([{"name": "../x", "type": "sqlite", "path": "/var/lib/x.db"}], "not a valid name"),
            (
                [{"name": "x", "type": "sqlite", "path": "/a.db"}, {"name": "x", "type": "sqlite", "path": "/b.db"}],
                "two assets are named x",
            ),
            ([{"name": "x", "type": "sqlite", "path": "/a.db", "check": "maybe"}], "check must be one of"),
        ],
        ids=["none", "unknown-type", "relative-path", "no-path", "bad-name", "duplicate", "bad-check"],
    )
    def test_bad_asset_lists(self, node, baseline, tree, assets, needle):
        _db, manifest = baseline
        before = tree(node.repository.root)
        with pytest.raises(NodekeepError) as excinfo:
            node.backup(assets)
        assert needle in excinfo.value.message
        _assert_nothing_lost(node, manifest, before, tree)


_LOCKER = r"""
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
connection.execute("INSERT INTO t(txn, payload) VALUES (-1, x'00')")  # a pending, uncommitted write
print("locked", flush=True)
sys.stdin.read()  # held until the test closes stdin
"""


def _reaches(thread: threading.Thread, function: str) -> bool:
    """Wait until ``thread`` is executing ``function`` (its frame is on the thread's stack); False if it ended first."""
    while thread.is_alive():
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if frame.f_code.co_name == function:
                return True
            frame = frame.f_back
        threading.Event().wait(0.001)  # yield the GIL to the backup thread; the condition above decides
    return False


@contextlib.contextmanager
def _exclusive_lock(path):
    """Another process holds BEGIN EXCLUSIVE on a rollback-journal DB until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = proc.stdout.readline().decode().strip()
        assert line == "locked", proc.stderr.read().decode()
        yield proc
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# the destination
# --------------------------------------------------------------------------


class TestDestination:
    def test_a_read_only_repository(self, node, baseline, tree, clear_error):
        db, manifest = baseline
        before = tree(node.repository.root)
        with _read_only(node.repository.root):
            with pytest.raises(RepositoryError) as excinfo:
                node.backup([node.sqlite_asset(db.path)])
            clear_error(excinfo.value, node.repository.root, "read-only")
        _assert_nothing_lost(node, manifest, before, tree)

    def test_a_read_only_repository_with_scratch_space_elsewhere(
        self, node, baseline, tmp_path, tree, clear_error, files_under
    ):
        db, manifest = baseline
        before = tree(node.repository.root)
        with _read_only(node.repository.root):
            with pytest.raises(RepositoryError) as excinfo:
                node.backup([node.sqlite_asset(db.path)], scratch_dir=str(tmp_path / "scratch"))
            clear_error(excinfo.value, node.repository.root)
            # reading still works: the earlier epoch verifies on the read-only mount
            assert node.verify(manifest.epoch)["ok"]
        _assert_nothing_lost(node, manifest, before, tree)
        assert files_under(tmp_path / "scratch") == []  # no plaintext copy left behind

    def test_a_read_only_repository_is_called_read_only(self, node, baseline, tmp_path):
        db, _manifest = baseline
        with _read_only(node.repository.root), pytest.raises(RepositoryError) as excinfo:
            node.backup([node.sqlite_asset(db.path)], scratch_dir=str(tmp_path / "scratch"))
        assert "read-only" in excinfo.value.message
        assert "become" not in excinfo.value.remedy

    def test_a_new_repository_under_a_read_only_directory(self, tmp_path, clear_error):
        parent = tmp_path / "ro"
        parent.mkdir()
        with _read_only(parent):
            with pytest.raises(RepositoryError) as excinfo:
                LocalRepository(str(parent / "repo"))
            clear_error(excinfo.value, str(parent / "repo"))
        assert not (parent / "repo").exists()

    @pytest.mark.parametrize("scratch", ["on-the-full-disk", "elsewhere"])
    def test_a_full_disk(self, make_node, tmp_path, tree, clear_error, dbtools, scratch, files_under):
        with mounted(tmp_path / "small", "-o", "size=4m,mode=0700", fstype="tmpfs") as mountpoint:
            node = make_node(LocalRepository(os.path.join(mountpoint, "repo")))
            small = dbtools.make(tmp_path / "small.db", rows=100, payload=200)
            manifest = node.backup([node.sqlite_asset(small.path)])
            before = tree(node.repository.root)
            used = shutil.disk_usage(mountpoint).used

            # 8 MB of random rows: neither the plaintext copy nor the sealed artifact fits in 4 MiB
            big = dbtools.make(tmp_path / "big.db", rows=8000, payload=1000)
            options = {"scratch_dir": str(tmp_path / "scratch")} if scratch == "elsewhere" else {}
            with pytest.raises(NodekeepError) as excinfo:
                node.backup([node.sqlite_asset(big.path)], **options)
            clear_error(excinfo.value, mountpoint, "no space left")

            _assert_nothing_lost(node, manifest, before, tree)
            assert shutil.disk_usage(mountpoint).used <= used  # the partial files were removed
            assert files_under(tmp_path / "scratch") == []  # no plaintext copy left behind
            # the space is back: the next (small) backup works
            again = node.backup([node.sqlite_asset(small.path)])
            assert node.verify(again.epoch)["ok"]


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


class TestKeys:
    @pytest.mark.parametrize(
        "recipients, needle",
        [([], "no age recipient"), (["age1nope"], "not a valid age recipient"), ([""], "empty")],
        ids=["none", "invalid", "empty"],
    )
    def test_no_or_invalid_recipient(self, node, baseline, tree, clear_error, recipients, needle):
        db, manifest = baseline
        before = tree(node.repository.root)
        with pytest.raises(SealError) as excinfo:
            node.backup([node.sqlite_asset(db.path)], recipients=recipients)
        clear_error(excinfo.value, needle)
        _assert_nothing_lost(node, manifest, before, tree)

    def test_an_empty_parsed_recipient_list_given_to_backup_epoch(self, node, baseline, tree):
        from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch

        db, manifest = baseline
        before = tree(node.repository.root)
        with pytest.raises(NodekeepError, match="no age recipient"):
            backup_epoch(node.repository, node.name, [node.sqlite_asset(db.path)], [], [], node.signing_key.key)
        _assert_nothing_lost(node, manifest, before, tree)

    def test_the_wrong_identity_at_restore(self, node, baseline, tmp_path, other_age_key, clear_error, files_under):
        with pytest.raises(UnsealError) as excinfo:
            node.restore(tmp_path / "staging", identity_files=[str(other_age_key.identity_path)])
        clear_error(excinfo.value, "identit")
        assert files_under(tmp_path / "staging") == []

    def test_no_identity_at_restore(self, node, baseline, tmp_path, files_under):
        with pytest.raises(UnsealError, match="no age identity"):
            node.restore(tmp_path / "staging", identity_files=[])
        assert files_under(tmp_path / "staging") == []

    def test_no_public_key(self, node, baseline, tmp_path, files_under):
        with pytest.raises(ManifestError, match="no public key"):
            restore_epoch(node.repository, node.name, "latest", "", [], str(tmp_path / "staging"))
        report = verify_epoch(node.repository, node.name, "latest", "")
        assert report["ok"] is False and report["signature"] == "invalid"
        assert files_under(tmp_path / "staging") == []

    def test_another_nodes_public_key(self, node, baseline, tmp_path, other_signing_key, files_under):
        report = node.verify(public_key=other_signing_key.public_line)
        assert report["ok"] is False and "different key" in report["problems"][0]
        with pytest.raises(NodekeepError, match="different key"):
            node.restore(tmp_path / "staging", public_key=other_signing_key.public_line)
        assert files_under(tmp_path / "staging") == []


# --------------------------------------------------------------------------
# the epoch and the restore target
# --------------------------------------------------------------------------


class TestEpochAndTarget:
    def test_a_tampered_manifest(self, node, baseline, tmp_path, clear_error, files_under):
        _db, manifest = baseline
        path = node.epoch_dir(manifest.epoch) / MANIFEST_NAME
        data = path.read_bytes()
        path.write_bytes(data.replace(b'"integrity": "ok"', b'"integrity": "OK"'))
        report = node.verify(manifest.epoch)
        assert report["ok"] is False and "modified" in report["problems"][0]
        with pytest.raises(NodekeepError) as excinfo:
            node.restore(tmp_path / "staging")
        clear_error(excinfo.value, "modified")
        assert files_under(tmp_path / "staging") == []

    def test_a_validly_signed_manifest_replayed_into_another_epoch(self, node, baseline, tmp_path, clear_error, files_under):
        db, first = baseline
        second = node.backup([node.sqlite_asset(db.path)])
        for name in (MANIFEST_NAME, SIGNATURE_NAME):
            target = node.epoch_dir(second.epoch) / name
            os.unlink(target)
            shutil.copyfile(node.epoch_dir(first.epoch) / name, target)
        report = node.verify(second.epoch)
        assert report["ok"] is False
        assert first.epoch in report["problems"][0]
        with pytest.raises(ManifestError) as excinfo:
            node.restore(tmp_path / "staging", epoch=second.epoch)
        clear_error(excinfo.value, first.epoch, second.epoch)
        assert files_under(tmp_path / "staging") == []

    def test_a_restore_target_that_exists_is_refused_and_untouched(self, node, baseline, tmp_path, clear_error):
        db, _manifest = baseline
        target = tmp_path / "staging" / str(db.path).lstrip("/")
        target.parent.mkdir(parents=True)
        target.write_bytes(b"precious data")
        os.utime(target, (1_000_000_000, 1_000_000_000))
        with pytest.raises(NodekeepError) as excinfo:
            node.restore(tmp_path / "staging")
        clear_error(excinfo.value, str(target), "exists")
        assert target.read_bytes() == b"precious data"
        assert target.stat().st_mtime == 1_000_000_000
        assert sorted(os.listdir(target.parent)) == [target.name]

    def test_one_existing_target_means_no_asset_is_restored(self, node, tmp_path, dbtools, files_under):
        first = dbtools.make(tmp_path / "first.db", rows=50)
        second = dbtools.make(tmp_path / "second.db", rows=50)
        node.backup([node.sqlite_asset(first.path, "first"), node.sqlite_asset(second.path, "second")])
        existing = tmp_path / "staging" / str(second.path).lstrip("/")
        existing.parent.mkdir(parents=True)
        existing.write_bytes(b"keep me")
        with pytest.raises(NodekeepError, match="already exists"):
            node.restore(tmp_path / "staging")
        assert files_under(tmp_path / "staging") == [str(existing)]

    def test_an_epoch_that_does_not_exist(self, node, baseline, tmp_path, clear_error, files_under):
        _db, manifest = baseline
        with pytest.raises(RepositoryError) as excinfo:
            node.restore(tmp_path / "staging", epoch="20200101T000000Z")
        clear_error(excinfo.value, "20200101T000000Z", manifest.epoch)  # names what exists instead
        with pytest.raises(RepositoryError):
            node.verify("20200101T000000Z")
        assert files_under(tmp_path / "staging") == []

    def test_an_incomplete_epoch_is_refused_by_name(self, node, baseline, tmp_path, clear_error):
        _db, manifest = baseline
        epoch = node.repository.new_epoch(node.name)
        with pytest.raises(RepositoryError) as excinfo:
            node.restore(tmp_path / "staging", epoch=epoch)
        clear_error(excinfo.value, epoch, "incomplete")
        assert resolve_epoch(node.repository, node.name, "latest") == manifest.epoch

    def test_a_node_without_epochs(self, node, tmp_path, clear_error):
        with pytest.raises(RepositoryError) as excinfo:
            node.restore(tmp_path / "staging")
        clear_error(excinfo.value, node.name, "no complete epoch")

    @pytest.mark.parametrize("path", ["relative/repo", "repo", "./repo"])
    def test_a_relative_repository_path(self, path, clear_error, tmp_path):
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            with pytest.raises(RepositoryError) as excinfo:
                open_repository(path)
        finally:
            os.chdir(cwd)
        clear_error(excinfo.value, path, "absolute")
        assert not (tmp_path / "relative").exists() and not (tmp_path / "repo").exists()

    def test_a_relative_restore_target(self, node, baseline, tmp_path, clear_error):
        with pytest.raises(RepositoryError) as excinfo:
            node.restore("staging")
        clear_error(excinfo.value, "staging", "absolute")

    def test_identities_are_never_echoed(self, node, baseline, tmp_path, other_age_key):
        with pytest.raises(UnsealError) as excinfo:
            restore_epoch(
                node.repository,
                node.name,
                "latest",
                node.public_line,
                seal.load_identities([other_age_key.identity]),
                str(tmp_path / "staging"),
            )
        assert other_age_key.identity not in excinfo.value.message
        assert other_age_key.identity[16:24] not in excinfo.value.message
