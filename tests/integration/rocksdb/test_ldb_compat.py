"""Format compatibility with the node's own, older RocksDB: Debian's ``ldb`` 7.8.3 (rocksdb-tools).

A DB written by ldb 7.8.3 (format_version 5, three column families, binary values, a delete, and its
last writes still only in the WAL) is backed up with method ``offline`` (verified by rocksdict's newer
RocksDB, read-only, through a view), restored, and opened and scanned by ldb 7.8.3 again: the content
is identical and the restored files are byte-for-byte the ones ldb wrote.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.timeout(300)


def run_ldb(ldb, db, *args, family=None) -> str:
    argv = [ldb, "--db=%s" % db]
    if family:
        argv.append("--column_family=%s" % family)
    out = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, "%s: %s %s" % (" ".join(argv + list(args)), out.stdout, out.stderr)
    return out.stdout


def scan_all(ldb, db) -> dict:
    return {family: run_ldb(ldb, db, "--hex", "scan", family=family) for family in ("default", "blocks", "state")}


def make_ldb_db(ldb, db) -> None:
    run_ldb(ldb, db, "--create_if_missing", "put", "genesis", "0")
    run_ldb(ldb, db, "create_column_family", "blocks")
    run_ldb(ldb, db, "create_column_family", "state")
    pairs = []
    for i in range(400):
        pairs += ["0x%08x" % i, "0x" + (bytes([i % 256, 0, 255]) * 20).hex()]
    run_ldb(ldb, db, "--hex", "batchput", *pairs, family="blocks")
    run_ldb(ldb, db, "batchput", *[item for i in range(300) for item in ("acct%04d" % i, "balance=%d" % (i * 7))])
    run_ldb(ldb, db, "put", "root", "abc", family="state")
    run_ldb(ldb, db, "put", "tmp", "gone soon", family="state")
    run_ldb(ldb, db, "delete", "tmp", family="state")
    # the last write stays in the WAL (ldb recovers it into an SST only on the next open)
    run_ldb(ldb, db, "put", "height", "401", family="state")


def test_a_db_written_by_ldb_round_trips_to_ldb(ldb, node, tmp_path, tree):
    db = tmp_path / "srv" / "guts" / "db"
    db.parent.mkdir(parents=True)
    make_ldb_db(ldb, str(db))
    assert any(name.endswith(".log") and os.path.getsize(db / name) > 0 for name in os.listdir(db))
    # what ldb itself reads, from a throwaway copy (ldb opens read-write: it would flush the WAL)
    reference_copy = tmp_path / "reference"
    shutil.copytree(db, reference_copy)
    reference = scan_all(ldb, str(reference_copy))
    assert "0x726F6F74 : 0x616263" in reference["state"] and "746D70" not in reference["state"]

    before = tree(db)
    manifest = node.backup(
        [{"name": "guts-db", "type": "rocksdb", "path": str(db), "method": "offline", "count_keys": True}]
    )
    assert tree(db) == before  # the node's DB was not touched
    facts = manifest.artifacts[0].source
    assert facts["rocksdb_version"] == "7.8.3"
    assert facts["format_version"] == 5
    assert sorted(facts["column_families"]) == ["blocks", "default", "state"]
    assert facts["keys"] == {"default": 301, "blocks": 400, "state": 2}

    result = node.restore(tmp_path / "restore")
    restored = result["artifacts"][0]["path"]
    assert tree(restored) == before  # byte for byte what ldb wrote: no rocksdict file, nothing rewritten
    assert "rocksdict-config.json" not in os.listdir(restored)
    families = run_ldb(ldb, restored, "list_column_families")
    assert "blocks" in families and "state" in families
    assert scan_all(ldb, restored) == reference
    run_ldb(ldb, restored, "checkconsistency")


def test_ldb_reads_a_copy_verified_while_ldb_db_is_closed_with_try_load_options_false(ldb, node, tmp_path):
    """The environment note: a DB is opened by ldb with --try_load_options=false as well."""
    db = tmp_path / "db"
    make_ldb_db(ldb, str(db))
    node.backup([{"name": "db", "type": "rocksdb", "path": str(db), "method": "offline"}])
    restored = node.restore(tmp_path / "restore")["artifacts"][0]["path"]
    out = run_ldb(ldb, restored, "--try_load_options=false", "get", "height", family="state")
    assert out.strip() == "401"
