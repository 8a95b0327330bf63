"""drill.yml on a streamed SQLite asset, for real: a numbered writer commits (also while the drill runs), the
replication service ships its WAL, and the drill measures RPO from the newest shipped segment and restores the
asset on the staging host to a commit point drawn at random from the chain, reproducibly from the seed the
report prints. The test keeps its own record of the commits (the writer numbers them; row n is never changed
after its commit) and checks that the restored database is exactly the state at the commit drawn.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from drillhelpers import NODE, STAGE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streams"))  # the numbered writer and the service

from streamhelpers import StreamLab, restored_numbers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def stream_inventory(fleet, base: Path, db: Path) -> str:
    """The fleet's inventory with the node streaming ``app-db`` into a repository of its own (other drill tests keep
    theirs), and the staging host shipping into and reporting to directories of this test."""
    inventory = json.loads((fleet.inventory_dir / "hosts.yml").read_text())
    children = inventory["all"]["children"]
    node = children["nodekeep_nodes"]["children"]["testnet"]["hosts"][NODE]
    node.update(
        nodekeep_agent_install=False,
        nodekeep_repository_path=str(base / "repository"),
        nodekeep_assets=[{"name": "app-db", "type": "sqlite", "path": str(db)}],
        nodekeep_stream_assets=["app-db"],
        nodekeep_rpo_target=60,
    )
    children["staging"]["hosts"][STAGE].update(
        nodekeep_restore_host_repository=str(base / "shipped"), nodekeep_repository_path=str(base / "reports")
    )
    inventory["all"]["vars"]["nodekeep_drill_staging_root"] = str(base / "drills")
    (fleet.inventory_dir / "stream-drill.yml").write_text(json.dumps(inventory, indent=2))
    return "stream-drill.yml"


def live_rows(db: Path, upto: int) -> list:
    import apsw

    con = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return con.execute("SELECT n, at, pad FROM c WHERE n <= ? ORDER BY n", (upto,)).fetchall()
    finally:
        con.close()


def test_drill_restores_a_streamed_asset_to_a_drawn_commit_and_measures_rpo_from_the_shipped_segment(
    fleet, tmp_path, age_key, child_env
):
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import (
        load_chain,
        parse_time,
        random_point,
        timestamp,
    )

    fleet.prepare()
    public = (fleet.inventory_dir / "keys" / ("%s.pub" % NODE)).read_text().strip()
    repository = LocalRepository(str(tmp_path / "repository"))
    key = SimpleNamespace(path=fleet.base / "signing" / "signing_key", public_line=public)
    lab = StreamLab(tmp_path, repository, age_key, key, child_env)
    inventory = stream_inventory(fleet, tmp_path, lab.db)
    try:
        # autocheckpoint off: the log is never restarted, so the whole run is one chain and the count at any
        # commit point follows from the writer's final count and the commits the service observed after it
        writer = lab.writer(autocheckpoint=0)
        writer.commit(100)
        service = lab.service(node=NODE, interval=0.3)
        lab.wait_chain(service)
        for _round in range(4):
            seq = lab.wait_status(service, lambda status: status.get("seq") is not None)["seq"]
            writer.commit(150)
            lab.wait_status(service, lambda status, seq=seq: (status.get("seq") or 0) > seq)
        writer.start_commit(3000)  # as fast as it can, while the drill runs
        run = fleet.run(
            "drill.yml", "-l", NODE, "-e", json.dumps({"nodekeep_drill_keep_staged": True}), inventory=inventory
        )
        final = writer.finish()
        lab.wait_caught_up(service)
        lab.stop(service)
        writer.quit()
    finally:
        lab.cleanup()

    (report_dir,) = sorted((tmp_path / "reports" / "_drills" / "drill").iterdir())
    report = json.loads((report_dir / "report.json").read_text())
    assert report["ok"], report["problems"]
    (asset,) = report["nodes"][0]["assets"]
    pitr = asset["point_in_time"]
    assert pitr["integrity"] == "ok" and pitr["exact"] and pitr["reached"] == pitr["drawn"]

    # One chain; the state at the drawn commit holds every commit observed at or before it and none after it.
    chains = [
        c for c in (load_chain(repository, NODE, e, "app-db", public) for e in repository.complete_epochs(NODE)) if c
    ]
    assert [c.epoch for c in chains] == [pitr["epoch"]]
    commits = [(timestamp(when), int(count)) for _r, s in chains[0].records for _n, when, _size, count in s["commits"]]
    later = sum(count for when, count in commits if when > timestamp(pitr["drawn"]))
    restored = tmp_path / "drills" / report["drill_id"] / NODE / "point-in-time" / "app-db.db"
    k = restored_numbers(restored)  # integrity ok and exactly the rows 1..k
    assert k == final - later
    assert live_rows(restored, k) == live_rows(lab.db, k)  # each row as the writer committed it
    assert pitr["size"] == restored.stat().st_size and pitr["commits_applied"] > 0

    # RPO: the drill's start minus the newest commit shipped at or before it, not the base epoch's start.
    started = parse_time(report["started"])
    until = parse_time(pitr["window"]["until"])
    newest = max(when for when, _count in commits if when <= until)
    assert pitr["last_shipped"] == pitr["window"]["end"]
    assert abs(timestamp(pitr["last_shipped"]) - newest) < 1e-6
    assert asset["recovery_point_source"] == "last shipped segment"
    assert asset["rpo"]["seconds"] == pytest.approx(max(0.0, started - newest), abs=0.002)
    assert asset["rpo"]["seconds"] < started - timestamp(chains[0].records[0][0].started)
    assert report["rpo_seconds"] == asset["rpo"]["seconds"]

    # The seed the report prints draws the same commit again over the same window.
    again = random_point(repository, NODE, "app-db", public, pitr["seed"], until)
    assert again["time"] == pitr["drawn"] and again["epoch"] == pitr["epoch"]
    assert pitr["window"]["start"] <= pitr["drawn"] <= pitr["window"]["end"]

    # The play's summary and the HTML page name the seed, the commit reached, RPO and RTO.
    assert "%s/app-db point in time: commit %s drawn with seed %s" % (NODE, pitr["drawn"], pitr["seed"]) in run.stdout
    assert "reached commit %s (exact)" % pitr["drawn"] in run.stdout
    page = (report_dir / "report.html").read_text()
    assert "point-in-time restores" in page and pitr["drawn"] in page and "<code>%s</code>" % pitr["seed"] in page
