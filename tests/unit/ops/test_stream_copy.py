"""ops/_stream_copy: every chain the service ships into reaches each target whole (base epoch, then its
segments, signature last), an ended chain before the newer one; the backlog counts exactly the bytes not
copied yet, and past ``max_backlog`` the pending chains are given up and a new chain is asked for.

The targets are real directory repositories (the copier needs only the Repository interface; S3 itself
is tested against SeaweedFS in tests/integration/s3/test_stream_s3.py). The copier runs in this process,
one ``copy_to`` at a time.
"""

from __future__ import annotations

import json

from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import restore_point_in_time
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import committed_segments, segment_names

NODE = "node1"  # as in conftest.WalLab
ASSET = "app-db"


def shipped_bytes(repository, epoch: str) -> int:
    """What the segments of ``epoch`` weigh in ``repository`` (payloads, records, signatures)."""
    files = repository.files(NODE, epoch)
    return sum(files[name] for segment in committed_segments(files, ASSET) for name in segment_names(ASSET, *segment))


def shipping(lab, tmp_path, batches):
    """The application, a service with one directory target, its first chain's base and one segment per batch."""
    target = LocalRepository(str(tmp_path / "target"))
    app = lab.writer()
    service = lab.service(targets=[target])
    lab.step(service)
    for n in batches:
        app.commit(n)
        lab.step(service)
    return target, app, service


def test_the_base_then_every_segment_reaches_the_target_and_restores_there(wal_lab, tmp_path):
    target, app, service = shipping(wal_lab, tmp_path, (3, 2))
    epoch = service.chain.epoch
    copier = service.copier
    copier.copy_to("copy1", target)
    assert target.complete_epochs(NODE) == [epoch]
    assert committed_segments(target.files(NODE, epoch), ASSET) == wal_lab.chain_segments(epoch)
    assert target.files(NODE, epoch) == wal_lab.repository.files(NODE, epoch)  # byte counts of every file equal
    assert copier.status["copy1"]["backlog"] == 0 and "error" not in copier.status["copy1"]
    app.commit(4)
    wal_lab.step(service)
    assert copier.wake.is_set()  # a shipped segment wakes the copier
    copier.copy_to("copy1", target)
    assert len(committed_segments(target.files(NODE, epoch), ASSET)) == 3
    report = restore_point_in_time(
        target, NODE, ASSET, wal_lab.signing_key.public_line, wal_lab.identities(), dest=str(tmp_path / "from-copy.db")
    )
    assert wal_lab.rows(report["path"]) == app.count and report["segment"] == 3


def test_a_chain_that_ended_before_the_copy_is_still_copied_whole(wal_lab, tmp_path):
    target, app, service = shipping(wal_lab, tmp_path, (3, 2))
    first = service.chain.epoch
    app.checkpoint("TRUNCATE")  # a gap: the first chain ends
    app.commit(1)
    wal_lab.step(service)
    wal_lab.step(service)
    second = service.chain.epoch
    assert second != first
    app.commit(2)
    wal_lab.step(service)
    service.copier.copy_to("copy1", target)  # the first copy after both chains were shipped
    assert target.complete_epochs(NODE) == [first, second]
    for epoch in (first, second):
        assert committed_segments(target.files(NODE, epoch), ASSET) == wal_lab.chain_segments(epoch)
    assert first in service.copier.finished["copy1"]  # the ended chain is done: never listed again


def test_the_backlog_is_the_bytes_not_copied_and_an_overflow_asks_for_a_new_chain(wal_lab, tmp_path):
    target, app, service = shipping(wal_lab, tmp_path, (20, 20))
    first = service.chain.epoch
    backlog = shipped_bytes(wal_lab.repository, first)
    service.config["max_backlog"] = backlog - 1  # one byte short of what the target lacks
    copier = service.copier
    copier.copy_to("copy1", target)
    state = copier.status["copy1"]
    assert state["backlog"] == backlog and state["overflow"]
    assert "backlog" in service.new_chain_wanted
    assert target.complete_epochs(NODE) == []  # the pending chain is given up, not half copied
    wal_lab.step(service)  # the new chain the copier asked for
    second = service.chain.epoch
    assert second != first and not service.new_chain_wanted
    base = json.loads(wal_lab.repository.get_bytes(NODE, second, "manifest.json"))
    assert "overflowed" in base["labels"]["stream_reason"]
    app.commit(2)
    wal_lab.step(service)
    copier.copy_to("copy1", target)
    assert target.complete_epochs(NODE) == [second]  # the abandoned chain stays in the local repository only
    assert committed_segments(target.files(NODE, second), ASSET) == wal_lab.chain_segments(second)
    assert state["backlog"] == 0 and not state["overflow"]
    assert wal_lab.chain_segments(first)  # nothing was removed locally
