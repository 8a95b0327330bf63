"""Nothing plaintext outlives a killed run: a restore killed mid-way leaves its temporary file (or tree)
in staging under a recognisable name (safefs.TEMP_RE); the next restore into that directory removes it
while holding the directory's restore lock, and says so in its result.

The kill is real (SIGKILL of the restoring process) at an exact point: the process is held once the
plaintext is fully written beside its target, before it is linked into place (no sleep races it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from modrun import module

from ansible_collections.nodekeep.backup.plugins.module_utils.core import safefs
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.runner import COLLECTIONS_ROOT

pytestmark = pytest.mark.timeout(300)

HELD_RESTORE = r"""
import json, sys
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import restore_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

complete = assets.Staged.complete

def held(self):
    facts = complete(self)
    print("written", flush=True)
    sys.stdin.read()  # held here until killed
    return facts

assets.Staged.complete = held
args = json.loads(sys.argv[1])
restore_epoch(LocalRepository(args["repository"]), args["node"], "latest", args["public_key"],
              seal.load_identities([], [args["identity"]]), args["dest"])
"""


def killed_restore(node, age_key, dest: Path) -> None:
    """A restore SIGKILLed after its plaintext was written beside the target, before it was placed."""
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity": str(age_key.identity_path),
        "dest": str(dest),
    }
    env = dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD_RESTORE, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "written", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        proc.stderr.close()


def leftovers(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if safefs.TEMP_RE.match(p.name)]


def restore(node, age_key, dest: Path, tmp_path: Path) -> dict:
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "dest": str(dest),
    }
    return module("epoch_restore", args, tmp_path / "args")


def test_a_killed_sqlite_restore_leaves_plaintext_that_the_next_restore_removes(node, live_db, age_key, tmp_path):
    node.backup([node.sqlite_asset(live_db.path)])
    dest = tmp_path / "staging"
    killed_restore(node, age_key, dest)
    (left,) = leftovers(dest)
    assert left.read_bytes().startswith(b"SQLite format 3\x00")  # a plaintext copy, as the issue says
    result = restore(node, age_key, dest, tmp_path)
    assert not result.get("failed"), result
    assert leftovers(dest) == []
    assert result["artifacts"][0]["swept"] == [left.name]


def test_a_killed_tree_restore_leaves_a_tree_that_the_next_restore_removes(node, tmp_path, age_key):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "secret.txt").write_text("plaintext\n")
    node.backup([{"name": "da", "type": "config", "path": str(data)}])
    dest = tmp_path / "staging"
    killed_restore(node, age_key, dest)
    left = leftovers(dest)
    assert left and any(p.is_dir() for p in left)
    result = restore(node, age_key, dest, tmp_path)
    assert not result.get("failed"), result
    assert leftovers(dest) == []
    assert (dest / str(data).lstrip("/") / "sub" / "secret.txt").read_text() == "plaintext\n"


def test_names_that_are_not_ours_are_left_alone(node, live_db, age_key, tmp_path):
    node.backup([node.sqlite_asset(live_db.path)])
    dest = tmp_path / "staging"
    parent = dest / str(live_db.path.parent).lstrip("/")
    parent.mkdir(parents=True)
    others = [".app.db.nodekeep-replaced-1765000000", "app.db.nodekeep-0123abcd", ".app.db.keep-0123abcd", "notes"]
    for name in others:
        (parent / name).write_text("operator's file\n")
    result = restore(node, age_key, dest, tmp_path)
    assert not result.get("failed"), result
    for name in others:
        assert (parent / name).read_text() == "operator's file\n"
