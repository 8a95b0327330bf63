"""ops/pitr: a point-in-time restore holds every commit observed at or before T and none after it, names
the commit it reached, refuses a time before anything restorable, never overwrites a target (unless
forced, keeping the old file), never writes through a link, and refuses a segment that does not match
its signed record, leaving nothing behind.

Chains are made by the replication service on a real WAL (``wal_lab``, tests/unit/ops/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    RepositoryError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import pitr
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import iso, load_chain, timestamp

NODE = "node1"  # as in conftest.WalLab
ASSET = "app-db"


def shipped_chain(lab, batches=(3, 4, 2)):
    """A base, then one segment per batch of commits; returns the writer, the chain and the row count after each."""
    app = lab.writer()
    service = lab.service()
    lab.step(service)
    totals = []
    for n in batches:
        totals.append(app.commit(n))
        lab.step(service)
    chain = load_chain(lab.repository, NODE, service.chain.epoch, ASSET, lab.signing_key.public_line)
    return app, chain, totals


def commit_times(chain) -> list[str]:
    return [source["commits"][-1][1] for _record, source in chain.records]


def test_a_restore_holds_the_commits_at_or_before_the_time_and_none_after(wal_lab):
    _app, chain, totals = shipped_chain(wal_lab)
    times = commit_times(chain)
    between = (timestamp(times[1]) + timestamp(times[2])) / 2  # after segment 2's commit, before segment 3's
    report, k = wal_lab.restore("%.6f" % between)
    assert k == totals[1]
    assert report["restored_commit_time"] == times[1] and report["segment"] == 2
    assert report["commits_applied"] == 3 + 4
    report, k = wal_lab.restore(times[0])  # exactly at a commit's time: that commit is in
    assert k == totals[0] and report["commits_applied"] == 3
    # past the newest shipped commit: the newest state, and the report says which commit that is
    report, k = wal_lab.restore(iso(timestamp(times[2]) + 3600))
    assert k == totals[2] and report["restored_commit_time"] == times[2]
    assert report["chain"]["segments"] == 3 and report["size"] == os.path.getsize(report["path"])


def test_a_time_before_anything_restorable_is_refused(wal_lab):
    _app, chain, _totals = shipped_chain(wal_lab, batches=(2,))
    early = iso(chain.start - 3600)
    with pytest.raises(RepositoryError, match="no epoch or replication chain of app-db at or before") as raised:
        wal_lab.restore(early)
    assert chain.epoch in raised.value.remedy  # the chains found, to pick a later time
    assert not (wal_lab.tmp / "restored").exists() or not os.listdir(wal_lab.tmp / "restored")
    with pytest.raises(NodekeepError, match="is not a time"):
        wal_lab.restore("yesterday-ish")


def test_an_epoch_without_segments_restores_as_the_epoch(wal_lab):
    app = wal_lab.writer()
    app.commit(6)
    service = wal_lab.service()
    wal_lab.step(service)  # a base, no segment yet
    report, k = wal_lab.restore("latest")
    assert k == 6 and report["source"] == "epoch" and report["commits_applied"] == 0
    plan = pitr.plan_point_in_time(
        wal_lab.repository, NODE, ASSET, wal_lab.signing_key.public_line, dest=str(wal_lab.tmp / "plan.db")
    )
    assert plan["source"] == "epoch" and plan["epoch"] == service.chain.epoch


def test_an_existing_target_is_refused_and_kept_when_forced(wal_lab):
    _app, chain, totals = shipped_chain(wal_lab, batches=(2, 3))
    report, k = wal_lab.restore("latest")
    assert k == totals[1]
    target = report["path"]
    original = Path(target).read_bytes()
    with pytest.raises(RepositoryError, match="already exists"):
        wal_lab.restore_to(target)
    assert Path(target).read_bytes() == original
    with pytest.raises(RepositoryError, match="already exists"):
        pitr.plan_point_in_time(wal_lab.repository, NODE, ASSET, wal_lab.signing_key.public_line, dest=target)
    forced = wal_lab.restore_to(target, commit_times(chain)[0], force=True)
    kept = [name for name in os.listdir(os.path.dirname(target)) if ".nodekeep-replaced-" in name]
    assert len(kept) == 1 and (Path(target).parent / kept[0]).read_bytes() == original
    assert forced["commits_applied"] == 2 and wal_lab.rows(target) == totals[0]
    # nothing else beside it: the work directory is gone
    assert sorted(os.listdir(os.path.dirname(target))) == sorted([os.path.basename(target), kept[0]])


def test_a_link_on_the_way_to_the_target_is_refused(wal_lab):
    shipped_chain(wal_lab, batches=(2,))
    real = wal_lab.tmp / "elsewhere"
    real.mkdir()
    (wal_lab.tmp / "via").symlink_to(real)
    with pytest.raises(RestoreError, match="link"):
        pitr.plan_point_in_time(
            wal_lab.repository,
            NODE,
            ASSET,
            wal_lab.signing_key.public_line,
            dest=str(wal_lab.tmp / "via" / "sub" / "r.db"),
        )
    with pytest.raises(RestoreError, match="link"):
        wal_lab.restore_to(str(wal_lab.tmp / "via" / "sub" / "r.db"))
    assert os.listdir(real) == []


def test_a_tampered_segment_is_refused_and_nothing_is_left(wal_lab):
    _app, chain, totals = shipped_chain(wal_lab, batches=(2, 2))
    payload = chain.records[1][0].artifacts[0].file
    path = Path(wal_lab.repository.root, NODE, chain.epoch, payload)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(data)
    dest = wal_lab.tmp / "restored" / "r.db"
    with pytest.raises(NodekeepError, match="modified or truncated after sealing|does not match its signed record"):
        wal_lab.restore_to(str(dest))
    assert not dest.exists() and os.listdir(dest.parent) == []  # no half-built database, no work directory
    # a point before the damaged segment is still restorable
    report, k = wal_lab.restore(commit_times(chain)[0])
    assert k == totals[0] and report["segment"] == 1


def test_a_staged_restore_goes_under_the_staging_root_at_the_original_path(wal_lab):
    _app, _chain, totals = shipped_chain(wal_lab, batches=(2,))
    staging = wal_lab.tmp / "staging"
    report = wal_lab.restore_to(target_root=str(staging))
    assert report["path"] == str(staging) + str(wal_lab.db)
    assert wal_lab.rows(report["path"]) == totals[0]
    with pytest.raises(RepositoryError, match="not an absolute path"):
        pitr.plan_point_in_time(wal_lab.repository, NODE, ASSET, wal_lab.signing_key.public_line, target_root="rel")


def test_a_time_inside_a_segment_applies_its_frames_only_up_to_that_commit(wal_lab):
    app = wal_lab.writer()
    service = wal_lab.service(interval=3600.0)  # no step hands over: reads pile up into one segment
    wal_lab.step(service)
    first = app.commit(2)
    service.poll()
    app.commit(3)
    service.poll()
    service.hand_over()
    service.ship()
    chain = load_chain(wal_lab.repository, NODE, service.chain.epoch, ASSET, wal_lab.signing_key.public_line)
    ((_record, source),) = chain.records
    assert [int(c[3]) for c in source["commits"]] == [2, 3]
    report, k = wal_lab.restore(source["commits"][0][1])
    assert k == first and report["commits_applied"] == 2 and report["segment"] == 1
    _report, k = wal_lab.restore(source["commits"][1][1])
    assert k == app.count
