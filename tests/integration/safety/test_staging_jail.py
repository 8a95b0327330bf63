"""Staging is a jail: a restore never reads or writes through a link it did not create, at any level
of the staging path or of the target path, with or without force.

The attacker owns the staging host's tree (a drill's staging host, a shared /var/tmp): before the
restore runs, links are planted at every level of the path a restore walks. The restore runs for real
(epoch_restore in its own process); what the links point to (the live database among them) must be
left byte for byte and inode for inode, and the refusal must name the link.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from integration_helpers import plain_sha256
from modrun import module

pytestmark = pytest.mark.timeout(300)


def state(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.is_symlink(), p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def restore(node, age_key, dest: Path, tmp_path: Path, **extra) -> dict:
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "dest": str(dest),
    }
    args.update(extra)
    return module("epoch_restore", args, tmp_path / "args")


def refused(result: dict, link: Path) -> None:
    assert result.get("failed"), result
    assert "symlink" in result["msg"] and str(link.name) in result["msg"], result["msg"]
    assert "never" in result["msg"] and "link" in result["msg"], result["msg"]


@pytest.fixture
def sqlite_epoch(node, live_db):
    return node.backup([node.sqlite_asset(live_db.path)])


def staged(dest: Path, source: Path) -> Path:
    return dest / str(source).lstrip("/")


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_link_at_any_directory_level_of_the_target_is_refused(node, live_db, sqlite_epoch, age_key, tmp_path, force):
    """Each directory between the staging root and the restored file, in turn, is a planted link."""
    outside = tmp_path / "outside"
    levels = Path(str(live_db.path).lstrip("/")).parent.parts
    for depth in range(1, len(levels) + 1):
        dest = tmp_path / ("staging-%d" % depth)
        link = dest.joinpath(*levels[:depth])
        aim = outside / str(depth)
        aim.mkdir(parents=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(aim, link)
        before = state(outside)
        result = restore(node, age_key, dest, tmp_path, force=force)
        refused(result, link)
        assert state(outside) == before, "the restore wrote through the link at depth %d" % depth


def test_force_never_replaces_the_live_database_through_a_link(node, live_db, sqlite_epoch, age_key, tmp_path):
    """The reported case: the staged directory of the DB is a link to the live directory; force: true."""
    dest = tmp_path / "staging"
    live_dir = Path(live_db.path).parent
    link = staged(dest, live_dir)
    link.parent.mkdir(parents=True)
    os.symlink(live_dir, link)
    before = state(live_dir)
    result = restore(node, age_key, dest, tmp_path, force=True)
    refused(result, link)
    assert state(live_dir) == before  # same inode, same bytes, no .nodekeep-replaced file


def test_a_link_above_the_staging_root_is_refused(node, sqlite_epoch, age_key, tmp_path):
    """nodekeep_restore_to under a directory someone else made a link (e.g. in /var/tmp)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tmp_path / "shared-tmp"
    os.symlink(outside, link)
    result = restore(node, age_key, link / "nodekeep-drill" / "node1", tmp_path)
    refused(result, link)
    assert list(outside.iterdir()) == []


def test_the_final_target_as_a_link_to_live_data_is_never_followed(node, live_db, sqlite_epoch, age_key, tmp_path):
    """force moves a link found at the target aside as a link; what it points to is untouched."""
    dest = tmp_path / "staging"
    target = staged(dest, live_db.path)
    target.parent.mkdir(parents=True)
    os.symlink(live_db.path, target)
    live_dir = Path(live_db.path).parent
    before = state(live_dir)
    plain = restore(node, age_key, dest, tmp_path)
    assert plain["failed"] and "already exists" in plain["msg"]
    result = restore(node, age_key, dest, tmp_path, force=True)
    assert not result.get("failed"), result
    assert state(live_dir) == before
    (artifact,) = sqlite_epoch.artifacts
    assert not target.is_symlink()
    sealed = node.epoch_dir(sqlite_epoch.epoch) / artifact.file
    assert hashlib.sha256(target.read_bytes()).hexdigest() == plain_sha256(sealed, age_key.identity_path)
    (kept,) = [p for p in target.parent.iterdir() if ".nodekeep-replaced-" in p.name]
    assert kept.is_symlink()


def test_a_tree_restore_is_jailed_too(node, tmp_path, age_key):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "f.txt").write_text("content\n")
    node.backup([{"name": "da", "type": "files", "path": str(data), "state_dir": str(tmp_path / "state")}])
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "staging"
    link = staged(dest, data.parent)
    link.parent.mkdir(parents=True)
    os.symlink(outside, link)
    for force in (False, True):
        result = restore(node, age_key, dest, tmp_path, force=force)
        refused(result, link)
        assert list(outside.iterdir()) == []
    os.unlink(link)
    result = restore(node, age_key, dest, tmp_path)
    assert not result.get("failed"), result
    assert (staged(dest, data) / "sub" / "f.txt").read_text() == "content\n"


def test_missing_directories_above_the_staging_root_are_made(node, live_db, sqlite_epoch, age_key, tmp_path):
    """As os.makedirs did: a drill's staging root DRILLS/ID/NODE whose parents do not exist yet."""
    dest = tmp_path / "drills" / "20260101T000000Z" / "node1"
    result = restore(node, age_key, dest, tmp_path)
    assert not result.get("failed"), result
    assert staged(dest, live_db.path).is_file()


def test_check_mode_walks_the_staging_path_as_the_real_run_does(node, live_db, sqlite_epoch, age_key, tmp_path):
    """Check mode never follows a link either: a planted directory link is refused, not planned through.

    Before, check mode tested only the final name with lexists (the kernel followed every link above it),
    so it said "would restore" into the link's target where the real run refuses.
    """
    outside = tmp_path / "outside"
    levels = Path(str(live_db.path).lstrip("/")).parent.parts
    for depth in (1, len(levels)):
        dest = tmp_path / ("staging-%d" % depth)
        link = dest.joinpath(*levels[:depth])
        aim = outside / str(depth)
        aim.mkdir(parents=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(aim, link)
        for force in (False, True):
            result = module(
                "epoch_restore",
                {
                    "repository": node.repository.root,
                    "node": node.name,
                    "public_key": node.public_line,
                    "identity_files": [str(age_key.identity_path)],
                    "dest": str(dest),
                    "force": force,
                },
                tmp_path / "args",
                check_mode=True,
            )
            refused(result, link)
    # A dangling link as the final name is a taken target in check mode as for real (lstat, not followed).
    dest = tmp_path / "staging-dangling"
    target = staged(dest, live_db.path)
    target.parent.mkdir(parents=True)
    os.symlink(tmp_path / "nowhere", target)
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "dest": str(dest),
    }
    planned = module("epoch_restore", args, tmp_path / "args", check_mode=True)
    assert planned.get("failed") and "already exists" in planned["msg"], planned
    assert [p for p in outside.rglob("*") if not p.is_dir()] == []  # nothing was written through a link


def test_point_in_time_check_mode_refuses_a_link_to_the_output(node, live_db, sqlite_epoch, age_key, tmp_path):
    """A point-in-time restore's check mode walks its output's directory too (it checked nothing before)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tmp_path / "out"
    os.symlink(outside, link)
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "artifacts": ["app-db"],
        "point_in_time": "latest",
        "output": str(link / "restored.db"),
    }
    for check_mode in (True, False):
        result = module("epoch_restore", args, tmp_path / "args", check_mode=check_mode)
        refused(result, link)
    assert list(outside.iterdir()) == []
