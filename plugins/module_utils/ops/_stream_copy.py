# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stream service's S3 side: each chain's base epoch, then its segments, copied to every target in order.

Private to ops/stream.py (the service owns one SegmentCopier thread when it has targets).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import os
import sys
import threading
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_chain import _fault
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import copy_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import committed_segments, segment_names


def log(message: str) -> None:
    sys.stderr.write("nodekeep-stream: %s\n" % message)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# S3 copies of segments (continuous, behind the local repository)
# --------------------------------------------------------------------------


def open_target(spec: dict[str, Any]):
    return open_repository(dict(spec, type="s3"))


class SegmentCopier(threading.Thread):
    """Copies each chain's base epoch then its segments (signature last) to every target, in order.

    Every chain the service ships into is copied whole, including a chain that ended (a WAL reset, a
    gap, a new base) while a target was unreachable: its segments shipped during the outage are copied
    once the target answers, before the newer chains. Only a backlog past ``max_backlog`` abandons the
    chains pending then (they stay in the local repository; a new chain from a fresh base is copied).

    The chains not yet copied whole to every target are kept in ``state_dir/stream-ASSET.copies.json``: a
    service restarted (killed, a reboot) finishes the chains an earlier run left partly copied, oldest first,
    each file once (what the target holds already is skipped).
    """

    def __init__(self, service) -> None:
        super().__init__(name="nodekeep-stream-copy", daemon=True)
        self.service = service
        self.wake = threading.Event()
        self.halt = threading.Event()
        self.status: dict[str, dict[str, Any]] = {}
        self.chains: list[str] = []  # every chain the service shipped into since it started, oldest first
        self.finished: dict[str, set] = {}  # per target: older chains copied whole, or abandoned
        self.done: dict[tuple[str, str], set] = {}  # per (target, chain): segments copied
        self.saving = threading.Lock()
        self._load()

    def _path(self) -> str:
        state_dir = self.service.state_dir
        return os.path.join(state_dir, "stream-%s.copies.json" % self.service.name) if state_dir else ""

    def _load(self) -> None:
        """The chains an earlier run left to copy (those still in the local repository)."""
        path = self._path()
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            chains = [str(epoch) for epoch in saved.get("chains") or []]
            finished = {str(k): {str(e) for e in v} for k, v in (saved.get("finished") or {}).items()}
        except (OSError, ValueError, AttributeError, TypeError):
            return  # none yet (or unreadable: the chains of this run only, as before)
        local = set(self.service.repository.complete_epochs(self.service.node))
        self.chains = [epoch for epoch in chains if epoch in local]
        self.finished = {name: done & set(self.chains) for name, done in finished.items()}

    def _save(self) -> None:
        """Keep the chains some target still lacks (called whenever that changes)."""
        path = self._path()
        if not path:
            return
        with self.saving:
            names = [getattr(t, "name", "") or "copy%d" % (i + 1) for i, t in enumerate(self.service.targets)]
            current = self.service.chain.epoch if self.service.chain is not None else ""
            keep = [e for e in list(self.chains) if e == current or any(e not in self.finished.get(n, ()) for n in names)]
            finished = {name: sorted(set(self.finished.get(name, ())) & set(keep)) for name in names}
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            text = json.dumps({"chains": keep, "finished": finished}) + "\n"
            atomic_write(path, text, 0o600, "stream copy state")

    def add_chain(self, epoch: str) -> None:
        """The service started or resumed chain ``epoch`` (called from the service's thread)."""
        if epoch and epoch not in self.chains:
            self.chains.append(epoch)
            self._save()
            self.wake.set()

    def stop(self) -> None:
        self.halt.set()
        self.wake.set()
        self.join(timeout=30)

    def run(self) -> None:
        while not self.halt.is_set():
            self.wake.wait(timeout=max(1.0, self.service.interval))
            self.wake.clear()
            for index, target in enumerate(self.service.targets):
                name = getattr(target, "name", "") or "copy%d" % (index + 1)
                try:
                    self.copy_to(name, target)
                except NodekeepError as exc:
                    self.status.setdefault(name, {})["error"] = exc.message
                except Exception as exc:  # noqa: BLE001 - a copy thread never dies silently
                    self.status.setdefault(name, {})["error"] = str(exc)

    def copy_to(self, name: str, target) -> None:

        service = self.service
        chain = service.chain
        if chain is None or not chain.epoch:
            return
        self.add_chain(chain.epoch)
        current = chain.epoch
        source, node = service.repository, service.node
        state = self.status.setdefault(name, {"backlog": 0, "overflow": False})
        finished = self.finished.setdefault(name, set())
        pending = [epoch for epoch in list(self.chains) if epoch not in finished]
        listings = {epoch: source.files(node, epoch) for epoch in pending}
        todo = {
            epoch: [s for s in committed_segments(listings[epoch], service.name) if s not in self._done(name, epoch)]
            for epoch in pending
        }
        state["backlog"] = sum(
            sum(listings[epoch].get(n, 0) for n in segment_names(service.name, *segment))
            for epoch in pending
            for segment in todo[epoch]
        )
        if state["backlog"] > int(service.config["max_backlog"]):
            if not state["overflow"]:
                log("%s: the backlog for %s passed max_backlog; it restarts from a new base" % (service.name, name))
            state["overflow"] = True
        if state["overflow"]:
            target.complete_epochs(node)  # raises while the target is unreachable
            if not state.get("abandoned"):
                # The chains pending now stay in the local repository only; a new chain is copied instead.
                state["abandoned"] = True
                finished.update(pending)
                self._save()
                service.new_chain_wanted = "the S3 backlog for %s overflowed" % name
                return
            if state["backlog"] > int(service.config["max_backlog"]):
                return
            state["overflow"] = state["abandoned"] = False
        for epoch in pending:
            if self.halt.is_set():
                return
            self._copy_chain(name, target, epoch, listings[epoch], todo[epoch], state)
            if self.halt.is_set():
                return
            if epoch != current:
                finished.add(epoch)  # an older chain gets no new segment: it is copied whole
                self.done.pop((name, epoch), None)
                self._save()
        state.pop("error", None)

    def _done(self, name: str, epoch: str) -> set:
        return self.done.setdefault((name, epoch), set())

    def _copy_chain(self, name: str, target, epoch: str, local: dict, todo: list, state: dict) -> None:
        """The chain's base epoch (epoch_copy's code), then each segment not copied yet, signature last."""
        service = self.service
        source, node = service.repository, service.node
        copy_epoch(source, target, node, epoch, service.public_key)
        present = target.files(node, epoch)
        done = self._done(name, epoch)
        for segment in todo:
            if self.halt.is_set():
                return
            wrote = False
            for file_name in segment_names(service.name, *segment):
                if file_name in present:
                    continue  # copied by an earlier try or run: never written twice
                data = source.get_bytes(node, epoch, file_name, limit=1 << 30)
                with target.open_write(node, epoch, file_name) as sink:
                    sink.write(data)
                wrote = True
            done.add(segment)
            if wrote:
                _fault("copied-segment")
            state["backlog"] -= sum(local.get(n, 0) for n in segment_names(service.name, *segment))
