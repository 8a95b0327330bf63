"""Rollback is noticed: verify and restore compare the repository with the controller's record of the
node's backups (known_latest, which the roles read from nodekeep_results_dir) and refuse, or warn with
on_rollback: warn, when the newest epoch the controller knows of is missing, instead of silently taking an
older one as the latest. The drill and shipped restores check the node's repository the same way
(ship.yml's integrity_check).

The attacker deletes the newest epochs of the repository (what a rollback of a restored snapshot of
the repository, or an attacker hiding the newest backups, leaves). The modules run for real.
"""

from __future__ import annotations

import shutil

import pytest
from modrun import module

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def rolled_back(node, live_db):
    """Three epochs; the newest two are then deleted from the repository."""
    epochs = [node.backup([node.sqlite_asset(live_db.path)]).epoch for _run in range(3)]
    for epoch in epochs[1:]:
        shutil.rmtree(node.epoch_dir(epoch))
    return epochs


def common(node, age_key, known: str, **extra) -> dict:
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "known_latest": known,
    }
    args.update(extra)
    return args


@pytest.mark.parametrize("name", ["integrity_check", "epoch_restore"])
def test_a_missing_newest_epoch_is_refused(node, rolled_back, age_key, tmp_path, name):
    extra = {"dest": str(tmp_path / "staging")} if name == "epoch_restore" else {}
    result = module(name, common(node, age_key, rolled_back[-1], **extra), tmp_path / "args")
    assert result.get("failed"), result
    assert "the newest epoch the controller recorded" in result["msg"] and rolled_back[-1] in result["msg"]
    assert "rolled back" in result["msg"] and rolled_back[0] in result["msg"]  # names what is there instead
    assert not (tmp_path / "staging").exists()  # nothing older was restored as the latest


@pytest.mark.parametrize("name", ["integrity_check", "epoch_restore"])
def test_warn_goes_on_with_the_newest_present_and_says_so(node, rolled_back, age_key, tmp_path, name):
    extra = {"dest": str(tmp_path / "staging")} if name == "epoch_restore" else {}
    result = module(name, common(node, age_key, rolled_back[-1], on_rollback="warn", **extra), tmp_path / "args")
    assert not result.get("failed"), result
    assert result["epoch"] == rolled_back[0]
    assert result["rollback"] and rolled_back[-1] in result["rollback"][0] and "ROLLBACK" in result["rollback"][0]


def test_an_intact_repository_passes(node, live_db, age_key, tmp_path):
    epoch = node.backup([node.sqlite_asset(live_db.path)]).epoch
    result = module("integrity_check", common(node, age_key, epoch), tmp_path / "args")
    assert not result.get("failed") and result["ok"] and result["rollback"] == [], result


def test_a_recorded_epoch_pruned_after_newer_ones_is_no_rollback(node, live_db, age_key, tmp_path):
    """The node's own timers and stream bases make epochs the controller never recorded; retention may
    then remove the recorded one. A newer complete epoch is there, so nothing was rolled back."""
    epochs = [node.backup([node.sqlite_asset(live_db.path)]).epoch for _run in range(2)]
    shutil.rmtree(node.epoch_dir(epochs[0]))
    result = module("integrity_check", common(node, age_key, epochs[0]), tmp_path / "args")
    assert not result.get("failed") and result["ok"] and result["rollback"] == [], result
    assert result["epoch"] == epochs[1]
