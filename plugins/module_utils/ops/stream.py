# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Continuous SQLite replication: sealed, signed, write-once WAL segments chained from a base epoch.

The design is in docs/replication.md. In short:

* The service reads the application's ``-wal`` and ``-shm`` with plain reads (``wal.py``),
  takes no write lock and writes nothing next to the database, so it cannot block a commit or
  corrupt it; under a fast writer it holds a read transaction so that the application's
  checkpoints cannot restart the log before it is read (``_steer_mark``). A ``flock`` on the database file (invisible to SQLite's POSIX locks) makes a
  second service on the same database refuse to start.
* A **chain** starts from a **base**: an ordinary epoch of the asset made by
  ``epoch.backup_epoch`` (any epoch the epoch API makes, full or incremental), taken
  while the WAL position just before it is known. Its **segments** are written into the
  base epoch, write-once, each one: the frames (sealed by ``seal.seal``), a record in the
  manifest format (``Manifest`` with one artifact) holding the chain position, the
  SHA-256 of the previous record and the observed commit times, and the node's signature
  of the record, written last (the commit point, as for epochs).
* A WAL reset by the application (checkpoint RESTART/TRUNCATE, a replaced WAL) is
  detected from the salts. The chain continues only when the frames of the old log up to
  its end are still readable and check (SQLite's own checksum rule); otherwise a new chain
  starts from a fresh base and the reason is logged and counted. Never a silent gap.
* Restore (``restore_point_in_time``) unseals the base through the epoch restore, applies
  the segments' pages up to the last commit observed at or before the requested time,
  runs ``PRAGMA integrity_check`` and names the commit it reached.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import signal
import threading
import time
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import held_snapshot
from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing, wal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    RepositoryError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import check_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_recipients, recipient_lines, seal
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_chain import (
    DEFAULTS,
    Chain,
    Gap,
    Pending,
    Position,
    _fault,
    _pause,
    _pem_of,
    load_config,
    segment_record,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_copy import SegmentCopier, open_target
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_copy import log as _log
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_report import write_metrics, write_status
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import sequence_state_path
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import (
    committed_segments,
    read_record,
    segment_names,
    timestamp,
)

# --------------------------------------------------------------------------
# the service
# --------------------------------------------------------------------------


class Service:
    """Ships one SQLite asset's WAL as segments (``run`` until ``stop`` is set)."""

    def __init__(self, config: dict[str, Any], repository=None, targets=None) -> None:

        self.config = dict(DEFAULTS, **{k: v for k, v in config.items() if v is not None})
        asset = dict(self.config["asset"])
        asset.setdefault("type", "sqlite")
        if asset.get("type") != "sqlite":
            raise NodekeepError(
                "asset %s is a %s asset; only sqlite assets are replicated" % (asset.get("name"), asset.get("type")),
                "list an sqlite asset in nodekeep_stream_assets",
            )
        self.asset = asset
        self.name = check_name("asset", asset.get("name", ""))
        self.node = check_name("node", self.config["node"])
        self.path = os.path.abspath(str(asset.get("path") or ""))
        self.interval = float(self.config["interval"])
        self.poll_every = min(float(self.config["poll"]), self.interval)
        if self.interval <= 0 or self.poll_every <= 0:
            raise NodekeepError("interval and poll must be positive seconds", "set nodekeep_stream_interval")
        self.repository = repository or open_repository(self.config["repository"])
        lines = recipient_lines(self.config.get("recipients") or [], self.config.get("recipient_files") or [])
        self.recipient_strings = [line for line, _where in lines]
        self.recipients = load_recipients(self.config.get("recipients") or [], self.config.get("recipient_files") or [])
        if not self.recipients:
            raise NodekeepError("no age recipient was given", "set nodekeep_age_recipients; nothing was written")
        self.signing_key = signing.load_private_key(self.config["signing_key"])
        self.public_key = signing.public_key_line(_pem_of(self.config["signing_key"]))
        self.state_dir = self.config.get("state_dir") or ""
        self.metrics_dir = self.config.get("metrics_dir") or ""
        self.targets = (
            targets if targets is not None else [open_target(spec) for spec in self.config.get("targets") or []]
        )
        self.stop = threading.Event()
        self.chain: Chain | None = None
        self.pending: Pending | None = None
        self.queue: list[Pending] = []
        self.lock = threading.Lock()
        self.ship_wake = threading.Event()
        self.ship_halt = threading.Event()
        self.shipper: threading.Thread | None = None
        self.ship_error = ""
        self.read_pos: Position | None = None
        self.lock_fd: int | None = None
        self.fds: dict[str, tuple[int, tuple[int, int]]] = {}
        self.retired: list[int] = []
        self.copying = False
        # The read mark held while the log moves fast (None: none held), see ``_steer_mark``.
        self.mark: contextlib.ExitStack | None = None
        self.fast = False  # the writer appends hold_frames or more per poll
        self.slow_polls = 0  # polls in a row, while a mark is held, that found fewer than hold_frames
        self.released_salt = b""  # the log's salts when the mark was let go for the application's restart
        self.stats = {
            "segments": 0,
            "bytes": 0,
            "resets": 0,
            "errors": 0,
            "last_commit": 0.0,
            "last_ship": 0.0,
            "bases": 0,
            "read_bytes": 0,
            "holds": 0,
        }
        self.last_error = ""
        self.copier = SegmentCopier(self) if self.targets else None
        self.new_chain_wanted = ""
        # the attempt a failed write of the batch being shipped started (its payload and record, once written)
        self.unsigned: dict[str, Any] | None = None

    # -- start-up checks --

    def open(self) -> None:
        if not os.path.isabs(str(self.asset.get("path") or "")):
            raise NodekeepError(
                "the asset path %r is not an absolute path" % (self.asset.get("path"),),
                "set the asset's path in nodekeep_stream_assets to the database file",
            )
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise NodekeepError(
                "the database %s does not exist" % self.path,
                "check the asset's path in nodekeep_stream_assets; the service ships an existing WAL-mode database",
            )
        except OSError as exc:
            raise describe_os_error(exc, "opening the database", self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise NodekeepError(
                "another replication service already ships %s" % self.path,
                "run one service per database (systemctl status 'nodekeep-stream@*'); this one did not start",
            )
        self.lock_fd = fd
        if not wal.is_wal_database(self.path):
            raise NodekeepError(
                "the database %s is not in WAL mode" % self.path,
                "replication ships WAL frames: switch the application to PRAGMA journal_mode=WAL "
                "(the service never changes the database), or back it up with scheduled epochs only",
            )

    def close(self) -> None:
        self._release_mark()
        for fd, _ino in self.fds.values():
            os.close(fd)
        self.fds = {}
        self._retire_all()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # -- the WAL, read without locks --

    def _file(self, suffix: str) -> int | None:
        """A kept-open fd of the database's ``-wal`` or ``-shm`` (reopened when the file is replaced).

        Fds are never closed while a base copy runs in this process: closing any fd of a file
        drops every POSIX lock the process holds on it, and SQLite's read locks are POSIX locks
        on ``-shm``; the copy would lose its snapshot.
        """
        path = self.path + suffix
        held = self.fds.get(suffix)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if held is not None:
                self._retire(held[0])
                del self.fds[suffix]
            return None
        if held is not None and held[1] == (info.st_dev, info.st_ino):
            return held[0]
        if held is not None:
            self._retire(held[0])
            del self.fds[suffix]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        self.fds[suffix] = (fd, (info.st_dev, info.st_ino))
        return fd

    def _retire_all(self) -> None:
        for old in self.retired:
            os.close(old)
        self.retired = []

    def _retire(self, fd: int) -> None:
        self.retired.append(fd)
        if not self.copying and self.mark is None:
            self._retire_all()

    # -- the read mark: the log cannot restart under a fast writer --

    def _steer_mark(self, moved: int) -> None:
        """Hold a read mark while the log moves fast; let it go for a moment once the log is long.

        A writer restarts the log (after a complete checkpoint) only when no reader holds a read mark, and
        the new log overwrites the old one from its first frame. When the writer appends ``hold_frames`` or
        more frames between two polls, a restart could overwrite frames not read yet (a gap, so a fresh
        base). Then the service keeps one read transaction open (``held_snapshot``; it never blocks a
        commit) and lets it go only at the end of a poll that read the log to its end and found it
        ``hold_wal_bytes`` long or more: the application's next checkpoint restarts the log, far from the
        tail just read; the service polls every 2 ms until that checkpoint is complete or the restart was
        followed (``_continue_after_reset``) and takes a mark again (at most one restart can follow it). Five polls in a row that find fewer new frames
        (the writer slowed or stopped, ~0.1 s) let the mark go and the service back to its plain polling.
        """
        hold = int(self.config["hold_frames"])
        position = self.read_pos
        if hold <= 0 or position is None or not position.page_size:
            return
        long_log = position.frame * (wal.FRAME_HEADER_SIZE + position.page_size) >= int(self.config["hold_wal_bytes"])
        if self.mark is not None:
            self.slow_polls = self.slow_polls + 1 if moved < hold else 0
            if self.slow_polls >= 5:
                self.fast = False  # five polls in a row found the writer slower: plain polling again
                self._release_mark()
            elif long_log:
                self.fast, self.released_salt = True, position.salt
                self._release_mark()
        elif self.fast:
            if position.salt != self.released_salt or not long_log or self._checkpointed(position):
                # The restart was followed, or the checkpoint before it is complete: a mark taken now gets read
                # mark 0 and lets that one restart happen, no second one.
                self._take_mark()
        elif moved >= hold and not long_log:
            self._take_mark()

    def _checkpointed(self, position: Position) -> bool:
        """True when the application's checkpoint copied the whole log read so far (it restarts next)."""
        fd = self._file("-shm")
        header = self._index()
        backfill = wal.read_backfill_fd(fd) if fd is not None else None
        return header is not None and backfill is not None and header.salt == position.salt and backfill >= header.mx_frame

    def poll_wait(self) -> float:
        """Seconds to the next poll: 2 ms while the log is let go under a fast writer, else ``poll``."""
        return min(self.poll_every, 0.002) if self.fast and self.mark is None else self.poll_every

    def _take_mark(self) -> None:
        """A read transaction on the database, held until ``_release_mark``; best effort (busy: not now).

        Whatever read mark SQLite gives it, at most one restart of the log can follow: a reader on a mark
        above 0 stops restarts, and a reader on mark 0 (the log was wholly checkpointed when it began)
        stops every checkpoint from copying frames, so the one restart the next writer may make is the
        last until it is let go. That restart finds the log read to its end or nearly so (its tail is
        followed by the next poll)."""
        if self.mark is not None:
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(held_snapshot(self.path))
        except NodekeepError:
            stack.close()  # busy or unreadable just now: the next fast poll tries again
            return
        self.mark, self.slow_polls = stack, 0
        self.stats["holds"] += 1

    def _release_mark(self) -> None:
        if self.mark is None:
            return
        mark, self.mark = self.mark, None
        mark.close()
        if not self.copying:
            self._retire_all()

    def _wal(self) -> int | None:
        return self._file("-wal")

    def _index(self) -> wal.IndexHeader | None:
        fd = self._file("-shm")
        return wal.read_index_header_fd(fd) if fd is not None else None

    def _position_now(self) -> Position | None:
        header = self._index()
        if header is None:
            return None
        cksum: tuple[int, int] | None = header.frame_cksum
        if header.mx_frame == 0:
            fd = self._wal()
            found = wal.parse_wal_header(os.pread(fd, wal.WAL_HEADER_SIZE, 0)) if fd is not None else None
            cksum = found.cksum if found is not None and found.salt == header.salt else None
        return Position(header.salt, header.mx_frame, cksum, header.page_size)

    # -- chains --

    def start_chain(self, reason: str) -> bool:
        """A fresh base epoch and a new chain from the WAL position read just before it (False: wait).

        The base is copied in a thread while this one keeps reading the log, so a WAL reset during a
        long copy is followed like any other. Every frame after the position read first is in the
        chain; the base copy holds some state at or after it, and replaying page images is
        idempotent, so every commit observed after the copy finished is a consistent restore point.
        """

        if self._index() is None:
            self.last_error = "waiting for the application to open %s (no wal-index yet)" % self.path
            return False
        # The log held from before its position is read until the copy has its own snapshot (and past it, by
        # ``_steer_mark``): a writer cannot restart it twice and overwrite frames the chain needs.
        if int(self.config["hold_frames"]) > 0:
            self._take_mark()
        read_before = self.stats["read_bytes"]
        before = self._position_now()
        if before is None:
            self._release_mark()
            self.last_error = "waiting for the application to open %s (no wal-index yet)" % self.path
            return False
        self.queue, self.pending, self.read_pos = [], None, before
        self.chain = Chain(epoch="", seq=0, prev="", position=before, consistent_after=0.0, started=time.time())
        outcome: dict[str, Any] = {}

        def copy() -> None:
            try:
                outcome["manifest"] = backup_epoch(
                    self.repository,
                    self.node,
                    [self.asset],
                    self.recipients,
                    self.recipient_strings,
                    self.signing_key,
                    level=int(self.config["compression_level"]),
                    labels={"stream": "base", "stream_reason": reason[:200]},
                    sequence_state=sequence_state_path(self.config["signing_key"]),
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the service thread
                outcome["error"] = exc

        worker = threading.Thread(target=copy, name="nodekeep-stream-base", daemon=True)
        self.copying = True
        worker.start()
        gap = None
        try:
            while worker.is_alive():
                worker.join(self.poll_every)
                if gap is None:
                    try:
                        self.poll()
                    except Gap as exc:
                        gap = exc
        finally:
            self.copying = False
            if self.mark is None:
                self._retire_all()
        if "error" in outcome or gap is not None:
            self.chain = None
            self._release_mark()
            raise outcome.get("error") or gap
        # The copy is done: the log is let go, as after any hold (the application's checkpoints restart it); when
        # the writer was fast during the copy, the next polls come every 2 ms until the restart is followed.
        moved = (self.stats["read_bytes"] - read_before) // (wal.FRAME_HEADER_SIZE + (self.read_pos.page_size or 1))
        self._release_mark()
        self.fast = 0 < int(self.config["hold_frames"]) <= moved
        self.released_salt = self.read_pos.salt
        manifest = outcome["manifest"]
        base = self.repository.get_bytes(self.node, manifest.epoch, "manifest.json")
        self.chain.epoch = manifest.epoch
        self.chain.prev = hashlib.sha256(base).hexdigest()
        self.chain.consistent_after = time.time()
        self.stats["bases"] += 1
        self._save_state()
        if self.copier is not None:
            self.copier.add_chain(manifest.epoch)  # copied whole to S3, even if it ends during an outage
        _log("%s: new chain %s (%s)" % (self.name, manifest.epoch, reason))
        return True

    def resume(self) -> bool:
        """Continue the chain named in the state file from its last committed segment."""
        state = self._load_state()
        epoch = state.get("chain")
        if not epoch or epoch not in self.repository.complete_epochs(self.node):
            return False
        segments = committed_segments(self.repository.files(self.node, epoch), self.name)
        if not segments:
            return False
        seq, attempt = segments[-1]
        record, data = read_record(self.repository, self.node, epoch, self.name, seq, attempt, self.public_key)
        source = record.artifacts[0].source
        first = read_record(self.repository, self.node, epoch, self.name, 1, segments[0][1], self.public_key)[0]
        position = Position(
            bytes.fromhex(source["salt"]),
            int(source["first_frame"]) + int(source["frames"]) - 1,
            tuple(source["last_cksum"]),
            int(source["page_size"]),
        )
        self.chain = Chain(
            epoch=epoch,
            seq=seq,
            prev=hashlib.sha256(data).hexdigest(),
            position=position,
            consistent_after=timestamp(first.artifacts[0].source.get("consistent_after") or first.started),
            started=timestamp(first.started),
            first=False,
        )
        self.queue, self.pending, self.read_pos = [], None, position
        self.stats["last_commit"] = timestamp(source["commits"][-1][1])
        if self.copier is not None:
            self.copier.add_chain(epoch)
        _log("%s: resumed chain %s at segment %d" % (self.name, epoch, seq))
        return True

    def _state_path(self) -> str:
        return os.path.join(self.state_dir, "stream-%s.json" % self.name) if self.state_dir else ""

    def _load_state(self) -> dict[str, Any]:
        path = self._state_path()
        if not path:
            return {}
        try:
            with open(path, encoding="utf-8") as handle:
                return dict(json.load(handle))
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        path = self._state_path()
        if path and self.chain is not None:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            atomic_write(
                path, json.dumps({"chain": self.chain.epoch, "asset": self.name}) + "\n", 0o600, "stream state"
            )

    # -- reading new commits --

    def poll(self) -> None:
        """Move newly committed frames into ``pending`` (raises Gap when the log cannot be continued)."""
        header = self._index()
        if header is None:
            return  # nobody has the database open: nothing commits
        position = self.read_pos
        if not position.page_size:
            # An empty log publishes no page size yet; the first frames do (the same for every log: a database
            # in WAL mode cannot change its page size).
            position = self.read_pos = Position(position.salt, position.frame, position.cksum, header.page_size)
            if self.chain is not None and not self.chain.position.page_size:
                self.chain.position = position
        if header.page_size != position.page_size:
            raise Gap("the page size changed")
        if self.fast and self.mark is None and (header.salt != position.salt or self._checkpointed(position)):
            # The log was let go for the application's restart and it came (or is next): a mark now, before
            # the old log's tail is checked, so that no second restart can overwrite it.
            self._take_mark()
            header = self._index()
            if header is None:
                return
        if header.salt != position.salt:
            self._continue_after_reset(header, position)
            return
        if header.mx_frame < position.frame:
            raise Gap("the log holds fewer frames than were read (the WAL was replaced)")
        if header.mx_frame == position.frame:
            return
        fd = self._wal()
        if fd is None:
            raise Gap("the WAL file disappeared while it held unshipped frames")
        now = time.time()
        data = wal.read_frames(fd, position.page_size, position.frame + 1, header.mx_frame, position.salt)
        again = self._index()
        if data is None or again is None or again.salt != position.salt:
            # Reset under the read: decided on the next poll, from the old log's frames.
            return
        self._add(data, header.mx_frame, header.frame_cksum, now)

    def _add(self, data: bytes, last_frame: int, cksum, now: float) -> None:
        position = self.read_pos
        page_size = position.page_size
        if self.pending is None:
            self.pending = Pending(position.salt, page_size, position.frame + 1)
        pending = self.pending
        base = pending.count()
        count, size = 0, 0
        for _offset, frame in wal.iter_frames(data, page_size):
            if frame.db_size:
                count, size = count + 1, frame.db_size
        if count:
            # One entry per read: every commit of it was observed at ``now`` (the commit-time resolution).
            pending.commits.append([base + len(data) // (wal.FRAME_HEADER_SIZE + page_size), now, size, count])
        # mxFrame is always a commit frame: no frame past the last commit is ever taken.
        pending.frames += data
        self.stats["read_bytes"] += len(data)
        pending.last_cksum = tuple(cksum)
        if pending.commits[-1][0] != pending.count():
            raise Gap("the committed log does not end with a commit frame")
        self.read_pos = Position(position.salt, last_frame, tuple(cksum), page_size)
        with self.lock:
            held = len(pending.frames) + sum(len(p.frames) for p in self.queue)
        if held > int(self.config["max_pending"]):
            raise Gap("more than max_pending bytes of frames could not be written to the repository")

    def _continue_after_reset(self, header: wal.IndexHeader, position: Position) -> None:
        """The application reset its WAL. Continue only if the old log's tail is provably complete."""
        old_salt1 = int.from_bytes(position.salt[:4], "big")
        if int.from_bytes(header.salt[:4], "big") != (old_salt1 + 1) & wal.MASK:
            raise Gap("the WAL was replaced or reset more than once since the last read")
        if position.cksum is None:
            raise Gap("the WAL was reset before its previous generation could be followed")
        fd = self._wal()
        if fd is None:
            raise Gap("the WAL file is gone")
        step = wal.FRAME_HEADER_SIZE + position.page_size
        if position.frame:
            last = os.pread(fd, step, wal.frame_offset(position.frame, position.page_size))
            if len(last) < step:
                raise Gap("the WAL was truncated (checkpoint TRUNCATE or journal_size_limit)")
            frame = wal.parse_frame_header(last)
            if frame.salt != position.salt or frame.cksum != tuple(position.cksum):
                raise Gap("the last frame read was overwritten by the new log")
        big_endian = self._big_endian(fd)
        now = time.time()
        data, count, cksum, stop = wal.scan_valid(
            fd, position.page_size, position.frame + 1, position.salt, tuple(position.cksum), big_endian
        )
        if stop == "partial":
            raise Gap("the old log ends in a partial frame: the file was truncated (journal_size_limit)")
        if stop == "eof" and not position.frame and not count:
            raise Gap("the old log is gone (truncated) and none of it was read")
        after = os.pread(fd, wal.FRAME_HEADER_SIZE, wal.frame_offset(position.frame + 1 + count, position.page_size))
        if len(after) == wal.FRAME_HEADER_SIZE and wal.parse_frame_header(after).salt == header.salt:
            raise Gap(
                "the new log overwrote the old log's tail before it was read (read to frame %d, %d more valid "
                "(%s), the new log has %d)" % (position.frame, count, stop, header.mx_frame)
            )
        again = self._index()
        if again is None or again.salt != header.salt:
            raise Gap("the WAL was reset again during the check")
        if count:
            self._add(data, position.frame + count, cksum, now)
        # The old generation is complete: it becomes its own segment, the new one starts after it.
        self.hand_over()
        head = wal.parse_wal_header(os.pread(fd, wal.WAL_HEADER_SIZE, 0))
        cksum0 = head.cksum if head is not None and head.salt == header.salt else None
        self.read_pos = Position(header.salt, 0, cksum0, header.page_size)
        self.stats["continued"] = self.stats.get("continued", 0) + 1

    def _big_endian(self, fd: int) -> bool:
        head = os.pread(fd, 4, 0)
        return len(head) == 4 and bool(int.from_bytes(head, "big") & 1)

    # -- writing segments --

    def hand_over(self) -> None:
        """Queue the pending commits for the shipping thread (the reading thread keeps polling)."""
        with self.lock:
            if self.pending is not None and self.pending.commits:
                self.queue.append(self.pending)
            self.pending = None
        self.ship_wake.set()

    def ship(self) -> None:
        """Seal every queued batch, in order, into the next segments of the chain."""
        while True:
            with self.lock:
                if self.chain is None or not self.chain.epoch or not self.queue:
                    return  # nothing to ship, or the base is still being copied
                batch = self.queue[0]
            self._write_segment(batch)
            with self.lock:
                self.queue.pop(0)

    def _shipper(self) -> None:
        while not self.ship_halt.is_set():
            self.ship_wake.wait(1.0)
            self.ship_wake.clear()
            try:
                self.ship()
                self.ship_error = ""
            except Exception as exc:  # noqa: BLE001 - kept and retried: the queue holds the commits
                self.stats["errors"] += 1
                self.ship_error = getattr(exc, "message", None) or str(exc)
                _log("%s: shipping failed, retrying: %s" % (self.name, self.ship_error))
                self.ship_halt.wait(1.0)

    def drain(self, timeout: float) -> bool:
        """Wait (bounded) until the shipping thread wrote everything queued."""
        self.ship_wake.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.queue:
                    return True
            if self.shipper is None or not self.shipper.is_alive():
                self.ship()
            time.sleep(0.01)
        return False

    def _write_segment(self, pending: Pending) -> None:

        chain = self.chain
        seq = chain.seq + 1
        # A retry of the same batch (the repository's disk was full, say) finishes the attempt the failed try
        # started, reusing the payload and record it wrote: no unsigned payload is left behind, and a disk
        # that is full does not fill further with one more payload per retry.
        key = (chain.epoch, seq, id(pending))
        if self.unsigned is None or self.unsigned["key"] != key:
            self.unsigned = {"key": key, "attempt": os.urandom(4).hex()}
        attempt = self.unsigned["attempt"]
        payload, record_name, sig_name = segment_names(self.name, seq, attempt)
        if "sealed" not in self.unsigned:
            if self.repository.exists(self.node, chain.epoch, payload):
                self.unsigned = None  # linked, but the try failed before it learned the checksums: a new attempt
                raise RepositoryError(
                    "segment %d of %s: the payload of attempt %s was written by a failed try"
                    % (seq, self.name, attempt),
                    "nothing to do: the next try writes a new attempt",
                )
            frames = bytes(pending.frames)
            with self.repository.open_write(self.node, chain.epoch, payload) as sink:
                result = seal(
                    io.BytesIO(frames), sink, self.recipients, level=int(self.config["compression_level"]), threads=0
                )
            self.unsigned["sealed"] = result
        result = self.unsigned["sealed"]
        _pause("after-payload")
        if "record" in self.unsigned:
            data = self.unsigned["record"]
        else:
            if self.repository.exists(self.node, chain.epoch, record_name):
                self.unsigned = None  # linked by a try that failed after it: its bytes are unknown, a new attempt
                raise RepositoryError(
                    "segment %d of %s: the record of attempt %s was written by a failed try"
                    % (seq, self.name, attempt),
                    "nothing to do: the next try writes a new attempt",
                )
            data = segment_record(
                chain, pending, seq, payload, result, self.node, self.name, self.path, self.recipient_strings
            )
            self.repository.put_bytes(self.node, chain.epoch, record_name, data)
            self.unsigned["record"] = data
        _fault("before-signature")
        # The signature is the commit point: from here on the segment is shipped (a try that linked it and failed
        # after, syncing the directory, did ship it).
        if not self.repository.exists(self.node, chain.epoch, sig_name):
            self.repository.put_bytes(
                self.node, chain.epoch, sig_name, signing.sign(data, self.signing_key).encode("ascii")
            )
        _fault("after-signature")
        self.unsigned = None
        chain.seq, chain.prev, chain.first = seq, hashlib.sha256(data).hexdigest(), False
        chain.position = Position(
            pending.salt, pending.first_frame + pending.count() - 1, pending.last_cksum, pending.page_size
        )
        self.stats["segments"] += 1
        self.stats["bytes"] += result.sealed.size + len(data)
        self.stats["last_commit"] = pending.commits[-1][1]
        self.stats["last_ship"] = time.time()
        if self.copier is not None:
            self.copier.wake.set()

    # -- the loop --

    def tick(self) -> None:
        """One poll; a segment when the interval is over. A gap starts a new chain."""
        try:
            if self.chain is None or self.new_chain_wanted:
                reason = self.new_chain_wanted or "first start"
                if self.chain is None and self.new_chain_wanted == "" and self.resume():
                    return
                if self.start_chain(reason):
                    self.new_chain_wanted = ""
                return
            if time.time() - self.chain.started > float(self.config["base_every"]):
                self.hand_over()
                self.drain(60.0)
                self.new_chain_wanted = "base_every elapsed"
                return
            read_before = self.stats["read_bytes"]
            self.poll()
            step = wal.FRAME_HEADER_SIZE + (self.read_pos.page_size or 1)
            self._steer_mark((self.stats["read_bytes"] - read_before) // step)
            if self.mark is not None:
                _pause("holding")  # the fault tests' ordering: the writer commits while the mark is held
            if self.pending is not None and time.monotonic() - self._last_ship_tick >= self.interval:
                self.hand_over()
                self._last_ship_tick = time.monotonic()
            self.last_error = ""
        except Gap as gap:
            self.stats["resets"] += 1
            self._release_mark()
            self.fast = False
            # What was read before the gap still continues this chain: ship it, then start anew
            # (when the gap came during a base copy there is no chain yet: the next base holds it all).
            self.hand_over()
            if self.chain is not None and self.chain.epoch and not self.drain(60.0):
                _log("%s: the commits read before the gap could not be shipped; the new base holds them" % self.name)
            with self.lock:
                self.pending, self.queue = None, []
            self.new_chain_wanted = "gap: %s" % gap
            _log("%s: %s; a new chain starts from a fresh base" % (self.name, gap))
        except NodekeepError as exc:
            self._release_mark()
            self.stats["errors"] += 1
            self.last_error = exc.message
            _log("%s: %s" % (self.name, exc.message))

    _last_ship_tick = 0.0
    last_status: tuple = ()

    def write_status(self) -> None:
        write_status(self)

    def run(self) -> None:
        self.open()
        if self.copier is not None:
            self.copier.start()
        next_metrics = 0.0
        self.shipper = threading.Thread(target=self._shipper, name="nodekeep-stream-ship", daemon=True)
        self.shipper.start()
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                self.tick()
                self.write_status()
                if began >= next_metrics:
                    self.write_metrics()
                    next_metrics = began + max(1.0, self.interval)
                self.stop.wait(max(0.0, self.poll_wait() - (time.monotonic() - began)))
            # A clean stop ships what was read.
            with contextlib.suppress(NodekeepError, Gap):
                self.poll()
            self.hand_over()
            self.drain(60.0)
            self.write_status()
            self.write_metrics()
        finally:
            self.ship_halt.set()
            self.ship_wake.set()
            self.shipper.join(timeout=60)
            if self.copier is not None:
                self.copier.stop()
            self.close()

    def write_metrics(self) -> None:
        write_metrics(self)


# --------------------------------------------------------------------------
# the command line (run by the systemd unit the stream role installs)
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nodekeep-stream", description="Replicate one SQLite asset continuously.")
    parser.add_argument("--config", required=True, help="JSON configuration written by the stream role")
    args = parser.parse_args(argv)
    try:
        service = Service(load_config(args.config))
    except NodekeepError as exc:
        _log(exc.message)
        return 2
    import faulthandler

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints where every thread is (support)
    signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
    signal.signal(signal.SIGINT, lambda *_: service.stop.set())
    try:
        service.run()
    except NodekeepError as exc:
        _log(exc.message)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
