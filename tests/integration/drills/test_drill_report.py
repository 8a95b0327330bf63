"""The drill report engine (plugins/module_utils/ops/drill.py) and the drill_report module, in-process:
targets and durations, verdicts, HTML escaping, write-once storage in ``ROOT/_drills``, history,
and that retention, epoch_info and verify never see the reports as epochs or nodes."""

from __future__ import annotations

import html
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/integration: module_driver

from module_driver import run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import drill, drill_html, drill_store


def raw_result(node="node1", epoch_age=60.0, rto=12.0, started=1_800_000_000.0, checks=None, health_rc=0, **extra):
    result = {
        "node": node,
        "staging_host": "stage1",
        "staging_path": "/srv/nodekeep-drills/X/%s" % node,
        "started": started,
        "verified_at": started + rto,
        "restore": {
            "epoch": drill.drill_id(started - epoch_age),
            "artifacts": [{"name": "app-db", "asset_type": "sqlite", "path": "/srv/x/var/lib/app.db",
                           "source_path": "/var/lib/app.db", "size": 4096, "sha256": "0" * 64,
                           "checks": checks or {"integrity": "ok", "page_count": 1}, "seconds": 0.5}],
            "manifest": {"started": drill.iso(started - epoch_age)},
        },
        "health": [{"nodekeep_drill_artifact": {"name": "app-db"}, "rc": health_rc, "attempts": 1}],
        "targets": {"rpo_seconds": 300, "rto_seconds": "30m"},
        "asset_targets": {},
    }  # fmt: skip
    result.update(extra)
    return result


STARTED = 1_800_000_000.0


