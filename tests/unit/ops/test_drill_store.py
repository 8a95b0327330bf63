"""ops/drill_store.py on a real report store: reports written write-once with their signature last, and the
history keeps only reports whose signature verifies with the key given (the engine's rules: tests/integration/drills)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import drill, drill_store

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


def write(store, key, started: float, **options) -> dict:
    report = drill.build_report({"node1": raw(**options)}, started, started + 20)
    return drill_store.write_report(store, "default", report, "<html></html>", key)


def test_reports_are_write_once_signed_and_read_back(tmp_path, signing_key, other_signing_key):
    store = drill_store.drill_store(str(tmp_path))
    where = write(store, signing_key.key, STARTED)
    folder = Path(where["report"]).parent
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        Path(where[kind]).name for kind in ("report", "html", "signature")
    )
    assert json.loads(Path(where["report"]).read_text())["format"] == drill.FORMAT
    with pytest.raises(drill.DrillError, match="already exists"):
        write(store, signing_key.key, STARTED)
    write(store, other_signing_key.key, STARTED + 3600, rto=30.0)  # a report someone else signed
    points, problems = drill_store.load_history(store, "default", signing_key.public_line)
    assert [point["drill_id"] for point in points] == [drill.drill_id(STARTED)]
    assert len(problems) == 1 and drill.drill_id(STARTED + 3600) in problems[0]
    unchecked, _problems = drill_store.load_history(store, "default", None)
    assert len(unchecked) == 2


def test_the_store_must_be_an_absolute_path():
    with pytest.raises(RepositoryError, match="the drill repository 'relative/dir' is not an absolute path"):
        drill_store.drill_store("relative/dir")
