"""playbooks/epochs.yml as an operator runs it (issue 16): a real ansible-playbook run against a temporary
inventory (two nodes, connection local) over a repository of real signed epochs.

What an operator relies on: each node's table lists its epochs (time, assets, plain and stored size, last
verified from the controller's verify records, copies), an epoch whose signature does not verify with the
controller's key is named and not listed, ``-e nodekeep_hosts`` picks the nodes, the machine-readable forms
(``nodekeep_results_dir/NODE/epochs.json``, the json stdout callback's document and its ``set_stats``) carry the
same list, and the play only reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from playbook_helpers import ROOT, PlaybookLab, json_callback_collections, require_playbook_tools

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import human_bytes

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def tree(root: Path) -> dict:
    """Every file under ``root`` with its size and mtime: the playbook only reads."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def table_rows(msg: list[str]) -> dict[str, list[str]]:
    """The epoch rows of a node's table, by epoch (columns are two or more spaces apart)."""
    rows = {}
    for line in msg[3:-1]:
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, make_node, age_key, signing_key, other_signing_key):
    """node1 with two epochs of a changing SQLite database (the first one deep-verified on record), node2 with one
    epoch signed by a key the controller does not have for it."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

    base = tmp_path_factory.mktemp("epochs-playbook")
    repository = LocalRepository(str(base / "repo"))
    db = base / "app.db"
    subprocess.run(["sqlite3", str(db), "CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(50000));"], check=True)
    node1 = make_node(repository, "node1")
    first = node1.backup([node1.sqlite_asset(db)])
    subprocess.run(["sqlite3", str(db), "INSERT INTO t SELECT randomblob(200000) FROM t;"], check=True)
    (base / "app.conf").write_text("a = 1\n")
    second = node1.backup([node1.sqlite_asset(db), {"name": "cfg", "type": "config", "path": str(base / "app.conf")}])
    node2 = make_node(repository, "node2")
    foreign = node2.backup([node2.sqlite_asset(db)])

    lab = PlaybookLab(base / "controller", require_playbook_tools("sqlite3"))
    lab.write_inventory(
        {
            "nodekeep_nodes": {"hosts": {"node1": {}, "node2": {}}},
            "all": {
                "vars": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                    "nodekeep_venv": str(Path(sys.executable).parent.parent),
                    "nodekeep_repository_path": str(base / "repo"),
                }
            },
        }
    )
    lab.keys_dir.mkdir()
    (lab.keys_dir / "node1.pub").write_text(signing_key.public_line + "\n")
    (lab.keys_dir / "node2.pub").write_text(other_signing_key.public_line + "\n")  # not the key node2 signed with
    results = base / "results"
    (results / "node1").mkdir(parents=True)
    record = {"format": "nodekeep.verify/v1", "ok": True, "epoch": first.epoch, "deep": True,
              "recorded_at": "2026-12-07T03:00:00Z"}  # fmt: skip
    (results / "node1" / ("verify-%s-deep.json" % first.epoch)).write_text(json.dumps(record))
    return {"lab": lab, "base": base, "results": results, "first": first, "second": second, "foreign": foreign}


def test_the_epoch_list_per_node_with_sizes_checks_and_copies(fleet):
    lab, first, second = fleet["lab"], fleet["first"], fleet["second"]
    before = tree(fleet["base"] / "repo")
    done = lab.run("epochs.yml", "-e", "nodekeep_results_dir=%s" % fleet["results"])
    assert tree(fleet["base"] / "repo") == before  # only reads

    saved = json.loads((fleet["results"] / "node1" / "epochs.json").read_text())
    assert saved["format"] == "nodekeep.epochs/v1" and saved["node"] == "node1"
    listing = {row["epoch"]: row for row in saved["epochs"]}
    assert list(listing) == [first.epoch, second.epoch]  # oldest first
    for manifest in (first, second):
        row = listing[manifest.epoch]
        assert row["assets"] == [a.name for a in manifest.artifacts]
        # whole-file artifacts: plain is the plaintext, stored what the epoch wrote (its sealed artifacts)
        assert row["plain_bytes"] == sum(a.content_size for a in manifest.artifacts)
        assert row["stored_bytes"] == sum(a.size for a in manifest.artifacts)
        assert row["copies"] == ["local"] and row["locked_until"] is None
        assert row["time"] == manifest.finished
    assert listing[first.epoch]["last_verified"] == "2026-12-07T03:00:00Z (deep)"
    assert listing[second.epoch]["last_verified"] is None

    out = done.stdout
    assert "node1: 2 epoch(s) in %s" % (fleet["base"] / "repo") in out
    invalid = "node2: 0 epoch(s) in %s, 1 whose signature does not verify: %s"
    assert invalid % (fleet["base"] / "repo", fleet["foreign"].epoch) in out
    for manifest, verified in ((first, "2026-12-07T03:00:00Z (deep)"), (second, "never")):
        row = listing[manifest.epoch]
        line = next(line for line in out.splitlines() if line.strip().strip('",').startswith(manifest.epoch))
        for cell in (
            human_bytes(row["plain_bytes"]),
            human_bytes(row["stored_bytes"]),
            verified,
            ", ".join(row["assets"]),
        ):
            assert cell in line, (cell, line)
    total = sum(r["plain_bytes"] for r in listing.values())
    assert "2 epoch(s), %s plain" % human_bytes(total) in out


def test_nodekeep_hosts_filter_and_the_json_callback(fleet):
    """``-e nodekeep_hosts=node1`` lists node1 only; ANSIBLE_STDOUT_CALLBACK=ansible.posix.json's stdout is one JSON
    document holding the table (the task's msg) and the list (set_stats nodekeep_epochs)."""
    lab, first, second = fleet["lab"], fleet["first"], fleet["second"]
    proc = _run_json(lab, json_callback_collections(), "-e", "nodekeep_hosts=node1")
    report = json.loads(proc.stdout)  # the callback's document alone
    shown = [
        task["hosts"]
        for play in report["plays"]
        for task in play["tasks"]
        if task["task"]["name"].endswith("Show the epochs")
    ]
    (hosts,) = shown
    assert set(hosts) == {"node1"}
    msg = hosts["node1"]["msg"]
    assert msg[0] == "node1: 2 epoch(s) in %s" % (fleet["base"] / "repo")
    assert msg[1].split() == ["epoch", "time", "(UTC)", "assets", "plain", "stored", "last", "verified", "locked",
                              "until", "copies"]  # fmt: skip
    rows = table_rows(msg)
    assert list(rows) == [first.epoch, second.epoch] and rows[second.epoch][-1] == "local"
    assert rows[first.epoch][-3] == "never"  # no results dir given: no verify records read
    # set_stats (per_host: false): what AWX keeps as the job's artifacts
    listed = report["global_custom_stats"]["nodekeep_epochs"]["node1"]
    assert [row["epoch"] for row in listed] == [first.epoch, second.epoch]


def _run_json(lab: PlaybookLab, collections: str, *args: str) -> subprocess.CompletedProcess:
    """epochs.yml with the json stdout callback (PlaybookLab.run puts only this collection on the collections path;
    the callback needs ansible.posix beside it)."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_SHOW_CUSTOM_STATS="1",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_DEPRECATION_WARNINGS="0")  # fmt: skip
    cmd = [lab.playbook_bin, "-i", str(lab.inventory_dir / "hosts.yml"), str(ROOT / "playbooks" / "epochs.yml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600,
                          check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc
