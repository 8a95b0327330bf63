"""Each runbook system drilled the operator's way (tests/integration/runbooks/drilllab.py).

For inventories/animica, aurora-pds, guts, factory and ripple-env: a node with the inventory's
whole asset set (live SQLite writers, RocksDB, file trees, keys and secrets, PostgreSQL with a
live writer for ripple-env) under a scratch root, ``agent.yml`` for the node and the staging
host, ``backup.yml`` twice with writes in between, ``drill.yml`` into the staging host against
the targets of the system's own inventory (its runbook's RPO/RTO). The test then checks what an
operator relies on: the drill passed and met the targets, every asset but the secrets was
restored, the staged copy equals the live data (SQLite rows up to one committed transaction,
every RocksDB key and value, every file's content, mode, owner and mtime), secrets never reached
staging, and the signed HTML report says what was restored, from when, checked how, against
which target. For runbook 000 the runbook's own shell restore of the same data runs beside it.

``make test`` runs it at the small size for runbook 000 and one other system picked at random
(``NODEKEEP_DRILL_SYSTEMS="animica guts"`` or ``all`` chooses); ``make drill-runbooks`` runs all five
(``SYSTEMS=...`` to choose) with ``NODEKEEP_DRILL_SIZE`` (``SIZE=1G``: 1 GiB of SQLite, RocksDB and files
on the node), keeping the reports under ``NODEKEEP_DRILL_DIR``. The summary table is printed at the end
of the run (conftest.py).
"""

from __future__ import annotations

import html
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import drilllab
import pytest
from playbook_helpers import require_playbook_tools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SIZE = drilllab.parse_size(os.environ.get("NODEKEEP_DRILL_SIZE"))
WANTED = [s for s in os.environ.get("NODEKEEP_DRILL_SYSTEMS", "").replace(",", " ").split() if s]
KEEP_ALL = bool(os.environ.get("NODEKEEP_DRILL_DIR")) and not WANTED
for _name in (n for n in WANTED if n != "all"):
    if _name not in drilllab.SYSTEMS:
        raise ValueError("NODEKEEP_DRILL_SYSTEMS: %r is not one of %s" % (_name, ", ".join(drilllab.SYSTEMS)))
#: make test (no NODEKEEP_DRILL_SYSTEMS): runbook 000 and one other system, picked at random (printed, and
#: reproducible with NODEKEEP_DRILL_SYSTEMS); ``all`` or make drill-runbooks: the five
if WANTED == ["all"] or KEEP_ALL:
    SYSTEMS = list(drilllab.SYSTEMS)
elif WANTED:
    SYSTEMS = WANTED
else:
    SYSTEMS = ["animica", random.choice(drilllab.SYSTEMS[1:])]
KEEP = os.environ.get("NODEKEEP_DRILL_DIR", "")

#: rows of the summary table and each system's log, printed by conftest.py's pytest_terminal_summary
ROWS: list[dict] = []
DETAILS: list[str] = []


@pytest.fixture(scope="module")
def scratch():
    """The scratch root of all five systems (kept with its reports under NODEKEEP_DRILL_DIR)."""
    if KEEP:
        base = Path(KEEP)
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="nodekeep-drill-runbooks-"))
    base.chmod(0o755)
    yield base
    if not KEEP:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def drills(scratch, age_key, request):
    """``{system: (lab, row or the exception)}``: every system drilled, NODEKEEP_DRILL_PARALLEL at a time
    (threads, each running its own ansible-playbook processes; default one at a time)."""
    playbook_bin = require_playbook_tools("sqlite3", "ssh-keygen", "age", "zstd", "ldb")
    pg = request.getfixturevalue("pg_cluster") if "ripple-env" in SYSTEMS else None
    logs = {system: [] for system in SYSTEMS}
    labs = {
        system: drilllab.SystemDrill(
            system, scratch / system, SIZE, playbook_bin, Path(sys.prefix), age_key,
            pg if system == "ripple-env" else None, logs[system].append,
        )
        for system in SYSTEMS
    }  # fmt: skip

    def one(system):
        lab = labs[system]
        try:
            return lab.run_system()
        except Exception as exc:  # noqa: BLE001  reported by the system's test, the others still run
            return exc
        finally:
            lab.stop_writers()
            if KEEP:
                lab.clean(keep_reports=True)

    # one system at a time by default: the RPO/RTO measured are the system's own, not a fight for 2 cores
    parallel = int(os.environ.get("NODEKEEP_DRILL_PARALLEL") or 1)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        results = dict(zip(SYSTEMS, pool.map(one, SYSTEMS)))
    for system in SYSTEMS:
        result = results[system]
        if isinstance(result, Exception):
            ROWS.append({"system": system, "runbook": drilllab.RUNBOOKS[system], "error": str(result).splitlines()[0]})
        else:
            ROWS.append(result)
            logs[system] += ["    staged == live: %s" % line for line in result["checks"]]
    DETAILS.extend(line for system in SYSTEMS for line in logs[system])
    return {system: (labs[system], results[system]) for system in SYSTEMS}


