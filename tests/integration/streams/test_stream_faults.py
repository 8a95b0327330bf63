"""Faults on real processes: the application's checkpoints, a replaced WAL, kill -9, bad input.

Every test ends with the same checks: a restore of the latest shipped state holds exactly the rows
1..k the writer committed before it, and a restore to every observed commit time T holds every commit
observed at or before T and none after it.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time

import pytest
from integration_helpers import mounted
from streamhelpers import StreamLab, check_points

from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

KILL_SAMPLE = int(os.environ.get("NODEKEEP_STREAM_KILLS", "3"))
CRASH_SAMPLE = max(1, KILL_SAMPLE // 10)  # node crashes (writer and service killed together)


def test_truncate_checkpoint_while_stopped_starts_a_new_chain(stream_lab):
    writer = stream_lab.writer()
    writer.commit(20)
    service = stream_lab.service()
    first = stream_lab.wait_chain(service)
    writer.commit(300)
    stream_lab.wait_segments(1, service)
    stream_lab.stop(service)
    shipped = stream_lab.restore()[1]
    assert shipped == 320
    # While the service is stopped the application commits, checkpoints with TRUNCATE, commits again.
    writer.commit(40)
    assert writer.checkpoint("TRUNCATE").startswith("ok 360 0,")
    writer.commit(25)
    service = stream_lab.service()
    second = stream_lab.wait_chain(service, previous=first)
    assert second != first
    writer.commit(10)
    stream_lab.wait_segments(2, service)
    stream_lab.stop(service)
    report, k = stream_lab.restore()
    assert k == 395 and report["epoch"] == second
    check_points(stream_lab, 395)


def test_application_checkpoints_restart_and_truncate_under_the_service(stream_lab):
    writer = stream_lab.writer(autocheckpoint=8)  # the log restarts every few commits
    writer.commit(5)
    service = stream_lab.service()
    stream_lab.wait_chain(service)
    for index in range(12):
        writer.commit(23)
        if index % 4 == 3:
            writer.checkpoint(("RESTART", "TRUNCATE", "FULL")[index % 3])
            writer.commit(3)
        stream_lab.wait_caught_up(service)
    final = writer.count
    log = stream_lab.stop(service)
    report, k = stream_lab.restore()
    assert k == final, report
    check_points(stream_lab, final, sample=25)
    print(log)


def test_a_fast_log_is_held_so_checkpoints_cannot_restart_it_before_it_is_read(stream_lab, tmp_path):
    """Issue 15: under a fast writer the service holds a read mark, so the application's checkpoints cannot
    restart the log (and overwrite frames not read yet) while the service is behind; the chain goes on, no
    fresh base. The service is held behind by a file (NODEKEEP_STREAM_PAUSE=holding) with its mark taken;
    meanwhile the writer commits and checkpoints three times. Without the mark each checkpoint completes and
    the next commit restarts the log: three restarts, a gap, a new chain. Once the writer is idle the mark is
    let go: the application's RESTART checkpoint then succeeds."""
    writer = stream_lab.writer()  # no autocheckpoint before the pause: the log is never wholly checkpointed
    writer.commit(20)
    pause = tmp_path / "pause"
    pause.mkdir()
    service = stream_lab.service({"NODEKEEP_STREAM_PAUSE": "holding:%s" % pause}, hold_frames=1)
    chain = stream_lab.wait_chain(service)
    writer.commit(5)
    deadline = time.monotonic() + 60
    while not (pause / "paused").exists():
        assert service.poll() is None and time.monotonic() < deadline, stream_lab.log(service)
        time.sleep(0.01)
    for _round in range(3):
        writer.commit(30)
        reply = writer.checkpoint("PASSIVE")  # "ok COUNT busy,frames in the log,frames checkpointed"
        busy, frames, done = reply.split()[2].split(",")
        assert busy == "0" and int(done) < int(frames), "the checkpoint copied the whole log (%s): nothing held it" % reply
    (pause / "resume").write_text("")
    stream_lab.wait_caught_up(service)
    assert stream_lab.wait_chain(service) == chain
    # the writer idle, the mark is let go within a few polls: the application's RESTART waits for it, then succeeds
    restart = writer.checkpoint("RESTART")
    assert restart.split()[2].split(",")[0] == "0", restart
    writer.commit(40)
    stream_lab.wait_caught_up(service)
    final = writer.count
    log = stream_lab.stop(service)
    assert "new chain" in log and log.count("new chain") == 1, log  # the first base only
    assert stream_lab.metric("nodekeep_stream_chain_resets_total") == 0
    assert stream_lab.metric("nodekeep_stream_log_holds_total") >= 1
    report, k = stream_lab.restore()
    assert k == final and report["epoch"] == chain, report
    check_points(stream_lab, final, sample=25)


