"""snapshot/base.py: snapshot names carry their epoch, and a restored tree is compared with its snapshot
file by file (type, mode, owner, size, mtime, content, link target) or by the counts the manifest recorded."""

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import base

EPOCH = "20261122T101500Z"


class TestNames:
    def test_round_trip(self):
        name = base.snapshot_name("nodekeep", EPOCH)
        assert name == "nodekeep-" + EPOCH and base.name_epoch("nodekeep", name) == EPOCH

    @pytest.mark.parametrize("name", ["other-" + EPOCH, "nodekeep-latest", "nodekeep-2026", "nodekeep"])
    def test_not_ours(self, name):
        assert base.name_epoch("nodekeep", name) is None

    @pytest.mark.parametrize("prefix", ["", "-x", "a b", "a/b", "x" * 65])
    def test_bad_prefix(self, prefix):
        with pytest.raises(base.SnapshotError, match="snapshot prefix"):
            base.snapshot_name(prefix, EPOCH)

    def test_bad_epoch(self):
        with pytest.raises(Exception, match="latest"):
            base.snapshot_name("nodekeep", "latest")

    def test_group_name_is_not_a_snapshot_name(self):
        group = base.group_name("nodekeep", EPOCH)
        assert (
            group.startswith("nodekeep-") and group.endswith(EPOCH) and group != base.snapshot_name("nodekeep", EPOCH)
        )


def test_pid_alive():
    assert base.pid_alive(os.getpid()) and not base.pid_alive(0) and not base.pid_alive(-1)


def make_tree(root):
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"hello")
    (root / "big.bin").write_bytes(os.urandom(1000))
    (root / "link").symlink_to("d/f.txt")
    os.utime(root / "d" / "f.txt", (1_700_000_000, 1_700_000_000))
    return root


def same_size_other_bytes(tree):
    """The same size, mode, owner and mtime: only the content tells."""
    (tree / "d" / "f.txt").write_bytes(b"HELLO")
    os.utime(tree / "d" / "f.txt", (1_700_000_000, 1_700_000_000))


class TestTrees:
    def test_stats(self, tmp_path):
        tree = make_tree(tmp_path / "t")
        assert base.tree_stats(str(tree)) == {"files": 2, "directories": 2, "symlinks": 1, "other": 0, "bytes": 1005}

    def test_equal_copies(self, tmp_path):
        a = make_tree(tmp_path / "a")
        b = tmp_path / "b"
        shutil.copytree(a, b, symlinks=True)
        assert base.compare_trees(str(a), str(b))["files"] == 2

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            (same_size_other_bytes, "has other content"),
            (lambda b: os.chmod(b / "d" / "f.txt", 0o600), "differs"),
            (lambda b: (b / "extra").write_text("x"), "extra is extra"),
            (lambda b: os.unlink(b / "big.bin"), "big.bin is missing"),
            (lambda b: (os.unlink(b / "link"), (b / "link").symlink_to("elsewhere")), "link differs"),
        ],
    )
    def test_differences_are_named(self, tmp_path, change, words):
        a = make_tree(tmp_path / "a")
        os.chmod(a / "d" / "f.txt", 0o644)
        b = tmp_path / "b"
        shutil.copytree(a, b, symlinks=True)
        change(b)
        with pytest.raises(IntegrityError, match=words):
            base.compare_trees(str(a), str(b))

    def test_counts_against_the_manifest(self, tmp_path):
        tree = make_tree(tmp_path / "t")
        recorded = base.tree_stats(str(tree))
        assert base.compare_counts(str(tree), recorded) == recorded
        (tree / "new").write_text("x")
        with pytest.raises(IntegrityError, match="has 3 files, the manifest says 2"):
            base.compare_counts(str(tree), recorded)
