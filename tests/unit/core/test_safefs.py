"""core/safefs.py on the real filesystem: a FIFO or device is refused without being waited on, no walk goes
through a planted link, a tree is removed without touching what its links point to, a staging jail pins its
directories (a swap after the walk cannot redirect a write), and the restore sweep removes only the
temporary names a killed run leaves."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import safefs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError

pytestmark = pytest.mark.timeout(30)


def test_kind_of_names_every_file_type(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "file").write_text("x")
    os.symlink("file", tmp_path / "link")
    kinds = {name: safefs.kind_of(os.lstat(tmp_path / name).st_mode) for name in ("fifo", "file", "link")}
    assert kinds == {"fifo": "FIFO (named pipe)", "file": "regular file", "link": "symlink"}
    assert safefs.kind_of(os.stat("/dev/null").st_mode) == "character device"
    assert safefs.kind_of(os.stat(tmp_path).st_mode) == "directory"


class TestOpenRegular:
    def test_reads_a_regular_file_blocking(self, tmp_path):
        path = tmp_path / "db"
        path.write_bytes(b"SQLite format 3\x00")
        fd = safefs.open_regular(str(path), CaptureError, "the source database", "fix the path")
        try:
            assert os.get_blocking(fd) and os.read(fd, 6) == b"SQLite"
        finally:
            os.close(fd)

    def test_a_fifo_is_refused_at_once(self, tmp_path):
        """Opening a FIFO without a writer would hang a backup forever: it is refused, naming its kind."""
        fifo = tmp_path / "app.db"
        os.mkfifo(fifo)
        with pytest.raises(CaptureError, match=r"the source database .*app.db is a FIFO \(named pipe\), not a regular"):
            safefs.open_regular(str(fifo), CaptureError, "the source database", "fix the path")

    @pytest.mark.parametrize("path", ["/dev/null", "DIR"])
    def test_a_device_or_directory_is_refused(self, tmp_path, path):
        path = str(tmp_path) if path == "DIR" else path
        with pytest.raises(RestoreError, match="not a regular file; it was not read: give a file"):
            safefs.open_regular(path, RestoreError, "the file", "give a file")


class TestWalks:
    def test_open_beneath_makes_private_directories(self, tmp_path):
        fd = safefs.open_beneath(str(tmp_path), ["a", "b", "c"], create=True)
        try:
            assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "a" / "b" / "c"))
        finally:
            os.close(fd)
        assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o700

    def test_a_planted_link_is_never_gone_through(self, tmp_path):
        outside = tmp_path / "outside"
        outside.mkdir()
        root = tmp_path / "root"
        (root / "a").mkdir(parents=True)
        os.symlink(outside, root / "a" / "b")
        with pytest.raises(safefs.LinkRefused) as refused:
            safefs.open_beneath(str(root), ["a", "b", "c"], create=True)
        assert list(outside.iterdir()) == []
        assert safefs.describe_refusal(refused.value, str(root / "a")) == (
            "%s/b is a symlink, not a directory; nodekeep never goes through a link it did not create" % (root / "a")
        )

    @pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
    def test_only_single_components(self, tmp_path, name):
        fd = safefs.open_root(str(tmp_path))
        try:
            with pytest.raises(safefs.LinkRefused):
                safefs.open_dir_at(fd, name, create=True)
        finally:
            os.close(fd)

    def test_remove_tree_at_removes_links_not_their_targets(self, tmp_path):
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep").write_text("precious")
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "file").write_text("x")
        os.symlink(outside, tree / "sub" / "to-outside")
        os.symlink(outside, tmp_path / "link-at-top")
        fd = safefs.open_root(str(tmp_path))
        try:
            with pytest.raises(safefs.LinkRefused):
                safefs.remove_tree_at(fd, "link-at-top")
            safefs.remove_tree_at(fd, "tree")
        finally:
            os.close(fd)
        assert not tree.exists() and (outside / "keep").read_text() == "precious"
        assert os.path.islink(tmp_path / "link-at-top")


class TestJail:
    def test_an_anchored_write_lands_where_the_walk_was_even_after_a_swap(self, tmp_path):
        staging = tmp_path / "staging"
        outside = tmp_path / "outside"
        outside.mkdir()
        with safefs.Jail(str(staging), RestoreError, "restore elsewhere") as jail:
            anchored = jail.anchor(str(staging / "srv" / "app" / "app.db"))
            assert anchored.startswith(safefs.PROC_FD + "/")
            # someone swaps the walked directory for a link to outside, after the walk
            os.rename(staging / "srv" / "app", staging / "srv" / "moved")
            os.symlink(outside, staging / "srv" / "app")
            with open(anchored, "w") as handle:
                handle.write("restored")
            assert jail.real("failed at %s" % anchored) == "failed at %s" % (staging / "srv" / "app" / "app.db")
        assert list(outside.iterdir()) == []
        assert (staging / "srv" / "moved" / "app.db").read_text() == "restored"

    def test_a_link_in_the_staging_tree_is_refused_by_name(self, tmp_path):
        staging = tmp_path / "staging"
        staging.mkdir()
        os.symlink(tmp_path, staging / "srv")
        with safefs.Jail(str(staging), RestoreError, "restore elsewhere") as jail:
            with pytest.raises(RestoreError, match="srv is a symlink, not a directory; nodekeep never goes through"):
                jail.check(str(staging / "srv" / "app.db"))
            with pytest.raises(RestoreError, match="is not inside the staging path"):
                jail.anchor(str(tmp_path / "elsewhere"))
            assert jail.check(str(staging / "missing" / "app.db")) is False
            assert jail.check(str(staging / "srv")) is True

    def test_the_root_must_be_absolute(self):
        with pytest.raises(RestoreError, match="'relative/dir' is not an absolute path"):
            safefs.Jail("relative/dir", RestoreError, "give an absolute path")


def test_the_sweep_removes_only_a_killed_runs_temporary_names(tmp_path):
    leftovers = [".app.db.nodekeep-0123abcd", ".app.db.nodekeep-0123abcd-wal", ".cfg.nodekeep-view-89abcdef"]
    kept = ["app.db", ".app.db.nodekeep-XYZ", "nodekeep-0123abcd", ".hidden"]
    for name in leftovers[:2] + kept:
        (tmp_path / name).write_text(name)
    (tmp_path / leftovers[2]).mkdir()
    (tmp_path / leftovers[2] / "inner").write_text("x")
    with safefs.swept_directory(str(tmp_path)) as removed:
        assert removed == sorted(leftovers)
        assert (tmp_path / safefs.RESTORE_LOCK).exists()
    assert sorted(os.listdir(tmp_path)) == sorted(kept)