class TestEngine:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [(300, 300.0), ("300", 300.0), ("90s", 90.0), ("5m", 300.0), ("30 min", 1800.0), ("1h", 3600.0),
         ("1d", 86400.0), (0.5, 0.5)],
    )  # fmt: skip
    def test_durations(self, text, seconds):
        assert drill.parse_seconds(text) == seconds

    @pytest.mark.parametrize("text", ["", "five minutes", "-3", True, "5 parsecs", -1])
    def test_bad_durations_are_refused_clearly(self, text, clear_error):
        with pytest.raises(NodekeepError) as info:
            drill.parse_seconds(text, "the RPO target (nodekeep_rpo_target)")
        clear_error(info.value, "nodekeep_rpo_target")

    def test_a_passing_drill(self):
        report = drill.build_report({"node1": raw_result()}, STARTED, STARTED + 20)
        assert report["ok"] and report["rto_seconds"] == 12.0 and report["rpo_seconds"] == 60.0
        (node,) = report["nodes"]
        assert node["rto"] == {"seconds": 12.0, "target_seconds": 1800.0, "met": True}
        assert node["rpo"] == {"seconds": 60.0, "target_seconds": 300.0, "met": True}
        assert node["assets"][0]["health"] == {"ran": True, "ok": True, "rc": 0, "attempts": 1}

    def test_the_rto_is_broken_down_into_ship_restore_check(self):
        raw = raw_result(shipped_at=STARTED + 4.0, restored_at=STARTED + 9.0)  # RTO 12 s, verified at +12
        raw["restore"]["artifacts"][0].update(seconds=3.5, check_seconds=1.25)
        node = drill.build_report({"node1": raw}, STARTED, STARTED + 20)["nodes"][0]
        parts = node["rto_breakdown"]
        assert parts == {"ship": 4.0, "restore": 2.25, "check": 1.25 + 3.0, "other": 1.5}
        assert sum(parts.values()) == pytest.approx(node["rto"]["seconds"])
        page = drill_html.render_html(drill.build_report({"node1": raw}, STARTED, STARTED + 20), [])
        assert "ship 4.0 s" in page and "restore 2.2 s" in page and "check 4.2 s" in page
        # without the role's times (an older role) or without an RTO there is no breakdown
        assert drill.build_report({"node1": raw_result()}, STARTED, STARTED + 20)["nodes"][0]["rto_breakdown"] is None
        failed = raw_result(shipped_at=STARTED + 4.0, restored_at=STARTED + 9.0, error="the restore target exists")
        assert drill.build_report({"node1": failed}, STARTED, STARTED + 20)["nodes"][0]["rto_breakdown"] is None

    def test_per_asset_targets_override_the_node(self):
        raw = raw_result(asset_targets={"app-db": {"rpo_seconds": 30}})
        report = drill.build_report({"node1": raw}, STARTED, STARTED + 20)
        asset = report["nodes"][0]["assets"][0]
        assert asset["rpo"] == {"seconds": 60.0, "target_seconds": 30.0, "met": False}
        assert not report["ok"] and "app-db: RPO 1 min 00 s misses the target 30.0 s" in report["problems"][0]

    def test_failed_checks_health_and_missing_nodes_fail(self):
        report = drill.build_report(
            {"a": raw_result("a", checks={"integrity": "*** page 3 corrupt"}), "b": raw_result("b", health_rc=2),
             "c": {}},
            STARTED, STARTED + 20,
        )  # fmt: skip
        assert not report["ok"]
        assert report["summary"]["nodes_ok"] == 0 and report["summary"]["checks_failed"] == 1
        assert report["summary"]["health_failed"] == 1
        text = "\n".join(report["problems"])
        assert "a/app-db: check failed: integrity: *** page 3 corrupt" in text
        assert "b/app-db: health command failed in staging (exit 2" in text
        assert "c: no drill result" in text
        assert report["nodes"][2]["rto"]["seconds"] is None and report["nodes"][2]["rto"]["met"] is False

    def test_a_failed_asset_is_reported_beside_the_restored_ones(self):
        raw = raw_result(failed_assets={"blobs": "artifact blobs: SHA-256 abc... differs from the manifest"})
        report = drill.build_report({"node1": raw}, STARTED, STARTED + 20)
        assert report["ok"] is False
        assert report["summary"]["restores_failed"] == 1 and report["summary"]["assets_ok"] == 1
        (node,) = report["nodes"]
        assert [a["name"] for a in node["assets"]] == ["app-db", "blobs"]
        good, bad = node["assets"]
        assert good["ok"] is True and good["error"] is None
        assert bad["ok"] is False and bad["checks_ok"] is False and "differs from the manifest" in bad["error"]
        # the node's data was not all verified: no RTO; the RPO (the epoch's age) is still known
        assert node["rto"] == {"seconds": None, "target_seconds": 1800.0, "met": False}
        assert node["rpo"]["seconds"] == 60.0 and node["verified_at"] is None
        assert "node1/blobs: restore or deep check FAILED: artifact blobs" in report["problems"][0]
        page = drill_html.render_html(report, [])
        assert "not restored" in page and "differs from the manifest" in page
        assert "blobs FAILED" in drill.summary_lines(report)[0]

    def test_a_failed_restore_has_no_rto(self):
        raw = raw_result(error="the restore target exists")
        node = drill.build_report({"node1": raw}, STARTED, STARTED + 5)["nodes"][0]
        assert node["ok"] is False and node["error"] == "the restore target exists"
        assert node["rto"]["seconds"] is None and node["verified_at"] is None

    def test_secrets_are_listed_as_skipped(self):
        node = drill.build_report({"node1": raw_result(skipped=["keys"])}, STARTED, STARTED + 5)["nodes"][0]
        assert node["skipped"] == [{"name": "keys", "reason": drill.SECRET_SKIP}]

    def test_the_page_escapes_everything(self):
        raw = raw_result()
        raw["restore"]["artifacts"][0]["name"] = "<script>alert(1)</script>"
        page = drill_html.render_html(drill.build_report({"node1": raw}, STARTED, STARTED + 5), [])
        assert "<script>" not in page and "&lt;script&gt;" in page

    def test_no_node_and_bad_names_are_refused(self, clear_error):
        with pytest.raises(NodekeepError) as info:
            drill.build_report({}, STARTED, STARTED)
        clear_error(info.value, "no node")
        with pytest.raises(NodekeepError):
            drill.build_report({"../x": raw_result()}, STARTED, STARTED)

    def test_s3_specs_get_the_area(self):
        store = drill_store.drill_store("s3://bucket/fleet")
        assert store.location == "s3://bucket/fleet/_drills"


def write(repository_root: Path, signing_key, started: float, rto: float = 12.0) -> dict:
    return succeeded(
        run_module(
            "drill_report",
            {"repository": str(repository_root), "started": started, "finished": started + rto + 1,
             "nodes": {"node1": raw_result(started=started, rto=rto)}, "signing_key": str(signing_key.path),
             "public_key": signing_key.public_line, "reporter": "stage1"},
        )
    )  # fmt: skip


