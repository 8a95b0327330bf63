"""archive.py and extract.py: tar streams of directory trees and their safe extraction (sealed files and
directories: tests/unit/ops/test_seal_path.py).

Real files, real GNU tar, zstd and age CLIs. Errors of the producer thread must reach the reader; a
malicious archive must not write anything outside its destination.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading

import pytest
from tree_helpers import AS_ROOT, make_tree, member, snapshot, tar_bytes

from ansible_collections.nodekeep.backup.plugins.module_utils.core import archive, extract, fs
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal as seal_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
)

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------
# producing and extracting
# --------------------------------------------------------------------------


class TestRoundTrip:
    def test_everything_survives(self, tmp_path):
        src = make_tree(tmp_path / "src")
        with archive.tar_reader(src) as stream:
            data = stream.read()
            stats = stream.stats()
        assert stats["files"] == 3 and stats["hardlinks"] == 1 and stats["symlinks"] == 2 and stats["other"] == 1
        assert stats["directories"] == 3 and stats["bytes"] == (3 << 20) + 12
        assert stats["skipped"] == [] and stats["changed"] == [] and stats["outside_links"] == []
        counts = extract.extract_tar(io.BytesIO(data), str(tmp_path / "dst"))
        assert counts["files"] == 3 and counts["hardlinks"] == 1
        assert snapshot(tmp_path / "dst") == snapshot(src)

    def test_gnu_tar_reads_the_stream_exactly(self, tmp_path):
        src = make_tree(tmp_path / "src")
        with archive.tar_reader(src) as stream:
            (tmp_path / "out.tar").write_bytes(stream.read())
        listing = subprocess.run(["tar", "-tvf", str(tmp_path / "out.tar")], capture_output=True, text=True, check=True)
        assert "./\n" in listing.stdout.replace(" ./", "\n./") or listing.stdout.splitlines()[0].endswith(" ./")
        (tmp_path / "gnu").mkdir()
        subprocess.run(["tar", "-xpf", str(tmp_path / "out.tar"), "-C", str(tmp_path / "gnu")], check=True)
        assert snapshot(tmp_path / "gnu") == snapshot(src)

    def test_a_gnu_tar_archive_extracts_exactly(self, tmp_path):
        src = make_tree(tmp_path / "src")
        made = subprocess.run(
            ["tar", "--format=posix", "--numeric-owner", "-C", src, "-cf", "-", "."], capture_output=True, check=True
        )
        extract.extract_tar(io.BytesIO(made.stdout), str(tmp_path / "dst"))
        assert snapshot(tmp_path / "dst") == snapshot(src)

    def test_names_that_are_not_utf8(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        weird = os.path.join(os.fsencode(str(src)), b"caf\xe9-\xff.bin")
        with open(weird, "wb") as handle:
            handle.write(b"latin-1 name")
        with archive.tar_reader(str(src)) as stream:
            extract.extract_tar(stream, str(tmp_path / "dst"))
        assert os.listdir(os.fsencode(str(tmp_path / "dst"))) == [b"caf\xe9-\xff.bin"]

    @pytest.mark.skipif(not AS_ROOT, reason="only root can restore other owners")
    def test_ownership_is_numeric(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        (src / "f").write_text("x")
        os.chown(src / "f", 54321, 54321)  # no such user or group on this host
        with archive.tar_reader(str(src)) as stream:
            data = stream.read()
        with tarfile.open(fileobj=io.BytesIO(data)) as handle:
            info = handle.getmember("f")
        assert (info.uid, info.gid, info.uname, info.gname) == (54321, 54321, "", "")
        extract.extract_tar(io.BytesIO(data), str(tmp_path / "dst"))
        assert os.stat(tmp_path / "dst" / "f").st_uid == 54321
        extract.extract_tar(io.BytesIO(data), str(tmp_path / "mine"), keep_ownership=False)
        assert os.stat(tmp_path / "mine" / "f").st_uid == os.geteuid()

    def test_include_and_exclude(self, tmp_path):
        src = make_tree(tmp_path / "src")
        with archive.tar_reader(src, exclude=["sub", "*.txt"]) as stream:
            extract.extract_tar(stream, str(tmp_path / "ex"))
        assert sorted(os.listdir(tmp_path / "ex")) == ["dangling", "empty", "fifo", "secret"]
        with archive.tar_reader(src, include=["sub/deep", "big.bin"]) as stream:
            extract.extract_tar(stream, str(tmp_path / "in"))
        kept = snapshot(tmp_path / "in")
        assert sorted(kept) == [".", "sub", "sub/big.bin", "sub/deep"]
        original = snapshot(src)
        assert kept["sub"] == original["sub"] and kept["sub/deep"] == original["sub/deep"]

    def test_sockets_are_skipped_and_listed(self, tmp_path):
        import socket

        src = tmp_path / "src"
        src.mkdir()
        (src / "data").write_text("x")
        server = socket.socket(socket.AF_UNIX)
        try:
            server.bind(str(src / "app.sock"))
            with archive.tar_reader(str(src)) as stream:
                extract.extract_tar(stream, str(tmp_path / "dst"))
                stats = stream.stats()
        finally:
            server.close()
        assert stats["skipped"] == [{"path": "app.sock", "reason": "socket, not archived"}]
        assert os.listdir(tmp_path / "dst") == ["data"]

    def test_links_leaving_the_tree_are_archived_and_listed(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        os.symlink("/etc/hostname", src / "abs")
        os.symlink("../outside", src / "up")
        with archive.tar_reader(str(src)) as stream:
            stream.read()
            stats = stream.stats()
        assert stats["outside_links"] == [
            {"path": "abs", "target": "/etc/hostname"},
            {"path": "up", "target": "../outside"},
        ]


class TestProducerErrors:
    def test_a_file_that_shrinks_while_read_is_an_error_not_a_short_archive(self, tmp_path):
        # sysfs files report 4096 bytes but hold fewer: exactly a file that shrank under the reader.
        source = "/sys/kernel/mm/transparent_hugepage"
        if not os.path.isfile(os.path.join(source, "enabled")):
            pytest.skip("no sysfs here")
        with archive.tar_reader(source) as stream, pytest.raises(CaptureError) as excinfo:
            stream.read()
        assert "shrank while it was being archived" in excinfo.value.message
        assert excinfo.value.remedy

    def test_an_unreadable_directory_reaches_the_reader(self, tmp_path, monkeypatch):
        src = make_tree(tmp_path / "src")
        real_scandir = os.scandir

        def scandir(path):
            if str(path).endswith("/sub"):
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(archive.os, "scandir", scandir)
        with archive.tar_reader(src) as stream, pytest.raises(CaptureError) as excinfo:
            extract.extract_tar(stream, str(tmp_path / "dst"))
        assert "cannot list the directory" in excinfo.value.message and "sub" in excinfo.value.message

    def test_the_error_fails_the_seal_instead_of_a_short_artifact(self, tmp_path, monkeypatch, age_key):
        src = make_tree(tmp_path / "src")

        def broken(self, archive_file, rel, path, info, member):
            raise OSError(5, "Input/output error", path)

        monkeypatch.setattr(archive.TarReader, "_emit_file", broken)
        sink = io.BytesIO()
        with archive.tar_reader(src) as stream, pytest.raises(CaptureError) as excinfo:
            seal_utils.seal(stream, sink, seal_utils.load_recipients([age_key.recipient]))
        assert "Input/output error" in excinfo.value.message

    def test_closing_early_stops_the_producer(self, tmp_path):
        src = tmp_path / "src"
        src.mkdir()
        for index in range(20):
            (src / ("f%02d" % index)).write_bytes(os.urandom(1 << 20))
        before = threading.active_count()
        stream = archive.tar_reader(str(src))
        assert stream.read(1000)
        stream.close()
        assert threading.active_count() == before
        with pytest.raises(ValueError):
            stream.read(10)

    def test_not_a_directory(self, tmp_path):
        (tmp_path / "file").write_text("x")
        with pytest.raises(CaptureError, match="is not a directory"):
            archive.tar_reader(str(tmp_path / "file"))
        with pytest.raises(CaptureError, match="does not exist"):
            archive.tar_reader(str(tmp_path / "missing"))


# --------------------------------------------------------------------------
# extraction refuses what could escape
# --------------------------------------------------------------------------


EVIL = {
    "absolute path": ([(member("/tmp/nodekeep-evil"), b"x")], "absolute path"),
    "dot-dot": ([(member("a/../../evil"), b"x")], "'..'"),
    "write through an absolute symlink": (
        [(member("l", tarfile.SYMTYPE, "/etc"), None), (member("l/cron.d/evil", tarfile.REGTYPE), b"x")],
        "written through",
    ),
    "write through an escaping symlink chain": (
        [
            (member("s", tarfile.SYMTYPE, "."), None),
            (member("t", tarfile.SYMTYPE, "s/.."), None),
            (member("t/evil", tarfile.REGTYPE), b"x"),
        ],
        "written through",
    ),
    "write through a symlink": (
        [
            (member("d", tarfile.DIRTYPE, mode=0o755), None),
            (member("l", tarfile.SYMTYPE, "d"), None),
            (member("l/file", tarfile.REGTYPE), b"x"),
        ],
        "written through",
    ),
    "hard link outside": ([(member("h", tarfile.LNKTYPE, "/etc/passwd"), None)], "absolute path"),
    "hard link to nothing": ([(member("h", tarfile.LNKTYPE, "nothing"), None)], "not a file extracted before"),
    "device": ([(member("null", tarfile.CHRTYPE), None)], "device node"),
    "twice": ([(member("f"), b"1"), (member("f"), b"2")], "more than once"),
}


class TestSafeExtraction:
    @pytest.mark.parametrize("case", sorted(EVIL))
    def test_refused(self, tmp_path, case):
        members, needle = EVIL[case]
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep").write_text("keep")
        before = snapshot(outside)
        with pytest.raises(RestoreError) as excinfo:
            extract.extract_tar(io.BytesIO(tar_bytes(members)), str(tmp_path / "dest"))
        assert needle in excinfo.value.message and excinfo.value.remedy
        assert snapshot(outside) == before
        assert not os.path.exists("/tmp/nodekeep-evil")

    def test_a_non_empty_destination_is_refused(self, tmp_path):
        (tmp_path / "dest").mkdir()
        (tmp_path / "dest" / "mine").write_text("x")
        with pytest.raises(RestoreError, match="not empty"):
            extract.extract_tar(io.BytesIO(tar_bytes([(member("f"), b"1")])), str(tmp_path / "dest"))
        assert os.listdir(tmp_path / "dest") == ["mine"]

    def test_garbage_and_empty_streams(self, tmp_path):
        with pytest.raises(RestoreError, match="damaged or truncated"):
            extract.extract_tar(io.BytesIO(os.urandom(4096)), str(tmp_path / "a"))
        with pytest.raises(RestoreError, match="empty"):
            extract.extract_tar(io.BytesIO(b""), str(tmp_path / "b"))

    def test_a_truncated_member_is_an_error(self, tmp_path):
        data = tar_bytes([(member("f"), os.urandom(100000))])
        with pytest.raises(RestoreError, match="damaged or truncated"):
            extract.extract_tar(io.BytesIO(data[:50000]), str(tmp_path / "dest"))

    def test_implicit_parents_and_links_inside_are_fine(self, tmp_path):
        data = tar_bytes(
            [
                (member("a/b/file"), b"data"),
                (member("a/link", tarfile.SYMTYPE, "b/file"), None),
                (member("a/hard", tarfile.LNKTYPE, "a/b/file"), None),
            ]
        )
        extract.extract_tar(io.BytesIO(data), str(tmp_path / "dest"))
        assert (tmp_path / "dest" / "a" / "link").read_bytes() == b"data"
        assert os.stat(tmp_path / "dest" / "a" / "hard").st_nlink == 2


class TestTarWriter:
    def test_written_in_pieces(self, tmp_path):
        src = make_tree(tmp_path / "src")
        with archive.tar_reader(src) as stream:
            data = stream.read()
        writer = extract.tar_writer(str(tmp_path / "dst"))
        for start in range(0, len(data), 7777):
            writer.write(memoryview(data)[start : start + 7777])
        stats = writer.finish()
        assert stats["files"] == 3
        assert snapshot(tmp_path / "dst") == snapshot(src)

    def test_the_extraction_error_is_kept(self, tmp_path):
        writer = extract.tar_writer(str(tmp_path / "dst"))
        with pytest.raises(BrokenPipeError):
            payload = tar_bytes([(member("/abs"), b"x" * 10000)]) * 10
            for _attempt in range(200):
                writer.write(payload)
        error = writer.abort()
        assert isinstance(error, RestoreError) and "absolute path" in error.message


# --------------------------------------------------------------------------
# sealed files and directories
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [("0600", 0o600), ("640", 0o640), ("4755", 0o4755), (0o644, 0o644), (None, None), ("", None)],
)
def test_parse_mode(value, expected):
    assert fs.parse_mode(value) == expected


@pytest.mark.parametrize("value", ["u+rw", "0999", "77777", True, -1])
def test_parse_mode_refuses(value):
    with pytest.raises(NodekeepError):
        fs.parse_mode(value)