def test_wal_replaced_under_the_service(stream_lab, tmp_path):
    writer = stream_lab.writer()
    writer.commit(10)
    service = stream_lab.service()
    first = stream_lab.wait_chain(service)
    writer.commit(30)
    writer.checkpoint("FULL")  # the database file holds everything; the log is not reset
    stream_lab.wait_caught_up(service)
    # A copy of the database starts another log (reset, then one commit); that log is moved over the live one,
    # and the application comes back on the replaced WAL (and recovers it).
    writer = stream_lab.replace_wal(writer, tmp_path)
    assert writer.count == 41
    writer.commit(1)
    second = stream_lab.wait_chain(service, previous=first)
    assert second != first
    stream_lab.wait_caught_up(service)
    log = stream_lab.stop(service)
    assert "a new chain starts from a fresh base" in log
    report, k = stream_lab.restore("latest")
    assert k == 42 and report["epoch"] == second
    # Nothing of the foreign log went into the first chain: its newest point is what was shipped before.
    assert check_points(stream_lab, 42) >= 1


def burst_until_shipped(lab, writer, service, rng, before: int, dying: bool = False) -> None:
    """Commit in bursts as fast as the writer can until the service committed a segment past ``before``
    (or, when ``dying``, until it died at its fault point). After each burst it waits for the service to
    move (a new signed segment, or its death): a writer that never pauses on a starved 2-core box resets
    the WAL faster than the service reads it, and every reset costs a new base (correct, but then no
    segment is ever shipped)."""
    deadline = time.monotonic() + 120
    while service.poll() is None and (dying or len(lab.segments()) <= before):
        assert time.monotonic() < deadline, lab.log(service)
        writer.commit(rng.randint(20, 200))
        seen, settle = len(lab.segments()), time.monotonic() + 10
        while service.poll() is None and len(lab.segments()) == seen and time.monotonic() < settle:
            time.sleep(0.05)


def kill_round(lab, writer, rng, point: str) -> None:
    """One service run under a writer committing a burst as fast as it can, ended by SIGKILL: at a
    fault point of the engine (it kills itself there) or from outside once a new segment is committed."""
    extra = {"NODEKEEP_STREAM_CRASH": point + ":1"} if point else {}
    before = len(lab.segments())
    service = lab.service(env_extra=extra)
    writer.start_commit(rng.randint(2000, 8000))
    writer.finish()
    burst_until_shipped(lab, writer, service, rng, before, dying=bool(point))
    if service.poll() is None:
        assert not point, "the service passed its fault point without dying: %s" % lab.log(service)
        service.kill()
    service.wait()
    assert service.returncode == -9, lab.log(service)


def test_kill_9_of_the_service_at_random_points(stream_lab):
    seed = os.environ.get("NODEKEEP_STREAM_SEED") or str(random.randrange(1 << 30))
    rng = random.Random(seed)
    writer = stream_lab.writer()
    writer.commit(10)
    shipped_before_kill = 0
    points: dict[str, int] = {}
    for kill in range(KILL_SAMPLE):
        point = rng.choice(["", "before-signature", "after-signature"])
        points[point or "outside"] = points.get(point or "outside", 0) + 1
        kill_round(stream_lab, writer, rng, point)
        # Whatever was reported shipped before the kill is still there, and it is consistent.
        report, k = stream_lab.restore()
        assert k >= shipped_before_kill, (kill, point, report)
        shipped_before_kill = k
    final = writer.commit(100)
    service = stream_lab.service()
    stream_lab.wait_caught_up(service)
    stream_lab.stop(service)
    report, k = stream_lab.restore()
    assert k == final, report
    checked = check_points(stream_lab, final, sample=None if KILL_SAMPLE > 10 else 10)
    chains = len(stream_lab.repository.complete_epochs("node1"))
    print(
        "\nkill -9 campaign (seed %s): %d kills %s, %d commits, %d segments in %d chains, %d point-in-time "
        "restores checked, 0 failures" % (seed, KILL_SAMPLE, points, final, len(stream_lab.segments()), chains, checked)
    )


def test_writer_and_service_killed_together(stream_lab):
    """Node crashes: kill -9 of the writer in the middle of a burst and of the service at once; after
    the restart the service ships the rest of the log, and the restored state is exactly what the
    application recovers from its own WAL."""
    rng = random.Random(os.environ.get("NODEKEEP_STREAM_SEED") or None)
    writer = stream_lab.writer()
    writer.commit(10)
    for _crash in range(CRASH_SAMPLE):
        service = stream_lab.service()
        burst_until_shipped(stream_lab, writer, service, rng, len(stream_lab.segments()))
        writer.start_commit(100000)  # the application is committing as fast as it can...
        writer.kill()  # ...when the node dies: both at once
        service.kill()
        service.wait()
        shipped = stream_lab.restore()[1]
        # The node comes back: the service, and the application, which recovers its WAL (a transaction
        # whose frames were all written when it died counts as committed, though the wal-index did not
        # publish it: the service ships it once the recovery publishes it).
        service = stream_lab.service()
        writer = stream_lab.writer()
        assert writer.count >= shipped
        stream_lab.wait_caught_up(service)
        stream_lab.stop(service)
        report, k = stream_lab.restore()
        assert k == writer.count, report  # exactly what the application holds, nothing lost, nothing more
    checked = check_points(stream_lab, k, sample=8 * CRASH_SAMPLE)
    print("\nnode crashes: %d, %d commits, %d point-in-time restores checked, 0 failures" % (CRASH_SAMPLE, k, checked))


