"""_files_content.py: what the files capture walk keeps per file: the index line encoder, the map of packed
contents, and whether a cached entry still describes a file.

Real files; no mocks of the engine.
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_content


class TestContent:
    def test_index_lines_are_json_with_sorted_keys_compact(self):
        """The encoder made once (json's C encoder) writes exactly what json.dumps(sort_keys, compact) writes."""
        entries = [
            {"path": "a/é \"q\"\\\n", "type": "file", "mode": 0o644, "uid": 0, "gid": 7, "mtime_ns": -1, "size": 3},
            {"path": ".", "type": "dir", "xattrs": {"user.b": "QQ==", "system.posix_acl_access": "AgAAAA=="}},
            {"path": "s", "type": "file", "sparse": [[0, 4096], [8192, 1]], "changed": True, "offset": 2**40},
            {"path": "\udcff", "type": "symlink", "target": "../x"},
        ]
        for entry in entries:
            expected = json.dumps(entry, sort_keys=True, separators=(",", ":"))
            assert _files_content.encode_entry(entry) == expected
            assert json.loads(expected) == entry

    def test_packed_contents_are_found_and_cost_a_bounded_size_each(self):
        """The map of packed contents (what a backup holds per packed file) finds every content it was given,
        keeps the first place of a content, misses others, and holds at most 80 bytes per content."""
        packed = _files_content.PackedContents()
        count = 50_000
        digests = [hashlib.sha256(b"%d" % number).hexdigest() for number in range(count)]
        packs = [("p%03d" % number, 4000 + number, "s%03d" % number) for number in range(100)]
        for number, digest in enumerate(digests):
            name, size, sealed = packs[number % 100]
            packed.put(digest, (name, number * 7, size, sealed))
        packed.put(digests[5], ("other", 1, 2, "x"))
        assert len(packed) == count and len(packed.packs) == 100
        for number in (0, 5, 1023, 1024, count - 1):
            name, size, sealed = packs[number % 100]
            assert packed.get(digests[number]) == (name, number * 7, size, sealed)
        assert packed.get(hashlib.sha256(b"absent").hexdigest()) is None
        assert packed.memory() <= 80 * count

    def test_unchanged_needs_size_mtime_ctime_and_inode(self, tmp_path):
        path = tmp_path / "f"
        path.write_bytes(b"x")
        info = os.stat(path)
        cached = {
            "type": "file",
            "size": 1,
            "mtime_ns": info.st_mtime_ns,
            "ctime_ns": info.st_ctime_ns,
            "ino": info.st_ino,
        }
        assert _files_content._unchanged(cached, info)
        for key in ("size", "mtime_ns", "ctime_ns", "ino"):
            assert not _files_content._unchanged(dict(cached, **{key: 0}), info)
        assert not _files_content._unchanged(dict(cached, changed=True), info)
        assert not _files_content._unchanged(None, info)
