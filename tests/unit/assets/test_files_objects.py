"""assets/_files_objects: a files epoch rebuilds the tree with everything the walk recorded (content, modes,
owners, ns mtimes, links, hard links, a FIFO, xattrs, holes), reading each pack once even when the packs it
holds in memory are bounded; a damaged object is refused naming it and the path, and nothing is placed;
an index that is damaged (two facts for one pack, an unknown entry) is refused.

Real trees, real age and a directory repository, through the epoch flow (``epochs`` fixture); the index
refusals on hand-written index lines, as the capture writes them.
"""

from __future__ import annotations

import json
import os

import pytest
from tree_helpers import make_tree, snapshot

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_index
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_objects as objects
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    NodekeepError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository


def files_asset(root, tmp_path) -> dict:
    return {"name": "tree", "type": "files", "path": str(root), "state_dir": str(tmp_path / "state")}


def write_index(path, lines) -> None:
    """Index lines written compact, as the capture writes them."""
    path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))


def many_small_files(root, count: int, size: int = 3000) -> None:
    """``count`` files of distinct random content (each a pack member) in two directories."""
    for n in range(count):
        folder = root / ("d%d" % (n % 2))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ("f%04d" % n)).write_bytes(os.urandom(size))


def test_the_rebuilt_tree_holds_everything_the_walk_recorded(epochs, tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    os.setxattr(root / "a.txt", "user.origin", b"unit test")
    with open(root / "sparse.img", "wb") as handle:
        handle.truncate(4 << 20)
        handle.seek(1 << 20)
        handle.write(b"z" * 8192)
    many_small_files(root / "many", 30)
    manifest = epochs.backup([files_asset(root, tmp_path)])
    restored = epochs.restored(epochs.restore(manifest), root)
    assert snapshot(restored) == snapshot(root)  # content, modes, set-id bits, owners, ns mtimes, links, FIFO
    assert os.getxattr(restored / "a.txt", "user.origin") == b"unit test"
    assert os.stat(restored / "a.txt").st_ino == os.stat(restored / "hard.txt").st_ino  # one inode again
    assert (restored / "sparse.img").stat().st_blocks * 512 < 1 << 20


def test_members_of_interleaved_packs_are_filled_when_memory_holds_one_pack(epochs, tmp_path, monkeypatch):
    root = tmp_path / "src"
    root.mkdir()
    for n in range(0, 200, 2):
        (root / ("f%04d" % n)).write_bytes(os.urandom(3000))
    asset = files_asset(root, tmp_path)
    epochs.backup([asset])  # the even files: pack A
    for n in range(1, 200, 2):
        (root / ("f%04d" % n)).write_bytes(os.urandom(3000))
    second = epochs.backup([asset])  # the odd files: pack B; in walk order the members alternate A, B, A, B ...
    work = second.artifact("tree").source["objects"]
    assert work["new_packs"] == 1 and work["unchanged"] == 100
    assert snapshot(epochs.restored(epochs.restore(second), root)) == snapshot(root)
    # held packs bounded to one byte: A is dropped when B is taken; A's later members are created empty and
    # filled by one more read of A at the end (fill_packs); the tree is the same
    monkeypatch.setattr(objects, "HOLD_BYTES", 1)
    assert snapshot(epochs.restored(epochs.restore(second), root)) == snapshot(root)


def test_a_damaged_object_is_refused_naming_it_and_nothing_is_placed(epochs, tmp_path):
    root = tmp_path / "src"
    many_small_files(root, 5)
    (root / "large.bin").write_bytes(os.urandom(300000))
    manifest = epochs.backup([files_asset(root, tmp_path)])
    objects_dir = epochs.repository.root + "/node1"
    stored = [os.path.join(d, f) for d, _s, files in os.walk(objects_dir) for f in files if "objects" in d]
    assert len(stored) == 2  # one pack, one object of its own
    for path in stored:
        data = bytearray(open(path, "rb").read())  # noqa: SIM115 - read whole, closed by refcount
        data[-100] ^= 1
        os.chmod(path, 0o600)
        with open(path, "wb") as handle:
            handle.write(data)
    with pytest.raises(NodekeepError, match="object .* of (large.bin|d[01]/f000[0-4])") as raised:
        epochs.restore(manifest)
    assert "restore another epoch" in raised.value.remedy or "do not trust" in raised.value.remedy
    staging = tmp_path / ("restore-%d" % epochs.restores)
    assert not epochs.restored(staging, root).exists()  # nothing placed at the target


def test_a_pack_given_two_sizes_by_the_index_is_refused(tmp_path):
    pack = "ab" * 32
    lines = [{"format": _files_index.INDEX_FORMAT}, {"path": ".", "type": "dir", "mode": 0o755, "mtime_ns": 0}]
    for n, sealed_size in ((1, 500), (2, 501)):
        lines.append({"path": "f%d" % n, "type": "file", "mode": 0o644, "mtime_ns": 0, "size": 4, "sha256": "0" * 64,
                      "object": pack, "offset": 4 * n, "sealed_size": sealed_size, "sealed_sha256": "1" * 64})  # fmt: skip
    index = tmp_path / "index.jsonl"
    write_index(index, lines)
    with pytest.raises(IntegrityError, match="two sizes or checksums for pack"):
        objects.rebuild_tree(str(index), str(tmp_path / "out"), LocalRepository(str(tmp_path / "repo")), "node1", [])
    lines[3]["sealed_size"] = 500
    write_index(index, lines)
    plan = objects._PackPlan(str(index))
    assert plan.order == [pack] and plan.remaining == {pack: 2} and plan.end == {pack: 12}


def test_an_entry_of_unknown_type_is_refused(tmp_path):
    lines = [
        {"format": _files_index.INDEX_FORMAT},
        {"path": ".", "type": "dir", "mode": 0o755, "mtime_ns": 0},
        {"path": "dev", "type": "chardev", "mode": 0o644, "mtime_ns": 0},
    ]
    index = tmp_path / "index.jsonl"
    write_index(index, lines)
    with pytest.raises(RestoreError, match="unknown type 'chardev'"):
        objects.rebuild_tree(str(index), str(tmp_path / "out"), LocalRepository(str(tmp_path / "repo")), "node1", [])


def test_a_pack_is_kept_only_up_to_what_the_index_needs():
    sink = objects._PrefixSink(10)
    assert sink.write(b"0123456") == 7 and sink.write(b"789abcdef") == 9
    assert bytes(sink.getvalue()) == b"0123456789"


def test_sync_filesystem_syncs_a_directory_and_names_a_missing_one(tmp_path):
    objects.sync_filesystem(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        objects.sync_filesystem(str(tmp_path / "gone"))
