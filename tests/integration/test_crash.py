"""A backup killed with SIGKILL at any point: earlier epochs intact, no half epoch that looks complete.

The backup of a ~50 MiB database runs in a child process. It is killed either at exact points of the
write sequence (the child stops itself there with SIGSTOP, through a LocalRepository subclass that only
adds the stop points and otherwise runs the real code, then the parent SIGKILLs it) or after a random
delay (seeded, reproducible).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import resolve_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CHILD = r'''
import contextlib, os, signal, sys
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

root, node, db, key_path, recipient, stop_at = sys.argv[1:7]


def point(name):
    if name == stop_at:
        print("at " + name, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)  # the parent SIGKILLs us here


class Tap:
    """The real sink; stops once the first MiB of the artifact went through it."""

    def __init__(self, handle, name):
        self._handle, self._name, self._written = handle, name, 0

    def write(self, data):
        count = self._handle.write(data)
        self._written += len(data)
        if self._written >= (1 << 20) and self._name.endswith(".age"):
            point("artifact-mid-write")
        return count

    def __getattr__(self, attribute):
        return getattr(self._handle, attribute)


class StopPoints(LocalRepository):
    def claim_epoch(self, node, epoch):
        claimed = super().claim_epoch(node, epoch)
        if claimed:
            point("epoch-claimed")
        return claimed

    @contextlib.contextmanager
    def open_write(self, node, epoch, name):
        kind = "artifact" if name.endswith(".age") else {"manifest.json": "manifest", "manifest.json.sig": "signature"}[name]
        with super().open_write(node, epoch, name) as handle:
            yield Tap(handle, name)
            handle.flush()
            point(kind + "-written-not-linked")
        point(kind + "-committed")


repository = StopPoints(root)
recipients = seal.load_recipients([recipient])
key = signing.load_private_key(key_path)
print("ready", flush=True)
manifest = backup_epoch(repository, node, [{"name": "chain-db", "type": "sqlite", "path": db}], recipients, [recipient], key)
print("done " + manifest.epoch, flush=True)
'''

STOP_POINTS = [
    "epoch-claimed",
    "artifact-mid-write",
    "artifact-written-not-linked",
    "artifact-committed",
    "manifest-written-not-linked",
    "manifest-committed",
    "signature-written-not-linked",
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, make_node, dbtools, child_env):
    """A ~50 MiB WAL database, one complete epoch of it, and how long a full child backup takes."""
    root = tmp_path_factory.mktemp("crash")
    db = dbtools.make(root / "chain.db", rows=50_000, payload=1000, journal_mode="wal")
    assert os.path.getsize(db.path) > 50_000_000
    node = make_node(LocalRepository(str(root / "repo")))
    first = node.backup([node.sqlite_asset(db.path, "chain-db")])
    script = root / "child.py"
    script.write_text(CHILD)

    # a full, uninterrupted child run: it makes a complete epoch, and tells how long a run takes
    probe_root = root / "probe-repo"
    shutil.copytree(root / "repo", probe_root)
    proc = subprocess.Popen(
        _child_command(script, probe_root, node, db.path, "none"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env,
    )
    assert proc.stdout.readline() == b"ready\n"
    began = time.monotonic()  # from "ready": the backup itself, as _kill_after counts
    out, err = proc.communicate(timeout=120)
    duration = time.monotonic() - began
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("done ")
    probe = make_node(LocalRepository(str(probe_root)))
    assert len(probe.repository.complete_epochs(probe.name)) == 2
    assert probe.verify()["ok"]
    return root, db, first, script, duration


def _child_command(script, repo_root, node, db_path, stop_at: str) -> list:
    return [
        sys.executable,
        str(script),
        str(repo_root),
        node.name,
        str(db_path),
        str(node.signing_key.path),
        node.age_key.recipient,
        stop_at,
    ]


@pytest.fixture
def crash_node(chain, tmp_path, make_node):
    root, _db, _first, _script, _duration = chain
    shutil.copytree(root / "repo", tmp_path / "repo")
    return make_node(LocalRepository(str(tmp_path / "repo")))


def _kill_at_point(command, env, stop_at: str) -> None:
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        _pid, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), "the child ended before reaching %s: %s" % (stop_at, proc.stderr.read().decode())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        output = proc.stdout.read().decode()
        assert ("at " + stop_at) in output, output
        assert "done" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_after(command, env, delay: float) -> None:
    """SIGKILL the child ``delay`` seconds after it is ready (it may have finished by then)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().decode().strip() == "ready", proc.stderr.read().decode()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_survived(node, first) -> list:
    """Earlier epochs verify; the killed epoch is incomplete, unsigned and ignored by latest."""
    repository = node.repository
    assert repository.complete_epochs(node.name) == [first.epoch]
    report = node.verify(first.epoch)
    assert report["ok"], report
    assert resolve_epoch(repository, node.name, "latest") == first.epoch
    killed = [e for e in repository.epoch_names(node.name) if e != first.epoch]
    assert len(killed) == 1, killed
    for epoch in killed:
        directory = node.epoch_dir(epoch)
        assert not os.path.exists(directory / SIGNATURE_NAME)
        assert not repository.is_complete(node.name, epoch)
        assert epoch in repository.incomplete_epochs(node.name)
        with pytest.raises(RepositoryError, match="incomplete"):
            resolve_epoch(repository, node.name, epoch)
        with pytest.raises(RepositoryError, match="incomplete"):
            node.verify(epoch)
    return killed


