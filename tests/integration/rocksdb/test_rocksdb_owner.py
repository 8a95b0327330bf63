"""The owner and mode of a RocksDB directory and of each of its files come back (issue 13), whatever the
method: the application's checkpoint writes its own files (its umask, its directory mode), the offline copy
copies them; the restore gives each file the live file's owner and mode recorded at backup."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from rdbhelpers import App

UID, GID = 1234, 2345


def owners(root) -> dict:
    found = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            found[name] = (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))
    info = os.lstat(root)
    found["."] = (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))
    return found


def chown_tree(root) -> None:
    os.chown(root, UID, GID)
    os.chmod(root, 0o750)
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            os.chown(path, UID, GID)
            os.chmod(path, 0o640 if name != "LOCK" else 0o600)


@pytest.mark.parametrize("method", ["offline", "checkpoint"])
def test_owner_and_mode_of_every_file_restored(method, node, tmp_path):
    app = App(tmp_path / "node")
    app.start()
    try:
        app.wait_for(200)
        item = {
            "name": "chain",
            "type": "rocksdb",
            "path": str(app.db),
            "method": "checkpoint_command" if method == "checkpoint" else method,
        }
        if method == "offline":
            app.stop()
        else:
            item["checkpoint_command"] = app.checkpoint_command
        chown_tree(app.db)
        live = owners(app.db)
        manifest = node.backup([item])
        node.restore(tmp_path / "staging")
        restored = owners(tmp_path / "staging" / str(app.db).lstrip("/"))
        assert restored["."] == live["."]
        for name, facts in restored.items():
            if name in live:
                assert facts == live[name], name
        assert manifest.artifacts[0].source["owner"] == {"uid": UID, "gid": GID, "mode": "0750"}
    finally:
        app.kill()


def xattrs(root) -> dict:
    """Every regular file's and the directory's xattrs (POSIX ACLs are the system.posix_acl_* ones)."""
    found = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            found[name] = {key: os.getxattr(path, key) for key in sorted(os.listxattr(path))}
    found["."] = {key: os.getxattr(root, key) for key in sorted(os.listxattr(root))}
    return found


def test_xattrs_and_acls_of_the_directory_and_its_files_restored(node, tmp_path):
    """user. xattrs, a POSIX ACL (and the directory's default ACL) set on the live RocksDB come back."""
    app = App(tmp_path / "node")
    app.start()
    try:
        app.wait_for(200)
    finally:
        app.stop()
    subprocess.run(["setfacl", "-m", "u:1234:rwx", "-m", "d:u:1234:rwx", str(app.db)], check=True)
    subprocess.run(["setfattr", "-n", "user.role", "-v", "chain-db", str(app.db)], check=True)
    sst = sorted(name for name in os.listdir(app.db) if name.endswith(".sst"))
    tagged = [sst[0] if sst else "CURRENT", "CURRENT"]
    for name in tagged:
        subprocess.run(["setfacl", "-m", "u:1234:r--", str(app.db / name)], check=True)
        subprocess.run(["setfattr", "-n", "user.origin", "-v", name, str(app.db / name)], check=True)
    live = xattrs(app.db)
    assert "system.posix_acl_default" in live["."] and "user.origin" in live["CURRENT"]
    manifest = node.backup([{"name": "chain", "type": "rocksdb", "path": str(app.db), "method": "offline"}])
    assert "system.posix_acl_default" in manifest.artifacts[0].source["owner"]["xattrs"]
    report = node.verify(deep=True)
    assert report["ok"], report["problems"]
    node.restore(tmp_path / "staging")
    restored = xattrs(tmp_path / "staging" / str(app.db).lstrip("/"))
    assert restored["."] == live["."]
    for name in tagged:
        assert restored[name] == live[name], name
