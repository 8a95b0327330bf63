# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the stream service reports: its status file (``state_dir/stream-ASSET.status.json``) and its
Prometheus textfile metrics (``nodekeep_stream_*``).

Private to ops/stream.py (the service calls these with itself once per tick).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import os
import time

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_copy import log as _log
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.metrics import Metrics, write_textfile


def write_status(service) -> None:
    """``state_dir/stream-ASSET.status.json`` when it changes: the chain, its last segment and the
    log position shipped (tests and operators compare it with the wal-index to see it caught up)."""
    if not service.state_dir or service.chain is None:
        return
    waiting = bool(service.queue or service.pending)
    error = service.last_error or service.ship_error
    position = service.chain.position if waiting or service.read_pos is None else service.read_pos
    status = (service.chain.epoch, service.chain.seq, position.salt.hex(), position.frame, waiting, error)
    if status == service.last_status:
        return
    service.last_status = status
    # The pid tells a reader which run wrote it (a killed run's file stays until the next run writes).
    fields = dict(zip(("chain", "seq", "salt", "frame", "pending", "error"), status), pid=os.getpid())
    text = json.dumps(fields) + "\n"
    atomic_write(os.path.join(service.state_dir, "stream-%s.status.json" % service.name), text, 0o600, "stream status")


def lag_seconds(service, now: float) -> float:
    """Age of the oldest commit read from the WAL and not yet shipped (0 when all are shipped)."""
    with service.lock:
        batches = service.queue + ([service.pending] if service.pending is not None else [])
    for batch in batches:
        if batch.commits:
            return max(0.0, now - batch.commits[0][1])
    return 0.0


def write_metrics(service) -> None:
    if not service.metrics_dir:
        return
    now = time.time()
    metrics = Metrics()
    labels = {"node": service.node, "asset": service.name}
    metrics.add("nodekeep_stream_up", 1, "1 while the replication service runs", **labels)
    metrics.add(
        "nodekeep_stream_heartbeat_timestamp_seconds", now, "When the service last wrote these metrics", **labels
    )
    metrics.add(
        "nodekeep_stream_lag_seconds",
        lag_seconds(service, now),
        "Age of the oldest commit read from the WAL and not yet shipped (0 when all are shipped)",
        **labels,
    )
    metrics.add(
        "nodekeep_stream_last_shipped_commit_timestamp_seconds",
        service.stats["last_commit"],
        "When the service saw the newest commit it has shipped (UNIX time)",
        **labels,
    )
    metrics.add("nodekeep_stream_segments_total", service.stats["segments"], "Segments shipped by this run", **labels)
    metrics.add(
        "nodekeep_stream_bytes_total", service.stats["bytes"], "Bytes of segments shipped by this run", **labels
    )
    metrics.add(
        "nodekeep_stream_chain_resets_total", service.stats["resets"], "New chains forced by a WAL reset", **labels
    )
    metrics.add(
        "nodekeep_stream_bases_total", service.stats["bases"], "Base epochs (new chains) made by this run", **labels
    )
    metrics.add(
        "nodekeep_stream_wal_read_bytes_total",
        service.stats["read_bytes"],
        "Bytes of committed WAL frames read by this run",
        **labels,
    )
    metrics.add(
        "nodekeep_stream_log_holds_total",
        service.stats["holds"],
        "Read marks taken by this run to keep a fast-moving log from restarting before it was read",
        **labels,
    )
    metrics.add("nodekeep_stream_errors_total", service.stats["errors"], "Failed ticks (repository errors)", **labels)
    if service.copier is not None:
        for name, info in service.copier.status.items():
            metrics.add(
                "nodekeep_stream_backlog_bytes",
                info.get("backlog", 0),
                "Bytes of shipped segments not yet at the S3 copy",
                copy=name,
                **labels,
            )
            metrics.add(
                "nodekeep_stream_backlog_overflow",
                1 if info.get("overflow") else 0,
                "1 when the backlog for a copy passed max_backlog (the copy restarts from a new base)",
                copy=name,
                **labels,
            )
            metrics.add(
                "nodekeep_stream_copy_failing",
                1 if info.get("error") else 0,
                "1 while the last attempt to copy to this S3 target failed (unreachable, refused)",
                copy=name,
                **labels,
            )
    try:
        write_textfile(service.metrics_dir, "nodekeep_stream_%s.prom" % service.name, metrics.render())
    except NodekeepError as exc:
        _log("metrics not written: %s" % exc.message)
