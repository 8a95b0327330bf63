"""Honest dry runs of retention (issue 16): epoch_prune in check mode removes nothing, says ``changed``
when the real run will remove something, lists every epoch kept or removed with its reason, shows the
same removals as an Ansible diff, and the real run then removes exactly the epochs the preview listed.

Real SQLite backups into a real local repository; the module runs as Ansible runs it (main(), JSON out).
"""

from __future__ import annotations

import pytest
from module_driver import run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def four_epochs(node, live_db):
    return [node.backup([node.sqlite_asset(live_db.path)]).epoch for _run in range(4)]


def prune(node, check_mode=False, diff=False, **extra) -> dict:
    args = {"repository": node.repository.root, "node": node.name, "public_key": node.public_line, "keep_last": 2}
    args.update(extra)
    if diff:
        args["_ansible_diff"] = True
    return succeeded(run_module("epoch_prune", args, check_mode=check_mode))


def test_check_mode_previews_exactly_what_the_real_run_removes(node, four_epochs, tree):
    before = tree(node.repository.root)
    preview = prune(node, check_mode=True, diff=True)
    assert tree(node.repository.root) == before  # nothing removed, nothing written
    assert preview["changed"] is True  # the real run will remove two epochs
    assert preview["dry_run"] is True
    copy = preview["copies"][0]
    assert [e["epoch"] for e in copy["removed"]] == four_epochs[:2]
    assert [e["epoch"] for e in copy["kept"]] == four_epochs[2:]
    assert all(e["reasons"] == ["last 2"] for e in copy["kept"])
    assert all(e["reasons"][0].startswith("no rule keeps it (policy: last 2") for e in copy["removed"])
    summary = preview["summary"]
    assert summary[0].endswith("[dry run: nothing removed]")
    assert "keep 2 epochs:" in summary and "would remove 2 epochs:" in summary
    assert "  %s  last 2" % four_epochs[3] in summary
    # --diff: the epochs before and after, the removed ones are the lines that go
    (diff,) = preview["diff"]
    assert diff["before"] == "".join(e + "\n" for e in four_epochs)
    assert diff["after"] == "".join(e + "\n" for e in four_epochs[2:])

    real = prune(node, diff=True)
    assert real["changed"] is True
    assert [e["epoch"] for e in real["copies"][0]["removed"]] == [e["epoch"] for e in copy["removed"]]
    assert real["diff"] == [dict(diff, after_header=diff["after_header"].replace(" (dry run)", ""))]
    assert sorted(node.repository.complete_epochs(node.name)) == four_epochs[2:]
    assert "removed 2 epochs:" in real["summary"]

    again = prune(node, check_mode=True)
    assert again["changed"] is False  # nothing left to remove: check mode says so
    assert again["copies"][0]["removed"] == []


def test_dry_run_outside_check_mode_changes_nothing_and_says_so(node, four_epochs, tree):
    before = tree(node.repository.root)
    result = prune(node, dry_run=True)
    assert result["changed"] is False
    assert result["removed"] == 2
    assert tree(node.repository.root) == before


def test_a_pending_epoch_previews_the_run_after_the_next_backup(node, live_db, four_epochs):
    """backup.yml --check counts the epoch the backup would make: keep_last 2 then drops one more."""
    pending = epoch_name()
    preview = prune(node, check_mode=True, pending_epoch=pending)
    copy = preview["copies"][0]
    assert [e["epoch"] for e in copy["removed"]] == four_epochs[:3]
    (newest,) = [e for e in copy["kept"] if e.get("pending")]
    assert newest["reasons"][0] == "last 2"
    assert "would make" in newest["reasons"][-1]
    assert preview["removed"] == 3  # the pending epoch is never counted as a removal
    assert sorted(node.repository.complete_epochs(node.name)) == four_epochs

    node.backup([node.sqlite_asset(live_db.path)])
    real = prune(node)
    assert [e["epoch"] for e in real["copies"][0]["removed"]] == four_epochs[:3]


def test_a_pending_epoch_is_refused_when_epochs_would_really_go(node, four_epochs):
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "keep_last": 1,
        "pending_epoch": epoch_name(),
    }
    result = run_module("epoch_prune", args)
    assert result.get("failed") is True
    assert "pending_epoch" in result["msg"] and "dry run" in result["msg"]
    assert sorted(node.repository.complete_epochs(node.name)) == four_epochs
