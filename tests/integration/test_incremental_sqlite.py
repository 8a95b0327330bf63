"""Incremental SQLite epochs on the node's piece store: real SQLite (a writer in another process),
real age/zstd, a real local repository. Each test asserts what users rely on: every epoch of a chain
restores byte for byte to the state it captured, only changed pages are stored, any single epoch can be
deleted without breaking another, garbage collection removes only unreferenced pieces, and a damaged piece
is detected and named."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from sqlite_workload import change_rows  # tests/sqlite_workload.py

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _sqlite_pages as sqlite_pages
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _sqlite_rebuild as sqlite_rebuild
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import FORMAT_V2
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest


def _sha(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _logical(path) -> list:
    connection = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return connection.execute("SELECT id, txn, payload FROM t ORDER BY id").fetchall()
    finally:
        connection.close()


def _snapshot(path, into) -> str:
    """A consistent copy of the live DB (sqlite3 .backup): what the epoch must restore, logically."""
    subprocess.run(["sqlite3", str(path), ".backup '%s'" % into], check=True, capture_output=True)
    return str(into)


@pytest.fixture
def pieces_asset(node, live_db, tmp_path):
    state = tmp_path / "state"
    return node.sqlite_asset(live_db.path, incremental=True, state_dir=str(state))


def _source(manifest, name="app-db"):
    return manifest.artifact(name).source


def _restore(node, target, epoch):
    report = node.restore(target, epoch=epoch)
    restored = report["artifacts"][0]["path"]
    assert report["artifacts"][0]["checks"]["integrity"] == "ok"
    # the report describes the rebuilt database (not its page map)
    assert report["artifacts"][0]["size"] == os.path.getsize(restored)
    assert report["artifacts"][0]["sha256"] is None  # checked inside against the map, never reported
    return restored


def test_chain_stores_only_changed_pages_and_every_epoch_restores(node, live_db, pieces_asset, tmp_path):
    first = node.backup([pieces_asset])
    facts = _source(first)
    assert facts["layout"] == "pieces" and facts["full"] is True
    assert "no previous epoch" in facts["full_reason"]
    assert facts["check"] == "integrity" and facts["integrity"] == "ok"
    assert json.loads((node.epoch_dir(first.epoch) / "manifest.json").read_text())["format"] == FORMAT_V2
    states = {first.epoch: _logical(live_db.path)}
    epochs = [first]
    for step in range(3):
        change_rows(live_db.path, rows=20, new_rows=30)
        states_copy = _snapshot(live_db.path, tmp_path / ("expected-%d.db" % step))
        manifest = node.backup([pieces_asset])
        source = _source(manifest)
        assert source["full"] is False and source["base_epoch"] == epochs[-1].epoch
        # a small share of the pages changed: only those were stored (plus repacks), far below a full copy
        assert 0 < source["pages"]["stored"] < source["pages"]["total"] / 4
        assert source["pieces"]["uploaded_bytes"] < facts["pieces"]["uploaded_bytes"] / 4
        assert source["check"] == "quick" and source["integrity"] == "ok"
        states[manifest.epoch] = _logical(states_copy)
        epochs.append(manifest)
    for manifest in epochs:
        restored = _restore(node, tmp_path / ("restore-" + manifest.epoch), manifest.epoch)
        assert _logical(restored) == states[manifest.epoch]
        # byte for byte: the page map's SHA-256 was proven during the restore; the file equals the manifest's page count
        assert os.path.getsize(restored) == _source(manifest)["page_count"] * _source(manifest)["page_size"]
    report = node.verify(epoch=epochs[-1].epoch, deep=True)
    assert report["ok"], report["problems"]
    assert report["artifacts"][0]["checks"]["integrity"] == "ok"


@pytest.mark.parametrize("compact", [True, False], ids=["2+2 bytes a page", "4+4 bytes a page (over 64 GiB)"])
def test_both_page_array_widths_store_and_restore_the_same(node, live_db, pieces_asset, tmp_path, monkeypatch, compact):
    if not compact:
        monkeypatch.setattr(sqlite_pages, "COMPACT_BYTES", 0)
    node.backup([pieces_asset])
    change_rows(live_db.path, rows=20, new_rows=30)
    expected = _snapshot(live_db.path, tmp_path / "expected.db")
    manifest = node.backup([pieces_asset])
    assert _source(manifest)["full"] is False and 0 < _source(manifest)["pages"]["changed"]
    restored = _restore(node, tmp_path / "restore", manifest.epoch)
    assert _logical(restored) == _logical(expected)


def _refs(node, epoch) -> set:
    lines = (node.epoch_dir(epoch) / "app-db.refs.txt").read_text().splitlines()[1:]
    return {line.split()[0] for line in lines}


def test_any_single_epoch_can_be_deleted_and_gc_keeps_what_others_need(node, live_db, pieces_asset, tmp_path):
    epochs = [node.backup([pieces_asset])]
    expected = {epochs[0].epoch: _logical(live_db.path)}
    for _round in range(3):
        change_rows(live_db.path, rows=10, new_rows=0)  # the same hot rows each time: older incremental packs go stale
        epochs.append(node.backup([pieces_asset]))
        expected[epochs[-1].epoch] = _logical(live_db.path)
    refs = {m.epoch: _refs(node, m.epoch) for m in epochs}
    only_doomed = (refs[epochs[0].epoch] | refs[epochs[2].epoch]) - refs[epochs[1].epoch] - refs[epochs[3].epoch]
    assert only_doomed  # the middle epoch's own pack
    # Delete the full epoch and one in the middle: the others still restore, GC removes only what nobody lists.
    node.repository.remove_epoch(node.name, epochs[0].epoch)
    node.repository.remove_epoch(node.name, epochs[2].epoch)
    before = set(node.repository.object_names(node.name))
    result = apply_retention(
        node.repository,
        node.name,
        RetentionPolicy.from_options({"keep_last": 10}),
        node.public_line,
        now=datetime.now(timezone.utc) + timedelta(days=3),
    )
    assert result["objects"]["deferred"] is None, result["objects"]
    after = set(node.repository.object_names(node.name))
    assert before - after == only_doomed
    assert after == refs[epochs[1].epoch] | refs[epochs[3].epoch]
    for manifest in (epochs[1], epochs[3]):
        restored = _restore(node, tmp_path / ("r-" + manifest.epoch), manifest.epoch)
        assert _logical(restored) == expected[manifest.epoch]
        assert node.verify(epoch=manifest.epoch)["ok"]


def test_a_damaged_piece_is_detected_and_named(node, live_db, pieces_asset, tmp_path):
    first = node.backup([pieces_asset])
    change_rows(live_db.path, rows=10, new_rows=10)
    second = node.backup([pieces_asset])
    refs = (node.epoch_dir(second.epoch) / "app-db.refs.txt").read_text().splitlines()[1:]
    name = refs[0].split()[0]
    path = node.repository._object_path(node.name, name)
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    data[len(data) // 2] ^= 1
    os.chmod(path, 0o600)
    with open(path, "wb") as handle:
        handle.write(data)
    report = node.verify(epoch=second.epoch)
    assert not report["ok"] and name in report["problems"][0] and second.epoch in report["problems"][0]
    with pytest.raises(NodekeepError) as caught:
        node.restore(tmp_path / "bad", epoch=second.epoch)
    assert name in str(caught.value)
    assert not (tmp_path / "bad" / str(live_db.path).lstrip("/")).exists()
    del first


def test_unreadable_previous_epoch_falls_back_to_a_full_epoch_and_says_so(node, live_db, pieces_asset, tmp_path):
    node.backup([pieces_asset])
    cache = tmp_path / "state" / node.name / "app-db"
    for entry in cache.iterdir():
        if entry.name.startswith("pages-"):
            entry.write_text("{}\n")  # the local copy of the map no longer matches the signed manifest
    change_rows(live_db.path, rows=5, new_rows=5)
    second = node.backup([pieces_asset])
    source = _source(second)
    assert source["full"] is True and "does not match its manifest" in source["full_reason"]
    assert source["check"] == "integrity"
    restored = _restore(node, tmp_path / "r", second.epoch)
    assert _logical(restored) == _logical(live_db.path)


def test_full_on_demand_and_on_schedule(node, live_db, pieces_asset):
    node.backup([pieces_asset])
    forced = node.backup([pieces_asset], full=True)
    assert _source(forced)["full"] is True and "requested" in _source(forced)["full_reason"]
    scheduled = dict(pieces_asset, full_every=2)
    one = node.backup([scheduled])
    assert _source(one)["full"] is False
    two = node.backup([scheduled])
    assert _source(two)["full"] is True and "full_every" in _source(two)["full_reason"]


def test_concurrent_writer_each_epoch_is_one_committed_state(node, live_db, writer, pieces_asset, tmp_path, dbtools):
    manifests = []
    for round_ in range(3):
        writer.wait_for(writer.commits + 20)
        manifests.append(node.backup([pieces_asset]))
        del round_
    writer.stop()
    for manifest in manifests:
        restored = _restore(node, tmp_path / ("w-" + manifest.epoch), manifest.epoch)
        facts = dbtools.consistency(restored)
        assert facts["even"] and facts["ids_contiguous"] and facts["txns_complete"] and facts["integrity"] == ["ok"]


def test_page_map_is_sealed_and_names_no_plaintext_hash(node, live_db, pieces_asset):
    manifest = node.backup([pieces_asset])
    listing = {p.name for p in node.epoch_dir(manifest.epoch).iterdir()}
    assert listing == {"app-db.pages.jsonl.zst.age", "app-db.refs.txt", "manifest.json", "manifest.json.sig"}
    whole = _sha(live_db.path)
    blob = b"".join(p.read_bytes() for p in node.epoch_dir(manifest.epoch).iterdir())
    assert whole.encode() not in blob
    loaded = load_manifest(node.repository, node.name, manifest.epoch, node.public_line)
    assert loaded.artifact("app-db").format == "sqlite-pages+zstd+age"


def test_map_checks_refuse_gaps_and_overlaps(tmp_path):
    header = {"format": sqlite_rebuild.MAP_FORMAT, "page_size": 4096, "page_count": 3, "size": 3 * 4096}
    pack = {"object": "a" * 64, "sealed_size": 10, "sealed_sha256": "b" * 64, "size": 3 * 4096}

    def write(runs):
        path = tmp_path / "map.jsonl"
        lines = [json.dumps(header), json.dumps(pack)] + [
            json.dumps({"first": f, "count": c, "pack": 0, "offset": o}) for f, c, o in runs
        ]
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    assert sqlite_rebuild.read_map(write([(1, 3, 0)]))[2] == [(1, 3, 0, 0)]
    for runs in ([(1, 2, 0)], [(1, 2, 0), (2, 2, 0)], [(1, 3, 4096)], [(1, 1, 0), (3, 1, 0)]):
        with pytest.raises(NodekeepError):
            sqlite_rebuild.read_map(write(runs))


def test_mostly_stale_packs_are_repacked_so_old_epochs_free_them(node, live_db, pieces_asset, tmp_path):
    """A pack whose pages the new epoch mostly replaced is not kept alive by the few pages it still needs:
    they are stored again, so once the old epochs go, GC frees the whole old pack (write-once: nothing rewritten)."""
    first = node.backup([pieces_asset])
    subprocess.run(
        ["sqlite3", str(live_db.path), "UPDATE t SET payload = randomblob(length(payload)) WHERE id <= 3400"],
        check=True,
        capture_output=True,
    )
    second = node.backup([pieces_asset])
    pages = _source(second)["pages"]
    assert pages["repacked"] > 0 and pages["stored"] == pages["changed"] + pages["repacked"]
    assert not _refs(node, first.epoch) & _refs(node, second.epoch)
    expected = _logical(live_db.path)
    node.repository.remove_epoch(node.name, first.epoch)
    result = apply_retention(
        node.repository,
        node.name,
        RetentionPolicy.from_options({"keep_last": 10}),
        node.public_line,
        now=datetime.now(timezone.utc) + timedelta(days=3),
    )
    assert result["objects"]["removed"] > 0
    assert set(node.repository.object_names(node.name)) == _refs(node, second.epoch)
    assert _logical(_restore(node, tmp_path / "r", second.epoch)) == expected


def test_a_missing_piece_names_every_epoch_it_breaks(node, live_db, pieces_asset):
    first = node.backup([pieces_asset])
    change_rows(live_db.path, rows=5, new_rows=5)
    second = node.backup([pieces_asset])
    shared = sorted(_refs(node, first.epoch) & _refs(node, second.epoch))
    assert shared  # the full epoch's packs still hold the unchanged pages
    os.unlink(node.repository._object_path(node.name, shared[0]))
    result = apply_retention(
        node.repository, node.name, RetentionPolicy.from_options({"keep_last": 10}), node.public_line
    )
    assert result["objects"]["missing"] == 1
    assert result["objects"]["broken_epochs"] == [
        {"epoch": first.epoch, "missing_pieces": 1},
        {"epoch": second.epoch, "missing_pieces": 1},
    ]
    for manifest in (first, second):
        report = node.verify(epoch=manifest.epoch)
        assert not report["ok"] and shared[0] in report["problems"][0] and manifest.epoch in report["problems"][0]
    # the next backup stores the missing pages again (the piece is not in the listing): a complete, restorable epoch
    third = node.backup([pieces_asset])
    assert node.verify(epoch=third.epoch)["ok"]


def test_restore_hashes_the_file_as_written_without_reading_it_back(node, live_db, pieces_asset, tmp_path):
    """The rebuilt file's SHA-256 is proven from the unsealed packs as they are written, in file order: a full
    epoch and a small incremental one read nothing back (the restored content equals the snapshot's)."""
    full = node.backup([pieces_asset])
    change_rows(live_db.path, rows=5, new_rows=5)
    expected = _snapshot(live_db.path, tmp_path / "expected.db")
    incremental = node.backup([pieces_asset])
    page_size = _source(incremental)["page_size"]
    report = node.restore(tmp_path / "full", epoch=full.epoch)["artifacts"][0]
    assert report["rebuilt"]["read_back_bytes"] == 0 and report["rebuilt"]["pages"] == _source(full)["page_count"]
    # the digest is compared inside with the checked page map's (a mismatch fails the restore), never reported
    assert report["sha256"] is None
    report = node.restore(tmp_path / "incr", epoch=incremental.epoch)["artifacts"][0]
    assert report["sha256"] is None
    assert _logical(report["path"]) == _logical(expected)
    # its new pack (the changed pages) comes after the base pack it fills holes in: held in memory, not read back
    assert report["rebuilt"]["packs_read"] == 2 and report["rebuilt"]["read_back_bytes"] == 0
    assert report["rebuilt"]["pages"] * page_size == os.path.getsize(report["path"])


@pytest.mark.parametrize("hold", [0, 1024], ids=["nothing held: read back", "held in memory"])
def test_file_order_digest_hashes_runs_written_ahead_and_refuses_a_gap(tmp_path, hold):
    pages = [bytes([n]) * 512 for n in range(6)]
    path = tmp_path / "db"
    path.write_bytes(b"".join(pages))
    whole = hashlib.sha256(path.read_bytes()).hexdigest()
    reader = os.open(path, os.O_RDONLY)
    try:
        digest = sqlite_rebuild._FileOrderDigest(reader, 512, hold)
        digest.pack(bytearray(b"".join(pages[4:6])), [(5, 2, 0)])  # ahead of the digest
        digest.pack(bytearray(b"".join(pages[0:2])), [(1, 2, 0)])
        assert digest.hexdigest(6) is None  # pages 3-4 never written
        digest.pack(bytearray(b"".join(pages[2:4])), [(3, 2, 0)])
        assert digest.hexdigest(6) == whole
        assert digest.read_back == (0 if hold else 1024) and digest.held_bytes == 0
    finally:
        os.close(reader)


def test_a_full_epoch_keeps_runs_not_per_page_arrays(node, live_db, pieces_asset, tmp_path, monkeypatch):
    """What grows with the database in a full epoch is one run per pack, not 4 bytes a page (50 GiB: 52 MiB);
    an incremental epoch keeps its arrays against the base. Both restore to the captured state."""
    made = []
    original = sqlite_pages._PageArrays.__init__

    def recording(self, page_count, compact):
        made.append(page_count)
        original(self, page_count, compact)

    monkeypatch.setattr(sqlite_pages._PageArrays, "__init__", recording)
    expected = _snapshot(live_db.path, tmp_path / "expected-full.db")
    full = node.backup([pieces_asset])
    assert made == [] and _source(full)["full"] is True
    assert _source(full)["pages"]["runs"] == _source(full)["pieces"]["referenced"]  # one run a pack
    assert _logical(_restore(node, tmp_path / "full", full.epoch)) == _logical(expected)
    change_rows(live_db.path, rows=5, new_rows=5)
    expected = _snapshot(live_db.path, tmp_path / "expected-incr.db")
    incremental = node.backup([pieces_asset])
    assert made == [_source(incremental)["pages"]["total"]]
    assert _logical(_restore(node, tmp_path / "incr", incremental.epoch)) == _logical(expected)
