"""The local repository on a real filesystem: write-once, atomic commits, complete epochs."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from contextlib import contextmanager

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import TEMP_PREFIX, LocalRepository

pytestmark = pytest.mark.timeout(30)

NODE = "node1"
EPOCH = "20260101T000000Z"


def _entries(path) -> list:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _complete(repository, epoch: str = EPOCH, node: str = NODE) -> None:
    assert repository.claim_epoch(node, epoch)
    repository.put_bytes(node, epoch, "app-db.sqlite.zst.age", b"sealed bytes")
    repository.put_bytes(node, epoch, MANIFEST_NAME, b"{}\n")
    repository.put_bytes(node, epoch, SIGNATURE_NAME, b"sig\n")


@contextmanager
def _immutable(path):
    """chattr +i: even root cannot unlink or rewrite the file while it is set."""
    proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("chattr +i is not supported on %s: %s" % (path, proc.stderr.strip()))
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


class TestWriteOnce:
    def test_put_then_get(self, repository):
        repository.put_bytes(NODE, EPOCH, "a.bin", b"hello")
        assert repository.get_bytes(NODE, EPOCH, "a.bin") == b"hello"
        assert repository.files(NODE, EPOCH) == {"a.bin": 5}
        assert repository.exists(NODE, EPOCH, "a.bin")

    def test_a_second_write_of_the_same_name_raises_and_keeps_the_first(self, repository):
        repository.put_bytes(NODE, EPOCH, "a.bin", b"first")
        with pytest.raises(RepositoryError, match="write-once"):
            repository.put_bytes(NODE, EPOCH, "a.bin", b"second")
        assert repository.get_bytes(NODE, EPOCH, "a.bin") == b"first"
        assert _entries(os.path.join(repository.root, NODE, EPOCH)) == ["a.bin"]

    def test_a_racing_writer_of_the_same_name_loses_without_replacing(self, repository):
        racing = pytest.raises(RepositoryError, match="appeared while it was being written")
        with racing, repository.open_write(NODE, EPOCH, "a.bin") as slow:
            slow.write(b"slow writer")
            with repository.open_write(NODE, EPOCH, "a.bin") as fast:
                fast.write(b"fast writer")
        assert repository.get_bytes(NODE, EPOCH, "a.bin") == b"fast writer"
        assert _entries(os.path.join(repository.root, NODE, EPOCH)) == ["a.bin"]

    def test_a_failing_block_leaves_nothing_visible_and_no_temp_file(self, repository):
        directory = os.path.join(repository.root, NODE, EPOCH)
        with pytest.raises(ZeroDivisionError), repository.open_write(NODE, EPOCH, "a.bin") as handle:
            handle.write(os.urandom(3 << 20))
            assert any(name.startswith(TEMP_PREFIX) for name in _entries(directory))
            raise ZeroDivisionError
        assert _entries(directory) == []
        assert repository.files(NODE, EPOCH) == {}
        with pytest.raises(RepositoryError, match="missing"):
            repository.get_bytes(NODE, EPOCH, "a.bin")
        # the name is still free: a retry can write it
        repository.put_bytes(NODE, EPOCH, "a.bin", b"retry")
        assert repository.get_bytes(NODE, EPOCH, "a.bin") == b"retry"

    def test_a_name_is_invisible_until_the_block_ends(self, repository):
        with repository.open_write(NODE, EPOCH, "a.bin") as handle:
            handle.write(b"partial")
            handle.flush()
            assert repository.files(NODE, EPOCH) == {}
            assert not repository.exists(NODE, EPOCH, "a.bin")
        assert repository.files(NODE, EPOCH) == {"a.bin": 7}

    def test_files_are_0600_and_directories_0700_whatever_the_umask(self, tmp_path):
        previous = os.umask(0)
        try:
            repository = LocalRepository(str(tmp_path / "repo"))
            epoch = repository.new_epoch(NODE)  # the backup flow: claim, then write
            repository.put_bytes(NODE, epoch, "a.bin", b"x")
            scratch = repository.scratch_dir()
        finally:
            os.umask(previous)
        for path in (repository.root, os.path.join(repository.root, NODE), os.path.join(repository.root, NODE, epoch)):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
        assert stat.S_IMODE(os.stat(os.path.join(repository.root, NODE, epoch, "a.bin")).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(scratch).st_mode) == 0o700
        assert repository.nodes() == [NODE]  # .scratch is not a node

    def test_directories_made_by_open_write_are_0700_too(self, tmp_path):
        previous = os.umask(0)
        try:
            repository = LocalRepository(str(tmp_path / "repo"))
            repository.put_bytes(NODE, EPOCH, "a.bin", b"x")
        finally:
            os.umask(previous)
        assert stat.S_IMODE(os.stat(os.path.join(repository.root, NODE)).st_mode) == 0o700

    def test_get_bytes_refuses_more_than_its_limit(self, repository):
        repository.put_bytes(NODE, EPOCH, "a.bin", b"x" * 100)
        with pytest.raises(RepositoryError, match="larger than"):
            repository.get_bytes(NODE, EPOCH, "a.bin", limit=99)
        assert repository.get_bytes(NODE, EPOCH, "a.bin", limit=100) == b"x" * 100


class TestEpochs:
    def test_complete_only_once_manifest_and_signature_exist(self, repository):
        assert repository.claim_epoch(NODE, EPOCH)
        assert repository.incomplete_epochs(NODE) == [EPOCH]
        repository.put_bytes(NODE, EPOCH, "app-db.sqlite.zst.age", b"sealed")
        assert not repository.is_complete(NODE, EPOCH)
        repository.put_bytes(NODE, EPOCH, MANIFEST_NAME, b"{}\n")
        assert not repository.is_complete(NODE, EPOCH)
        assert repository.complete_epochs(NODE) == []
        repository.put_bytes(NODE, EPOCH, SIGNATURE_NAME, b"sig\n")
        assert repository.is_complete(NODE, EPOCH)
        assert repository.complete_epochs(NODE) == [EPOCH]
        assert repository.incomplete_epochs(NODE) == []

    def test_a_signature_without_manifest_is_not_complete(self, repository):
        repository.put_bytes(NODE, EPOCH, SIGNATURE_NAME, b"sig\n")
        assert not repository.is_complete(NODE, EPOCH)

    def test_a_signature_still_being_written_is_not_complete(self, repository):
        repository.put_bytes(NODE, EPOCH, MANIFEST_NAME, b"{}\n")
        with repository.open_write(NODE, EPOCH, SIGNATURE_NAME) as handle:
            handle.write(b"sig")
            handle.flush()
            assert not repository.is_complete(NODE, EPOCH)
        assert repository.is_complete(NODE, EPOCH)

    def test_epochs_are_listed_oldest_first_and_stray_entries_ignored(self, repository):
        for epoch in ("20260102T000000Z", "20251231T235959Z", "20260101T120000Z"):
            _complete(repository, epoch)
        os.makedirs(os.path.join(repository.root, NODE, "not-an-epoch"))
        with open(os.path.join(repository.root, NODE, "README"), "w") as handle:
            handle.write("x")
        assert repository.epoch_names(NODE) == ["20251231T235959Z", "20260101T120000Z", "20260102T000000Z"]
        assert repository.complete_epochs(NODE) == repository.epoch_names(NODE)
        assert repository.epoch_names("node2") == []
        assert repository.nodes() == [NODE]

    def test_claim_epoch_is_exclusive(self, repository):
        assert repository.claim_epoch(NODE, EPOCH) is True
        assert repository.claim_epoch(NODE, EPOCH) is False

    def test_new_epoch_waits_for_the_next_second_when_the_current_one_is_taken(self, repository):
        first = repository.new_epoch(NODE)
        second = repository.new_epoch(NODE)
        assert EPOCH_RE.match(first) and EPOCH_RE.match(second)
        assert second > first

    def test_new_epoch_is_unique_under_concurrency(self, repository):
        barrier = threading.Barrier(2)
        names, errors = [], []

        def claim() -> None:
            try:
                barrier.wait()
                names.append(repository.new_epoch(NODE))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=claim) for _thread in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert errors == []
        assert len(names) == 2 and len(set(names)) == 2
        assert sorted(names) == repository.epoch_names(NODE)

    def test_new_epoch_is_unique_across_processes(self, repository, child_env, tmp_path):
        script = (
            "import sys\n"
            "from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository\n"
            "print(LocalRepository(sys.argv[1]).new_epoch('node1'))\n"
        )
        import sys

        procs = [
            subprocess.Popen([sys.executable, "-c", script, repository.root], stdout=subprocess.PIPE, env=child_env)
            for _attempt in range(3)
        ]
        names = [proc.communicate(timeout=20)[0].decode().strip() for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        assert len(set(names)) == 3
        assert sorted(names) == repository.epoch_names(NODE)


class TestRemoveEpoch:
    def test_remove_epoch_removes_the_whole_epoch_only(self, repository):
        _complete(repository, "20260101T000000Z")
        _complete(repository, "20260102T000000Z")
        repository.remove_epoch(NODE, "20260101T000000Z")
        assert repository.epoch_names(NODE) == ["20260102T000000Z"]
        assert repository.is_complete(NODE, "20260102T000000Z")
        assert not os.path.exists(os.path.join(repository.root, NODE, "20260101T000000Z"))

    def test_remove_epoch_removes_the_signature_first(self, repository):
        # The manifest cannot be removed (immutable): the removal stops there, and by then the
        # signature must already be gone, so the half-removed epoch never looks complete.
        _complete(repository)
        directory = os.path.join(repository.root, NODE, EPOCH)
        with _immutable(os.path.join(directory, MANIFEST_NAME)):
            with pytest.raises(RepositoryError):
                repository.remove_epoch(NODE, EPOCH)
            assert not os.path.exists(os.path.join(directory, SIGNATURE_NAME))
            assert os.path.exists(os.path.join(directory, MANIFEST_NAME))
            assert not repository.is_complete(NODE, EPOCH)
            assert repository.complete_epochs(NODE) == []
            assert repository.incomplete_epochs(NODE) == [EPOCH]
        repository.remove_epoch(NODE, EPOCH)
        assert repository.epoch_names(NODE) == []

    def test_an_interrupted_removal_never_leaves_a_complete_looking_epoch(self, repository):
        _complete(repository)
        directory = os.path.join(repository.root, NODE, EPOCH)
        with _immutable(os.path.join(directory, "app-db.sqlite.zst.age")):
            with pytest.raises(RepositoryError):
                repository.remove_epoch(NODE, EPOCH)
            assert repository.complete_epochs(NODE) == []
        repository.remove_epoch(NODE, EPOCH)
        assert repository.epoch_names(NODE) == []

    def test_a_failed_removal_is_a_clear_repository_error(self, repository):
        _complete(repository)
        directory = os.path.join(repository.root, NODE, EPOCH)
        with _immutable(os.path.join(directory, "app-db.sqlite.zst.age")), pytest.raises(RepositoryError) as excinfo:
            repository.remove_epoch(NODE, EPOCH)
        assert EPOCH in str(excinfo.value)


class TestNames:
    @pytest.mark.parametrize("node", ["../escape", "a/b", "", ".hidden", "x" * 129])
    def test_bad_node_names_are_refused(self, repository, node):
        with pytest.raises(NodekeepError):
            repository.put_bytes(node, EPOCH, "a.bin", b"x")
        with pytest.raises(NodekeepError):
            repository.new_epoch(node)

    @pytest.mark.parametrize("name", ["../../escape", "a/b", "", ".nodekeep-tmp-x"])
    def test_bad_file_names_are_refused(self, repository, name):
        with pytest.raises(NodekeepError):
            repository.put_bytes(NODE, EPOCH, name, b"x")
        assert not os.path.exists(os.path.join(os.path.dirname(repository.root), "escape"))

    @pytest.mark.parametrize("epoch", ["latest", "../x", "2026-01-01", ""])
    def test_bad_epoch_names_are_refused(self, repository, epoch):
        with pytest.raises(NodekeepError):
            repository.put_bytes(NODE, epoch, "a.bin", b"x")
        with pytest.raises(NodekeepError):
            repository.files(NODE, epoch)

    @pytest.mark.parametrize("node, epoch, name", [("node1\n", EPOCH, "a"), (NODE, EPOCH + "\n", "a"), (NODE, EPOCH, "a\n")])
    def test_names_with_a_trailing_newline_are_refused(self, repository, node, epoch, name):
        with pytest.raises(NodekeepError):
            repository.put_bytes(node, epoch, name, b"x")


class TestOpening:
    @pytest.mark.parametrize("root", ["relative/repo", "repo", "", "./repo"])
    def test_a_relative_root_is_refused(self, root):
        with pytest.raises(RepositoryError, match="absolute") as excinfo:
            LocalRepository(root)
        assert excinfo.value.remedy
        with pytest.raises(RepositoryError, match="absolute"):
            open_repository({"type": "local", "path": root} if root else "relative")

    def test_a_root_that_is_a_file_is_refused(self, tmp_path):
        (tmp_path / "file").write_text("x")
        with pytest.raises(RepositoryError, match="not a directory"):
            LocalRepository(str(tmp_path / "file"))

    def test_a_missing_root_is_refused_without_create(self, tmp_path):
        with pytest.raises(RepositoryError, match="no repository"):
            open_repository(str(tmp_path / "nope"), create=False)
        assert not (tmp_path / "nope").exists()

    def test_specs(self, tmp_path):
        assert open_repository(str(tmp_path / "a")).root == str(tmp_path / "a")
        assert open_repository({"type": "local", "path": str(tmp_path / "b")}).root == str(tmp_path / "b")
        with pytest.raises(RepositoryError, match="unknown repository type"):
            open_repository({"type": "ftp", "path": str(tmp_path)})
        with pytest.raises(RepositoryError, match="only local paths and s3://"):
            open_repository("ftp://host/prefix")

    def test_open_read_of_a_missing_file_names_it(self, repository):
        with pytest.raises(RepositoryError) as excinfo, repository.open_read(NODE, EPOCH, "a.bin"):
            pass
        assert "a.bin" in str(excinfo.value) and "missing" in str(excinfo.value)

    def test_files_hides_temporary_and_hidden_files(self, repository):
        repository.put_bytes(NODE, EPOCH, "a.bin", b"abc")
        directory = os.path.join(repository.root, NODE, EPOCH)
        for name in (TEMP_PREFIX + "manifest.json.sig-1234", ".other"):
            with open(os.path.join(directory, name), "wb") as handle:
                handle.write(b"junk")
        os.mkdir(os.path.join(directory, "subdir"))
        assert repository.files(NODE, EPOCH) == {"a.bin": 3}
        assert repository.files(NODE, "20200101T000000Z") == {}
        assert repository.describe(NODE, EPOCH, "a.bin") == os.path.join(directory, "a.bin")