def _assert_next_backup_works(node, db_path, first, tmp_path=None, dbtools=None) -> None:
    after = node.backup([node.sqlite_asset(db_path, "chain-db")])
    assert resolve_epoch(node.repository, node.name, "latest") == after.epoch
    assert node.repository.complete_epochs(node.name) == [first.epoch, after.epoch]
    assert node.verify(after.epoch)["ok"]
    if tmp_path is not None:
        restored = node.restore(tmp_path / "staging")
        assert restored["epoch"] == after.epoch
        facts = dbtools.consistency(restored["artifacts"][0]["path"])
        assert facts["integrity"] == ["ok"] and facts["count"] == 50_000


class TestKilledAtAPoint:
    @pytest.mark.parametrize("stop_at", STOP_POINTS)
    def test_killed_at(self, chain, crash_node, child_env, stop_at, tmp_path, dbtools):
        _root, db, first, script, _duration = chain
        node = crash_node
        _kill_at_point(_child_command(script, node.repository.root, node, db.path, stop_at), child_env, stop_at)

        (killed,) = _assert_survived(node, first)
        present = os.listdir(node.epoch_dir(killed))
        committed = node.repository.files(node.name, killed)
        if stop_at in ("artifact-committed", "manifest-written-not-linked", "manifest-committed"):
            assert "chain-db.sqlite.zst.age" in committed  # the artifact was complete, the epoch still is not
        if stop_at == "manifest-committed":
            assert MANIFEST_NAME in committed
        if stop_at.endswith("-not-linked") or stop_at == "artifact-mid-write":
            assert any(name.startswith(".nodekeep-tmp-") for name in present)
        if stop_at == "signature-written-not-linked":
            assert MANIFEST_NAME in committed and SIGNATURE_NAME not in committed

        # the last point also restores the next epoch, to show the repository is fully usable
        full = stop_at == STOP_POINTS[-1]
        _assert_next_backup_works(node, db.path, first, tmp_path if full else None, dbtools if full else None)


class TestKilledAtRandom:
    SLOTS = 4

    @pytest.mark.parametrize("slot", range(SLOTS))
    def test_killed_after_a_random_delay(self, chain, crash_node, child_env, slot):
        _root, db, first, script, duration = chain
        node = crash_node
        repository = node.repository
        # stratified: one seeded random moment in each quarter of a full run
        delay = duration * random.Random(slot).uniform(slot / self.SLOTS, (slot + 1) / self.SLOTS)
        _kill_after(_child_command(script, repository.root, node, db.path, "none"), child_env, delay)

        # Whatever the moment: an epoch is either complete (signed) and verifies, or unsigned and ignored.
        complete = repository.complete_epochs(node.name)
        assert complete[0] == first.epoch and len(complete) <= 2, complete
        for epoch in complete:
            report = node.verify(epoch)
            assert report["ok"], report
        assert resolve_epoch(repository, node.name, "latest") == complete[-1]
        for epoch in repository.incomplete_epochs(node.name):
            assert not os.path.exists(node.epoch_dir(epoch) / SIGNATURE_NAME)
            with pytest.raises(RepositoryError, match="incomplete"):
                resolve_epoch(repository, node.name, epoch)
        print("full run %.2f s, killed after %.2f s: %s" % (duration, delay, "finished" if len(complete) == 2 else "cut"))

        after = node.backup([node.sqlite_asset(db.path, "chain-db")])
        assert repository.complete_epochs(node.name) == complete + [after.epoch]
        assert resolve_epoch(repository, node.name, "latest") == after.epoch
        assert node.verify(after.epoch)["ok"]


class TestAfterACrash:
    def test_no_plaintext_copy_of_a_killed_backup_survives_the_next_backup(self, chain, crash_node, child_env):
        _root, db, _first, script, _duration = chain
        node = crash_node
        _kill_at_point(
            _child_command(script, node.repository.root, node, db.path, "artifact-mid-write"),
            child_env,
            "artifact-mid-write",
        )
        node.backup([node.sqlite_asset(db.path, "chain-db")])
        scratch = os.path.join(node.repository.root, ".scratch")
        assert os.listdir(scratch) == []