class TestModule:
    def test_write_once_signed_and_history(self, tmp_path, signing_key):
        first = write(tmp_path, signing_key, STARTED)
        second = write(tmp_path, signing_key, STARTED + 3600, rto=20.0)
        base = tmp_path / "_drills" / "drill"
        assert sorted(p.name for p in base.iterdir()) == [first["drill_id"], second["drill_id"]]
        data = (base / second["drill_id"] / "report.json").read_bytes()
        armored = (base / second["drill_id"] / "report.json.sig").read_text()
        signing.verify(data, armored, signing_key.public_line, namespace="nodekeep-drill")
        assert json.loads(data) == second["report"]
        assert second["history"] == [{
            "drill_id": first["drill_id"], "started": first["report"]["started"], "rto_breakdown": None, "ok": True,
            "rto_seconds": 12.0, "rpo_seconds": 60.0, "rto_target_seconds": 1800.0, "rpo_target_seconds": 300.0,
            "signature": "valid",
        }]  # fmt: skip
        again = run_module(
            "drill_report",
            {"repository": str(tmp_path), "started": STARTED, "nodes": {"node1": raw_result()},
             "signing_key": str(signing_key.path)},
        )  # fmt: skip
        assert again["failed"] and "already exists" in again["msg"]

    def test_a_forged_report_is_left_out_of_the_history(self, tmp_path, signing_key, other_signing_key):
        first = write(tmp_path, other_signing_key, STARTED)
        second = write(tmp_path, signing_key, STARTED + 3600)
        assert second["history"] == []
        assert first["drill_id"] in second["history_problems"][0]

    def test_check_mode_writes_nothing(self, tmp_path, signing_key):
        result = succeeded(
            run_module(
                "drill_report",
                {"repository": str(tmp_path / "repo"), "started": STARTED, "nodes": {"node1": raw_result()},
                 "signing_key": str(signing_key.path)},
                check_mode=True,
            )
        )  # fmt: skip
        assert result["ok"] is True and result["changed"] is True and "locations" not in result
        assert not (tmp_path / "repo").exists()

    def test_metrics(self, tmp_path, signing_key):
        result = succeeded(
            run_module(
                "drill_report",
                {"repository": str(tmp_path / "repo"), "started": STARTED, "nodes": {"node1": raw_result()},
                 "signing_key": str(signing_key.path), "metrics_dir": str(tmp_path / "textfile")},
            )
        )  # fmt: skip
        text = Path(result["metrics_file"]).read_text()
        assert 'nodekeep_drill_rto_seconds{node="node1",series="drill"} 12' in text
        assert 'nodekeep_drill_success{series="drill"} 1' in text
        assert str(tmp_path) not in text and "signing" not in text


class TestRetentionNeverSeesDrills:
    def test_prune_info_and_verify_leave_the_reports_alone(self, repository, node, dbtools, tmp_path, signing_key):
        db = tmp_path / "app.db"
        dbtools.make(db, rows=20, payload=10)
        start = datetime.now(timezone.utc) - timedelta(minutes=10)
        for attempt in range(3):  # three epochs, named by the clock given (no waiting for the next second)
            node.backup([node.sqlite_asset(db)], now=start + timedelta(seconds=attempt))
        root = Path(repository.root)
        report = write(root, signing_key, time.time() - 7200)
        before = {p: p.read_bytes() for p in (root / "_drills").rglob("*") if p.is_file()}
        pruned = succeeded(
            run_module("epoch_prune", {"repository": str(root), "node": node.name, "public_key": node.public_line,
                                       "keep_last": 1, "incomplete_grace": "0h"})
        )  # fmt: skip
        assert pruned["changed"] is True
        assert len([p for p in (root / node.name).iterdir() if p.name[:1].isdigit()]) == 1
        assert {p: p.read_bytes() for p in (root / "_drills").rglob("*") if p.is_file()} == before
        info = succeeded(run_module("epoch_info", {"repository": str(root), "node": node.name,
                                                   "public_key": node.public_line}))  # fmt: skip
        assert len(info["epochs"]) == 1 and info["incomplete"] == []
        assert succeeded(
            run_module("integrity_check", {"repository": str(root), "node": node.name, "public_key": node.public_line})
        )["ok"]
        # "_drills" can never be a node name, so nothing addresses it as one
        failed = run_module("epoch_info", {"repository": str(root), "node": "_drills"})
        assert failed["failed"] and "is not a valid name" in failed["msg"]
        assert report["locations"]["report"].startswith(str(root / "_drills" / "drill"))


