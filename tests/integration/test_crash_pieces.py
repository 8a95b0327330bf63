"""kill -9 at random points of an incremental backup, of garbage collection and of a repack: nothing is lost.

A child process runs the real engine on a real repository. Every durable step it takes (``os.link``,
``os.rename``, ``os.unlink``, ``os.fsync``: how the repository commits and removes) is counted; at step N
the child stops itself (SIGSTOP) and the parent kills it with SIGKILL. No timing: the kill point is an
exact step, drawn at random (seeded, printed, reproducible). After each kill:

- every complete epoch still verifies (its page map, its piece list and every piece it lists, by their
  signed SHA-256): no kept epoch references a missing piece;
- the newest complete epoch restores to a database whose integrity check passes;
- the next backup (and the next GC) completes, and its epoch verifies and restores.

``make test`` runs a small random sample; ``make crash-pieces`` (NODEKEEP_CRASH_POINTS=all) every step.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHILD = r"""
import os, signal, sys
from datetime import datetime, timedelta, timezone
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy

mode, root, node, db, state, key_path, recipient, public, stop_at = sys.argv[1:10]
stop_at = int(stop_at)
steps = [0]


def counted(function):
    def step(*args, **kwargs):
        steps[0] += 1
        if steps[0] == stop_at:
            print("at %d" % steps[0], flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)  # the parent SIGKILLs us here
        return function(*args, **kwargs)

    return step


for name in ("link", "rename", "unlink", "fsync"):
    setattr(os, name, counted(getattr(os, name)))
repository = LocalRepository(root)
if mode == "gc":
    result = apply_retention(
        repository, node, RetentionPolicy.from_options({"keep_last": 2}), public,
        now=datetime.now(timezone.utc) + timedelta(days=3),
    )
    print("done gc %d" % result["objects"]["removed"], flush=True)
else:
    asset = {"name": "app-db", "type": "sqlite", "path": db, "incremental": True, "state_dir": state}
    manifest = backup_epoch(
        repository, node, [asset], seal.load_recipients([recipient]), [recipient], signing.load_private_key(key_path)
    )
    print("done %s" % manifest.epoch, flush=True)
print("steps %d" % steps[0], flush=True)
"""

SQL_HOT = "UPDATE t SET payload = randomblob(length(payload)) WHERE id > (SELECT max(id) FROM t) - 40"
SQL_REPACK = "UPDATE t SET payload = randomblob(length(payload)) WHERE id <= 3400"


def _sql(db, statement):
    subprocess.run(["sqlite3", str(db), statement], check=True, capture_output=True)


def _run(script, mode, root, node, db, state, stop_at, env):
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            mode,
            str(root),
            node.name,
            str(db),
            str(state),
            str(node.signing_key.path),
            node.age_key.recipient,
            node.public_line,
            str(stop_at),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    line = proc.stdout.readline().decode()
    if line.startswith("at "):
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        return "killed"
    # Read the rest through the same buffered reader: communicate() reads the raw pipe and would lose
    # what readline() buffered ahead.
    out = proc.stdout.read()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err.decode()
    return line + out.decode()


def _steps(output: str) -> int:
    return int(output.rsplit("steps ", 1)[1].split()[0])


def _check_everything(node, tmp_path, tag):
    """Every complete epoch verifies (pieces present, checksums signed); the newest restores with integrity ok."""
    complete = node.repository.complete_epochs(node.name)
    assert complete
    for epoch in complete:
        report = node.verify(epoch=epoch)
        assert report["ok"], (tag, epoch, report["problems"])
    result = node.restore(tmp_path / ("restore-%s" % tag), epoch=complete[-1])
    assert result["artifacts"][0]["checks"]["integrity"] == "ok"


def _points(total: int, sample: int, seed: int) -> list:
    if os.environ.get("NODEKEEP_CRASH_POINTS") == "all":
        return list(range(1, total + 1))
    return sorted(random.Random(seed).sample(range(1, total + 1), min(sample, total)))


@pytest.fixture
def setup(tmp_path, make_node, dbtools, child_env):
    db = dbtools.make(tmp_path / "app.db", rows=4000, payload=1000)
    template = tmp_path / "template"
    node = make_node(LocalRepository(str(template / "repo")))
    state = template / "state"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    asset = {"name": "app-db", "type": "sqlite", "path": str(db.path), "incremental": True, "state_dir": str(state)}
    node.backup([asset])
    _sql(db.path, SQL_HOT)
    node.backup([asset])
    return node, db, template, script, child_env


def _fresh(make_node, template, tmp_path, tag):
    """A copy of the template repository and state (each kill starts from the same two epochs)."""
    root = tmp_path / ("run-%s" % tag)
    shutil.copytree(template, root, symlinks=True)
    return make_node(LocalRepository(str(root / "repo"))), root / "state"


@pytest.mark.parametrize("statement", [SQL_HOT, SQL_REPACK], ids=["incremental", "repack"])
def test_kill_during_an_incremental_backup_or_repack(setup, make_node, tmp_path, statement):
    _node, db, template, script, env = setup
    _sql(db.path, statement)
    probe, state = _fresh(make_node, template, tmp_path, "probe")
    total = _steps(_run(script, "backup", probe.repository.root, probe, db.path, state, 0, env))
    seed = random.randrange(1 << 30)
    points = _points(total, 2, seed)
    print("kill points %s of %d (seed %d)" % (points, total, seed))
    for point in points:
        victim, state = _fresh(make_node, template, tmp_path, point)
        assert _run(script, "backup", victim.repository.root, victim, db.path, state, point, env) == "killed"
        _check_everything(victim, tmp_path, "%d-killed" % point)
        # the next backup works (incremental when the cache survived, else a full epoch that says why)
        after = _run(script, "backup", victim.repository.root, victim, db.path, state, 0, env)
        assert after.startswith("done "), after
        _check_everything(victim, tmp_path, "%d-next" % point)


def test_kill_during_garbage_collection(setup, make_node, tmp_path):
    node, db, template, script, env = setup
    # two more epochs, so that retention (keep_last 2) drops two and GC removes their own pieces
    for _round in range(2):
        _sql(db.path, SQL_HOT)
        node.backup(
            [
                {
                    "name": "app-db",
                    "type": "sqlite",
                    "path": str(db.path),
                    "incremental": True,
                    "state_dir": str(template / "state"),
                }
            ]
        )
    probe, state = _fresh(make_node, template, tmp_path, "probe")
    out = _run(script, "gc", probe.repository.root, probe, db.path, state, 0, env)
    assert out.startswith("done gc ") and int(out.split()[2]) > 0, out
    total = _steps(out)
    seed = random.randrange(1 << 30)
    points = _points(total, 2, seed)
    print("kill points %s of %d (seed %d)" % (points, total, seed))
    for point in points:
        victim, state = _fresh(make_node, template, tmp_path, "gc-%d" % point)
        assert _run(script, "gc", victim.repository.root, victim, db.path, state, point, env) == "killed"
        _check_everything(victim, tmp_path, "gc-%d-killed" % point)
        result = apply_retention(
            victim.repository,
            victim.name,
            RetentionPolicy.from_options({"keep_last": 2}),
            victim.public_line,
            now=datetime.now(timezone.utc) + timedelta(days=3),
        )
        assert not result["errors"] and result["objects"]["deferred"] is None, result
        _check_everything(victim, tmp_path, "gc-%d-again" % point)
        after = _run(script, "backup", victim.repository.root, victim, db.path, state, 0, env)
        assert after.startswith("done "), after
        _check_everything(victim, tmp_path, "gc-%d-next" % point)
