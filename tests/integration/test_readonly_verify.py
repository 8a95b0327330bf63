"""A deep verify of a read-only repository (a read-only mount, or one this user may only read) verifies a
healthy epoch, with its scratch space in the user's private temporary directory instead of the repository."""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import contextmanager

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError


@contextmanager
def read_only(directory):
    """``directory`` as a read-only bind mount of itself (root included cannot write)."""
    directory = str(directory)
    mounted = subprocess.run(["mount", "--bind", directory, directory], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("needs root to bind-mount a directory read-only: %s" % mounted.stderr.decode().strip())
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)


def _small_db(tmp_path):
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    conn.close()
    return db


def test_deep_verify_of_a_read_only_repository_verifies_a_healthy_epoch(node, repository, tmp_path):
    manifest = node.backup([node.sqlite_asset(_small_db(tmp_path))])
    root = repository.root
    with read_only(root):
        with pytest.raises(OSError):
            open("%s/probe" % root, "w").close()  # proves the mount is read-only
        report = node.verify(deep=True)
    assert report["ok"] is True, report["problems"]
    assert report["epoch"] == manifest.epoch
    (artifact,) = report["artifacts"]
    assert artifact["deep"] == "ok" and artifact["checks"]["integrity"] == "ok"


def test_a_read_only_scratch_dir_given_explicitly_is_named_with_the_way_out(node, tmp_path, clear_error):
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    node.backup([node.sqlite_asset(db)])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with read_only(scratch), pytest.raises(NodekeepError) as caught:
        node.verify(deep=True, scratch_dir=str(scratch))
    clear_error(caught.value, str(scratch), "is not writable", "leave it unset")


def test_a_proof_the_repository_refuses_is_reported_and_the_data_still_verifies(node, repository, tmp_path):
    manifest = node.backup([node.sqlite_asset(_small_db(tmp_path), check="quick")])
    with read_only(repository.root):
        report = node.verify(deep=True, proof_key=node.signing_key.key)
    (artifact,) = report["artifacts"]
    assert report["ok"] is True and artifact["checks"]["integrity"] == "ok", report
    proof = artifact["proof"]
    assert proof["file"] == "app-db.proof.json" and proof["written"] is False and proof["error"], proof
    assert not (node.epoch_dir(manifest.epoch) / "app-db.proof.json").exists()
