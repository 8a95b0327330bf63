"""Every byte and every attribute comes back (issue 13, "Data fidelity"), on a real ext4 filesystem.

Each class is checked for every tree asset type (``files``, ``config`` directory, ``secret`` directory)
and every restore path (epoch_restore, a deep integrity_check, age_seal opening a sealed directory).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from module_driver import run_module, succeeded

TREE_TYPES = ["files", "config", "secret"]


def asset(kind: str, path: Path, tmp_path: Path, name: str = "tree") -> dict:
    item = {"name": name, "type": kind, "path": str(path)}
    if kind == "files":
        item["state_dir"] = str(tmp_path / "files-state")
    return item


def staged(target_root: Path, source: Path) -> Path:
    return target_root / str(source).lstrip("/")


def snapshot(root: Path) -> dict:
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            found[os.path.relpath(path, root)] = (info.st_mode, info.st_mtime_ns, digest)
    return found


# --------------------------------------------------------------------------
# absolute symlinks are data
# --------------------------------------------------------------------------


@pytest.fixture
def linked_tree(tmp_path):
    """A tree like /etc and /srv/app: absolute links (one to a real directory outside the tree), a relative
    link leaving the tree, a dangling one, and a regular file beside them."""
    outside = tmp_path / "outside"
    (outside / "releases" / "3").mkdir(parents=True)
    (outside / "releases" / "3" / "app.bin").write_bytes(b"release 3")
    root = tmp_path / "srv-app"
    root.mkdir()
    (root / "app.conf").write_text("port = 8080\n")
    os.symlink("/usr/share/zoneinfo/Etc/UTC", root / "localtime")
    os.symlink(str(outside / "releases" / "3"), root / "current")
    os.symlink("../outside/releases", root / "releases")
    os.symlink("/srv/app/releases/9", root / "dangling")
    links = {name: os.readlink(root / name) for name in ("localtime", "current", "releases", "dangling")}
    return root, outside, links


def assert_links_kept(restored: Path, links: dict) -> None:
    for name, target in links.items():
        assert os.path.islink(restored / name), "%s was not restored as a symlink" % name
        assert os.readlink(restored / name) == target
    assert (restored / "app.conf").read_text() == "port = 8080\n"


class TestAbsoluteSymlinks:
    @pytest.mark.parametrize("kind", TREE_TYPES)
    def test_backed_up_and_restored_as_links_never_followed(self, kind, node, linked_tree, tmp_path):
        root, outside, links = linked_tree
        before = snapshot(outside)
        node.backup([asset(kind, root, tmp_path)])
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]
        result = node.restore(tmp_path / "staging")
        restored = staged(tmp_path / "staging", root)
        assert result["artifacts"][0]["path"] == str(restored)
        assert_links_kept(restored, links)
        assert snapshot(outside) == before, "the restore wrote through a link"

    def test_a_link_in_the_archive_is_still_never_written_through(self, tmp_path, age_key):
        """Keeping links does not open a way out: an entry below a link is refused, nothing written outside."""
        import io
        import tarfile

        from ansible_collections.nodekeep.backup.plugins.module_utils.core import extract
        from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError

        outside = tmp_path / "outside"
        outside.mkdir()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            link = tarfile.TarInfo("current")
            link.type = tarfile.SYMTYPE
            link.linkname = str(outside)
            tar.addfile(link)
            payload = tarfile.TarInfo("current/planted")
            payload.size = 1
            tar.addfile(payload, io.BytesIO(b"x"))
        with pytest.raises(RestoreError, match="written through"):
            extract.extract_tar(io.BytesIO(buffer.getvalue()), str(tmp_path / "dest"))
        assert list(outside.iterdir()) == []

    def test_age_seal_opens_a_directory_with_absolute_links(self, linked_tree, tmp_path, age_key):
        root, _outside, links = linked_tree
        sealed = tmp_path / "tree.age"
        succeeded(
            run_module(
                "age_seal",
                {"state": "sealed", "src": str(root), "dest": str(sealed), "recipients": [age_key.recipient]},
            )
        )
        succeeded(
            run_module(
                "age_seal",
                {
                    "state": "opened",
                    "src": str(sealed),
                    "dest": str(tmp_path / "back"),
                    "identity_files": [str(age_key.identity_path)],
                },
            )
        )
        assert_links_kept(tmp_path / "back", links)

    def test_the_standard_tools_restore_the_same_links(self, node, linked_tree, tmp_path, age_key):
        root, _outside, links = linked_tree
        manifest = node.backup([asset("config", root, tmp_path)])
        artifact = node.epoch_dir(manifest.epoch) / manifest.artifacts[0].file
        out = tmp_path / "by-hand"
        out.mkdir()
        subprocess.run(
            "age -d -i %s %s | zstd -d | tar -x -C %s" % (age_key.identity_path, artifact, out),
            shell=True,
            check=True,
        )
        assert_links_kept(out, links)


# --------------------------------------------------------------------------
# xattrs, POSIX ACLs (default ACLs too), holes; what cannot be kept is reported
# --------------------------------------------------------------------------

SPARSE_SIZE = 64 << 20


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def attributes(root: Path) -> dict:
    """Every entry's mode, owner, xattrs (ACLs are the system.posix_acl_* ones) and, for files, content."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if directory == str(root) else dirs + files:
            path = os.path.normpath(os.path.join(directory, name))
            info = os.lstat(path)
            xattrs = {}
            if not stat.S_ISLNK(info.st_mode):
                xattrs = {key: os.getxattr(path, key) for key in sorted(os.listxattr(path))}
            digest = None
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            found[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, info.st_gid, xattrs, digest)
    return found


