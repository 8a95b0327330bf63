"""ops/_stream_report.py: the stream service's status file and metrics, rendered from a service's state."""

from __future__ import annotations

import json
import os
import threading
import types

from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_chain import Chain, Pending, Position
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_report import (
    lag_seconds,
    write_metrics,
    write_status,
)


def _service(tmp_path, pending=None, copier_status=None):
    position = Position(b"\x00\x00\x00\x01\x00\x00\x00\x02", 12, (1, 2), 4096)
    chain = Chain(epoch="20261207T100000Z", seq=3, prev="", position=position, consistent_after=0.0, started=0.0)
    return types.SimpleNamespace(
        state_dir=str(tmp_path / "state"),
        metrics_dir=str(tmp_path / "metrics"),
        chain=chain,
        queue=[],
        pending=pending,
        read_pos=position,
        last_error="",
        ship_error="",
        last_status=(),
        lock=threading.Lock(),
        node="node1",
        name="app-db",
        stats={
            "segments": 3,
            "bytes": 100,
            "resets": 0,
            "errors": 2,
            "last_commit": 5.0,
            "bases": 1,
            "read_bytes": 8240,
            "holds": 4,
        },
        copier=types.SimpleNamespace(status=copier_status) if copier_status is not None else None,
    )


def test_status_names_the_run_and_is_private(tmp_path):
    service = _service(tmp_path)
    os.makedirs(service.state_dir)
    write_status(service)
    path = tmp_path / "state" / "stream-app-db.status.json"
    status = json.loads(path.read_text())
    assert status == {
        "chain": "20261207T100000Z", "seq": 3, "salt": "0000000100000002", "frame": 12, "pending": False,
        "error": "", "pid": os.getpid(),
    }  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o600
    service.ship_error = "No space left on device"
    write_status(service)
    assert json.loads(path.read_text())["error"] == "No space left on device"


def test_lag_is_the_age_of_the_oldest_unshipped_commit(tmp_path):
    pending = Pending(b"\x00" * 8, 4096, 1, commits=[[1, 100.0, 2, 1], [2, 104.0, 2, 1]])
    assert lag_seconds(_service(tmp_path, pending=pending), 110.0) == 10.0
    assert lag_seconds(_service(tmp_path), 110.0) == 0.0


def test_metrics_report_a_failing_copy_and_its_backlog(tmp_path):
    status = {"copy1": {"backlog": 4096, "overflow": False, "error": "connection refused"}, "copy2": {"backlog": 0}}
    write_metrics(_service(tmp_path, copier_status=status))
    text = (tmp_path / "metrics" / "nodekeep_stream_app-db.prom").read_text()
    assert 'nodekeep_stream_copy_failing{asset="app-db",copy="copy1",node="node1"} 1' in text
    assert 'nodekeep_stream_copy_failing{asset="app-db",copy="copy2",node="node1"} 0' in text
    assert 'nodekeep_stream_backlog_bytes{asset="app-db",copy="copy1",node="node1"} 4096' in text
    assert 'nodekeep_stream_errors_total{asset="app-db",node="node1"} 2' in text
    assert 'nodekeep_stream_bases_total{asset="app-db",node="node1"} 1' in text
    assert 'nodekeep_stream_wal_read_bytes_total{asset="app-db",node="node1"} 8240' in text
    assert 'nodekeep_stream_log_holds_total{asset="app-db",node="node1"} 4' in text
