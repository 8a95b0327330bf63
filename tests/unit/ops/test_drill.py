"""ops/drill.py: a drill's verdict from what the node restored (a missed target is not a failure, a failed check
is); the engine's rules: tests/integration/drills. The report store is tested in test_drill_store.py."""

from __future__ import annotations

from ansible_collections.nodekeep.backup.plugins.module_utils.ops import drill

STARTED = 1_800_000_000.0


def raw(rto: float = 10.0, integrity: str = "ok") -> dict:
    return {
        "started": STARTED,
        "verified_at": STARTED + rto,
        "restore": {
            "epoch": drill.drill_id(STARTED - 60),
            "artifacts": [{"name": "app-db", "asset_type": "sqlite", "path": "/stage/var/lib/app.db",
                           "checks": {"integrity": integrity, "page_count": 1}, "seconds": 1.0}],
            "manifest": {"started": drill.iso(STARTED - 60)},
        },
        "targets": {"rpo_seconds": 300, "rto_seconds": "1m"},
    }  # fmt: skip


def test_verdicts():
    passed = drill.build_report({"node1": raw()}, STARTED, STARTED + 20)
    assert passed["verdict"] == "PASSED" and passed["rto_seconds"] == 10.0 and passed["rpo_seconds"] == 60.0
    late = drill.build_report({"node1": raw(rto=120.0)}, STARTED, STARTED + 130)
    assert late["verdict"] == "TARGET MISSED" and late["summary"]["rto_missed"] == 1
    assert late["nodes"][0]["assets"][0]["checks_ok"] is True
    damaged = drill.build_report({"node1": raw(integrity="row 3 missing from index")}, STARTED, STARTED + 20)
    assert damaged["verdict"] == "FAILED" and damaged["summary"]["checks_failed"] == 1
    assert any("node1/app-db" in problem for problem in damaged["problems"])
