"""Module rocksdb_checkpoint, driven through main() as Ansible runs it, on a live RocksDB of another process."""

from __future__ import annotations

import os
import sys

import pytest
from integration_helpers import read_rocksdb
from module_driver import failed, run_module, succeeded
from rdbhelpers import APP, assert_consistent

pytestmark = pytest.mark.timeout(300)


def checkpoint(args: dict, check_mode: bool = False) -> dict:
    return run_module("rocksdb_checkpoint", args, check_mode=check_mode)


def by_command(app, dest) -> dict:
    """The module's arguments for a checkpoint of ``app`` at ``dest`` by the service's own checkpoint command."""
    return {
        "path": str(app.db),
        "dest": str(dest),
        "method": "checkpoint_command",
        "checkpoint_command": " ".join([sys.executable, APP, "checkpoint", str(app.state), "{dest}"]),
    }


def test_check_mode_touches_nothing(rocks_app, tmp_path, tree):
    app = rocks_app
    dest = tmp_path / "copy"
    pid = app.pid
    before = sorted(os.listdir(tmp_path))
    result = succeeded(
        checkpoint(
            {
                "path": str(app.db),
                "dest": str(dest),
                "method": "stop",
                "stop_command": app.stop_command,
                "start_command": app.start_command,
            },
            check_mode=True,
        )
    )
    assert result["changed"] is True and result["method"] == "stop"
    assert "stop the service" in result["would"] and result["hard_links"] is True
    assert app.pid == pid and app.running()  # nothing was stopped
    assert sorted(os.listdir(tmp_path)) == before  # nothing was written

    # check mode already refuses what the real run would refuse
    failed(
        checkpoint({"path": str(app.db), "dest": str(dest), "method": "offline"}, check_mode=True),
        "holds its LOCK",
        str(pid),
    )
    failed(
        checkpoint({"path": str(app.state), "dest": str(dest), "method": "offline"}, check_mode=True),
        "not a RocksDB directory",
    )


def test_checkpoint_command_then_refusal_then_force(rocks_app, tmp_path):
    app = rocks_app
    dest = tmp_path / "copy"
    args = dict(by_command(app, dest), count_keys=True)
    result = succeeded(checkpoint(args))
    assert result["changed"] is True and result["replaced"] is False
    assert result["dest"] == str(dest) and result["checkpoint_seconds"] > 0
    assert sorted(result["column_families"]) == ["accounts", "blocks", "default", "meta"]
    contents = read_rocksdb(dest)
    assert assert_consistent(contents) == app.last_checkpoint()
    assert result["key_counts"] == {family: len(data) for family, data in contents.items()}
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []

    inode = os.stat(dest / "CURRENT").st_ino
    message = failed(checkpoint(args), "already exists", str(dest))
    assert "force" in message
    assert os.stat(dest / "CURRENT").st_ino == inode  # untouched

    again = succeeded(checkpoint(dict(args, force=True)))
    assert again["replaced"] is True
    assert assert_consistent(read_rocksdb(dest)) == app.last_checkpoint()
    assert sorted(name for name in os.listdir(tmp_path) if "nodekeep" in name) == []


def test_stop_and_offline_through_the_module(rocks_app, tmp_path):
    app = rocks_app
    result = succeeded(
        checkpoint(
            {
                "path": str(app.db),
                "dest": str(tmp_path / "cold"),
                "method": "stop",
                "stop_command": app.stop_command,
                "start_command": app.start_command,
            }
        )
    )
    assert result["stop_seconds"] > 0 and result["linked"] > 0
    assert app.running()
    assert assert_consistent(read_rocksdb(tmp_path / "cold")) == int((app.state / "final.json").read_text())

    final = app.stop()
    result = succeeded(checkpoint({"path": str(app.db), "dest": str(tmp_path / "offline"), "method": "offline"}))
    assert "stop_seconds" not in result and result["files"] > 0
    assert assert_consistent(read_rocksdb(tmp_path / "offline")) == final


def test_bad_arguments(rocks_app, tmp_path):
    app = rocks_app
    failed(
        checkpoint({"path": str(app.db), "dest": str(tmp_path / "x"), "method": "checkpoint_command"}),
        "checkpoint_command",
    )
    failed(
        checkpoint({"path": str(app.db), "dest": str(app.db / "inside"), "method": "offline"}),
        "inside the RocksDB directory",
    )
    failed(
        checkpoint(
            {"path": str(app.db), "dest": str(tmp_path / "no" / "parent"), "method": "stop", "service": "chain"}
        ),
        "does not exist",
    )
    failed(
        checkpoint(
            {
                "path": str(app.db),
                "dest": str(tmp_path / "x"),
                "method": "checkpoint_command",
                "checkpoint_command": [sys.executable, APP, "fail", "{dest}"],
            }
        ),
        "exit code 3",
        "disk on fire",
    )
    assert [name for name in os.listdir(tmp_path) if name not in ("node",)] == []
    assert app.running()


def test_diff_names_the_checkpoint_directory_and_its_files(rocks_app, tmp_path):
    """--diff (issue 16): dest absent before, then a directory listed by entry names and sizes; in check mode
    what it would become, and nothing written."""
    app = rocks_app
    dest = tmp_path / "copy"
    args = dict(by_command(app, dest), _ansible_diff=True)
    planned = succeeded(checkpoint(args, check_mode=True))
    [item] = planned["diff"]
    assert item["before_header"] == str(dest) and item["before"] == "absent\n"
    assert item["after"] == "(check mode) would be a directory: a checkpoint of the RocksDB %s (method %s)\n" % (
        app.db,
        "checkpoint_command",
    )
    assert not dest.exists()
    made = succeeded(checkpoint(args))
    [item] = made["diff"]
    assert item["before"] == "absent\n" and item["after"].startswith("directory, mode ")
    assert "  CURRENT: file, %d bytes, mode " % os.path.getsize(dest / "CURRENT") in item["after"]
    assert ", %d entries\n" % len(os.listdir(dest)) in item["after"]
