"""Restore of one asset to a path of the operator's choice (issue 16; ``litestream restore -o FILE``):
epoch_restore ``output`` for sqlite, secret (a file), files, config and rocksdb-like trees (a directory).

The module runs in its own process, as Ansible runs it, on real epochs of real data. What users rely on:
the restored data equals the original (content and metadata), an existing file is never replaced unless
forced (and then kept beside it), no link is followed at any level, nothing is written elsewhere, and
check mode walks the same path and writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from integration_helpers import plain_sha256
from safety.modrun import module

pytestmark = pytest.mark.timeout(300)


def restore(node, age_key, tmp_path, output, check_mode=False, **extra) -> dict:
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "output": str(output),
    }
    args.update(extra)
    return module("epoch_restore", args, tmp_path / "args", check_mode=check_mode)


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def meta(root: Path) -> dict:
    """Every entry under root: content digest (files), mode and mtime (ns), relative to root."""
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (
            sha256(path) if stat.S_ISREG(st.st_mode) else None,
            stat.S_IMODE(st.st_mode),
            st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None,
        )
    return found


@pytest.fixture
def two_assets(node, live_db, tmp_path):
    """An epoch with a SQLite database and a files tree (with modes and mtimes to keep)."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("alpha\n")
    (data / "b.bin").write_bytes(os.urandom(4096))
    os.chmod(data / "b.bin", 0o640)
    os.utime(data / "sub" / "a.txt", ns=(1_700_000_000_000_000_000, 1_700_000_000_123_456_789))
    manifest = node.backup(
        [
            node.sqlite_asset(live_db.path),
            {"name": "tree", "type": "files", "path": str(data), "state_dir": str(tmp_path / "state")},
        ]
    )
    return manifest, data


def test_one_sqlite_asset_to_a_file_of_your_choice(node, age_key, two_assets, tmp_path):
    manifest, _data = two_assets
    output = tmp_path / "restore" / "deep" / "app.db"  # missing directories are made
    result = ok(restore(node, age_key, tmp_path, output, artifacts=["app-db"]))
    artifact = manifest.artifact("app-db")
    assert result["output"] == str(output)
    assert [a["path"] for a in result["artifacts"]] == [str(output)]
    # the captured database, byte for byte (the manifest records no unkeyed hash of it: decrypted here)
    assert sha256(output) == plain_sha256(node.epoch_dir(manifest.epoch) / artifact.file, age_key.identity_path)
    assert result["artifacts"][0]["checks"]
    assert sorted(os.listdir(output.parent)) == ["app.db"]  # nothing else left beside it


def test_a_files_tree_to_a_directory_keeps_content_and_metadata(node, age_key, two_assets, tmp_path):
    _manifest, data = two_assets
    output = tmp_path / "tree-out"
    ok(restore(node, age_key, tmp_path, output, artifacts=["tree"]))
    assert meta(output) == meta(data)


def test_a_secret_keeps_its_private_mode(node, age_key, tmp_path):
    secret = tmp_path / "node.key"
    secret.write_text("AGE-SECRET-KEY-1TEST\n")
    secret.chmod(0o600)
    node.backup([{"name": "node-key", "type": "secret", "path": str(secret)}])
    output = tmp_path / "out" / "node.key"
    ok(restore(node, age_key, tmp_path, output))  # the epoch's only asset: no need to name it
    assert output.read_bytes() == secret.read_bytes()
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


def test_an_existing_output_is_refused_naming_the_variable_and_kept_when_forced(node, age_key, two_assets, tmp_path):
    manifest, _data = two_assets
    output = tmp_path / "app.db"
    output.write_bytes(b"precious")
    refused = restore(node, age_key, tmp_path, output, artifacts=["app-db"])
    assert refused["failed"] and "already exists" in refused["msg"]
    assert "nodekeep_restore_force" in refused["msg"] and "nodekeep_restore_output" in refused["msg"]
    assert output.read_bytes() == b"precious"
    ok(restore(node, age_key, tmp_path, output, artifacts=["app-db"], force=True))
    sealed = node.epoch_dir(manifest.epoch) / manifest.artifact("app-db").file
    assert sha256(output) == plain_sha256(sealed, age_key.identity_path)
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("app.db.nodekeep-replaced-")]
    assert kept.read_bytes() == b"precious"


@pytest.mark.parametrize("check_mode", [True, False])
def test_a_link_on_the_way_is_never_followed(node, age_key, two_assets, tmp_path, check_mode):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "via").symlink_to(outside)
    for force in (False, True):
        result = restore(node, age_key, tmp_path, tmp_path / "via" / "app.db", check_mode, artifacts=["app-db"],
                         force=force)  # fmt: skip
        assert result["failed"] and "symlink" in result["msg"], result
        assert "nodekeep_restore_output" in result["msg"]
    assert list(outside.iterdir()) == []


def test_the_output_itself_as_a_link_is_moved_aside_not_followed(node, age_key, two_assets, tmp_path):
    victim = tmp_path / "live.db"
    victim.write_bytes(b"live data")
    output = tmp_path / "out.db"
    output.symlink_to(victim)
    assert restore(node, age_key, tmp_path, output, artifacts=["app-db"])["failed"]
    ok(restore(node, age_key, tmp_path, output, artifacts=["app-db"], force=True))
    assert victim.read_bytes() == b"live data"
    assert not output.is_symlink()
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith("out.db.nodekeep-replaced-")]
    assert kept.is_symlink()


def test_check_mode_plans_the_output_and_writes_nothing(node, age_key, two_assets, tmp_path):
    output = tmp_path / "plan" / "app.db"
    result = ok(restore(node, age_key, tmp_path, output, check_mode=True, artifacts=["app-db"]))
    assert result["changed"] is True
    assert result["output"] == str(output)
    assert [a["path"] for a in result["artifacts"]] == [str(output)]
    assert not (tmp_path / "plan").exists()


def test_one_asset_only(node, age_key, two_assets, tmp_path):
    result = restore(node, age_key, tmp_path, tmp_path / "both")
    assert result["failed"]
    assert "restores one asset; 2 were selected" in result["msg"] and "nodekeep_restore_assets" in result["msg"]
    assert not (tmp_path / "both").exists()


def test_a_relative_output_is_refused(node, age_key, two_assets, tmp_path):
    result = restore(node, age_key, tmp_path, "relative/app.db", artifacts=["app-db"])
    assert result["failed"] and "not an absolute path" in result["msg"] and "nodekeep_restore_output" in result["msg"]
