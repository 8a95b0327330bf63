# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stream service's chain: where the shipped log ends (``Position``, ``Chain``), the frames read but not
shipped yet (``Pending``), a segment's record in the manifest format (``segment_record``), the service's
configuration (``DEFAULTS``, ``load_config``) and the crash tests' fault and pause points.

Private to ops/stream.py (docs/replication.md).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import wal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import utc_now_iso
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, describe_os_error
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact, Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import SEGMENT_FORMAT, STREAM_LABEL, iso

DEFAULTS = {
    "interval": 1.0,  # seconds between segments
    "poll": 0.02,  # seconds between reads of the wal-index (commit-time resolution, WAL reset detection)
    "base_every": 6 * 3600,  # start a new chain (fresh base) after this many seconds
    "max_backlog": 1 << 30,  # bytes of segments not yet at an S3 target kept for it
    "max_pending": 256 << 20,  # bytes of frames held in memory while the repository fails
    "compression_level": 3,
    # hold a read mark (the log cannot restart) while a poll finds this many new frames or more (0: never) ...
    "hold_frames": 256,
    # ... and let it go once the log is this long (the application's checkpoint restarts it then)
    "hold_wal_bytes": 16 << 20,
}


# --------------------------------------------------------------------------
# the chain position
# --------------------------------------------------------------------------


@dataclass
class Position:
    """Where the shipped log ends: the generation (salts), the last frame and its checksum."""

    salt: bytes
    frame: int
    cksum: tuple[int, int] | None
    page_size: int


@dataclass
class Chain:
    epoch: str
    seq: int  # last committed segment
    prev: str  # SHA-256 of the last record (or of the base manifest)
    position: Position
    consistent_after: float  # commits observed after this time are consistent restore points
    started: float
    first: bool = True  # the next segment is the chain's first


@dataclass
class Pending:
    """Frames read but not shipped yet: one generation, commits in order."""

    salt: bytes
    page_size: int
    first_frame: int
    frames: bytearray = field(default_factory=bytearray)
    commits: list = field(default_factory=list)  # [frames_through, time, db_size]
    last_cksum: tuple[int, int] | None = None

    def count(self) -> int:
        return len(self.frames) // (wal.FRAME_HEADER_SIZE + self.page_size)


class Gap(Exception):
    """The log cannot be continued without a hole: a new chain must start."""


def segment_record(
    chain, pending: Pending, seq: int, payload: str, result, node: str, name: str, path: str, recipients
) -> bytes:
    """The segment's record (the manifest format): its chain position, frames and observed commits."""
    source = {
        "stream": 1,
        "chain": chain.epoch,
        "seq": seq,
        "prev": chain.prev,
        "path": path,
        "salt": pending.salt.hex(),
        "page_size": pending.page_size,
        "first_frame": pending.first_frame,
        "frames": pending.count(),
        "last_cksum": list(pending.last_cksum),
        "commits": [[n, iso(t), size, count] for n, t, size, count in pending.commits],
    }
    if chain.first:
        source["consistent_after"] = iso(chain.consistent_after)
        source["chain_position"] = {"salt": chain.position.salt.hex(), "frame": chain.position.frame}
    record = Manifest(
        node=node,
        epoch=chain.epoch,
        started=iso(pending.commits[0][1]),
        finished=utc_now_iso(),
        recipients=list(recipients),
        artifacts=[
            Artifact(
                name=name,
                asset_type="sqlite",
                file=payload,
                format=SEGMENT_FORMAT,
                size=result.sealed.size,
                sha256=result.sealed.sha256,
                content_size=result.content.size,
                # never the unkeyed SHA-256 of the WAL frames (it would confirm a guessed content): the
                # signed sealed SHA-256 pins the bytes and age authenticates them (docs/safety.md)
                content_sha256=None,
                compressed=result.compressed,
                source=source,
            )
        ],
        labels={"stream": STREAM_LABEL},
    )
    return record.to_bytes()


# --------------------------------------------------------------------------
# configuration, and the crash tests' fault and pause points
# --------------------------------------------------------------------------


def _pem_of(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _fault(point: str) -> None:
    """Fault injection for the crash tests: NODEKEEP_STREAM_CRASH=POINT:N kills the process at the N-th pass."""
    spec = os.environ.get("NODEKEEP_STREAM_CRASH", "")
    if not spec:
        return
    name, _sep, count = spec.partition(":")
    if name != point:
        return
    _FAULTS[point] = _FAULTS.get(point, 0) + 1
    if _FAULTS[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_FAULTS: dict[str, int] = {}


def _pause(point: str) -> None:
    """Ordering for the fault tests: NODEKEEP_STREAM_PAUSE=POINT:DIR makes the first pass at POINT create
    DIR/paused and wait until DIR/resume exists (files only; no sleep races the test)."""
    spec = os.environ.get("NODEKEEP_STREAM_PAUSE", "")
    name, _sep, directory = spec.partition(":")
    if name != point or _FAULTS.get("pause:" + point):
        return
    _FAULTS["pause:" + point] = 1
    atomic_write(os.path.join(directory, "paused"), "%d\n" % os.getpid(), 0o600, "pause marker")
    while not os.path.exists(os.path.join(directory, "resume")):
        time.sleep(0.01)


def load_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as exc:
        raise describe_os_error(exc, "reading the stream configuration", path)
    except ValueError as exc:
        raise NodekeepError("%s is not JSON (%s)" % (path, exc), "rewrite it with the stream role")
    if isinstance(config, dict) and "ANSIBLE_MODULE_ARGS" in config:
        config = config["ANSIBLE_MODULE_ARGS"]
    for key in ("node", "repository", "asset", "signing_key"):
        if not config.get(key):
            raise NodekeepError("the stream configuration %s lacks %s" % (path, key), "rewrite it with the stream role")
    return config
