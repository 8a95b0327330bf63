"""Replication test helpers (imported by name, never as ``conftest``): a numbered writer (a real process), the replication service (a real process
running the engine's command line), and checks on restored databases.

``stream_lab`` gives a ``StreamLab``: ``db`` (a WAL-mode database), ``writer()`` (start a
``NumberedWriter``), ``service(**options)`` (start the service; ``wait_segments(n)`` waits until n
segments are committed, reading the repository; ``kill()`` sends SIGKILL), ``restore(point)`` (a
point-in-time restore into a fresh file, returns the report and the rows 1..k restored).
Ordering is by files and pipes only: a writer command returns when its commits are done, a wait
returns when the repository holds the segments.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WAIT = 60.0  # generous: the machine is shared; a deadline only turns a hang into a failure
FOREIGN_LOG = (
    "import sqlite3,sys,shutil; c=sqlite3.connect(sys.argv[1], isolation_level=None);"
    "c.execute('PRAGMA wal_autocheckpoint=0'); c.execute('PRAGMA wal_checkpoint(TRUNCATE)');"
    "c.execute('insert into c(n, at) select max(n) + 1, 0 from c');"
    "shutil.copy(sys.argv[1] + '-wal', sys.argv[2]); c.close()"
)


class NumberedWriter:
    def __init__(self, path: Path, env: dict, autocheckpoint: int = 1000) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "numbered_writer.py"), str(path), str(autocheckpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.count = self._answer()

    def _answer(self) -> int:
        line = self.proc.stdout.readline()
        assert line.startswith("ok"), "writer answered %r" % line
        words = line.split()
        return int(words[1]) if words[1].isdigit() else -1

    def send(self, command: str) -> int:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def commit(self, n: int) -> int:
        self.count = self.send("commit %d" % n)
        return self.count

    def start_commit(self, n: int) -> None:
        """Start committing ``n`` transactions as fast as the writer can; ``finish()`` waits for them."""
        self.proc.stdin.write("commit %d\n" % n)
        self.proc.stdin.flush()

    def finish(self) -> int:
        self.count = self._answer()
        return self.count

    def checkpoint(self, mode: str) -> str:
        self.proc.stdin.write("checkpoint %s\n" % mode)
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def run(self) -> None:
        assert self.send("run") == -1

    def stop_run(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.count = self._answer()
        return self.count

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=WAIT)


class StreamLab:
    def __init__(self, tmp_path: Path, repository, age_key, signing_key, env: dict) -> None:
        self.tmp = tmp_path
        self.repository = repository
        self.age_key = age_key
        self.signing_key = signing_key
        self.env = env
        self.db = tmp_path / "app" / "app.db"
        self.db.parent.mkdir()
        self.state_dir = tmp_path / "state"
        self.metrics_dir = tmp_path / "metrics"
        self.procs: list = []
        self.writers: list[NumberedWriter] = []
        self.restores = 0

    def config(self, **options) -> Path:
        config = {
            "node": "node1",
            "repository": str(self.repository.root),
            "asset": {"name": "app-db", "type": "sqlite", "path": str(self.db)},
            "recipients": [self.age_key.recipient],
            "signing_key": str(self.signing_key.path),
            "state_dir": str(self.state_dir),
            "metrics_dir": str(self.metrics_dir),
            "interval": 0.2,
            "poll": 0.005,
        }
        config.update(options)
        path = self.tmp / ("stream-%d.json" % len(self.procs))
        path.write_text(json.dumps(config))
        return path

    def writer(self, autocheckpoint: int = 1000) -> NumberedWriter:
        writer = NumberedWriter(self.db, self.env, autocheckpoint)
        self.writers.append(writer)
        return writer

    def service(self, env_extra: dict | None = None, **options) -> subprocess.Popen:
        env = dict(self.env, **(env_extra or {}))
        log = self.tmp / ("service-%d.log" % len(self.procs))
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ansible_collections.nodekeep.backup.plugins.module_utils.ops.stream",
                 "--config", str(self.config(**options))],
                stdout=subprocess.DEVNULL, stderr=handle, text=True, env=env,
            )  # fmt: skip
        proc.log = log
        self.procs.append(proc)
        return proc

    @staticmethod
    def log(proc) -> str:
        return proc.log.read_text()

    def segments(self) -> list[tuple[str, int]]:
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import committed_segments

        found = []
        for epoch in self.repository.complete_epochs("node1"):
            found += [(epoch, seq) for seq, _a in committed_segments(self.repository.files("node1", epoch), "app-db")]
        return found

    def wait_segments(self, n: int, proc: subprocess.Popen | None = None) -> list:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = self.segments()
            if len(found) >= n:
                return found
            if proc is not None and proc.poll() is not None:
                raise AssertionError("the service exited: %s" % self.log(proc))
            time.sleep(0.02)
        raise AssertionError("fewer than %d segments after %.0f s: %s" % (n, WAIT, self.log(proc) if proc else ""))

    def wait_chain(self, proc: subprocess.Popen, previous: str = "") -> str:
        """The chain the service's state file names, once it names one other than ``previous``."""
        state = self.state_dir / "stream-app-db.json"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if state.exists():
                chain = json.loads(state.read_text())["chain"]
                if chain != previous:
                    return chain
            if proc.poll() is not None:
                raise AssertionError("the service exited: %s" % self.log(proc))
            time.sleep(0.02)
        raise AssertionError("no new chain after %.0f s" % WAIT)

    def metric(self, name: str, **labels) -> float:
        """A value from the service's metrics textfile (-1 while it is not there)."""
        path = self.metrics_dir / "nodekeep_stream_app-db.prom"
        want = dict(labels, asset="app-db", node="node1")
        prefix = "%s{%s} " % (name, ",".join('%s="%s"' % item for item in sorted(want.items())))
        for line in path.read_text().splitlines() if path.exists() else []:
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return -1.0

    def wait_metrics(self, proc: subprocess.Popen, what: str, check) -> None:
        """Until ``check()`` (reading metrics, the repository...) holds while the service runs."""
        deadline = time.monotonic() + WAIT
        while not check():
            if proc.poll() is not None:
                raise AssertionError("the service exited: %s" % self.log(proc))
            if time.monotonic() > deadline:
                raise AssertionError("the service never reported %s: %s" % (what, self.log(proc)))
            time.sleep(0.05)

    def wait_status(self, proc: subprocess.Popen, check) -> dict:
        """Until the service's status file satisfies ``check(status)``; returns that status."""
        status_file = self.state_dir / "stream-app-db.status.json"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if status_file.exists():
                status = json.loads(status_file.read_text())
                if status.get("pid") == proc.pid and check(status):
                    return status
            if proc.poll() is not None:
                raise AssertionError("the service exited: %s" % self.log(proc))
            time.sleep(0.02)
        raise AssertionError("the service's status never matched: %s" % self.log(proc))

    def wait_caught_up(self, proc: subprocess.Popen) -> dict:
        """Until the service's status names the position the wal-index holds now (all commits shipped)."""
        from ansible_collections.nodekeep.backup.plugins.module_utils.core import wal

        status_file = self.state_dir / "stream-app-db.status.json"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            header = wal.read_index_header(str(self.db) + "-shm")
            if status_file.exists() and header is not None:
                status = json.loads(status_file.read_text())
                if status.get("pid") != proc.pid:
                    pass  # written by an earlier run (killed): this one has not reported yet
                elif (
                    status["salt"] == header.salt.hex() and status["frame"] == header.mx_frame and not status["pending"]
                ):
                    return status
            if proc.poll() is not None:
                raise AssertionError("the service exited: %s" % self.log(proc))
            time.sleep(0.02)
        raise AssertionError("the service did not catch up in %.0f s" % WAIT)

    def replace_wal(self, writer: NumberedWriter, scratch: Path) -> NumberedWriter:
        """A foreign log moved over the live one under the service (a gap it cannot follow: a new chain).

        A copy of the database starts another log (reset, then one commit: row count + 1); the application
        is killed, that log replaces its WAL, and the application comes back on it (and recovers it).
        Returns the new writer."""
        other = scratch / "other" / "app.db"
        other.parent.mkdir()
        shutil.copy(self.db, other)
        shutil.copy(str(self.db) + "-wal", str(other) + "-wal")
        subprocess.run(
            [sys.executable, "-c", FOREIGN_LOG, str(other), str(self.db) + "-wal.new"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        writer.kill()
        os.replace(str(self.db) + "-wal.new", str(self.db) + "-wal")
        return self.writer()

    def stop(self, proc: subprocess.Popen) -> str:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT)
        assert proc.returncode == 0, self.log(proc)
        return self.log(proc)

    def restore(self, point: str = "latest", **kwargs):
        from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
        from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import restore_point_in_time

        self.restores += 1
        dest = self.tmp / "restored" / ("r%d.db" % self.restores)
        report = restore_point_in_time(
            self.repository, "node1", "app-db", self.signing_key.public_line,
            load_identities(identity_files=[str(self.age_key.identity_path)]),
            point_in_time=point, dest=str(dest), **kwargs,
        )  # fmt: skip
        return report, restored_numbers(dest)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for writer in self.writers:
            writer.kill()


def restored_numbers(path: Path) -> int:
    """k of a restored database that must hold exactly rows 1..k (checked here), via apsw read-only."""
    import apsw

    db = apsw.Connection("file:%s?immutable=1" % path, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count, low, high = db.execute("SELECT count(*), coalesce(min(n), 1), coalesce(max(n), 0) FROM c").fetchone()
    finally:
        db.close()
    assert low == 1 and count == high, "restored rows are not 1..k: count %d, min %d, max %d" % (count, low, high)
    return high


def chain_batches(repository, public_key: str) -> list:
    """Per chain, oldest first: (first restorable time, [(time, commits in the batch), ...])."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import load_chain, timestamp

    chains = []
    for epoch in repository.complete_epochs("node1"):
        chain = load_chain(repository, "node1", epoch, "app-db", public_key)
        if chain is None:
            continue
        batches = []
        for _record, source in chain.records:
            batches += [(timestamp(when), int(count)) for _n, when, _size, count in source["commits"]]
        chains.append((chain.start, batches))
    return chains


def check_points(lab, final: int, sample: int | None = None) -> int:
    """Restores to observed commit times hold every commit observed at or before T and none after.

    Within a chain, k(T) = k(chain end) - commits observed after T; across chains k never decreases;
    no point holds more than ``final``. Returns the number of restores checked.
    """
    import random

    chains = chain_batches(lab.repository, lab.signing_key.public_line)
    checked = 0
    previous = 0
    for index, (start, batches) in enumerate(chains):
        end = batches[-1][0]
        _report, k_end = lab.restore("%.6f" % end)
        assert k_end >= previous
        assert k_end <= final
        moments = sorted({t for t, _c in batches if t >= start})
        if sample is not None and len(moments) > sample:
            moments = sorted(random.Random(len(moments)).sample(moments, sample))
        for moment in moments:
            later = sum(count for t, count in batches if t > moment)
            report, k = lab.restore("%.6f" % moment)
            assert k == k_end - later, (moment, report)
            assert k >= previous
            checked += 1
        previous = k_end
    return checked
