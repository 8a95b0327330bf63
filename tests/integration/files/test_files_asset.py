"""The ``files`` asset type on a DA-store-like tree: full and incremental backups, restores, verify, GC.

Everything is real: the engine's backup_epoch / verify_epoch / restore_epoch, a local
repository, age keys, Ed25519 signatures, and a separate process writing files.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_capture, _files_index, _files_objects
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy

pytestmark = pytest.mark.timeout(300)


def refs_of(node, epoch: str, name: str = "da") -> dict:
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest

    manifest = load_manifest(node.repository, node.name, epoch, node.public_line)
    return _files_objects.load_refs(node.repository, node.name, epoch, manifest.artifact(name))


def index_entries(node, epoch: str, name: str = "da") -> list:
    identities = seal.load_identities([node.age_key.identity])
    data = node.repository.get_bytes(node.name, epoch, "%s.index.jsonl.zst.age" % name)
    lines = seal.unseal_bytes(data, identities).decode().splitlines()
    assert json.loads(lines[0])["format"] == _files_index.INDEX_FORMAT
    return [json.loads(line) for line in lines[1:]]


def timed_backup(node, asset: dict) -> tuple:
    """``(manifest, the asset's source facts, seconds, the node's object names after)`` of one backup."""
    began = time.monotonic()
    manifest = node.backup([asset])
    seconds = time.monotonic() - began
    return manifest, manifest.artifacts[0].source, seconds, node.repository.object_names(node.name)


def restored_root(result: dict) -> Path:
    (artifact,) = result["artifacts"]
    return Path(artifact["path"])


class TestFullAndIncremental:
    def test_incremental_uploads_only_changes_and_every_epoch_restores_exactly(
        self, node, store_tools, files_asset, tmp_path
    ):
        store = tmp_path / "da"
        made = store_tools.make(store, count=3000)
        asset = files_asset(store)
        before_full = store_tools.meta(store)

        full, full_facts, full_seconds, objects_after_full = timed_backup(node, asset)
        distinct = len({m[6] for m in before_full.values() if m[0] == "file"})
        # every file is small: they are packed (a few MiB per object), each distinct content once
        packs = full_facts["objects"]["new_packs"]
        assert full_facts["objects"]["packed_files"] == distinct
        content_bytes = sum(m[5] for m in before_full.values() if m[0] == "file")
        assert 1 <= packs <= content_bytes // _files_capture.PACK_SIZE + 2
        assert len(objects_after_full) == packs == full_facts["objects"]["new_objects"]
        entries = index_entries(node, full.epoch)
        assert all("offset" in e for e in entries if e["type"] == "file")
        assert full_facts["entries"]["hardlinks"] == 1
        assert full_facts["objects"]["unchanged"] == 0

        time.sleep(0.05)  # the changed files get other mtimes
        churned = store_tools.churn(store, made["blobs"], fraction=0.01, add=10, delete=10)
        os.chmod(store / "index" / "head.json", 0o600)  # metadata-only change: no new object
        before_incremental = store_tools.meta(store)

        incremental, facts, incremental_seconds, objects_after = timed_backup(node, asset)
        new_objects = set(objects_after) - set(objects_after_full)
        # the changed and added contents go into new packs (one here); unchanged files keep their old packs
        assert facts["objects"]["packed_files"] == churned["changed"] + churned["added"]
        assert len(new_objects) == facts["objects"]["new_objects"] == facts["objects"]["new_packs"] == 1
        assert facts["base_epoch"] == full.epoch
        assert facts["objects"]["read"] <= churned["changed"] + churned["added"] + 1  # + head.json (ctime)
        uploaded = facts["objects"]["uploaded_bytes"]
        full_uploaded = full_facts["objects"]["uploaded_bytes"]
        assert uploaded < full_uploaded / 20
        print(
            "\nfiles asset, %d files: full %.2f s, %d bytes uploaded; incremental (%d changed, %d added, "
            "%d deleted) %.2f s, %d bytes uploaded, %d objects new"
            % (
                full_facts["entries"]["files"],
                full_seconds,
                full_uploaded,
                churned["changed"],
                churned["added"],
                churned["deleted"],
                incremental_seconds,
                uploaded,
                len(new_objects),
            )
        )

        for epoch, expected in ((full.epoch, before_full), (incremental.epoch, before_incremental)):
            target = tmp_path / ("restore-" + epoch)
            result = node.restore(target, epoch=epoch)
            root = restored_root(result)
            assert store_tools.meta(root) == expected
            assert store_tools.hardlinked(root, "commitments.hardlink", "index/commitments.log")

    def test_lost_cache_reads_again_but_uploads_nothing_and_a_new_key_uploads_everything(
        self, node, store_tools, files_asset, tmp_path
    ):
        store = tmp_path / "da"
        store_tools.make(store, count=200)
        asset = files_asset(store)
        full = node.backup([asset])
        for path in (files_asset.state_dir / node.name / "da").iterdir():
            path.unlink()
        again = node.backup([asset])
        work = again.artifacts[0].source["objects"]
        assert again.artifacts[0].source["base_epoch"] is None
        assert work["new_objects"] == 0 and work["unchanged"] == 0
        assert work["rehashed_objects"] == full.artifacts[0].source["objects"]["new_objects"]
        assert node.verify()["ok"]

        (files_asset.state_dir / node.name / _files_index.KEY_FILE).unlink()
        rekeyed = node.backup([asset])
        facts = rekeyed.artifacts[0].source
        assert facts["new_key"] is True and facts["key_id"] != full.artifacts[0].source["key_id"]
        assert facts["objects"]["new_objects"] == full.artifacts[0].source["objects"]["new_objects"]
        assert store_tools.meta(restored_root(node.restore(tmp_path / "r"))) == store_tools.meta(store)

    def test_packs_dedup_and_mix_with_objects_of_earlier_versions(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        store = tmp_path / "da"
        store.mkdir()
        same = os.urandom(3000)
        (store / "a").write_bytes(same)
        (store / "b").write_bytes(same)
        (store / "c").write_bytes(os.urandom(4000))
        (store / "large").write_bytes(os.urandom(_files_capture.PACK_MEMBER_MAX + 10))
        asset = files_asset(store)
        # one object per content, as version 1 of the index stored every file
        monkeypatch.setattr(_files_capture, "PACK_MEMBER_MAX", -1)
        first = node.backup([asset])
        work = first.artifacts[0].source["objects"]
        assert work["new_objects"] == 3 and work["new_packs"] == 0
        assert not any("offset" in e for e in index_entries(node, first.epoch))
        expected = {first.epoch: store_tools.meta(store)}
        monkeypatch.undo()

        time.sleep(0.05)
        (store / "c").write_bytes(os.urandom(4000))
        (store / "d").write_bytes(same)  # a new path with a content stored as its own object: reused
        (store / "e").write_bytes(b"packed once")
        (store / "f").write_bytes(b"packed once")  # the same content twice in one pack: stored once
        odd = 'odd "quoted" \\ name'  # its index line escapes quotes and backslashes
        (store / odd).write_bytes(os.urandom(2000))
        second = node.backup([asset])
        work = second.artifacts[0].source["objects"]
        assert work["new_objects"] == work["new_packs"] == 1 and work["packed_files"] == 3
        entries = {e["path"]: e for e in index_entries(node, second.epoch)}
        assert "offset" not in entries["a"] and "offset" not in entries["d"] and "offset" in entries["c"]
        assert entries["e"]["offset"] == entries["f"]["offset"] and entries["e"]["object"] == entries["c"]["object"]
        expected[second.epoch] = store_tools.meta(store)

        time.sleep(0.05)
        os.rename(store / "c", store / "c2")  # moved: its content is in a pack of the cache, nothing new
        os.rename(store / odd, store / 'moved ","sealed_sha256":"00","sealed_size":1,"sha256":"')
        (store / "g").write_bytes(b"packed once")
        third = node.backup([asset])
        work = third.artifacts[0].source["objects"]
        assert work["new_objects"] == 0 and work["read"] == 3 and work["reused_objects"] == 3
        expected[third.epoch] = store_tools.meta(store)

        for epoch, meta in expected.items():
            assert store_tools.meta(restored_root(node.restore(tmp_path / ("r-" + epoch), epoch=epoch))) == meta
        report = node.verify(deep=True)
        assert report["ok"], (report["problems"], report["artifacts"])

    def test_include_and_exclude(self, node, store_tools, files_asset, tmp_path):
        store = tmp_path / "da"
        store_tools.make(store, count=50)
        asset = files_asset(store, include=["index", "HEAD", "blobs"], exclude=["*.log", "tmp"])
        manifest = node.backup([asset])
        paths = {entry["path"] for entry in index_entries(node, manifest.epoch)}
        assert "index/head.json" in paths and "HEAD" in paths
        assert not any(p.endswith(".log") for p in paths)
        assert not any(p.startswith(("tmp", "bin", "empty")) for p in paths)
        root = restored_root(node.restore(tmp_path / "r"))
        assert (root / "index" / "head.json").read_bytes() == (store / "index" / "head.json").read_bytes()
        assert not (root / "index" / "commitments.log").exists()
        assert not (root / "bin").exists()


def hold_reads(monkeypatch, path, hook) -> list:
    """Run ``hook(fd)`` each time the files capture's reader of ``path`` reaches the file's end, before it stats it again.

    The reader reads a small file with ``_read_fd(fd, size)`` (one ``read`` on a raw descriptor), or opens it
    as ``open(fd, "rb", buffering=0)`` and reads it with ``readall()`` (read into memory) or ``read(n)`` up
    to ``b""`` (streamed, or copied to scratch): only those reads of that one inode are wrapped. Returns
    the list of the fds the hook ran on (tests assert it ran: the seam cannot disappear unnoticed).
    """
    target = (os.stat(path).st_dev, os.stat(path).st_ino)
    ran = []

    class Handle:
        def __init__(self, raw) -> None:
            self._raw = raw

        def __enter__(self):
            self._raw.__enter__()
            return self

        def __exit__(self, *exc):
            return self._raw.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self._raw, name)

        def _end(self) -> None:
            ran.append(self._raw.fileno())
            hook(self._raw.fileno())

        def readall(self) -> bytes:
            data = self._raw.readall()
            self._end()
            return data

        def read(self, size: int = -1) -> bytes:
            data = self._raw.read(size)
            if not data or size is None or size < 0:
                self._end()
            return data

    def wrapped_open(file, mode="r", buffering=-1, *args, **kwargs):
        handle = open(file, mode, buffering, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        if isinstance(file, int) and mode == "rb" and buffering == 0:
            info = os.fstat(file)
            if (info.st_dev, info.st_ino) == target:
                return Handle(handle)
        return handle

    real_read_fd = _files_capture._read_fd

    def wrapped_read_fd(fd: int, size: int) -> bytes:
        data = real_read_fd(fd, size)
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) == target:
            ran.append(fd)
            hook(fd)
        return data

    monkeypatch.setattr(_files_capture, "open", wrapped_open, raising=False)  # the capture walk's own name only
    monkeypatch.setattr(_files_capture, "_read_fd", wrapped_read_fd)
    return ran


WRITER = r"""
import os, sys, time
path, mode = sys.argv[1], sys.argv[2]
count = 0
while True:
    count += 1
    if mode == "append":
        with open(path, "ab") as handle:
            handle.write(b"x" * 4096)
    else:  # rewrite in place: same size, new content and mtime
        with open(path, "r+b") as handle:
            handle.write(b"%08d" % count * 512)
    time.sleep(0.0005)