def test_second_service_on_the_same_database_is_refused(stream_lab):
    writer = stream_lab.writer()
    writer.commit(3)
    first = stream_lab.service()
    stream_lab.wait_chain(first)
    second = stream_lab.service()
    second.wait(timeout=60)
    err = stream_lab.log(second)
    assert second.returncode == 2
    assert "another replication service already ships" in err
    assert first.poll() is None
    stream_lab.stop(first)


@pytest.mark.parametrize("case", ["rollback-journal", "missing"])
def test_bad_databases_are_refused_clearly(stream_lab, case):
    if case == "rollback-journal":
        subprocess.run(["sqlite3", str(stream_lab.db), "CREATE TABLE c(n INTEGER PRIMARY KEY, at REAL)"], check=True)
        expected = "is not in WAL mode"
    else:
        expected = "does not exist"
    service = stream_lab.service()
    service.wait(timeout=60)
    err = stream_lab.log(service)
    assert service.returncode == 2
    assert expected in err
    assert stream_lab.repository.complete_epochs("node1") == []
    if case == "rollback-journal":
        assert not os.path.exists(str(stream_lab.db) + "-wal")


def _fill(directory: str) -> str:
    """Fill the filesystem of ``directory`` to the last block (ENOSPC) with one file; returns its path."""
    filler = os.path.join(directory, "filler")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 16, 512):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    return filler


def test_repository_disk_full_keeps_the_commits_and_catches_up(tmp_path, age_key, signing_key, child_env):
    """The disk holding the local repository (the backlog) fills up: the service reports it (status,
    errors, lag), keeps the commits it read, never damages what it shipped, and catches up once there
    is space again."""
    with mounted(tmp_path / "small", "-o", "size=16m,mode=0700", fstype="tmpfs") as mountpoint:
        lab = StreamLab(tmp_path, LocalRepository(os.path.join(mountpoint, "repo")), age_key, signing_key, child_env)
        try:
            writer = lab.writer()
            writer.commit(20)
            service = lab.service()
            lab.wait_chain(service)
            writer.commit(100)
            lab.wait_caught_up(service)
            shipped = lab.restore()[1]
            assert shipped == 120
            filler = _fill(mountpoint)
            writer.commit(300)
            status = lab.wait_status(service, lambda s: "space" in s["error"].lower() and s["pending"])
            lab.wait_metrics(
                service, "the failing writes and the growing lag",
                lambda: lab.metric("nodekeep_stream_errors_total") >= 1 and lab.metric("nodekeep_stream_lag_seconds") > 0,
            )  # fmt: skip
            # What was reported shipped is intact and restorable while the disk is full.
            assert lab.restore()[1] == shipped, status
            os.unlink(filler)  # space again: the commits read meanwhile are shipped, in the same chain
            status = lab.wait_caught_up(service)
            assert not status["error"]
            lab.stop(service)
            report, k = lab.restore()
            assert k == writer.count == 420, report
            check_points(lab, 420, sample=10)
        finally:
            lab.cleanup()


def test_a_disk_full_retry_finishes_its_attempt_and_leaves_no_unsigned_payload(
    tmp_path, age_key, signing_key, child_env
):
    """The disk fills up right after a segment's payload was written (the service is held there by a file
    until the disk is full): the record cannot be written, the service retries, and once there is space it
    finishes that same attempt. Every segment file left in the chain belongs to a signed attempt (a retry
    used to leave the failed try's payload behind, one more per retry on a full disk)."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import SEGMENT_RE, committed_segments

    pause = tmp_path / "pause"
    pause.mkdir()
    with mounted(tmp_path / "small", "-o", "size=16m,mode=0700", fstype="tmpfs") as mountpoint:
        lab = StreamLab(tmp_path, LocalRepository(os.path.join(mountpoint, "repo")), age_key, signing_key, child_env)
        try:
            writer = lab.writer()
            writer.commit(20)
            service = lab.service(env_extra={"NODEKEEP_STREAM_PAUSE": "after-payload:%s" % pause})
            chain = lab.wait_chain(service)
            writer.commit(100)
            lab.wait_metrics(service, "the pause after the payload", (pause / "paused").exists)
            filler = _fill(mountpoint)
            (pause / "resume").touch()
            lab.wait_status(service, lambda s: "space" in s["error"].lower() and s["pending"])
            os.unlink(filler)
            lab.wait_caught_up(service)
            lab.stop(service)
            files = lab.repository.files("node1", chain)
            attempts = {(int(m.group("seq")), m.group("attempt")) for m in map(SEGMENT_RE.match, files) if m}
            assert attempts == set(committed_segments(files, "app-db")), sorted(files)
            assert lab.restore()[1] == writer.count == 120
        finally:
            lab.cleanup()