# 1,200 keys in "default" and one in "meta", written by another process (closed before the backup)
ROCKS_WRITER = """
import sys
from rocksdict import Options, Rdict
options = Options(raw_mode=True)
options.create_if_missing(True)
options.create_missing_column_families(True)
db = Rdict(sys.argv[1], options, column_families={"meta": Options(raw_mode=True)})
for number in range(1200):
    db[b"key-%05d" % number] = b"v" * 40
meta = db.get_column_family("meta")
meta[b"height"] = b"7"
meta.close()
db.close()
"""


RUNBOOK = {"name": "runbook 003", "title": "Factory runtime disaster recovery", "rpo": "1 hour", "rto": "30 min"}


class TestReadableByTheRunbook:
    """The report a person who knows only the runbook can read: which runbook, data from when, checked how (from
    the restore's own check results), which target each RTO/RPO comes from, met or missed, plain sizes."""

    RUNBOOK = RUNBOOK

    def drilled(self, node, dbtools, tmp_path, **extra):
        """A real epoch (SQLite, a files tree, a RocksDB) restored into staging, and its report."""
        db = tmp_path / "live" / "app.db"
        db.parent.mkdir()
        dbtools.make(db, rows=50, payload=200)
        tree = tmp_path / "live" / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "a.bin").write_bytes(b"a" * 70000)
        (tree / "sub" / "b.txt").write_bytes(b"b" * 5000)
        (tree / "sub" / "c.txt").write_bytes(b"c" * 33)
        rocks = tmp_path / "live" / "rocks"
        subprocess.run([sys.executable, "-c", ROCKS_WRITER, str(rocks)], check=True, capture_output=True)
        assets = [
            node.sqlite_asset(db),
            {"name": "tree", "type": "files", "path": str(tree), "state_dir": str(tmp_path / "state")},
            {"name": "state", "type": "rocksdb", "path": str(rocks), "method": "offline"},
        ]
        manifest = node.backup(assets)
        restored = node.restore(tmp_path / "staging")
        started = time.time()
        raw = {
            "node": node.name, "staging_host": "stage1", "staging_path": str(tmp_path / "staging"),
            "started": started, "verified_at": started + 5, "restore": restored, "check": "integrity",
            "targets": {"rpo_seconds": 3600, "rto_seconds": "30m"}, "asset_targets": {"tree": {"rto_seconds": 60}},
            "runbook": self.RUNBOOK,
        }  # fmt: skip
        raw.update(extra)
        report = drill.build_report({node.name: raw}, started, started + 6)
        return report, manifest, drill_html.render_html(report, [])

    def test_runbook_recovery_point_checks_and_targets(self, node, dbtools, tmp_path):
        report, manifest, page = self.drilled(node, dbtools, tmp_path)
        assert report["ok"] is True and report["verdict"] == "PASSED"
        # the runbook, at the top of the JSON and the page
        assert report["runbook"] == self.RUNBOOK
        (entry,) = report["nodes"]
        assert entry["runbook"] == self.RUNBOOK and entry["verdict"] == "ok"
        head = page[: page.index("<h2>")]
        assert "Runbook: runbook 003" in head and "Factory runtime disaster recovery" in head
        assert "RPO target: 1 hour" in head and "RTO target: 30 min" in head
        # the recovery point as a UTC time and its age
        point = drill.parse_time(manifest.started)
        assert entry["recovery_point"] == drill.iso(point)
        assert entry["recovery_point_age_seconds"] == pytest.approx(entry["rpo"]["seconds"])
        assert entry["recovery_point_age_seconds"] == pytest.approx(drill.parse_time(report["started"]) - point, abs=0.01)
        shown = datetime.fromtimestamp(point, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert shown in page and "before the drill)" in page
        # checked how: from the restore's own results
        assets = {a["name"]: a for a in entry["assets"]}
        sqlite_how = assets["app-db"]["checked_how"]
        # the capture's full check, proven by the restored file's SHA-256 (not run again), and said so
        assert any(line.startswith("PRAGMA integrity_check: ok, at backup (PRAGMA integrity_check") for line in sqlite_how)
        pages = node_restore_checks(report, "app-db")["page_count"]
        assert "page count equals the manifest's: %s pages" % f"{pages:,}" in sqlite_how
        assert "tree: 3 files, 1 directories, compared with the signed index: ok" in assets["tree"]["checked_how"]
        (rocks_line,) = [line for line in assets["state"]["checked_how"] if line.startswith("RocksDB")]
        assert rocks_line.startswith("RocksDB opened read-only, 2 column families, 1,201 keys")
        for line in sqlite_how + assets["tree"]["checked_how"] + [rocks_line]:
            assert html.escape(line, quote=True) in page, line
        assert all(a["checked_how"][0] == "size and SHA-256 compared with the signed manifest: ok" for a in assets.values())
        assert not any("RocksDB" in line or "PRAGMA" in line for line in assets["tree"]["checked_how"])
        # the plain size of the tree, not its index
        assert assets["tree"]["plain_size"] == 70000 + 5000 + 33 != assets["tree"]["size"]
        assert "73.3 KiB" in page
        # which target each measure comes from, met or missed in words
        assert entry["target_sources"] == {"rpo": "runbook 003: 1 hour", "rto": "runbook 003: 30 min"}
        assert assets["tree"]["target_sources"] == {"rpo": "runbook 003: 1 hour", "rto": "nodekeep_targets.tree.rto_seconds"}
        assert "target from runbook 003: 30 min" in page and "target from nodekeep_targets.tree.rto_seconds" in page
        assert "target met" in page and "target missed" not in page

    def test_a_missed_target_is_not_a_failed_check(self, node, dbtools, tmp_path):
        report, _manifest, page = self.drilled(node, dbtools, tmp_path, targets={"rpo_seconds": 0.001, "rto": 1800})
        assert report["ok"] is False and report["verdict"] == "TARGET MISSED"
        (entry,) = report["nodes"]
        assert entry["verdict"] == "target missed" and report["summary"]["checks_failed"] == 0
        assert {a["verdict"] for a in entry["assets"]} == {"target missed"}
        assert "target missed" in page and "TARGET MISSED" in page
        lines = drill.summary_lines(report)
        assert "FAILED" not in "\n".join(lines) and "RPO" in lines[0] and "target missed" in lines[0]
        damaged = drill.build_report(
            {"n1": raw_result("n1", checks={"integrity": "row 3 missing", "page_count": 1})}, STARTED, STARTED + 1
        )
        assert damaged["verdict"] == "FAILED" and damaged["nodes"][0]["verdict"] == "FAILED"

    def test_a_bad_runbook_is_refused_naming_the_variable(self, clear_error):
        for bad in ("runbook 000", {"title": "no name"}, {"name": "x", "owner": "y"}):
            with pytest.raises(NodekeepError) as info:
                drill.build_report({"n1": raw_result("n1", runbook=bad)}, STARTED, STARTED + 1)
            assert "nodekeep_runbook" in str(info.value)


def node_restore_checks(report, name):
    (asset,) = [a for n in report["nodes"] for a in n["assets"] if a["name"] == name]
    return asset["checks"]


class ChartParser(HTMLParser):
    """Every <svg> of the page as a list of (tag, attributes, text) of its elements."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[list] = []
        self.inside = False
        self.stack: list = []

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.inside = True
            self.charts.append([])
        if self.inside:
            element = [tag, dict(attrs), ""]
            self.charts[-1].append(element)
            self.stack.append(element)

    def handle_endtag(self, tag):
        if self.inside and self.stack:
            self.stack.pop()
        if tag == "svg":
            self.inside = False
            self.stack = []

    def handle_data(self, data):
        if self.inside and self.stack:
            self.stack[-1][2] += data


class TestHistoryChart:
    """The chart of a series (issue 16), parsed from the page of real drill records: three drills of real
    restores written by the drill_report module (two on one day), each with its own RTO target and the RTO
    broken down into ship, restore and check."""

    RUNS = (  # (start, RTO target, ship, restore part of the RTO, check part)
        (1_800_000_000.0, 1800, 4.0, 6.0, 2.0),  # 2027-01-15 08:00Z
        (1_800_000_000.0 + 6.5 * 3600, 600, 3.0, 5.0, 1.0),  # 14:30Z the same day
        (1_800_000_000.0 + 86400, 300, 2.0, 4.0, 3.0),  # the next day
    )

    def test_each_run_its_own_target_times_and_a_stacked_rto(self, node, live_db, tmp_path, signing_key):
        restored = node.restore(tmp_path / "staging", epoch=node.backup([node.sqlite_asset(live_db.path)]).epoch)
        engine = sum(a["seconds"] for a in restored["artifacts"])
        checks = sum(a["check_seconds"] for a in restored["artifacts"])
        results = []
        for started, target, ship, restore_part, check_part in self.RUNS:
            shipped = started + ship
            restored_at = shipped + restore_part
            raw = {
                "node": node.name, "staging_host": "stage1", "staging_path": str(tmp_path / "staging"),
                "started": started, "shipped_at": shipped, "restored_at": restored_at,
                "verified_at": restored_at + check_part, "restore": restored, "check": "integrity",
                "targets": {"rpo_seconds": 86400 * 3650, "rto_seconds": target},
            }  # fmt: skip
            results.append(
                succeeded(
                    run_module(
                        "drill_report",
                        {"repository": str(tmp_path / "repo"), "started": started,
                         "finished": restored_at + check_part + 1, "nodes": {node.name: raw},
                         "signing_key": str(signing_key.path), "public_key": signing_key.public_line},
                    )
                )
            )  # fmt: skip
        last = results[-1]
        assert [p["rto_target_seconds"] for p in last["history"]] == [1800.0, 600.0]
        page = (tmp_path / "repo" / "_drills" / "drill" / last["drill_id"] / "report.html").read_text()
        parser = ChartParser()
        parser.feed(page)
        (rto_chart,) = [c for c in parser.charts if c[0][1]["aria-label"].startswith("RTO")]
        (rpo_chart,) = [c for c in parser.charts if c[0][1]["aria-label"].startswith("RPO")]

        # each run's own target, in the order of the runs, at its own run (not one line for all)
        targets = [e for e in rto_chart if e[0] == "line" and e[1].get("class") == "target"]
        assert [float(e[1]["data-target"]) for e in targets] == [1800.0, 600.0, 300.0]
        dots = [e for e in rto_chart if e[0] == "circle"]
        assert len(dots) == 3
        for line, dot in zip(targets, dots):
            assert float(line[1]["x1"]) < float(dot[1]["cx"]) < float(line[1]["x2"])
        # a run that missed its own target is red, one that met it green (the third: 9 s + other vs 300 s: met)
        assert all(dot[1]["fill"] == "#067647" for dot in dots)

        # x labels: date and UTC time, so that the two runs of 2027-01-15 are told apart
        labels = [e for e in rto_chart if e[0] == "text" and e[1].get("class") == "x-label"]
        texts = [[t[2] for t in rto_chart[rto_chart.index(e) + 1 : rto_chart.index(e) + 3]] for e in labels]
        assert texts == [["2027-01-15", "08:00Z"], ["2027-01-15", "14:30Z"], ["2027-01-16", "08:00Z"]]

        # the RTO stacked from its parts: ship, restore, check (and other), bottom to top, adding up to the RTO
        for index, (started, _target, ship, restore_part, check_part) in enumerate(self.RUNS):
            report = results[index]["report"] if index == 2 else None
            bars = [e for e in rto_chart if e[0] == "rect" and abs(
                float(e[1]["x"]) + float(e[1]["width"]) / 2 - float(dots[index][1]["cx"])) < 0.2]  # fmt: skip
            seconds = {e[1]["data-part"]: float(e[1]["data-seconds"]) for e in bars}
            assert seconds["ship"] == pytest.approx(ship, abs=0.01)
            assert seconds["restore"] == pytest.approx(max(0.0, engine - checks), abs=0.01)
            assert seconds["check"] == pytest.approx(checks + check_part, abs=0.01)
            assert sum(seconds.values()) == pytest.approx(ship + restore_part + check_part, abs=0.01)
            assert [e[1]["data-part"] for e in bars][:3] == ["ship", "restore", "check"]
            # stacked: each part starts where the one below ends, and the top is the dot
            for lower, upper in zip(bars, bars[1:]):
                assert float(upper[1]["y"]) + float(upper[1]["height"]) == pytest.approx(float(lower[1]["y"]), abs=0.15)
            assert float(bars[-1][1]["y"]) == pytest.approx(float(dots[index][1]["cy"]), abs=0.15)
            if report:
                assert report["nodes"][0]["rto_breakdown"]["ship"] == pytest.approx(ship)
        # the RPO chart has no stacked parts
        assert not [e for e in rpo_chart if e[0] == "rect"]
