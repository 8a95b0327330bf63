"""assets/_files_index.py: the node's object-name key is private and stable, cached indexes are found newest first
and saved 0600 whole (never a half-written cache), an index file that is not a known format is refused, and a
cached index is read back in walk order (the cursor) and for its packed contents whatever a line's layout."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_index import (
    INDEX_FORMAT,
    IndexCursor,
    NodeState,
    load_packed,
    read_index,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError


def write_index(path, entries, header=None) -> None:
    lines = [json.dumps(header or {"format": INDEX_FORMAT, "asset": "docs"}, separators=(",", ":"))]
    lines += [json.dumps(entry, separators=(",", ":")) for entry in entries]
    path.write_text("\n".join(lines) + "\n")


def test_the_key_is_private_and_stable(tmp_path):
    state = NodeState(str(tmp_path / "state"), "node1", "docs")
    key, created = state.key()
    assert created and len(key) == 32
    key_files = [path for path in (tmp_path / "state" / "node1").rglob("*") if path.is_file()]
    assert key_files and all(stat.S_IMODE(os.stat(path).st_mode) == 0o600 for path in key_files)
    again, created_again = NodeState(str(tmp_path / "state"), "node1", "other").key()
    assert (again, created_again) == (key, False)
    assert NodeState(str(tmp_path / "state"), "node2", "docs").key()[0] != key


def test_cached_indexes_newest_first_saved_whole_and_private(tmp_path):
    state = NodeState(str(tmp_path / "state"), "node1", "docs")
    os.makedirs(state.asset_dir, exist_ok=True)
    source = tmp_path / "index.jsonl"
    write_index(source, [{"type": "file", "path": "a"}])
    for epoch in ("20260101T000000Z", "20260301T000000Z", "20260201T000000Z"):
        saved = state.save(epoch, str(source))
        assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    (tmp_path / "junk").touch()
    open(os.path.join(state.asset_dir, "index-not-an-epoch.jsonl"), "w").close()
    assert [epoch for epoch, _path in state.caches()] == ["20260301T000000Z", "20260201T000000Z", "20260101T000000Z"]
    assert not [name for name in os.listdir(state.asset_dir) if name.endswith(".tmp")]


def test_read_index_entries_files_only_and_lines(tmp_path):
    path = tmp_path / "index.jsonl"
    entries = [
        {"type": "directory", "path": "d"},
        {"type": "file", "path": "d/a", "size": 3},
        {"type": "symlink", "path": "d/l", "target": "a"},
        {"type": "file", "path": 'd/"type":"file"', "size": 1},
    ]
    write_index(path, entries)
    header, found = read_index(str(path))
    assert header["format"] == INDEX_FORMAT and list(found) == entries
    _header, files = read_index(str(path), files_only=True)
    assert [entry["path"] for entry in files] == ["d/a", 'd/"type":"file"']
    _header, pairs = read_index(str(path), files_only=True, lines=True)
    line, entry = next(pairs)
    assert json.loads(line) == entry == entries[1]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json\n", "is not JSON lines"),
        ('{"format": "nodekeep.files-index/v9"}\n', "has format 'nodekeep.files-index/v9', expected"),
        ("", "has format None"),
    ],
)
def test_an_unknown_index_is_refused(tmp_path, content, expected):
    path = tmp_path / "index.jsonl"
    path.write_text(content)
    with pytest.raises(IntegrityError, match=expected):
        read_index(str(path))


def packed_line(path, name, offset, digest, key_order=False):
    entry = {"object": name, "offset": offset, "path": path, "sealed_sha256": "ab" * 32, "sealed_size": 4096,
             "sha256": digest, "size": 10, "type": "file"}
    if key_order:
        return json.dumps(dict(reversed(list(entry.items()))), separators=(",", ":"))  # compact, other key order
    return json.dumps(entry, sort_keys=True, separators=(",", ":"))


def test_the_cursor_finds_entries_in_walk_order_and_never_goes_back(tmp_path):
    path = tmp_path / "index.jsonl"
    write_index(path, [
        {"path": ".", "type": "dir", "mode": 493},
        {"path": "a", "type": "dir", "mode": 493},
        {"path": "a/x", "type": "file", "size": 1},
        {"path": "a/y", "type": "symlink", "target": "x"},  # neither file nor dir: never seen by the cursor
        {"path": "b", "type": "file", "size": 2},
    ])
    cursor = IndexCursor(str(path), "a")
    assert cursor.find("a")[0]["type"] == "dir"  # the root's line was skipped, the walk starts below it
    assert cursor.find("a/w") == (None, "")  # not cached: the cursor stays on a/x
    entry, line = cursor.find("a/x")
    assert entry["size"] == 1 and json.loads(line) == entry
    assert cursor.find("a/y") == (None, "")  # a link is not read back (it is always read again)
    assert cursor.find("b")[0]["size"] == 2
    assert cursor.find("c") == (None, "") and cursor.line == ""
    cursor.close()
    root = IndexCursor(str(path), "")
    assert root.find("")[0]["path"] == "."  # a walk from the root looks it up


def test_packed_contents_are_read_back_whatever_the_layout_and_only_files_count(tmp_path):
    path = tmp_path / "index.jsonl"
    lines = [
        json.dumps({"format": INDEX_FORMAT}),
        packed_line('we"ird\\name', "p1", 0, "1" * 64),
        packed_line("other", "p1", 10, "2" * 64, key_order=True),  # an older layout: parsed as JSON
        json.dumps({"object": "big", "path": "large", "sealed_sha256": "cd" * 32, "sealed_size": 9, "sha256": "3" * 64,
                    "size": 5, "type": "file"}, sort_keys=True, separators=(",", ":")),  # a piece of its own: its facts, no place in a pack
        json.dumps({"path": "d", "type": "dir"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    placed = {}
    known = load_packed(str(path), placed.__setitem__)
    assert placed == {"1" * 64: ("p1", 0, 4096, "ab" * 32), "2" * 64: ("p1", 10, 4096, "ab" * 32)}
    assert known == {"p1": (4096, "ab" * 32), "big": (9, "cd" * 32)}
