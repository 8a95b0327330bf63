"""assets/_sqlite_pages: an incremental SQLite epoch stores only the pages that changed since the previous
epoch, every epoch restores to exactly the state it captured (under a live writer too), and an epoch is a
full one, saying why, when it is asked for, scheduled, or the local cache of the previous epoch cannot be
trusted. Where pages live is recorded as runs that merge only pages stored consecutively in one pack.

Real SQLite databases in WAL mode (made and changed by the sqlite3 CLI, written live by a separate
process), real age and a directory repository, through the epoch flow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlite_workload import change_rows  # tests/sqlite_workload.py

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _sqlite_pages as pages
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError

NODE = "node1"  # the epochs fixture's


class Lab:
    """An incremental sqlite asset of ``db`` backed up and restored through the ``epochs`` fixture."""

    def __init__(self, epochs, db: Path) -> None:
        self.epochs, self.db, self.repository = epochs, db, epochs.repository
        self.state = epochs.tmp / "state"

    def asset(self, **options) -> dict:
        return dict({"name": "app-db", "type": "sqlite", "path": str(self.db), "incremental": True,
                     "state_dir": str(self.state)}, **options)  # fmt: skip

    def backup(self, full: bool = False, **options):
        return self.epochs.backup([self.asset(**options)], full=full)

    def restore(self, manifest) -> Path:
        return self.epochs.restored(self.epochs.restore(manifest), self.db)


@pytest.fixture
def lab(tmp_path, epochs, dbtools):
    (tmp_path / "live").mkdir()
    return Lab(epochs, dbtools.make(tmp_path / "live" / "app.db", rows=600, payload=1000).path)


def test_a_later_epoch_stores_only_changed_pages_and_each_epoch_restores_its_state(lab, dbtools):
    first = lab.backup()
    facts = first.artifact("app-db").source
    assert first.artifact("app-db").file == "app-db.pages.jsonl.zst.age"
    assert facts["layout"] == "pieces" and facts["full"] and "no previous epoch" in facts["full_reason"]
    assert facts["pages"]["stored"] == facts["pages"]["total"] and facts["check"] == "integrity"
    states = {first.epoch: dbtools.rows(lab.db)}
    change_rows(lab.db, rows=4, new_rows=4)
    second = lab.backup()
    source = second.artifact("app-db").source
    assert not source["full"] and source["base_epoch"] == first.epoch and source["check"] == "quick"
    # a handful of pages changed: only those were stored, far below the whole database
    assert 0 < source["pages"]["changed"] <= source["pages"]["stored"] < source["pages"]["total"] / 4
    assert source["pieces"]["new_bytes"] < facts["pieces"]["new_bytes"] / 4 and source["pieces"]["reused"] >= 1
    states[second.epoch] = dbtools.rows(lab.db)
    for manifest in (first, second):
        restored = lab.restore(manifest)
        assert dbtools.rows(restored) == states[manifest.epoch]
        assert restored.stat().st_size == manifest.artifact("app-db").source["page_count"] * source["page_size"]


def test_an_unchanged_database_stores_no_page(lab):
    lab.backup()
    again = lab.backup().artifact("app-db").source
    assert not again["full"] and again["pages"]["changed"] == 0 and again["pages"]["stored"] == 0
    assert again["pieces"]["new"] == 0


def test_each_epoch_under_a_live_writer_is_one_committed_state(epochs, live_db, writer, dbtools):
    lab = Lab(epochs, live_db.path)
    manifests = []
    for _round in range(2):
        writer.wait_for(writer.commits + 10)  # commits land between and during the epochs
        manifests.append(lab.backup())
    writer.stop()
    assert not manifests[1].artifact("app-db").source["full"]
    for manifest in manifests:
        facts = dbtools.consistency(lab.restore(manifest))
        assert facts["even"] and facts["ids_contiguous"] and facts["txns_complete"] and facts["integrity"] == ["ok"]


def test_a_full_epoch_when_asked_scheduled_or_the_cache_cannot_be_trusted(lab, dbtools):
    lab.backup()
    forced = lab.backup(full=True).artifact("app-db").source
    assert forced["full"] and forced["full_reason"] == "requested (full: true)" and forced["check"] == "integrity"
    assert lab.backup(full_every=2).artifact("app-db").source["full"] is False
    scheduled = lab.backup(full_every=2).artifact("app-db").source
    assert scheduled["full"] and "full_every: 2" in scheduled["full_reason"]
    cache = lab.state / NODE / "app-db"
    for entry in cache.iterdir():
        if entry.name.startswith("digests-"):
            entry.write_bytes(b"\0" * entry.stat().st_size)  # the digests no longer match the map's record
    change_rows(lab.db, rows=2, new_rows=2)
    fallback = lab.backup()
    source = fallback.artifact("app-db").source
    assert source["full"] and "page digests" in source["full_reason"]
    assert dbtools.rows(lab.restore(fallback)) == dbtools.rows(lab.db)
    for entry in cache.iterdir():
        if entry.name.startswith("pages-"):
            entry.write_text("{}\n")  # the map no longer matches the signed manifest
    source = lab.backup().artifact("app-db").source
    assert source["full"] and "does not match its manifest" in source["full_reason"]


def test_the_cache_keeps_only_the_newest_epoch_and_its_base_private(lab):
    first = lab.backup()
    second = lab.backup()
    third = lab.backup()
    cache = lab.state / NODE / "app-db"
    names = sorted(p.name for p in cache.iterdir() if p.name.startswith(("pages-", "digests-")))
    assert names == sorted("%s-%s.%s" % (kind, epoch, ext) for epoch in (second.epoch, third.epoch)
                           for kind, ext in (("pages", "jsonl"), ("digests", "bin")))  # fmt: skip
    assert all((cache / name).stat().st_mode & 0o077 == 0 for name in names)
    assert first.epoch not in " ".join(names)


@pytest.mark.parametrize("kind", ["arrays-compact", "arrays-wide", "runs"])
def test_runs_merge_only_pages_stored_consecutively_in_one_pack(kind):
    where = {"arrays-compact": lambda: pages._PageArrays(10, True), "arrays-wide": lambda: pages._PageArrays(10, False),
             "runs": pages._PageRuns}[kind]()  # fmt: skip
    where.set(0, 3, -1, 0)  # pages 0-2: new pack 0, slots 0-2
    where.set(3, 2, -1, 3)  # pages 3-4: same pack, slots 3-4: one run with the above
    where.set(5, 1, -2, 0)  # page 5: another pack
    where.set(6, 2, -2, 5)  # pages 6-7: same pack but not the next slot: a run of its own
    where.set(8, 2, 4, 7)  # pages 8-9: base pack 4
    assert list(where.runs()) == [(0, 5, -1, 0), (5, 1, -2, 0), (6, 2, -2, 5), (8, 2, 4, 7)]


def test_a_base_page_moved_keeps_the_runs_around_it():
    where = pages._PageArrays(6, True)
    where.set(0, 6, 2, 10)  # the base: one run in base pack 2
    where.set(3, 1, -1, 0)  # page 3 changed: stored in this epoch's pack 0
    assert list(where.runs()) == [(0, 3, 2, 10), (3, 1, -1, 0), (4, 2, 2, 14)]


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"incremental": "true"}, "incremental must be true or false"),
        ({"full": 1}, "full must be true or false"),
        ({"incremental_check": "deep"}, "incremental_check must be one of"),
        ({"full_every": 10001}, "full_every"),
        ({"state_dir": "state"}, "state_dir 'state' is not absolute"),
    ],
)
def test_bad_options_are_named(options, needle):
    asset = dict({"name": "app-db", "type": "sqlite", "path": "/srv/app.db"}, **options)
    with pytest.raises(CaptureError, match=needle):
        asset_type("sqlite").normalize(asset)


def test_pages_need_the_engines_run_context(lab, tmp_path):
    kind = asset_type("sqlite")
    asset = kind.normalize(lab.asset())
    with pytest.raises(CaptureError, match="need the engine's run context"), kind.capture(asset, str(tmp_path)):
        pass
    no_recipients = RunContext(lab.repository, NODE, "20261207T000000Z", str(tmp_path))
    with (
        pytest.raises(CaptureError, match="need the engine's run context"),
        kind.capture(asset, str(tmp_path), no_recipients),
    ):
        pass
    assert not list(tmp_path.glob("*.sqlite"))  # no copy was made
