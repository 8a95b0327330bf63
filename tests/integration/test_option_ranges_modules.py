"""The modules refuse out-of-range options before doing anything, naming the option as the operator typed it
(the engine's checks are in tests/unit/test_option_ranges.py)."""

from __future__ import annotations

from module_driver import run_module


def test_epoch_backup_refuses_compression_level_99_and_writes_nothing(tmp_path, age_key, signing_key):
    db = tmp_path / "app.db"
    db.write_bytes(b"")
    repository = tmp_path / "repo"
    result = run_module(
        "epoch_backup",
        {
            "node": "node1",
            "repository": str(repository),
            "assets": [{"name": "db", "type": "sqlite", "path": str(db)}],
            "recipients": [age_key.recipient],
            "signing_key": str(signing_key.path),
            "compression_level": 99,
        },
    )
    assert result["failed"] is True
    assert result["msg"].startswith("compression_level 99 is out of range: give 1 to 22"), result["msg"]
    assert not repository.exists()


def test_integrity_check_names_the_subset_as_typed(tmp_path, signing_key):
    for typed, needle in (("daily/0", "subset 'daily/0'"), ("1/99999999999999999999", "out of range")):
        result = run_module(
            "integrity_check",
            {"node": "node1", "repository": str(tmp_path), "public_key": signing_key.public_line, "subset": typed},
        )
        assert result["failed"] is True and needle in result["msg"], result["msg"]
        assert "'1/0'" not in result["msg"]


def test_sqlite_backup_refuses_absurd_busy_timeout_and_pages_per_step_and_writes_nothing(tmp_path):
    db = tmp_path / "app.db"
    db.write_bytes(b"")
    dest = tmp_path / "copy.db"
    for options, needle in (
        ({"busy_timeout": -1}, "busy_timeout -1 is out of range: give 0 to 3600000 ms"),
        ({"busy_timeout": 10**12}, "busy_timeout 1000000000000 is out of range"),
        ({"pages_per_step": 0}, "pages_per_step 0 is out of range: give 1 to 1000000 pages; or -1 for all at once"),
        ({"pages_per_step": 10**10}, "pages_per_step 10000000000 is out of range"),
    ):
        result = run_module("sqlite_backup", dict({"src": str(db), "dest": str(dest)}, **options))
        assert result["failed"] is True and result["msg"].startswith(needle), result["msg"]
        assert not dest.exists()


def test_rocksdb_checkpoint_refuses_absurd_timeouts(tmp_path):
    for options, needle in (
        ({"stop_timeout": 0}, "stop_timeout 0 is out of range: give 1 to 86400 seconds"),
        ({"command_timeout": 10**9}, "command_timeout 1000000000 is out of range"),
    ):
        args = {"path": str(tmp_path / "db"), "dest": str(tmp_path / "cp"), "method": "offline", **options}
        result = run_module("rocksdb_checkpoint", args)
        assert result["failed"] is True and needle in result["msg"], result["msg"]
        assert not (tmp_path / "cp").exists()


def test_drill_report_refuses_an_absurd_history(tmp_path):
    result = run_module(
        "drill_report",
        {"repository": str(tmp_path / "repo"), "started": 1.0, "nodes": {}, "history": -1},
    )
    assert result["failed"] is True and result["msg"].startswith("history -1 is out of range"), result["msg"]
    assert not (tmp_path / "repo").exists()
