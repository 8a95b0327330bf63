"""The owner and mode of a RocksDB directory and of each of its files come back (issue 13), whatever the
method: the application's checkpoint writes its own files (its umask, its directory mode), the offline copy
copies them; the restore gives each file the live file's owner and mode recorded at backup."""

from __future__ import annotations

import os
import stat

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