@pytest.mark.parametrize("system", SYSTEMS)
def test_runbook_system_drill(system, drills):
    lab, row = drills[system]
    if isinstance(row, Exception):
        raise row

    # the drill passed, against the system's own targets (its inventory, from its runbook)
    assert row["ok"] and row["met"], row["problems"]
    own = drilllab.inventory_vars(system)
    own.update(drilllab.group_vars(system, lab.group))
    assert row["rto_target"] == float(own.get("nodekeep_rto_target", 1800))
    assert row["rpo_target"] == float(own.get("nodekeep_rpo_target", 300))
    assert 0 < row["rto"] <= row["rto_target"] and 0 < row["rpo"] <= row["rpo_target"]
    # two epochs, the second one drilled; every asset of the inventory in it, secrets not restored
    assert len(row["epochs"]) == 2 and row["epoch"] == row["epochs"][-1]
    secrets = [a["name"] for a in lab.assets if a["type"] == "secret"]
    assert row["assets"] == len(lab.assets) and row["skipped"] == secrets
    assert row["drilled"] == len(lab.assets) - len(secrets)
    assert row["stored"] > 0 and row["plain"] > 0

    # the staged copy was removed after the comparison; the signed report is there
    assert not Path(lab.node_report["staging_path"]).exists()
    report_dir = Path(row["report_dir"])
    assert sorted(p.name for p in report_dir.iterdir()) == ["report.html", "report.json", "report.json.sig"]
    public = (lab.keys_dir / ("%s.pub" % lab.stage)).read_text().split()
    allowed = report_dir.parent / "allowed_signers"
    allowed.write_text("%s %s %s\n" % (lab.stage, public[0], public[1]))
    with open(report_dir / "report.json", "rb") as data:
        verified = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", lab.stage, "-n", "nodekeep-drill",
             "-s", str(report_dir / "report.json.sig")],
            stdin=data, capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert json.loads((report_dir / "report.json").read_text())["drill_id"] == lab.report["drill_id"]

    # the page says what was restored, from when, checked how, against which target
    page = (report_dir / "report.html").read_text()
    assert lab.node in page and lab.stage in page and row["epoch"] in page
    for asset in lab.node_report["assets"]:
        assert asset["name"] in page and asset["source_path"] in page
    for name in secrets:
        assert name in page
    assert "RTO" in page and "RPO" in page and "target" in page
    assert drilllab.duration_text(row["rto_target"]) in page and drilllab.duration_text(row["rpo_target"]) in page
    # ... in the runbook's words: its name and targets at the top, the data's time, each check, each target's origin
    report = json.loads((report_dir / "report.json").read_text())
    runbook = own["nodekeep_runbook"]
    assert report["runbook"]["name"] == runbook["name"] == "runbook %s" % drilllab.RUNBOOKS[system]
    head = page[: page.index("<h2>")]
    assert "Runbook: %s" % html.escape(runbook["name"]) in head
    assert html.escape(runbook["rpo"]) in head and html.escape(runbook["rto"]) in head
    (node,) = report["nodes"]
    assert node["recovery_point"][:19].replace("T", " ") + " UTC (" in page and "before the drill)" in page
    assert node["target_sources"]["rto"] == "%s: %s" % (runbook["name"], runbook["rto"])
    assert "target from %s" % html.escape(node["target_sources"]["rto"]) in page and "target met" in page
    for asset in node["assets"]:
        assert asset["checked_how"][0] == "size and SHA-256 compared with the signed manifest: ok"
        for line in asset["checked_how"]:
            assert html.escape(line) in page, line
        if asset["asset_type"] == "sqlite":
            # run by the drill's restore, or at backup and proven by the restored file's SHA-256 (and said so)
            assert any(line.startswith("PRAGMA integrity_check: ok") for line in asset["checked_how"])
        if asset["asset_type"] == "rocksdb" and "column_families" in asset["checks"]:
            assert any(line.startswith("RocksDB opened read-only, ") for line in asset["checked_how"])
        if asset["asset_type"] == "files":
            assert any("compared with the signed index: ok" in line for line in asset["checked_how"])
            assert asset["plain_size"] not in (None, asset["size"])  # the tree's bytes, not its index

    if system == "animica":
        assert row["runbook_restore"] > 0 and set(row["runbook_stages"]) == {"checksums", "restore", "check"}
