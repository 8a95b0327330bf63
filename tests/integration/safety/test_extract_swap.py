"""A directory of a tree restore swapped for a link while the restore runs is never written through.

The whole engine runs (backup, then restore_epoch of a real epoch); the attacker, who can write into the
staging host's tree, swaps a directory the restore has just made for a link to a directory outside staging.
The swap runs at a fixed point of the restore (inside the step that fills packed files, or right before
directory modes and mtimes are applied), so the race is deterministic. What the link points to must stay
byte for byte, mode for mode; the restore must refuse and place nothing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_objects
from ansible_collections.nodekeep.backup.plugins.module_utils.core import extract
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

pytestmark = pytest.mark.timeout(120)

STAMP = 981173106_000000000


def state(root: Path) -> dict:
    found = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, info.st_ino, content)
    return found


@pytest.fixture
def tree(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "f.txt").write_text("restored content\n")
    os.chmod(data / "sub", 0o751)
    return data


@pytest.fixture
def outside(tmp_path):
    """A directory like the one swapped, outside staging: the same file name, precious content."""
    root = tmp_path / "outside"
    root.mkdir(mode=0o700)
    (root / "f.txt").write_text("precious, not restored\n")
    os.chmod(root / "f.txt", 0o600)
    for path in (root / "f.txt", root):
        os.utime(path, ns=(STAMP, STAMP))
    return root


def swap_in(staging: Path, data: Path, outside: Path) -> None:
    """Find the restore's hidden directory beside the target and swap its ``sub`` for a link to ``outside``."""
    parent = staging / str(data.parent).lstrip("/")
    (temp,) = [p for p in parent.iterdir() if p.name.startswith(".data.nodekeep-") and p.is_dir()]
    os.rename(temp / "sub", temp / "sub.moved")
    os.symlink(str(outside), temp / "sub")


def restore_refused(node, staging: Path, data: Path, outside: Path, before: dict) -> None:
    with pytest.raises(NodekeepError) as excinfo:
        node.restore(staging)
    assert state(outside) == before, "the restore wrote through the swapped directory"
    assert "replaced or moved" in excinfo.value.problem and "link" in excinfo.value.remedy
    assert not (staging / str(data).lstrip("/")).exists(), "a tree was placed"


def test_files_restore_fills_no_packed_file_through_a_swapped_directory(node, tree, outside, tmp_path, monkeypatch):
    node.backup([{"name": "da", "type": "files", "path": str(tree), "state_dir": str(tmp_path / "state")}])
    before = state(outside)
    staging = tmp_path / "staging"
    fill = _files_objects._ObjectExtractor.fill_packs

    def attacker(self, reader):
        swap_in(staging, tree, outside)
        return fill(self, reader)

    monkeypatch.setattr(_files_objects._ObjectExtractor, "fill_packs", attacker)
    restore_refused(node, staging, tree, outside, before)


@pytest.mark.parametrize("kind", ["config", "secret"])
def test_tar_restore_sets_no_mode_through_a_swapped_directory(node, tree, outside, tmp_path, monkeypatch, kind):
    node.backup([{"name": "da", "type": kind, "path": str(tree)}])
    before = state(outside)
    staging = tmp_path / "staging"
    finish = extract.Extractor.finish

    def attacker(self):
        swap_in(staging, tree, outside)
        return finish(self)

    monkeypatch.setattr(extract.Extractor, "finish", attacker)
    restore_refused(node, staging, tree, outside, before)