"""


class TestLiveWrites:
    @pytest.fixture
    def writer(self, tmp_path):
        procs = []

        def start(path, mode):
            script = tmp_path / "writer.py"
            script.write_text(WRITER)
            before = os.stat(path)
            proc = subprocess.Popen([sys.executable, str(script), str(path), mode])
            procs.append(proc)
            deadline = time.monotonic() + 10
            while (os.stat(path).st_mtime_ns, os.stat(path).st_size) == (before.st_mtime_ns, before.st_size):
                assert time.monotonic() < deadline, "the writer did not start"
                time.sleep(0.01)
            return proc

        yield start
        for proc in procs:
            proc.kill()
            proc.wait()

    @pytest.mark.parametrize("small_file", [64 << 20, 0], ids=["in-memory", "streamed"])
    def test_a_file_written_during_the_backup_is_never_stored_torn_silently(
        self, node, store_tools, files_asset, tmp_path, writer, monkeypatch, small_file
    ):
        monkeypatch.setattr(_files_capture, "SMALL_FILE", small_file)
        store = tmp_path / "da"
        store_tools.make(store, count=100)
        growing = store / "index" / "growing.log"
        growing.write_bytes(b"x" * (16 << 20))
        rewritten = store / "index" / "rewritten.bin"
        rewritten.write_bytes(b"0" * 4096)
        writer(growing, "append")
        writer(rewritten, "rewrite")

        def writer_gets_in(fd: int) -> None:
            # Each read of the growing file lasts until the writer has appended once more (on an idle
            # machine reading 16 MiB takes longer than its interval; under load the writer may not run
            # at all meanwhile, and a stable read would rightly be stored unflagged): every attempt
            # sees it change, so it is copied and flagged, however the writer is scheduled.
            size = os.fstat(fd).st_size
            deadline = time.monotonic() + 30
            while os.fstat(fd).st_size == size:
                assert time.monotonic() < deadline, "the writer stopped appending"
                time.sleep(0.001)

        held = hold_reads(monkeypatch, growing, writer_gets_in)
        manifest = node.backup([files_asset(store)])
        assert len(held) >= _files_capture.READ_ATTEMPTS
        facts = manifest.artifacts[0].source
        entries = {e["path"]: e for e in index_entries(node, manifest.epoch)}
        grown = entries["index/growing.log"]
        assert grown.get("changed") is True and "index/growing.log" in facts["changed"]
        assert facts["changed_files"] >= 1 and facts["objects"]["retries"] >= _files_capture.READ_ATTEMPTS
        root = restored_root(node.restore(tmp_path / "r"))
        restored = (root / "index" / "growing.log").read_bytes()
        assert len(restored) == grown["size"] and restored == b"x" * len(restored)
        # The small file rewritten in place: either flagged, or one whole version (never two halves).
        content = (root / "index" / "rewritten.bin").read_bytes()
        if not entries["index/rewritten.bin"].get("changed"):
            assert len({content[i : i + 8] for i in range(0, len(content), 8)}) == 1

    @pytest.mark.parametrize("small_file", [64 << 20, 0], ids=["in-memory", "streamed"])
    def test_a_write_under_way_when_the_file_is_read_is_not_stored_torn(
        self, node, files_asset, tmp_path, monkeypatch, small_file
    ):
        """A write sets the file's times before its bytes land: a read between them is torn, the stat the same.

        Deterministic: the write goes through a shared mapping whose pages are dirty already, so its
        bytes set no time (as the rest of a write() whose times were set): half of it lands before the
        backup reads the file, the other half right after that read, before the reader stats it again.
        """
        monkeypatch.setattr(_files_capture, "SMALL_FILE", small_file)
        store = tmp_path / "da"
        store.mkdir()
        size, half = 1 << 20, 1 << 19
        table = store / "table.bin"
        table.write_bytes(b"0" * size)
        landed = []

        with open(table, "r+b") as handle, mmap.mmap(handle.fileno(), size) as mapped:
            mapped[:] = b"0" * size  # every page dirty and writable: the writes below set no time
            mapped[:half] = b"1" * half  # the write is under way

            def rest_of_the_write(_fd: int) -> None:
                if not landed:
                    mapped[half:] = b"1" * half
                    landed.append(True)

            hold_reads(monkeypatch, table, rest_of_the_write)
            manifest = node.backup([files_asset(store)])
        assert landed
        (entry,) = [e for e in index_entries(node, manifest.epoch) if e["path"] == "table.bin"]
        # Stored whole: the finished write (in memory: the second read differs, so it is read again;
        # streamed: sealing reads it again and the hash differs, so it is copied and flagged).
        assert entry["sha256"] == hashlib.sha256(b"1" * size).hexdigest()
        root = restored_root(node.restore(tmp_path / "r"))
        assert (root / "table.bin").read_bytes() == b"1" * size


class TestCacheInStep:
    def test_the_cache_is_read_in_step_with_the_walk_whatever_the_names(self, node, files_asset, tmp_path):
        """The previous index is not held in memory: it is read along the walk (same order: sorted names,
        depth first). Names that sort differently as whole paths ("a-b" < "a/b") still match: an unchanged
        tree is not read again, a changed file is."""
        store = tmp_path / "da"
        names = ["a/b", "a/b/c", "a-b", "a0", "a/b-c", "a.x/y", "Z", "é/ü", "a b/c"]
        for number, name in enumerate(names):
            path = store / name / ("f%d" % number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(100 + number))
        files = sum(1 for p in store.rglob("*") if p.is_file())
        node.backup([files_asset(store)])
        again = node.backup([files_asset(store)]).artifacts[0].source["objects"]
        assert again["unchanged"] == files and again["read"] == 0
        (store / "a-b" / "f2").write_bytes(b"changed")
        third = node.backup([files_asset(store)])
        work = third.artifacts[0].source["objects"]
        assert work["unchanged"] == files - 1 and work["read"] == 1
        root = restored_root(node.restore(tmp_path / "r"))
        assert (root / "a-b" / "f2").read_bytes() == b"changed"


class TestUnchangedEntries:
    def test_an_unchanged_directory_is_not_read_again_and_a_changed_xattr_is_kept(
        self, node, files_asset, tmp_path, monkeypatch
    ):
        """A nothing-changed run costs the walk's lstat per entry: an unchanged directory (same owner, mode,
        mtime, ctime and inode as in the cached index) is not asked for its xattrs and ACLs again, its cached
        line is written as it is. Setting an xattr changes the directory's ctime: that one is read again and
        the next epoch restores the new xattr (and still the old ones of the directories that kept them)."""
        store = tmp_path / "da"
        for name in ("a", "a/b", "c"):
            (store / name).mkdir(parents=True)
            (store / name / "f.bin").write_bytes(os.urandom(300))
        os.setxattr(store / "c", "user.kept", b"old")
        asked = []
        real_listxattr = os.listxattr

        def counting_listxattr(path, *args, **kwargs):
            asked.append(os.path.relpath(path, store) if isinstance(path, (str, os.PathLike)) else path)
            return real_listxattr(path, *args, **kwargs)

        parsed = []
        real_loads = json.loads

        def counting_loads(text, *args, **kwargs):
            if isinstance(text, str) and '"type":"dir"' in text:
                parsed.append(real_loads(text)["path"])
            return real_loads(text, *args, **kwargs)

        node.backup([files_asset(store)])
        monkeypatch.setattr(os, "listxattr", counting_listxattr)
        monkeypatch.setattr(json, "loads", counting_loads)
        again = node.backup([files_asset(store)]).artifacts[0].source
        assert asked == [] and again["objects"]["read"] == 0 and again["entries"]["directories"] == 3
        # their cached lines are compared as text with the line their lstat makes: not even parsed (the root's is)
        assert parsed == ["."], parsed
        os.setxattr(store / "a" / "b", "user.new", b"set between the runs")
        third = node.backup([files_asset(store)])
        monkeypatch.undo()
        assert asked == ["a/b"], asked
        assert parsed[1:] == [".", "a/b"], parsed  # the changed directory's line is parsed to compare it
        entries = {e["path"]: e for e in index_entries(node, third.epoch)}
        assert set(entries["a/b"]["xattrs"]) == {"user.new"} and set(entries["c"]["xattrs"]) == {"user.kept"}
        root = restored_root(node.restore(tmp_path / "r"))
        assert os.getxattr(root / "a" / "b", "user.new") == b"set between the runs"
        assert os.getxattr(root / "c", "user.kept") == b"old"
        assert os.listxattr(root / "a") == [] and (root / "a" / "b" / "f.bin").read_bytes() == (
            store / "a" / "b" / "f.bin"
        ).read_bytes()


class TestParallelPacks:
    def test_packs_finishing_out_of_order_keep_the_index_in_walk_order(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        """Packs are sealed by several threads (the piece store's pack builder); the first pack is held until
        the second is written, so they finish out of order: every entry still names its own pack, the index
        stays in walk order, and the epoch restores equal."""
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces

        assert _files_capture.PACK_WORKERS >= 2
        monkeypatch.setattr(_files_capture, "PACK_SIZE", 64 << 10)
        store = tmp_path / "da"
        store_tools.make(store, count=120)
        second_written = threading.Event()
        finished = []
        real_put = pieces.PieceWriter.put
        calls = []
        counting = threading.Lock()

        def ordered_put(self, data, sha256=None):
            with counting:
                number = len(calls)
                calls.append(number)
            if number == 0:
                assert second_written.wait(120), "the second pack was not written beside the first"
            result = real_put(self, data, sha256)
            finished.append(number)
            if number == 1:
                second_written.set()
            return result

        monkeypatch.setattr(pieces.PieceWriter, "put", ordered_put)
        manifest = node.backup([files_asset(store)])
        monkeypatch.undo()
        assert finished[:2] == [1, 0]
        facts = manifest.artifacts[0].source["objects"]
        assert facts["new_packs"] == len(finished) > 2
        entries = index_entries(node, manifest.epoch)
        paths = [e["path"] for e in entries]
        assert paths[0] == "." and paths[1:] == sorted(paths[1:], key=lambda p: p.split("/"))
        refs = refs_of(node, manifest.epoch)
        packed = [e for e in entries if "offset" in e]
        assert packed and all(e["object"] in refs and "_pack" not in e for e in packed)
        assert len({e["object"] for e in packed}) == len(finished)
        root = restored_root(node.restore(tmp_path / "r"))
        assert store_tools.meta(root) == store_tools.meta(store)


class TestRestorePath:
    def test_a_packed_file_is_opened_once_and_keeps_every_attribute(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        """A packed file is written when it is created, from its pack decrypted ahead: one open of the
        restored file, its content, owner, mode (set-id), nanosecond mtime, xattrs and holes kept."""
        store = tmp_path / "da"
        store_tools.make(store, count=60)
        sparse = store / "index" / "sparse.bin"
        with open(sparse, "wb") as handle:
            handle.write(b"\x01" * 4096)
            handle.seek(192 << 10)
            handle.write(b"\x02" * 4096)
        os.utime(sparse, ns=(1_760_000_000_000_000_007, 1_760_000_000_000_000_007))
        assert os.stat(sparse).st_blocks * 512 < 64 << 10
        os.setxattr(store / "index" / "head.json", "user.origin", b"node-7")
        expected = store_tools.meta(store)
        manifest = node.backup([files_asset(store)])
        entries = {e["path"]: e for e in index_entries(node, manifest.epoch)}
        assert "offset" in entries["index/sparse.bin"] and entries["index/sparse.bin"].get("sparse")
        assert "offset" in entries["index/head.json"] and "offset" in entries["bin/da-tool"]
        opened = {}
        real_open = os.open

        def counting_open(path, flags, *args, **kwargs):
            fd = real_open(path, flags, *args, **kwargs)
            if flags & os.O_WRONLY:
                info = os.fstat(fd)
                opened[info.st_ino] = opened.get(info.st_ino, 0) + 1
            return fd

        monkeypatch.setattr(os, "open", counting_open)
        root = restored_root(node.restore(tmp_path / "r"))
        monkeypatch.undo()
        assert store_tools.meta(root) == expected
        for rel in ("index/sparse.bin", "index/head.json", "bin/da-tool"):
            assert opened[os.stat(root / rel).st_ino] == 1, rel
        assert os.stat(root / "index" / "sparse.bin").st_blocks * 512 < 64 << 10, "the holes were filled"
        assert os.getxattr(root / "index" / "head.json", "user.origin") == b"node-7"

    def test_packed_files_are_written_by_writing_threads_into_pinned_directories(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        """Packed files are created, written and given their attributes by the writing threads, in batches,
        each at its own descriptor of the directory the extraction made (never a path): the tree comes back
        equal, attributes included, and a file listed twice is still refused."""
        monkeypatch.setattr(_files_objects, "WRITERS", 2)  # off by default (measured: no gain on 2 cores)
        store = tmp_path / "da"
        store_tools.make(store, count=150)
        expected = store_tools.meta(store)
        node.backup([files_asset(store)])
        creators = []
        real_open = os.open

        def recording_open(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and flags & os.O_EXCL:
                creators.append((threading.current_thread().name, kwargs.get("dir_fd")))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", recording_open)
        root = restored_root(node.restore(tmp_path / "r"))
        monkeypatch.undo()
        assert store_tools.meta(root) == expected
        written = [fd for name, fd in creators if name.startswith("nodekeep-write")]
        assert len(written) >= 150 and None not in written

    def test_a_tree_of_many_tiny_files_restores_within_a_small_descriptor_limit(
        self, node, files_asset, tmp_path, monkeypatch
    ):
        """The writing threads hold one descriptor per directory per batch, and few batches at once: 1,500 tiny
        files (far more than fit the descriptor limit set for the restore) come back equal."""
        import resource

        monkeypatch.setattr(_files_objects, "WRITERS", 2)
        store = tmp_path / "da"
        store.mkdir()
        for number in range(1500):
            (store / ("f%04d" % number)).write_bytes(b"%d" % number)
        node.backup([files_asset(store)])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        try:
            root = restored_root(node.restore(tmp_path / "r"))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert sorted(os.listdir(root)) == sorted(os.listdir(store))
        assert all((root / name).read_bytes() == (store / name).read_bytes() for name in os.listdir(store))

    def test_members_of_a_pack_dropped_to_bound_memory_are_filled_by_reading_it_again(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        """An incremental epoch's new pack holds files spread over the walk; with no room to hold packs it is
        dropped whenever the next pack comes, and its later members are filled from a second read."""
        monkeypatch.setattr(_files_capture, "PACK_SIZE", 32 << 10)
        store = tmp_path / "da"
        made = store_tools.make(store, count=200)
        node.backup([files_asset(store)])
        time.sleep(0.05)
        store_tools.churn(store, made["blobs"], fraction=0.05)
        second = node.backup([files_asset(store)])
        expected = store_tools.meta(store)
        packs = {e["object"] for e in index_entries(node, second.epoch) if "offset" in e}
        reads = []
        real_read_pack = _files_objects._ObjectReader.read_pack

        def counting_read_pack(self, name, *args):
            reads.append(name)
            return real_read_pack(self, name, *args)

        monkeypatch.setattr(_files_objects._ObjectReader, "read_pack", counting_read_pack)
        assert store_tools.meta(restored_root(node.restore(tmp_path / "r1"))) == expected
        assert sorted(reads) == sorted(packs)  # each pack decrypted once
        reads.clear()
        monkeypatch.setattr(_files_objects, "HOLD_BYTES", 0)
        assert store_tools.meta(restored_root(node.restore(tmp_path / "r2"))) == expected
        assert set(reads) == packs and len(reads) > len(packs)


class TestRacyReads:
    def test_only_a_file_changed_within_the_racy_window_is_read_twice(self, node, files_asset, tmp_path, monkeypatch):
        """The torn-read check (a second read of the same bytes) is paid only for "racy" files, as git does:
        a file whose ctime is within RACY_NS of the read. The clock is fixed so that the window starts
        exactly at the newer file's ctime: the older file is read once, the newer one twice."""
        store = tmp_path / "da"
        store.mkdir()
        old, new = store / "old.bin", store / "new.bin"
        old.write_bytes(b"o" * 5000)
        new.write_bytes(b"n" * 6000)
        while os.stat(new).st_ctime_ns <= os.stat(old).st_ctime_ns:
            new.write_bytes(b"n" * 6000)  # until the file system's (coarse) clock has ticked between them
        threshold = os.stat(new).st_ctime_ns
        monkeypatch.setattr(_files_capture, "_now_ns", lambda: threshold + _files_capture.RACY_NS)
        second_reads = []
        real_pread = os.pread

        def counting_pread(fd, size, offset):
            second_reads.append(os.fstat(fd).st_ino)
            return real_pread(fd, size, offset)

        monkeypatch.setattr(os, "pread", counting_pread)
        manifest = node.backup([files_asset(store)])
        assert second_reads == [os.stat(new).st_ino]
        facts = manifest.artifacts[0].source["objects"]
        assert facts["racy"] == 1 and facts["read"] == 2 and facts["retries"] == 0
        monkeypatch.undo()
        root = restored_root(node.restore(tmp_path / "r"))
        assert (root / "old.bin").read_bytes() == b"o" * 5000 and (root / "new.bin").read_bytes() == b"n" * 6000

    def test_a_small_file_costs_one_open_one_read_and_one_fstat(self, node, files_asset, tmp_path, monkeypatch):
        """The walk's lstat is the "before" of the torn-read check: a small file that is not racy is opened once,
        read with one read() and stat'ed once on its descriptor (the "after"); its holes, flags and xattrs are
        read on that descriptor. Its content, xattrs and holes are kept."""
        store = tmp_path / "da"
        store.mkdir()
        plain, sparse = store / "plain.bin", store / "sparse.bin"
        plain.write_bytes(b"p" * 7000)
        os.setxattr(plain, "user.kept", b"yes")
        with open(sparse, "wb") as handle:
            handle.write(b"s" * 4096)
            handle.truncate(256 << 10)
        watched = {os.stat(path).st_ino: path.name for path in (plain, sparse)}
        calls = {"open": [], "fstat": [], "read": [], "pread": []}
        real = {name: getattr(os, name) for name in calls}

        def counting(name):
            def call(*args, **kwargs):
                result = real[name](*args, **kwargs)
                fd = result if name == "open" else args[0]
                if isinstance(fd, int) and fd >= 0:
                    ino = real["fstat"](fd).st_ino
                    if ino in watched:
                        calls[name].append(watched[ino])
                return result

            return call

        monkeypatch.setattr(_files_capture, "_now_ns", lambda: 1 << 62)  # nothing is racy
        for name in calls:
            monkeypatch.setattr(os, name, counting(name))
        manifest = node.backup([files_asset(store)])
        monkeypatch.undo()
        for name in ("plain.bin", "sparse.bin"):
            assert [call.count(name) for call in calls.values()] == [1, 1, 1, 0], (name, calls)
        entries = {e["path"]: e for e in index_entries(node, manifest.epoch)}
        assert entries["sparse.bin"]["sparse"] == [[0, 4096]] and "user.kept" in entries["plain.bin"]["xattrs"]
        root = restored_root(node.restore(tmp_path / "r"))
        assert (root / "plain.bin").read_bytes() == b"p" * 7000 and os.getxattr(root / "plain.bin", "user.kept") == b"yes"
        assert (root / "sparse.bin").read_bytes() == sparse.read_bytes()
        assert os.stat(root / "sparse.bin").st_blocks * 512 < 64 << 10

    def test_the_racy_window_covers_the_kernels_dirty_page_writeback(self):
        """A mapping's stores set no time while its page stays dirty: the window is at least the kernel's
        dirty expiry plus its writeback interval (a page is made clean, so the next store sets the times)."""
        total = 0
        for name in ("dirty_expire_centisecs", "dirty_writeback_centisecs"):
            total += int(Path("/proc/sys/vm/" + name).read_text().strip())
        assert _files_capture.RACY_NS >= total * 10**7


class TestDamage:
    def test_tampered_object_is_found_by_verify_deep_verify_and_restore(self, node, store_tools, files_asset, tmp_path):
        store = tmp_path / "da"
        store_tools.make(store, count=100)
        manifest = node.backup([files_asset(store)])
        assert node.verify()["ok"]
        name = min(refs_of(node, manifest.epoch))
        path = Path(node.repository.root) / node.name / "objects" / name[:2] / name
        data = bytearray(path.read_bytes())
        data[-20] ^= 0x01
        path.write_bytes(bytes(data))

        report = node.verify()
        assert not report["ok"]
        assert name in report["problems"][0] and "damaged or modified" in report["problems"][0]
        deep = node.verify(deep=True)
        assert not deep["ok"]
        with pytest.raises(NodekeepError) as failed:
            node.restore(tmp_path / "r")
        assert name in failed.value.message
        leftovers = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
        assert leftovers == []  # nothing half restored stays behind

    def test_missing_object_is_found_by_verify(self, node, store_tools, files_asset, tmp_path):
        store = tmp_path / "da"
        store_tools.make(store, count=50)
        manifest = node.backup([files_asset(store)])
        name = max(refs_of(node, manifest.epoch))
        node.repository.remove_object(node.name, name)
        report = node.verify()
        assert not report["ok"] and "missing" in report["problems"][0] and name in report["problems"][0]
        # the next backup uploads it again (the listing says it is gone), and verify is green again
        node.backup([files_asset(store)])
        assert node.verify()["ok"]

    def test_tampered_refs_list_is_found(self, node, store_tools, files_asset, tmp_path):
        store = tmp_path / "da"
        store_tools.make(store, count=20)
        manifest = node.backup([files_asset(store)])
        refs = node.epoch_dir(manifest.epoch) / "da.refs.txt"
        refs.write_text(refs.read_text().splitlines()[0] + "\n")
        report = node.verify()
        assert not report["ok"] and "does not match its manifest" in report["problems"][0]


class TestRetention:
    def test_retention_removes_the_old_epoch_and_gc_only_unreferenced_objects(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        monkeypatch.setattr(_files_capture, "PACK_SIZE", 1)  # one file per pack: each changed file frees its pack
        store = tmp_path / "da"
        made = store_tools.make(store, count=300)
        asset = files_asset(store)
        first = node.backup([asset])
        store_tools.churn(store, made["blobs"], fraction=0.05, add=5, delete=5)
        second = node.backup([asset])
        only_first = set(refs_of(node, first.epoch)) - set(refs_of(node, second.epoch))
        assert only_first
        later = datetime.now(timezone.utc) + timedelta(days=2)
        policy = RetentionPolicy(keep_last=1)

        dry = apply_retention(node.repository, node.name, policy, node.public_line, dry_run=True, now=later)
        assert dry["objects"]["removed"] == len(only_first)
        assert len(node.repository.object_names(node.name)) == len(only_first | set(refs_of(node, second.epoch)))

        result = apply_retention(node.repository, node.name, policy, node.public_line, now=later)
        assert [e["epoch"] for e in result["removed"]] == [first.epoch]
        assert result["objects"]["removed"] == len(only_first) and result["objects"]["deferred"] is None
        assert set(node.repository.object_names(node.name)) == set(refs_of(node, second.epoch))
        assert result["changed"] is True
        assert node.verify()["ok"]
        assert store_tools.meta(restored_root(node.restore(tmp_path / "r"))) == store_tools.meta(store)

    def test_gc_waits_while_a_backup_may_be_running_and_keeps_young_objects(
        self, node, store_tools, files_asset, tmp_path, monkeypatch
    ):
        monkeypatch.setattr(_files_capture, "PACK_SIZE", 1)
        store = tmp_path / "da"
        made = store_tools.make(store, count=100)
        asset = files_asset(store)
        node.backup([asset])
        store_tools.churn(store, made["blobs"], fraction=0.1, add=0, delete=0)
        node.backup([asset])
        policy = RetentionPolicy(keep_last=1)
        running = node.repository.new_epoch(node.name)  # an incomplete epoch: a backup in progress
        result = apply_retention(node.repository, node.name, policy, node.public_line)
        assert result["objects"]["removed"] == 0 and running in result["objects"]["deferred"]
        node.repository.remove_epoch(node.name, running)
        # no run in progress, but the unreferenced objects are younger than the grace: kept
        result = apply_retention(node.repository, node.name, policy, node.public_line)
        assert result["objects"]["removed"] == 0 and result["objects"]["young"] > 0

    def test_a_pack_stays_while_any_member_is_referenced(self, node, files_asset, tmp_path):
        store = tmp_path / "da"
        store.mkdir()
        for number in range(3):
            (store / ("blob-%d" % number)).write_bytes(os.urandom(1000 + number))
        asset = files_asset(store)
        first = node.backup([asset])
        (pack,) = list(refs_of(node, first.epoch))
        later = datetime.now(timezone.utc) + timedelta(days=2)
        policy = RetentionPolicy(keep_last=1)

        (store / "blob-0").unlink()
        (store / "blob-1").unlink()
        second = node.backup([asset])
        assert second.artifacts[0].source["objects"]["new_objects"] == 0
        assert set(refs_of(node, second.epoch)) == {pack}
        result = apply_retention(node.repository, node.name, policy, node.public_line, now=later)
        assert result["objects"]["removed"] == 0 and set(node.repository.object_names(node.name)) == {pack}
        root = restored_root(node.restore(tmp_path / "r1"))
        assert sorted(p.name for p in root.iterdir()) == ["blob-2"]
        assert (root / "blob-2").read_bytes() == (store / "blob-2").read_bytes()

        (store / "blob-2").unlink()
        (store / "new").write_bytes(b"new content")
        third = node.backup([asset])
        result = apply_retention(node.repository, node.name, policy, node.public_line, now=later)
        assert result["objects"]["removed"] == 1
        assert set(node.repository.object_names(node.name)) == set(refs_of(node, third.epoch)) != {pack}


class TestConfig:
    def test_config_file_and_directory_round_trip(self, node, tmp_path):
        etc = tmp_path / "etc" / "guts"
        etc.mkdir(parents=True)
        config = etc / "config.yaml"
        config.write_text("listen: 0.0.0.0:9000\n")
        os.chmod(config, 0o640)
        os.chown(config, 1234, 2345)
        os.utime(config, ns=(1_760_000_000_987_654_321, 1_760_000_000_987_654_321))
        conf_d = tmp_path / "etc" / "animica"
        (conf_d / "chain").mkdir(parents=True)
        (conf_d / "chain" / "params.toml").write_text("chain_id = 1\n")
        (conf_d / "cors.json").write_text("{}\n")
        os.chmod(conf_d / "cors.json", 0o600)
        state = str(tmp_path / "state")
        assets = [
            {"name": "guts-config", "type": "config", "path": str(config), "state_dir": state},
            {"name": "animica-config", "type": "config", "path": str(conf_d), "state_dir": state},
        ]
        manifest = node.backup(assets)
        by_name = {a.name: a for a in manifest.artifacts}
        # drift is found by a keyed MAC under the node's key; the manifest holds no unkeyed hash of the file
        plain = hashlib.sha256(b"listen: 0.0.0.0:9000\n").hexdigest()
        for artifact in by_name.values():
            assert artifact.content_sha256 is None and "sha256" not in artifact.source
            assert re.fullmatch("[0-9a-f]{64}", artifact.source["content_mac"]) and artifact.source["state_dir"] == state
        assert plain not in json.dumps([a.to_dict() for a in manifest.artifacts])
        assert by_name["animica-config"].file == "animica-config.tar.zst.age"

        report = node.verify()
        assert report["ok"] and {a["extra"]["live"] for a in report["artifacts"]} == {"same"}
        config.write_text("listen: 0.0.0.0:9001\n")
        drift = {a["name"]: a["extra"]["live"] for a in node.verify()["artifacts"]}
        assert drift == {"guts-config": "differs", "animica-config": "same"}

        result = node.restore(tmp_path / "r")
        paths = {a["name"]: Path(a["path"]) for a in result["artifacts"]}
        restored = paths["guts-config"]
        info = restored.stat()
        assert restored.read_text() == "listen: 0.0.0.0:9000\n"
        assert (oct(info.st_mode & 0o7777), info.st_uid, info.st_gid) == (oct(0o640), 1234, 2345)
        assert info.st_mtime_ns == 1_760_000_000_987_654_321
        tree = paths["animica-config"]
        assert (tree / "chain" / "params.toml").read_text() == "chain_id = 1\n"
        assert (tree / "cors.json").stat().st_mode & 0o777 == 0o600
        assert node.verify(deep=True)["ok"]
        # a host without the node's key (another state_dir) cannot compare, and says so
        shutil.rmtree(state)
        assert {a["extra"]["live"] for a in node.verify()["artifacts"]} == {"not compared"}

    def test_an_epoch_of_an_older_version_still_compares_by_its_plain_sha256(self, node, tmp_path):
        """Manifests written before the keyed MAC recorded content_sha256: verify still finds drift with it."""
        config = tmp_path / "app.yaml"
        config.write_text("listen: 1\n")
        old = Artifact(
            name="cfg",
            asset_type="config",
            file="cfg.zst.age",
            format="config+zstd+age",
            size=1,
            sha256="0" * 64,
            content_size=10,
            content_sha256=hashlib.sha256(b"listen: 1\n").hexdigest(),
            source={"content": "file", "path": str(config), "sha256": hashlib.sha256(b"listen: 1\n").hexdigest()},
        )
        kind = asset_type("config")
        context = RunContext(node.repository, node.name, "20260101T000000Z", None, artifact=old)
        assert kind.verify_extra(old, context, False) == {"live": "same"}
        config.write_text("listen: 2\n")
        assert kind.verify_extra(old, context, False) == {"live": "differs"}

    def test_config_missing_path_is_a_clear_error(self, node, tmp_path, clear_error):
        with pytest.raises(NodekeepError) as failed:
            node.backup([{"name": "cfg", "type": "config", "path": str(tmp_path / "nope.yaml")}])
        clear_error(failed.value, "does not exist")


def test_standard_tools_open_the_index_and_an_object(node, store_tools, files_asset, tmp_path, age_key):
    store = tmp_path / "da"
    store_tools.make(store, count=10)
    (store / "index" / "large.bin").write_bytes(os.urandom(_files_capture.PACK_MEMBER_MAX + 1))
    manifest = node.backup([files_asset(store)])
    index = node.epoch_dir(manifest.epoch) / "da.index.jsonl.zst.age"
    shown = subprocess.run(
        "age -d -i %s %s | zstd -d" % (age_key.identity_path, index), shell=True, capture_output=True, check=True
    ).stdout.decode()
    entries = [json.loads(line) for line in shown.splitlines()[1:]]
    entry = next(e for e in entries if e["path"] == "index/head.json")
    obj = Path(node.repository.root) / node.name / "objects" / entry["object"][:2] / entry["object"]
    # a small file is a slice of a pack: docs/files.md gives this command
    content = subprocess.run(
        "age -d -i %s %s | zstd -d | tail -c +%d | head -c %d"
        % (age_key.identity_path, obj, entry["offset"] + 1, entry["size"]),
        shell=True,
        capture_output=True,
        check=True,
    ).stdout
    assert content == (store / "index" / "head.json").read_bytes()
    # a large file is an object of its own: the whole plaintext
    large = next(e for e in entries if e["path"] == "index/large.bin")
    assert "offset" not in large and large["size"] > _files_capture.PACK_MEMBER_MAX
    obj = Path(node.repository.root) / node.name / "objects" / large["object"][:2] / large["object"]
    content = subprocess.run(
        "age -d -i %s %s | zstd -d" % (age_key.identity_path, obj), shell=True, capture_output=True, check=True
    ).stdout
    assert content == (store / "index" / "large.bin").read_bytes()
    shutil.rmtree(store)
