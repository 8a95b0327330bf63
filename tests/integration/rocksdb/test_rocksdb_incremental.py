"""Incremental RocksDB epochs on the node's piece store, under live writes (a real service process).

SST and blob files are stored once, by content, in the node's pieces; each later epoch stores only the
files that are new (fresh SSTs from flushes and compactions) and the small mutable ones (MANIFEST,
OPTIONS, CURRENT, WAL). Every epoch restores to the state the service had committed at its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from integration_helpers import read_rocksdb
from rdbhelpers import assert_consistent
from test_restore_by_hand import run_by_hand

pytestmark = pytest.mark.timeout(300)


def _asset(app, tmp_path, **options) -> dict:
    return dict(
        {
            "name": "chain",
            "type": "rocksdb",
            "path": str(app.db),
            "method": "checkpoint_command",
            "checkpoint_command": app.checkpoint_command,
            "incremental": True,
            "state_dir": str(tmp_path / "state"),
        },
        **options,
    )


def test_incremental_chain_stores_new_files_only_and_every_epoch_restores(node, make_app, tmp_path):
    app = make_app("big", prefill=8000, value_size=400)  # SST files of about 2 MB
    app.wait_for(8100)
    asset = _asset(app, tmp_path)
    epochs = []
    for _round in range(3):
        epochs.append((node.backup([asset]), app.last_checkpoint()))
        app.wait_for(app.last_checkpoint() + 30)
    first = epochs[0][0].artifacts[0]
    assert first.format == "rocksdb+files-index+zstd+age" and first.source["layout"] == "pieces"
    assert json.loads((node.epoch_dir(epochs[0][0].epoch) / "manifest.json").read_text())["format"].endswith("/v2")
    restored = []
    for manifest, count in epochs:
        target = tmp_path / ("restore-" + uuid.uuid4().hex[:6])
        result = node.restore(target, epoch=manifest.epoch)
        path = result["artifacts"][0]["path"]
        assert assert_consistent(read_rocksdb(path), value_size=400) == count
        restored.append({p.name: p.stat().st_size for p in Path(path).iterdir() if p.is_file()})
    for number in (1, 2):
        work = epochs[number][0].artifacts[0].source["objects"]
        before, now = restored[number - 1], restored[number]
        kept_ssts = [name for name in now if name.endswith(".sst") and now[name] == before.get(name)]
        # SST files already stored are known by identity: neither read nor stored again...
        assert work["unchanged"] >= len(kept_ssts) > 0, (work, kept_ssts)
        # ...so at most the new SST files and the small mutable ones (MANIFEST, OPTIONS, CURRENT, WAL) are read
        new_or_mutable = sum(size for name, size in now.items() if name not in kept_ssts)
        assert work["read_bytes"] <= new_or_mutable
        assert work["new_bytes"] <= new_or_mutable
    report = node.verify(epoch=epochs[-1][0].epoch, deep=True)
    assert report["ok"], report["problems"]
    assert report["artifacts"][0]["extra"]["objects_ok"] is True


def test_an_incremental_epoch_restores_by_hand_with_age_zstd_jq_and_coreutils(node, make_app, tmp_path):
    app = make_app("bh", prefill=4000)
    app.wait_for(4050)
    asset = {
        "name": "chain",
        "type": "rocksdb",
        "path": str(app.db),
        "method": "checkpoint_command",
        "checkpoint_command": app.checkpoint_command,
        "incremental": True,
        "state_dir": str(tmp_path / "state"),
    }
    node.backup([asset])
    app.wait_for(app.last_checkpoint() + 20)
    second = node.backup([asset])
    engine = node.restore(tmp_path / "engine", epoch=second.epoch)["artifacts"][0]["path"]
    by_hand = tmp_path / "by-hand"
    run_by_hand(node, second.epoch, "chain", by_hand)
    assert read_rocksdb(by_hand) == read_rocksdb(engine)
    names = sorted(p.name for p in Path(engine).iterdir())
    assert sorted(p.name for p in by_hand.iterdir()) == names
    for name in names:
        assert _sha256(by_hand / name) == _sha256(Path(engine) / name), name


def _sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
