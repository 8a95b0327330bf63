"""Retention only ever removes what it verified as its own: whole epoch directories that are real
directories inside the node's directory, never through a link, never outside the repository.

An attacker with write access to the repository plants links at every level retention walks: the
node directory, an epoch directory, entries inside an epoch, an object shard. The prune runs for
real (epoch_prune in its own process) and whatever the links point to must be left byte for byte.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from modrun import module

pytestmark = pytest.mark.timeout(300)


def tree_state(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def three_epochs(node, live_db):
    epochs = [node.backup([node.sqlite_asset(live_db.path)]).epoch for _run in range(3)]
    return epochs


def prune(node, tmp_path, **policy) -> dict:
    args = {"repository": node.repository.root, "node": node.name, "public_key": node.public_line}
    args.update(policy or {"keep_last": 1})
    return module("epoch_prune", args, tmp_path / "args")


def test_an_epoch_directory_replaced_by_a_link_is_never_removed_through(node, three_epochs, tmp_path):
    outside = tmp_path / "outside"
    oldest = node.epoch_dir(three_epochs[0])
    shutil.copytree(oldest, outside / three_epochs[0])  # a victim that looks exactly like an epoch
    shutil.rmtree(oldest)
    os.symlink(outside / three_epochs[0], oldest)
    before = tree_state(outside)
    result = prune(node, tmp_path)
    assert tree_state(outside) == before  # nothing outside was touched
    assert oldest.is_symlink()  # the link is left for the operator to inspect
    text = repr(result)
    assert "symlink" in text and "never goes through a link" in text, text
    assert not node.epoch_dir(three_epochs[1]).exists()  # the real epoch the policy drops is gone
    assert node.epoch_dir(three_epochs[2]).is_dir()


def test_a_node_directory_replaced_by_a_link_is_never_removed_through(node, three_epochs, tmp_path):
    outside = tmp_path / "outside-node"
    node_dir = Path(node.repository.root) / node.name
    shutil.move(str(node_dir), str(outside))
    os.symlink(outside, node_dir)
    before = tree_state(outside)
    result = prune(node, tmp_path)
    assert tree_state(outside) == before
    assert result["failed"] or result.get("errors") or "symlink" in repr(result), result
    assert "never goes through a link" in repr(result)


def test_links_inside_an_epoch_are_removed_as_links(node, three_epochs, tmp_path):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "file").write_bytes(b"keep me")
    (victim / "sub" / "deep").write_bytes(b"keep me too")
    oldest = node.epoch_dir(three_epochs[0])
    os.symlink(victim / "file", oldest / "extra")
    os.symlink(victim / "sub", oldest / "subdir")
    before = tree_state(victim)
    result = prune(node, tmp_path)
    assert not result.get("failed"), result
    assert not oldest.exists() and not oldest.is_symlink()
    assert tree_state(victim) == before


def test_an_object_shard_replaced_by_a_link_is_never_collected_through(node, three_epochs, tmp_path):
    """Garbage collection of unreferenced objects never unlinks through a planted shard link."""
    victim = tmp_path / "victim-shard"
    victim.mkdir()
    name = "ab" + "0" * 62
    (victim / name).write_bytes(b"not an object of this repository")
    old = time.time() - 30 * 86400
    os.utime(victim / name, (old, old))  # old enough to be collected
    objects = Path(node.repository.root) / node.name / "objects"
    objects.mkdir()
    os.symlink(victim, objects / "ab")
    before = tree_state(victim)
    prune(node, tmp_path)
    assert tree_state(victim) == before
