"""What one node costs the controller on an ordinary backup: backup.yml (agent role, then backup role) on a
prepared node runs a bounded number of tasks, and the result it saves and records keeps its shape.

Every task costs the controller CPU on every backup of every node, whether it runs or is skipped
(benchmarks/fleet.py, ``make bench-fleet``): this test holds the count to a budget, so that a task added
to the everyday path is a decision, not an accident. The node is this machine (connection local) with
the project's virtualenv as its ``nodekeep_venv`` and a signing key already trusted (no first contact),
the way a prepared fleet backs up every night.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from playbook_helpers import PlaybookLab, require_playbook_tools

NODE = "tasknode"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: Tasks of an ordinary backup of a prepared node, with results saved on the controller:
#: the first play's argument spec and target check (2, on the controller, once); agent: argument spec, install include, virtualenv check and its
#: failure, repository directory, signing key, the trust decision, its check and message, the
#: first-contact include (9); backup: argument spec, input checks, the backup, failure include,
#: off-site/retention include, the result, the record on the node, the save include and its two tasks,
#: set_stats, summary, the record's failure check (13). Before this budget it was 28.
ORDINARY_BACKUP_TASKS = 24


@pytest.fixture(scope="module")
def lab(tmp_path_factory, age_key, signing_key) -> PlaybookLab:
    playbook_bin = require_playbook_tools()
    base = tmp_path_factory.mktemp("tasks")
    lab = PlaybookLab(base, playbook_bin)
    db = base / "node" / "chain.db"
    db.parent.mkdir()
    con = sqlite3.connect(str(db))
    try:
        con.execute("CREATE TABLE blocks (height INTEGER PRIMARY KEY, body BLOB)")
        con.executemany("INSERT INTO blocks VALUES (?, randomblob(200))", ((h,) for h in range(100)))
        con.commit()
    finally:
        con.close()
    node_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "nodekeep_agent_install": False,
        "nodekeep_venv": str(Path(sys.executable).parent.parent),
        "nodekeep_repository_path": str(base / "repository"),
        "nodekeep_signing_key_path": str(signing_key.path),
        "nodekeep_age_recipients": [age_key.recipient],
        "nodekeep_results_dir": str(base / "results"),
        "nodekeep_service_manager": "none",
        "nodekeep_assets": [{"name": "chain-db", "type": "sqlite", "path": str(db)}],
    }
    lab.write_inventory({"all": {"children": {"nodekeep_nodes": {"hosts": {NODE: node_vars}}}}})
    lab.keys_dir.mkdir()
    (lab.keys_dir / ("%s.pub" % NODE)).write_text(signing_key.public_line + "\n")
    return lab


def test_an_ordinary_backup_runs_within_the_task_budget_and_keeps_its_result(lab, signing_key):
    proc = lab.run("backup.yml")
    tasks = [line for line in proc.stdout.splitlines() if line.startswith("TASK [")]
    assert len(tasks) <= ORDINARY_BACKUP_TASKS, "%d tasks:\n%s" % (len(tasks), "\n".join(tasks))
    out = " ".join(proc.stdout.split())
    assert "trusted in %s/%s.pub" % (lab.keys_dir, NODE) in out
    assert "first contact" not in out
    # the same result as before the tasks were merged: saved on the controller, recorded on the node
    (saved,) = (lab.base / "results" / NODE).glob("backup-*.json")
    result = json.loads(saved.read_text())
    record = json.loads((lab.base / "repository" / NODE / "last-backup.json").read_text())
    assert record == result
    assert saved.name == "backup-%s.json" % result["epoch"]
    assert result["format"] == "nodekeep.last-backup/v1" and result["node"] == NODE and result["status"] == "ok"
    assert result["path"] == str(lab.base / "repository" / NODE / result["epoch"])
    assert all(isinstance(result[key], int) and not isinstance(result[key], bool) for key in ("size", "stored_bytes"))
    assert result["size"] == sum(a["size"] for a in result["artifacts"]) > 0 and result["stored_bytes"] > 0
    assert isinstance(result["duration"], float) and result["check_mode"] is False
    assert result["copies"] == [] and result["pruned"] == {}
    assert result["repository"] == str(lab.base / "repository")
    assert result["manifest"]["size"] == result["size"]
    assert "%s: epoch %s in %s" % (NODE, result["epoch"], result["path"]) in out
