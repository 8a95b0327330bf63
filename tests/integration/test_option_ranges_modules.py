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
