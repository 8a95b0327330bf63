"""files.py: object names, the node's state, the index and refs formats, repository objects, safe rebuilds.

Real files and a real local repository; no mocks of the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import (
    _files_index,
    _files_objects,
    files,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal as seal_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RepositoryError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(60)

SHA = hashlib.sha256(b"content").hexdigest()


class TestNames:
    def test_object_names_are_keyed_and_stable(self):
        key, other = b"k" * 32, b"o" * 32
        name = _files_index.object_name(key, SHA)
        assert name == _files_index.object_name(key, SHA) and len(name) == 64
        assert name != _files_index.object_name(other, SHA)
        assert name != SHA  # the plain content hash is never the name: no confirmation of guessable files
        # the name is HMAC-SHA-256 (as hmac.new computes it) of a fixed prefix and the content digest: names made
        # by earlier versions are found again
        mac = hmac.new(key, b"nodekeep-object-v1\0" + bytes.fromhex(SHA), hashlib.sha256).hexdigest()
        assert name == mac
        assert _files_index.key_id(key) != _files_index.key_id(other) and len(_files_index.key_id(key)) == 16


class TestNodeState:
    def test_key_is_made_once_private_and_checked(self, tmp_path):
        state = _files_index.NodeState(str(tmp_path / "state"), "node1", "da")
        key, created = state.key()
        assert created and len(key) == 32
        path = tmp_path / "state" / "node1" / _files_index.KEY_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "state" / "node1" / "da").stat().st_mode & 0o777 == 0o700
        assert state.key() == (key, False)
        os.chmod(path, 0o644)
        with pytest.raises(CaptureError, match="readable by others"):
            state.key()
        os.chmod(path, 0o600)
        path.write_bytes(b"short")
        with pytest.raises(CaptureError, match="damaged"):
            state.key()


class TestIndex:
    def test_read_index_refuses_other_formats(self, tmp_path):
        path = tmp_path / "index.jsonl"
        path.write_text(json.dumps({"format": "something/v9"}) + "\n")
        with pytest.raises(IntegrityError, match="something/v9"):
            _files_index.read_index(str(path))
        path.write_text("not json\n")
        with pytest.raises(IntegrityError, match="not JSON"):
            _files_index.read_index(str(path))

    def test_members_from_entries(self):
        entry = {
            "path": "a/b",
            "type": "file",
            "mode": 0o4755,
            "uid": 5,
            "gid": 6,
            "mtime_ns": 1_500_000_000_123_456_789,
            "size": 3,
            "sha256": SHA,
            "object": "0" * 64,
        }
        member = _files_objects._member(entry)
        assert member.isreg() and member.mode == 0o4755 and (member.uid, member.gid) == (5, 6)
        assert member.pax_headers["mtime"] == "1500000000.123456789"
        assert member.nodekeep_entry is entry
        link = _files_objects._member({"path": "l", "type": "symlink", "target": "../x", "mtime_ns": 0})
        assert link.issym() and link.linkname == "../x"
        with pytest.raises(RestoreError, match="unknown type"):
            _files_objects._member({"path": "d", "type": "device"})


class TestRepositoryObjects:
    def test_write_once_listing_and_removal(self, tmp_path):
        repo = LocalRepository(str(tmp_path / "repo"))
        name = "ab" + "0" * 62
        assert repo.object_names("node1") == {} and repo.has_object("node1", name) is None
        with repo.put_object("node1", name) as sink:
            sink.write(b"sealed bytes")
        assert repo.has_object("node1", name) == 12
        path = tmp_path / "repo" / "node1" / "objects" / "ab" / name
        assert path.stat().st_mode & 0o777 == 0o600
        with repo.open_object("node1", name) as stream:
            assert stream.read() == b"sealed bytes"
        with pytest.raises(RepositoryError) as exists, repo.put_object("node1", name) as sink:
            sink.write(b"other")
        assert exists.value.details["code"] == "exists"
        assert list(repo.object_names("node1")) == [name]
        assert repo.epoch_names("node1") == []  # objects/ is not an epoch
        repo.remove_object("node1", name)
        assert repo.object_names("node1") == {}
        with pytest.raises(RepositoryError, match="missing"), repo.open_object("node1", name):
            pass

    def test_failed_write_commits_nothing_and_names_are_checked(self, tmp_path):
        repo = LocalRepository(str(tmp_path / "repo"))
        name = "cd" + "1" * 62
        with pytest.raises(ZeroDivisionError), repo.put_object("node1", name) as sink:
            sink.write(b"half")
            raise ZeroDivisionError
        assert repo.has_object("node1", name) is None
        assert os.listdir(tmp_path / "repo" / "node1" / "objects" / "cd") == []
        for bad in ("../../etc/passwd", "AB" + "0" * 62, "0" * 63):
            with pytest.raises(RepositoryError, match="not an object name"):
                repo.has_object("node1", bad)


class TestRefs:
    def _artifact(self, repo, data: bytes) -> Artifact:
        repo.claim_epoch("node1", "20260101T000000Z")
        repo.put_bytes("node1", "20260101T000000Z", "da.refs.txt", data)
        refs = {"file": "da.refs.txt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return Artifact(
            "da",
            "files",
            "da.index.jsonl.zst.age",
            "files-index+zstd+age",
            1,
            SHA,
            1,
            SHA,
            True,
            {"layout": "objects", "refs": refs},
        )

    def test_refs_are_checked_against_the_manifest_facts(self, tmp_path):
        repo = LocalRepository(str(tmp_path / "repo"))
        name = "ef" + "2" * 62
        data = ("%s\n%s 12 %s\n" % (_files_index.REFS_FORMAT, name, SHA)).encode()
        artifact = self._artifact(repo, data)
        assert _files_objects.load_refs(repo, "node1", "20260101T000000Z", artifact) == {name: (12, SHA)}
        assert asset_type("files").extra_files(artifact) == [
            {"file": "da.refs.txt", "size": len(data), "sha256": artifact.source["refs"]["sha256"]}
        ]
        artifact.source["refs"]["sha256"] = SHA
        with pytest.raises(IntegrityError, match="does not match its manifest"):
            _files_objects.load_refs(repo, "node1", "20260101T000000Z", artifact)

    def test_check_objects_reports_missing_and_modified(self, tmp_path):
        repo = LocalRepository(str(tmp_path / "repo"))
        good, bad, gone = "a1" + "0" * 62, "a2" + "0" * 62, "a3" + "0" * 62
        for name in (good, bad):
            with repo.put_object("node1", name) as sink:
                sink.write(b"12345")
        digest = hashlib.sha256(b"12345").hexdigest()
        refs = {good: (5, digest), bad: (5, SHA), gone: (5, digest)}
        report = _files_objects.check_objects(repo, "node1", refs)
        assert report["missing"] == [gone] and report["wrong"] == ["%s (SHA-256 differs)" % bad]
        assert _files_objects.check_objects(repo, "node1", refs, read=False)["wrong"] == []


class TestRebuild:
    def test_rebuild_refuses_paths_leaving_the_tree(self, tmp_path):
        index = tmp_path / "index.jsonl"
        lines = [
            {"format": _files_index.INDEX_FORMAT},
            {"path": ".", "type": "dir", "mode": 0o755, "mtime_ns": 0},
            {"path": "../escape", "type": "symlink", "target": "x", "mtime_ns": 0},
        ]
        index.write_text("".join(json.dumps(line) + "\n" for line in lines))
        repo = LocalRepository(str(tmp_path / "repo"))
        with pytest.raises(RestoreError, match=r"'\.\.'"):
            _files_objects.rebuild_tree(str(index), str(tmp_path / "out"), repo, "node1", [])
        # An absolute link is data (kept as a link), but nothing is ever written through it.
        lines[2] = {"path": "link", "type": "symlink", "target": "/etc", "mtime_ns": 0}
        lines.append({"path": "link/passwd", "type": "symlink", "target": "x", "mtime_ns": 0})
        index.write_text("".join(json.dumps(line) + "\n" for line in lines))
        with pytest.raises(RestoreError, match="written through"):
            _files_objects.rebuild_tree(str(index), str(tmp_path / "out2"), repo, "node1", [])

    def test_rebuild_checks_each_object_against_the_index(self, tmp_path, age_key):
        repo = LocalRepository(str(tmp_path / "repo"))
        recipients = seal_utils.load_recipients([age_key.recipient])
        name = _files_index.object_name(b"k" * 32, SHA)
        with repo.put_object("node1", name) as sink:
            seal_utils.seal(io.BytesIO(b"other content"), sink, recipients)
        index = tmp_path / "index.jsonl"
        lines = [
            {"format": _files_index.INDEX_FORMAT},
            {"path": ".", "type": "dir", "mode": 0o755, "mtime_ns": 0},
            {"path": "f", "type": "file", "mode": 0o644, "mtime_ns": 0, "size": 7, "sha256": SHA, "object": name},
        ]
        index.write_text("".join(json.dumps(line) + "\n" for line in lines))
        identities = seal_utils.load_identities([age_key.identity])
        with pytest.raises(IntegrityError, match="does not match the index|more than the 7 bytes"):
            _files_objects.rebuild_tree(str(index), str(tmp_path / "out"), repo, "node1", identities)


class TestPacks:
    """Small files are slices of a pack object: one object read per pack, every slice checked."""

    def _pack(self, tmp_path, age_key, members: list[bytes]):
        repo = LocalRepository(str(tmp_path / "repo"))
        recipients = seal_utils.load_recipients([age_key.recipient])
        data = b"".join(members)
        name = _files_index.object_name(b"k" * 32, hashlib.sha256(data).hexdigest())
        with repo.put_object("node1", name) as sink:
            result = seal_utils.seal(io.BytesIO(data), sink, recipients)
        return repo, name, result.sealed

    def _index(self, tmp_path, name, sealed, members, changes=None):
        lines = [{"format": _files_index.INDEX_FORMAT}, {"path": ".", "type": "dir", "mode": 0o755, "mtime_ns": 0}]
        offset = 0
        for number, data in enumerate(members):
            entry = {
                "path": "f%d" % number,
                "type": "file",
                "mode": 0o444 if number else 0o4755,
                "uid": 0,
                "gid": 0,
                "mtime_ns": 1_760_000_000_123_456_789 + number,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "object": name,
                "offset": offset,
                "sealed_size": sealed.size,
                "sealed_sha256": sealed.sha256,
            }
            entry.update((changes or {}).get(number, {}))
            lines.append(entry)
            offset += len(data)
        lines.append({"path": "hard", "type": "hardlink", "link": "f0", "mode": 0o444, "mtime_ns": 0})
        index = tmp_path / "index.jsonl"
        index.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return str(index)

    def test_members_are_restored_with_their_attributes_and_read_once(self, tmp_path, age_key):
        members = [b"first", b"", b"third member" * 100]
        repo, name, sealed = self._pack(tmp_path, age_key, members)
        index = self._index(tmp_path, name, sealed, members)
        identities = seal_utils.load_identities([age_key.identity])
        stats = _files_objects.rebuild_tree(index, str(tmp_path / "out"), repo, "node1", identities, keep_ownership=False)
        assert stats["objects_read"] == 1 and stats["files"] == 3 and stats["hardlinks"] == 1
        for number, data in enumerate(members):
            path = tmp_path / "out" / ("f%d" % number)
            info = path.stat()
            assert path.read_bytes() == data
            assert info.st_mode & 0o7777 == (0o444 if number else 0o4755)
            assert info.st_mtime_ns == 1_760_000_000_123_456_789 + number
        assert os.path.samefile(tmp_path / "out" / "hard", tmp_path / "out" / "f0")

    def test_a_member_that_does_not_match_is_refused(self, tmp_path, age_key):
        members = [b"first", b"second"]
        repo, name, sealed = self._pack(tmp_path, age_key, members)
        identities = seal_utils.load_identities([age_key.identity])
        index = self._index(tmp_path, name, sealed, members, {1: {"sha256": SHA}})
        with pytest.raises(IntegrityError, match="f1: its content does not match"):
            _files_objects.rebuild_tree(index, str(tmp_path / "out"), repo, "node1", identities)
        index = self._index(tmp_path, name, sealed, members, {1: {"sealed_sha256": SHA}})
        with pytest.raises(IntegrityError, match="two sizes or checksums"):
            _files_objects.rebuild_tree(index, str(tmp_path / "out2"), repo, "node1", identities)
        index = self._index(tmp_path, name, sealed, members, {0: {"sealed_sha256": SHA}, 1: {"sealed_sha256": SHA}})
        with pytest.raises(IntegrityError, match="sealed bytes do not match"):
            _files_objects.rebuild_tree(index, str(tmp_path / "out3"), repo, "node1", identities)

    def test_a_pack_may_hold_members_no_longer_referenced(self, tmp_path, age_key):
        members = [b"a" * 1000, b"b" * 1000, b"c" * 5000]
        repo, name, sealed = self._pack(tmp_path, age_key, members)
        identities = seal_utils.load_identities([age_key.identity])
        index = self._index(tmp_path, name, sealed, members[:2])  # the third file was deleted since
        _files_objects.rebuild_tree(index, str(tmp_path / "out"), repo, "node1", identities)
        assert (tmp_path / "out" / "f1").read_bytes() == b"b" * 1000
        sink = _files_objects._PrefixSink(4)  # only what the index needs is kept in memory
        sink.write(b"123")
        sink.write(b"45678")
        assert sink.getvalue() == b"1234"

    def test_sample_reader_slices_a_member(self, tmp_path, age_key):
        members = [b"first", b"second"]
        repo, name, sealed = self._pack(tmp_path, age_key, members)
        reader = _files_objects._ObjectReader(repo, "node1", seal_utils.load_identities([age_key.identity]))
        entry = {
            "path": "f1",
            "size": 6,
            "sha256": hashlib.sha256(b"second").hexdigest(),
            "object": name,
            "offset": 5,
            "sealed_size": sealed.size,
            "sealed_sha256": sealed.sha256,
        }
        out = io.BytesIO()
        reader.write_object(entry, out)
        assert out.getvalue() == b"second"

    def test_version_1_indexes_are_read(self, tmp_path):
        path = tmp_path / "index.jsonl"
        path.write_text(
            json.dumps({"format": "nodekeep.files-index/v1"})
            + "\n"
            + json.dumps({"path": ".", "type": "dir"}, separators=(",", ":"))
            + "\n"
            + json.dumps({"path": "a", "type": "file", "size": 1}, separators=(",", ":"))
            + "\n"
        )
        header, entries = _files_index.read_index(str(path))
        assert header["format"] == "nodekeep.files-index/v1" and len(list(entries)) == 2
        _header, entries = _files_index.read_index(str(path), files_only=True)
        assert [entry["path"] for entry in entries] == ["a"]


class TestNormalize:
    def test_files_options_are_checked(self, tmp_path):
        kind = asset_type("files")
        base = {"name": "da", "type": "files", "path": str(tmp_path)}
        assert kind.normalize(base)["state_dir"] == files.DEFAULT_STATE_DIR
        with pytest.raises(CaptureError, match="list of glob patterns"):
            kind.normalize(dict(base, exclude="*.tmp"))
        with pytest.raises(CaptureError, match="not absolute"):
            kind.normalize(dict(base, state_dir="state"))

    def test_config_needs_a_file_or_directory(self, tmp_path):
        kind = asset_type("config")
        (tmp_path / "c.yaml").write_text("a: 1\n")
        assert kind.normalize({"name": "c", "type": "config", "path": str(tmp_path / "c.yaml")})["content"] == "file"
        assert kind.normalize({"name": "c", "type": "config", "path": str(tmp_path)})["content"] == "tree"
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(NodekeepError, match="neither a file nor a directory"):
            kind.normalize({"name": "c", "type": "config", "path": str(tmp_path / "fifo")})

    def test_files_capture_needs_the_run_context(self, tmp_path):
        kind = asset_type("files")
        asset = kind.normalize({"name": "da", "type": "files", "path": str(tmp_path)})
        with pytest.raises(CaptureError, match="run context"), kind.capture(asset, str(tmp_path), None):
            pass
