"""ops/stream: the replication service ships exactly the committed frames of a real WAL as a chain of
signed segments; follows a checkpoint RESTART within its chain, starts a new chain (never a silent gap)
after a checkpoint TRUNCATE; refuses what it cannot replicate with the setting to change.

The service runs in this process one step at a time (``wal_lab.step``), the application is a real
process (the numbered writer) whose every command returns once its commits are done.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import stream
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import load_chain

NODE = "node1"  # as in conftest.WalLab
ASSET = "app-db"


def chain_of(lab, service):
    return load_chain(lab.repository, NODE, service.chain.epoch, ASSET, lab.signing_key.public_line)


def test_each_step_ships_the_commits_read_as_one_signed_segment(wal_lab):
    app = wal_lab.writer()
    service = wal_lab.service()
    wal_lab.step(service)  # the base epoch, taken while the log is read
    epoch = service.chain.epoch
    assert epoch and wal_lab.chain_segments(epoch) == []
    totals = []
    for n in (3, 5, 1):
        totals.append(app.commit(n))
        wal_lab.step(service)
    chain = chain_of(wal_lab, service)  # signatures, seq 1..n and each record's link to the one before checked
    assert [source["seq"] for _record, source in chain.records] == [1, 2, 3]
    assert [[int(c[3]) for c in source["commits"]] for _r, source in chain.records] == [[3], [5], [1]]
    firsts = [int(source["first_frame"]) for _r, source in chain.records]
    frames = [int(source["frames"]) for _r, source in chain.records]
    assert firsts[1] == firsts[0] + frames[0] and firsts[2] == firsts[1] + frames[1]  # no frame skipped or repeated
    for (_record, source), total in zip(chain.records, totals):
        report, k = wal_lab.restore(source["commits"][-1][1])
        assert k == total and report["segment"] == source["seq"] and report["integrity"] == "ok"
    assert service.stats["segments"] == 3 and service.stats["resets"] == 0


def test_a_checkpoint_restart_continues_the_chain(wal_lab):
    app = wal_lab.writer()
    service = wal_lab.service()
    wal_lab.step(service)
    epoch = service.chain.epoch
    app.commit(40)  # more frames than the new log will overwrite
    wal_lab.step(service)
    assert app.checkpoint("RESTART").startswith("ok")
    app.commit(2)  # the next writer restarts the log: new salts
    wal_lab.step(service)
    app.commit(3)
    wal_lab.step(service)
    assert service.chain.epoch == epoch and not service.new_chain_wanted
    assert service.stats["resets"] == 0 and service.stats["continued"] == 1
    chain = chain_of(wal_lab, service)
    assert len({source["salt"] for _r, source in chain.records}) == 2  # both generations in one chain
    _report, k = wal_lab.restore("latest")
    assert k == app.count


def test_a_checkpoint_truncate_ends_the_chain_and_a_new_base_starts(wal_lab):
    app = wal_lab.writer()
    service = wal_lab.service()
    wal_lab.step(service)
    first = service.chain.epoch
    before = app.commit(5)
    wal_lab.step(service)
    assert app.checkpoint("TRUNCATE").startswith("ok")
    app.commit(2)
    wal_lab.step(service)  # the old log's frames are gone: a gap, never continued
    assert service.stats["resets"] == 1
    assert "truncated" in service.new_chain_wanted
    # what was read before the gap was shipped into the old chain
    old = load_chain(wal_lab.repository, NODE, first, ASSET, wal_lab.signing_key.public_line)
    assert sum(int(c[3]) for _r, s in old.records for c in s["commits"]) >= 5
    _report, k = wal_lab.restore(old.records[-1][1]["commits"][-1][1])
    assert k == before
    wal_lab.step(service)  # the new chain from a fresh base
    second = service.chain.epoch
    assert second != first and not service.new_chain_wanted
    base = wal_lab.repository.get_bytes(NODE, second, "manifest.json")
    assert json.loads(base)["labels"]["stream_reason"].startswith("gap: ")
    app.commit(3)
    wal_lab.step(service)
    report, k = wal_lab.restore("latest")
    assert report["epoch"] == second and k == app.count


def test_a_restarted_service_resumes_its_chain(wal_lab):
    app = wal_lab.writer()
    service = wal_lab.service()
    wal_lab.step(service)
    epoch = service.chain.epoch
    app.commit(4)
    wal_lab.step(service)
    service.close()
    wal_lab.services.remove(service)
    app.commit(3)  # committed while no service ran
    again = wal_lab.service()
    wal_lab.step(again)  # resumes from the newest signed segment: no new base
    assert again.chain.epoch == epoch and again.chain.seq == 1
    wal_lab.step(again)
    assert [seq for seq, _a in wal_lab.chain_segments(epoch)] == [1, 2]
    assert wal_lab.repository.complete_epochs(NODE) == [epoch]
    _report, k = wal_lab.restore("latest")
    assert k == app.count


def test_a_second_service_on_the_same_database_refuses_to_start(wal_lab):
    wal_lab.writer()
    wal_lab.service()
    with pytest.raises(NodekeepError, match="another replication service already ships"):
        wal_lab.service()


def test_a_database_not_in_wal_mode_is_refused_and_left_alone(wal_lab):
    import sqlite3  # the stdlib library only: the engine's apsw never opens this file

    connection = sqlite3.connect(str(wal_lab.db))
    connection.execute("CREATE TABLE t(x)")
    connection.commit()
    connection.close()
    before = wal_lab.db.read_bytes()
    with pytest.raises(NodekeepError, match="not in WAL mode") as raised:
        wal_lab.service()
    assert "journal_mode=WAL" in raised.value.remedy
    assert wal_lab.db.read_bytes() == before
    assert not (wal_lab.db.parent / "app.db-wal").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"asset": {"name": ASSET, "type": "rocksdb", "path": "/srv/db"}}, "only sqlite assets are replicated"),
        ({"interval": 0}, "interval and poll must be positive"),
        ({"recipients": []}, "no age recipient"),
    ],
)
def test_a_configuration_it_cannot_run_names_the_setting(wal_lab, change, message):
    with pytest.raises(NodekeepError, match=message):
        stream.Service(wal_lab.settings(**change), repository=wal_lab.repository, targets=[])


def test_a_missing_or_relative_database_is_named(wal_lab):
    missing = stream.Service(wal_lab.settings(), repository=wal_lab.repository, targets=[])
    with pytest.raises(NodekeepError, match="does not exist"):
        missing.open()
    relative = stream.Service(
        wal_lab.settings(asset={"name": ASSET, "path": "app.db"}), repository=wal_lab.repository, targets=[]
    )
    with pytest.raises(NodekeepError, match="not an absolute path"):
        relative.open()


def test_the_command_line_refuses_a_bad_configuration_with_status_2(tmp_path, capsys):
    config = tmp_path / "stream.json"
    config.write_text(json.dumps({"node": NODE, "repository": str(tmp_path / "repo"), "asset": {"name": ASSET}}))
    assert stream.main(["--config", str(config)]) == 2
    assert "signing_key" in capsys.readouterr().err


@pytest.mark.parametrize("hold_frames", [0, 1])
def test_a_read_mark_is_held_only_while_the_log_moves_fast(wal_lab, hold_frames):
    """The read transaction that holds a fast log (docs/replication.md, "Holding a fast log"): with
    hold_frames 0 never taken, not even for the base; otherwise taken by a poll that reads hold_frames or
    more: the application's checkpoint still copies the whole log, but the next commit cannot restart it.
    Five polls without new frames let it go; the application's log then restarts as usual."""
    app = wal_lab.writer()
    service = wal_lab.service(hold_frames=hold_frames)
    # (the wal-index is read through the service's own descriptor: closing another one in this process would
    # drop the mark's POSIX lock)
    wal_lab.step(service)  # the base: the mark is let go once it is copied
    assert service.mark is None and service.stats["holds"] == (1 if hold_frames else 0)
    app.commit(10)
    wal_lab.step(service)
    assert (service.mark is not None) == bool(hold_frames)
    busy, frames, copied = (int(v) for v in app.checkpoint("PASSIVE").split()[2].split(","))
    assert busy == 0 and copied == frames
    before = service._index()
    app.commit(2)
    after = service._index()
    assert (after.salt == before.salt and after.mx_frame > before.mx_frame) == bool(hold_frames)  # held: no restart
    for _poll in range(6):
        wal_lab.step(service)
    assert service.mark is None
    busy, frames, copied = (int(v) for v in app.checkpoint("PASSIVE").split()[2].split(","))
    before = service._index()
    app.commit(3)
    assert service._index().salt != before.salt  # let go: the log restarts
    wal_lab.step(service)  # the restart followed
    wal_lab.step(service)  # the new log read
    _report, k = wal_lab.restore("latest")
    assert k == app.count
    # held, the log kept its frames and the restart was followed; without it the log of a few frames may be
    # restarted over the last frame read (a gap and a new chain, never a silent one)
    assert service.stats["resets"] == 0 or not hold_frames