def acl_text(root: Path) -> str:
    return subprocess.run(
        ["getfacl", "-R", "-p", "-n", "."], cwd=root, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def attributed_tree(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o750)
    (root / "report.csv").write_text("a,b\n")
    os.chmod(root / "report.csv", 0o640)
    # a named user with rw: the mask is rw-, so the mode's group bits read rw- (the owning group has only r--)
    run("setfacl", "-m", "u:1234:rw-", str(root / "report.csv"))
    (root / "drop").mkdir()
    run("setfacl", "-m", "g:2345:rwx", str(root / "drop"))
    run("setfacl", "-d", "-m", "u:1234:rwx,g:2345:r-x", str(root / "drop"))
    (root / "drop" / "inbox.txt").write_text("inherited the default ACL\n")
    (root / "tagged.bin").write_bytes(b"tagged")
    run("setfattr", "-n", "user.origin", "-v", "da-node-7", str(root / "tagged.bin"))
    run("setfattr", "-n", "user.raw", "-v", "0x00ff10fe", str(root / "tagged.bin"))
    run("setfattr", "-n", "trusted.nodekeep", "-v", "kept-as-root", str(root / "tagged.bin"))
    with open(root / "disk.img", "wb") as handle:
        handle.seek(1 << 20)
        handle.write(os.urandom(4096))
        handle.seek(SPARSE_SIZE - 8192)
        handle.write(b"\x07" * 8192)
    assert os.stat(root / "disk.img").st_blocks * 512 < 1 << 20
    return root


def assert_attributes_kept(restored: Path, original: Path, before: dict, acls: str) -> None:
    assert attributes(restored) == before
    assert acl_text(restored) == acls
    info = os.stat(restored / "disk.img")
    assert info.st_size == SPARSE_SIZE and info.st_blocks * 512 < 1 << 20, "the sparse file was filled"
    # the owning group did not gain the mask's write bit
    assert (
        "group::r--"
        in subprocess.run(
            ["getfacl", "-p", str(restored / "report.csv")], capture_output=True, text=True, check=True
        ).stdout
    )


class TestAttributesAndHoles:
    @pytest.mark.parametrize("kind", TREE_TYPES)
    def test_kept_by_restore_and_deep_verify(self, kind, node, attributed_tree, tmp_path):
        before, acls = attributes(attributed_tree), acl_text(attributed_tree)
        manifest = node.backup([asset(kind, attributed_tree, tmp_path)])
        assert "not_kept" not in manifest.artifacts[0].source
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]
        node.restore(tmp_path / "staging")
        assert_attributes_kept(staged(tmp_path / "staging", attributed_tree), attributed_tree, before, acls)

    def test_kept_by_age_seal(self, attributed_tree, tmp_path, age_key):
        before, acls = attributes(attributed_tree), acl_text(attributed_tree)
        sealed = tmp_path / "tree.age"
        args = {"state": "sealed", "src": str(attributed_tree), "dest": str(sealed), "recipients": [age_key.recipient]}
        succeeded(run_module("age_seal", args))
        args = {
            "state": "opened",
            "src": str(sealed),
            "dest": str(tmp_path / "back"),
            "identity_files": [str(age_key.identity_path)],
        }
        succeeded(run_module("age_seal", args))
        assert_attributes_kept(tmp_path / "back", attributed_tree, before, acls)

    def test_gnu_tar_reads_the_xattrs_and_acls(self, node, attributed_tree, tmp_path, age_key):
        """Standard tools: the PAX records are GNU tar's, so `tar --xattrs` restores them without nodekeep."""
        manifest = node.backup([asset("config", attributed_tree, tmp_path)])
        artifact = node.epoch_dir(manifest.epoch) / manifest.artifacts[0].file
        out = tmp_path / "by-hand"
        out.mkdir()
        subprocess.run(
            "age -d -i %s %s | zstd -d | tar --xattrs --xattrs-include='*' -xp -C %s"
            % (age_key.identity_path, artifact, out),
            shell=True,
            check=True,
        )
        assert os.getxattr(out / "tagged.bin", "user.raw") == b"\x00\xff\x10\xfe"

    @pytest.mark.parametrize("kind", TREE_TYPES)
    def test_what_cannot_be_kept_is_reported(self, kind, node, attributed_tree, tmp_path):
        run("chattr", "+d", str(attributed_tree / "report.csv"))
        manifest = node.backup([asset(kind, attributed_tree, tmp_path)])
        not_kept = manifest.artifacts[0].source["not_kept"]
        assert {"path": "report.csv", "what": "inode flags d (no dump)", "reason": "not restored"} in not_kept

    def test_kept_by_an_incremental_that_opens_no_unchanged_file(self, node, attributed_tree, tmp_path, monkeypatch):
        """An unchanged file is not opened by the next backup (setting an xattr or ACL, punching a hole and
        chattr change its ctime): its xattrs, ACLs, holes and flags come from the cached entry, and the
        incremental epoch restores them all."""
        run("chattr", "+d", str(attributed_tree / "report.csv"))
        before, acls = attributes(attributed_tree), acl_text(attributed_tree)
        node.backup([asset("files", attributed_tree, tmp_path)])
        opened = []
        real_open = os.open

        def recording_open(path, flags, *args, **kwargs):
            if str(path).startswith(str(attributed_tree) + "/"):
                opened.append(str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", recording_open)
        manifest = node.backup([asset("files", attributed_tree, tmp_path)])
        monkeypatch.undo()
        facts = manifest.artifacts[0].source
        assert facts["objects"]["unchanged"] == facts["entries"]["files"] == 4
        assert opened == []
        assert {"path": "report.csv", "what": "inode flags d (no dump)", "reason": "not restored"} in facts["not_kept"]
        node.restore(tmp_path / "staging")
        assert_attributes_kept(staged(tmp_path / "staging", attributed_tree), attributed_tree, before, acls)


@pytest.fixture
def attributed_file(tmp_path):
    """One config file with an ACL (a named user with rw-: the mask), user. and trusted. xattrs."""
    path = tmp_path / "etc" / "app.conf"
    path.parent.mkdir()
    path.write_text("listen = 0.0.0.0\n")
    os.chmod(path, 0o640)
    run("setfacl", "-m", "u:1234:rw-,g:2345:r--", str(path))
    run("setfattr", "-n", "user.origin", "-v", "da-node-7", str(path))
    run("setfattr", "-n", "trusted.nodekeep", "-v", "0x00ff", str(path))
    return path


def file_acl(path: Path) -> str:
    out = subprocess.run(["getfacl", "-p", "-n", str(path)], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith("# file:"))


def file_attributes(path: Path) -> tuple:
    info = os.stat(path)
    xattrs = {key: os.getxattr(path, key) for key in sorted(os.listxattr(path))}
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns, xattrs, path.read_bytes()


class TestSingleFiles:
    def test_a_config_file_keeps_its_xattrs_and_acl(self, node, attributed_file, tmp_path):
        before = file_attributes(attributed_file)
        acls = file_acl(attributed_file)
        assert "system.posix_acl_access" in before[4] and before[0] & 0o070 == 0o060  # the mask shows in the mode
        manifest = node.backup([asset("config", attributed_file, tmp_path, name="conf")])
        assert sorted(manifest.artifacts[0].source["xattrs"]) == sorted(before[4])
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]
        assert report["artifacts"][0]["checks"]["xattrs"] == len(before[4])
        node.restore(tmp_path / "staging")
        restored = staged(tmp_path / "staging", attributed_file)
        assert file_attributes(restored) == before
        assert file_acl(restored) == acls
        # the owning group did not gain the mask's write bit
        assert (
            "group::r--"
            in subprocess.run(["getfacl", "-p", str(restored)], capture_output=True, text=True, check=True).stdout
        )

    def test_a_secret_file_says_its_xattrs_are_not_kept(self, node, attributed_file, tmp_path):
        manifest = node.backup([asset("secret", attributed_file, tmp_path, name="key")])
        (note,) = manifest.artifacts[0].source["not_kept"]
        assert note["what"] == "3 extended attribute(s) or ACL(s)" and "0600" in note["reason"]
        assert "da-node-7" not in repr(manifest.artifacts[0].source)
        node.restore(tmp_path / "staging")
        restored = staged(tmp_path / "staging", attributed_file)
        assert stat.S_IMODE(os.stat(restored).st_mode) == 0o600 and os.listxattr(restored) == []


