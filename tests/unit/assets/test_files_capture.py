"""assets/_files_capture: the files asset's walk records every entry a restore needs (and names what it
skips or cannot keep), honours include and exclude, packs small files once per content, and on a later
epoch opens only what changed: an unchanged file is known by its inode, size, mtime and ctime, an
``immutable`` one (RocksDB's SSTs) even when a hard link changed its ctime; an untrusted cache means every
file is read again.

Real trees on the test's file system (xattrs, holes, hard links, a FIFO, a socket), real age and a
directory repository, through the epoch flow (``epochs`` fixture).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
from tree_helpers import make_tree, snapshot

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_capture as capture
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_index
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_content import encode_entry
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository


def files_asset(root, state, **options) -> dict:
    return dict({"name": "tree", "type": "files", "path": str(root), "state_dir": str(state)}, **options)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    return root


def facts_of(manifest) -> dict:
    return manifest.artifact("tree").source


def test_the_walk_counts_every_kind_and_names_what_it_skips(epochs, tree, tmp_path):
    os.symlink("/etc/passwd", tree / "outside")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tree / "app.sock"))
    try:
        facts = facts_of(epochs.backup([files_asset(tree, tmp_path / "state")]))
    finally:
        listener.close()
    entries = facts["entries"]
    # a.txt, secret, sub/big.bin (hard.txt is a hard link of a.txt); sub, sub/deep, empty; two links + outside; fifo
    assert (entries["files"], entries["hardlinks"], entries["directories"]) == (3, 1, 3)
    assert (entries["symlinks"], entries["other"]) == (3, 1)
    assert facts["skipped"] == [{"path": "app.sock", "reason": "socket"}]
    assert facts["outside_links"] == [{"path": "outside", "target": "/etc/passwd"}]
    assert entries["bytes"] == sum(p.stat().st_size for p in (tree / "a.txt", tree / "secret", tree / "sub/big.bin"))


def test_include_and_exclude_select_entries_and_keep_their_parents(epochs, tree, tmp_path):
    (tree / "sub" / "deep" / "keep.log").write_text("kept\n")
    (tree / "sub" / "deep" / "drop.tmp").write_text("dropped\n")
    manifest = epochs.backup([files_asset(tree, tmp_path / "state", include=["sub/deep/*"], exclude=["*.tmp"])])
    facts = facts_of(manifest)
    assert facts["entries"]["excluded"] == 1 and facts["include"] == ["sub/deep/*"]
    restored = epochs.restored(epochs.restore(manifest), tree)
    found = sorted(str(p.relative_to(restored)) for p in restored.rglob("*"))
    assert found == ["sub", "sub/deep", "sub/deep/keep.log"]  # the parents of what was included, nothing else
    assert (restored / "sub").stat().st_mode & 0o7777 == 0o1777  # a parent keeps its own mode


def test_small_files_are_packed_once_per_content_and_a_large_one_is_its_own_object(epochs, tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    for n in range(40):
        (root / ("f%02d" % n)).write_bytes(b"content %d\n" % (n % 8) * 100)  # 8 distinct contents
    (root / "large.bin").write_bytes(os.urandom(capture.PACK_MEMBER_MAX + 1))
    facts = facts_of(epochs.backup([files_asset(root, tmp_path / "state")]))["objects"]
    assert facts["packed_files"] == 8  # each content stored once, in a pack
    assert facts["new_packs"] == 1 and facts["new_objects"] == 2  # one pack, one object of its own
    assert facts["read"] == 41


def test_a_later_epoch_opens_only_what_changed_and_restores_it(epochs, tree, tmp_path):
    (tree / "x.dat").write_bytes(b"x" * 5000)
    asset = files_asset(tree, tmp_path / "state")
    first = epochs.backup([asset])
    files = facts_of(first)["entries"]["files"]
    same = facts_of(epochs.backup([asset]))["objects"]
    assert same["unchanged"] == files and same["read"] == 0 and same["new_objects"] == 0
    (tree / "a.txt").write_bytes(b"changed content\n")  # content
    os.setxattr(tree / "x.dat", "user.tag", b"blue")  # only the ctime says so
    again = epochs.backup([asset])
    work = facts_of(again)["objects"]
    assert work["read"] == 2 and work["unchanged"] == files - 2
    restored = epochs.restored(epochs.restore(again), tree)
    assert snapshot(restored) == snapshot(tree)
    assert os.getxattr(restored / "x.dat", "user.tag") == b"blue"


def test_an_immutable_file_relinked_is_not_read_again(epochs, tmp_path):
    root = tmp_path / "db"
    root.mkdir()
    (root / "000012.sst").write_bytes(os.urandom(300000))
    (root / "MANIFEST-000001").write_bytes(b"m" * 100)
    asset = files_asset(root, tmp_path / "state", immutable=["*.sst"])
    epochs.backup([asset])
    os.link(root / "000012.sst", tmp_path / "checkpoint-link")  # what a RocksDB checkpoint does: the ctime moves
    os.unlink(tmp_path / "checkpoint-link")
    kept = facts_of(epochs.backup([asset]))["objects"]
    assert kept["read"] == 0 and kept["unchanged"] == 2
    os.link(root / "000012.sst", tmp_path / "checkpoint-link")
    plain = facts_of(epochs.backup([files_asset(root, tmp_path / "state")]))["objects"]
    assert plain["read"] == 1 and plain["unchanged"] == 1  # without immutable a changed ctime means: read it


def test_a_cached_index_that_does_not_match_its_epoch_is_not_trusted(epochs, tree, tmp_path):
    state = tmp_path / "state"
    asset = files_asset(tree, state)
    epochs.backup([asset])
    cached = [p for p in state.rglob("*") if p.is_file() and "index" in p.name]
    assert cached
    for path in cached:
        path.write_bytes(path.read_bytes() + b"\n")
    again = facts_of(epochs.backup([asset]))
    assert again["base_epoch"] is None and again["objects"]["unchanged"] == 0
    assert again["objects"]["read"] == again["entries"]["files"]
    assert again["objects"]["new_objects"] == 0  # the contents are already stored: reused, not written again


def test_a_root_that_is_missing_or_not_a_directory_is_named(epochs, tmp_path):
    with pytest.raises(CaptureError, match="does not exist"):
        epochs.backup([files_asset(tmp_path / "nope", tmp_path / "state")])
    (tmp_path / "file").write_text("x")
    with pytest.raises(CaptureError, match="is not a directory"):
        epochs.backup([files_asset(tmp_path / "file", tmp_path / "state")])
    assert epochs.repository.complete_epochs("node1") == []


def test_a_sparse_file_keeps_its_holes(epochs, tmp_path):
    root = tmp_path / "sparse"
    root.mkdir()
    with open(root / "disk.img", "wb") as handle:
        handle.truncate(8 << 20)
        handle.seek(4 << 20)
        handle.write(b"data" * 1024)
    manifest = epochs.backup([files_asset(root, tmp_path / "state")])
    restored = epochs.restored(epochs.restore(manifest), root) / "disk.img"
    assert restored.read_bytes() == (root / "disk.img").read_bytes()
    assert restored.stat().st_blocks * 512 < 1 << 20  # the holes are holes again, not 8 MiB of zeros
    assert Path(restored).stat().st_size == 8 << 20


def packed_entry(path: str, content: bytes, pack: str, offset: int) -> dict:
    return {
        "path": path,
        "type": "file",
        "mode": 0o644,
        "uid": 0,
        "gid": 0,
        "mtime_ns": 1,
        "ctime_ns": 2,
        "ino": 3,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "object": pack,
        "offset": offset,
        "sealed_size": 4096,
        "sealed_sha256": "ab" * 32,
    }


def test_the_cached_packed_contents_are_found_whatever_the_names_and_the_line_layout(tmp_path):
    """Every packed file of the cache is found by its content: lines as this version writes them (matched
    without JSON, names with quotes, backslashes and the line's own key names in them), a line with its keys in
    another order (parsed as JSON), and a file stored as its own object (not packed, its piece still known)."""
    pack, other = "1" * 64, "2" * 64
    odd = 'a "quoted" \\ name ","sealed_sha256":"00","sealed_size":1,"sha256":"'
    entries = [
        packed_entry("plain", b"one", pack, 0),
        packed_entry(odd, b"two", pack, 3),
        packed_entry("é/ü", b"three", other, 0),
    ]
    unsorted = packed_entry("unsorted", b"four", other, 5)
    whole = dict(packed_entry("whole", b"five", "3" * 64, 0), sealed_size=77)
    del whole["offset"]
    cache = tmp_path / "index.jsonl"
    with open(cache, "w", encoding="utf-8") as out:
        out.write(json.dumps({"format": _files_index.INDEX_FORMAT}) + "\n")
        out.write(encode_entry({"path": ".", "type": "dir", "mode": 0o755, "uid": 0, "gid": 0, "mtime_ns": 1}) + "\n")
        out.writelines(encode_entry(entry) + "\n" for entry in entries)
        out.write(json.dumps(unsorted, separators=(",", ":")) + "\n")  # compact, keys in another order
        out.write(encode_entry(whole) + "\n")
    context = RunContext(LocalRepository(str(tmp_path / "repo")), "node1", "20260101T000000Z", str(tmp_path))
    asset = {"name": "da", "type": "files", "path": str(tmp_path), "state_dir": str(tmp_path / "state")}
    walk = capture._TreeCapture(asset_type("files"), asset, str(tmp_path), str(tmp_path), context)
    walk.base_path = str(cache)
    walk._load_packed()
    for entry in [*entries, unsorted]:
        assert walk.packed.get(entry["sha256"]) == (entry["object"], entry["offset"], 4096, "ab" * 32), entry
    assert walk.packed.get(whole["sha256"]) is None and len(walk.packed) == 4
    assert walk.writer.known == {pack: (4096, "ab" * 32), other: (4096, "ab" * 32), "3" * 64: (77, "ab" * 32)}
