"""The drill report in the runbook's words (ops/drill.py, ops/drill_html.py): the runbook named at the top, the
recovery point as a UTC time and age, per asset how it was checked (only what the restore's check returned),
where each target comes from, "target met" / "target missed" (a miss is not a failed check), plain sizes."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import human
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import drill, drill_html

STARTED = 1_800_000_000.0  # 2027-01-15T08:00:00Z
RUNBOOK = {"name": "runbook 002", "title": "Guts <node> backup & recovery", "rpo": "24 h", "rto": "< 30 min"}


def artifact(name, asset_type, checks, size=4096, **extra):
    return dict({"name": name, "asset_type": asset_type, "path": "/srv/x/" + name, "source_path": "/" + name,
                 "size": size, "sha256": "0" * 64, "checks": checks, "seconds": 0.5}, **extra)  # fmt: skip


def raw(artifacts, age=125.0, rto=12.0, **extra):
    result = {
        "staging_host": "stage1", "staging_path": "/srv/x", "started": STARTED, "verified_at": STARTED + rto,
        "restore": {"epoch": drill.drill_id(STARTED - age), "artifacts": artifacts,
                    "manifest": {"started": drill.iso(STARTED - age)}},
        "targets": {"rpo_seconds": 300, "rto_seconds": 1800}, "runbook": RUNBOOK,
    }  # fmt: skip
    result.update(extra)
    return result


def report_of(*artifacts, **extra):
    return drill.build_report({"n1": raw(list(artifacts), **extra)}, STARTED, STARTED + 20)


SQLITE = artifact("db", "sqlite", {"integrity": "ok", "page_count": 130240})
TREE = artifact("tree", "files", {"entries": {"files": 2, "directories": 1, "symlinks": 0}}, size=812, plain_size=3 << 30)


class TestCheckedHow:
    def test_each_check_in_plain_words(self):
        assert drill.checked_how("sqlite", {"integrity": "ok", "page_count": 130240}) == [
            "size and SHA-256 compared with the signed manifest: ok",
            "PRAGMA integrity_check: ok",
            "page count equals the manifest's: 130,240 pages",
        ]
        assert "PRAGMA quick_check: ok" in drill.checked_how("sqlite", {"integrity": "ok"}, "quick")
        rocks = {"column_families": ["default", "meta", "blocks", "accounts"], "keys": {"default": 65000, "meta": 580},
                 "sequence": 9, "entries": {"files": 7}}  # fmt: skip
        assert drill.checked_how("rocksdb", rocks)[1:] == [
            "RocksDB opened read-only, 4 column families, 65,580 keys, sequence 9, compared with the manifest: ok"
        ]
        assert drill.checked_how("files", {"entries": {"files": 1200, "directories": 3, "symlinks": 0}})[1:] == [
            "tree: 1,200 files, 3 directories, compared with the signed index: ok"
        ]
        assert drill.checked_how("postgres", {"list": "ok", "toc_entries": 40, "table_data": 6})[1:] == [
            "pg_restore --list: ok (40 archive entries, 6 tables with data)"
        ]
        assert drill.checked_how("secret", {"public_key": "ssh-ed25519 AAAA"})[1:] == [
            "the key derives the public key recorded in the manifest: ok"
        ]

    def test_a_check_proven_at_backup_says_where_it_ran(self):
        proven = "at backup (PRAGMA integrity_check) on the captured copy; the restored file's SHA-256 equals it"
        lines = drill.checked_how("sqlite", {"integrity": "ok", "integrity_proven": proven, "page_count": 3})
        assert lines[1] == "PRAGMA integrity_check: ok, " + proven
        # asked for quick_check, the drill still names the full check the capture proved
        assert drill.checked_how("sqlite", {"integrity": "ok", "integrity_proven": proven}, "quick")[1] == lines[1]

    def test_nothing_is_claimed_that_did_not_run(self):
        # a config file's restore only checks its size and checksum against the manifest
        assert drill.checked_how("config", {}) == ["size and SHA-256 compared with the signed manifest: ok"]
        assert drill.checked_how("sqlite", {"integrity": "skipped"}, "none")[1:] == [
            "SQLite check: not run (nodekeep_drill_check: none)"
        ]
        report = drill.build_report({"n1": raw([]), "n2": {}}, STARTED, STARTED + 1)
        assert all(a["checked_how"] == [] for n in report["nodes"] for a in n["assets"])
        failed = report_of(failed_assets={"db": "PRAGMA integrity_check failed"})
        (asset,) = failed["nodes"][0]["assets"]
        assert asset["checked_how"] == [] and asset["verdict"] == "FAILED"
        assert "PRAGMA integrity_check failed" in drill_html.render_html(failed, [])


class TestThePage:
    def test_runbook_recovery_point_and_targets(self):
        report = report_of(SQLITE, TREE)
        assert report["runbook"] == RUNBOOK and report["nodes"][0]["runbook"] == RUNBOOK
        page = drill_html.render_html(report, [])
        head = page[: page.index("<h2>")]
        assert "Runbook: runbook 002" in head and "Guts &lt;node&gt; backup &amp; recovery" in head
        assert "RPO target: 24 h" in head and "RTO target: &lt; 30 min" in head
        assert report["nodes"][0]["recovery_point_age_seconds"] == 125.0
        assert "2027-01-15 07:57:55 UTC (2 min 05 s before the drill)" in page
        assert "target from runbook 002: &lt; 30 min" in page and "target from runbook 002: 24 h" in page
        assert "target met" in page and "target missed" not in page and "MISSED" not in page

    def test_targets_from_variables_and_per_asset(self):
        report = report_of(SQLITE, TREE, runbook={}, asset_targets={"db": {"rpo": "10m"}})
        assert report["runbook"] is None and "Runbook:" not in drill_html.render_html(report, [])
        (db, tree) = report["nodes"][0]["assets"]
        assert db["target_sources"] == {"rpo": "nodekeep_targets.db.rpo_seconds", "rto": "nodekeep_rto_target"}
        assert tree["target_sources"] == {"rpo": "nodekeep_rpo_target", "rto": "nodekeep_rto_target"}

    def test_a_missed_target_is_target_missed_not_failed(self):
        report = report_of(SQLITE, age=900.0)
        assert report["ok"] is False and report["verdict"] == "TARGET MISSED"
        node = report["nodes"][0]
        assert node["verdict"] == "target missed" and node["assets"][0]["verdict"] == "target missed"
        page = drill_html.render_html(report, [])
        assert "target missed" in page and "TARGET MISSED" in page
        assert "FAILED" not in "\n".join(drill.summary_lines(report))
        bad = report_of(artifact("db", "sqlite", {"integrity": "row 2 missing", "page_count": 1}), age=900.0)
        assert bad["verdict"] == "FAILED" and bad["nodes"][0]["assets"][0]["verdict"] == "FAILED"

    def test_the_size_is_the_plain_size(self):
        page = drill_html.render_html(report_of(SQLITE, TREE), [])
        assert "3.00 GiB" in page and "812 B" not in page and "4.00 KiB" in page

    IEC = ((0, "0 B"), (1023, "1023 B"), (4096, "4.00 KiB"), (75033, "73.3 KiB"), (3 << 30, "3.00 GiB"), (None, "-"))

    @pytest.mark.parametrize(("value", "text"), IEC)
    def test_iec_sizes(self, value, text):
        assert human.human_bytes(value) == text

    @pytest.mark.parametrize("bad", ["runbook 000", {"title": "no name"}, {"name": "x", "owner": "y"}])
    def test_a_bad_runbook_names_the_variable(self, bad):
        with pytest.raises(NodekeepError) as info:
            report_of(SQLITE, runbook=bad)
        assert "nodekeep_runbook" in str(info.value)


def stream(name="db", drawn_age=3600.0, shipped_age=1.5, reached=None, integrity="ok", error=None):
    drawn = drill.iso(STARTED - drawn_age).replace("Z", "123Z")  # a commit time with microseconds, as recorded
    window = {"start": drill.iso(STARTED - 7200), "end": drill.iso(STARTED - shipped_age),
              "until": drill.iso(STARTED), "points": 5400, "chains": 2}  # fmt: skip
    restore = None if error else {
        "restored_commit_time": drawn if reached is None else reached, "source": "chain", "epoch": "20270115T060000Z",
        "segment": 17, "commits_applied": 4321, "size": 16 << 20, "integrity": integrity, "seconds": 2.25,
    }  # fmt: skip
    return {"name": name, "seed": "31337", "error": error, "restore": restore,
            "drawn": dict(window, time=drawn, epoch="20270115T060000Z", seed="31337", last_shipped=window["end"])}  # fmt: skip


class TestPointInTime:
    """A streamed asset: RPO from its newest shipped commit, and its restore to a drawn commit point."""

    def test_rpo_from_the_newest_shipped_commit_and_the_commit_reached(self):
        report = report_of(SQLITE, TREE, streams=[stream()])
        node = report["nodes"][0]
        db = next(a for a in node["assets"] if a["name"] == "db")
        tree = next(a for a in node["assets"] if a["name"] == "tree")
        assert db["rpo"]["seconds"] == 1.5  # not the epoch's 125 s
        assert db["recovery_point_source"] == "last shipped segment"
        assert tree["rpo"]["seconds"] == 125.0 and "point_in_time" not in tree
        assert node["rpo"]["seconds"] == 125.0  # the node's worst asset
        assert db["point_in_time"]["exact"] and db["verdict"] == "ok" and report["ok"]
        lines = drill.summary_lines(report)
        line = next(text for text in lines if "point in time" in text)
        assert "seed 31337" in line and "among 5400 commit point(s) of 2 chain(s)" in line
        assert "reached commit %s (exact), 4321 commit(s) applied" % db["point_in_time"]["drawn"] in line
        assert "16.0 MiB" in line and "2.2 s" in line and "RPO 1.5 s" in line and "RTO 12.0 s" in line
        page = drill_html.render_html(report, [])
        assert "n1: point-in-time restores" in page and "<code>31337</code>" in page
        assert db["point_in_time"]["drawn"] in page and ">exact<" in page

    def test_only_streamed_assets_set_the_node_rpo(self):
        node = report_of(SQLITE, streams=[stream()])["nodes"][0]
        assert node["rpo"]["seconds"] == 1.5 and node["recovery_point"] == drill.iso(STARTED - 1.5)

    @pytest.mark.parametrize(
        "bad, why",
        [
            ({"reached": drill.iso(STARTED - 3000)}, "not the commit drawn"),
            ({"integrity": "*** in database main ***"}, "integrity: *** in database main ***"),
            ({"error": "segment 3 does not match its signed record"}, "FAILED: segment 3 does not match"),
        ],
    )
    def test_a_wrong_commit_a_failed_check_or_restore_fails_the_asset(self, bad, why):
        report = report_of(SQLITE, streams=[stream(**bad)])
        db = report["nodes"][0]["assets"][0]
        assert db["verdict"] == "FAILED" and not report["ok"] and report["verdict"] == "FAILED"
        assert any(why in problem for problem in report["problems"]), report["problems"]
        assert "FAILED" in drill_html.render_html(report, []) or "NOT the commit drawn" in drill_html.render_html(
            report, []
        )

    def test_a_streamed_asset_missing_from_the_epoch_fails_the_node(self):
        report = report_of(SQLITE, streams=[stream(name="other-db")])
        assert not report["ok"] and "other-db" in report["nodes"][0]["error"]