# --------------------------------------------------------------------------
# owner and mode of a restored SQLite database
# --------------------------------------------------------------------------


def make_db(path: Path, journal: str = "wal", count: int = 500, pad: int = 0) -> None:
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        db.execute("PRAGMA journal_mode=%s" % journal)
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany("INSERT INTO t (v) VALUES (?)", [("row %d %s" % (n, "x" * pad),) for n in range(count)])
    db.close()


class TestSqliteOwnerAndMode:
    def test_recorded_and_restored(self, node, tmp_path):
        db = tmp_path / "live" / "app.db"
        db.parent.mkdir()
        make_db(db)
        os.chown(db, 1234, 2345)
        os.chmod(db, 0o640)
        manifest = node.backup([node.sqlite_asset(db)])
        node.restore(tmp_path / "staging")
        info = os.stat(staged(tmp_path / "staging", db))
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 2345, 0o640)
        assert manifest.artifacts[0].source["owner"] == {"uid": 1234, "gid": 2345, "mode": "0640"}
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]

    @pytest.mark.parametrize("incremental", [False, True])
    def test_xattrs_and_acl_recorded_and_restored(self, node, tmp_path, incremental):
        """A database file's user. xattrs and its POSIX ACL come back (the mask never becomes the group's bits)."""
        db = tmp_path / "live" / "app.db"
        db.parent.mkdir()
        make_db(db)
        os.chmod(db, 0o640)
        run("setfacl", "-m", "u:1234:rw-,g:2345:r--", str(db))
        run("setfattr", "-n", "user.origin", "-v", "da-node-7", str(db))
        before = {key: os.getxattr(db, key) for key in sorted(os.listxattr(db))}
        assert "system.posix_acl_access" in before and "user.origin" in before
        acls = file_acl(db)
        options = {"incremental": True, "state_dir": str(tmp_path / "state")} if incremental else {}
        manifest = node.backup([node.sqlite_asset(db, **options)])
        assert sorted(manifest.artifacts[0].source["owner"]["xattrs"]) == sorted(before)
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]
        node.restore(tmp_path / "staging")
        restored = staged(tmp_path / "staging", db)
        assert {key: os.getxattr(restored, key) for key in sorted(os.listxattr(restored))} == before
        assert file_acl(restored) == acls
        assert stat.S_IMODE(os.stat(restored).st_mode) == stat.S_IMODE(os.stat(db).st_mode)


# --------------------------------------------------------------------------
# a SQLite database left with a hot rollback journal by a crash
# --------------------------------------------------------------------------

CRASHING_WRITER = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=2")  # the transaction's pages spill into the database file before commit
db.execute("BEGIN")
db.execute("UPDATE t SET v = 'half-written ' || id")
print("in transaction", flush=True)
sys.stdin.read()  # killed here, the transaction never commits
"""


def rows(path: Path) -> list:
    import sqlite3

    db = sqlite3.connect("file:%s?immutable=1" % path, uri=True)
    try:
        return db.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    finally:
        db.close()


class TestHotJournal:
    @pytest.fixture
    def crashed_db(self, tmp_path):
        """A rollback-journal database whose writer was killed mid-transaction (kill -9 after it said so)."""
        import sys

        db = tmp_path / "live" / "app.db"
        db.parent.mkdir()
        make_db(db, journal="delete", count=5000, pad=200)  # big enough for the transaction to spill
        committed = rows(db)
        writer = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WRITER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout.readline().strip() == "in transaction"
        writer.kill()
        writer.wait()
        journal = Path(str(db) + "-journal")
        assert journal.read_bytes()[:8] == bytes.fromhex("d9d505f920a163d7"), "no hot journal was left"
        assert rows(db) != committed, "the database file holds no uncommitted page"
        return db, journal, committed

    def test_backed_up_by_rolling_back_a_private_copy(self, node, crashed_db, tmp_path):
        db, journal, committed = crashed_db
        live = (db.read_bytes(), journal.read_bytes())
        manifest = node.backup([node.sqlite_asset(db)])
        # the live database and its journal were never touched (the rollback is the application's to do)
        assert (db.read_bytes(), journal.read_bytes()) == live
        node.restore(tmp_path / "staging")
        assert rows(staged(tmp_path / "staging", db)) == committed
        assert manifest.artifacts[0].source["hot_journal"] == "rolled back on a private copy"

    def test_the_module_says_so_too(self, crashed_db, tmp_path):
        db, journal, committed = crashed_db
        result = succeeded(run_module("sqlite_backup", {"src": str(db), "dest": str(tmp_path / "copy.db")}))
        assert rows(tmp_path / "copy.db") == committed
        assert result["hot_journal"] == "rolled back on a private copy"
        assert journal.exists()
