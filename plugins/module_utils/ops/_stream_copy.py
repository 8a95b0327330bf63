# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stream service's S3 side: each chain's base epoch, then its segments, copied to every target in order.

Private to ops/stream.py (the service owns one SegmentCopier thread when it has targets).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import sys
import threading
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
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
    """Copies each chain's base epoch then its segments (signature last) to every target, in order."""

    def __init__(self, service) -> None:
        super().__init__(name="nodekeep-stream-copy", daemon=True)
        self.service = service
        self.wake = threading.Event()
        self.halt = threading.Event()
        self.status: dict[str, dict[str, Any]] = {}
        self.done: dict[str, tuple[str, set]] = {}

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
        if chain is None:
            return
        source, node = service.repository, service.node
        local = source.files(node, chain.epoch)
        segments = committed_segments(local, service.name)
        state = self.status.setdefault(name, {"backlog": 0, "overflow": False})
        done_epoch, done = self.done.get(name, ("", set()))
        if done_epoch != chain.epoch:
            done = set()
        todo = [s for s in segments if s not in done]
        state["backlog"] = sum(sum(local.get(n, 0) for n in segment_names(service.name, *s)) for s in todo)
        if state["backlog"] > int(service.config["max_backlog"]):
            if not state["overflow"]:
                log("%s: the backlog for %s passed max_backlog; it restarts from a new base" % (service.name, name))
            state["overflow"] = True
        if state["overflow"]:
            target.complete_epochs(node)  # raises while the target is unreachable
            if state.get("overflow_chain") != chain.epoch:
                state["overflow_chain"] = chain.epoch
                service.new_chain_wanted = "the S3 backlog for %s overflowed" % name
                return
            if state["backlog"] > int(service.config["max_backlog"]):
                return
            state["overflow"] = False
        copy_epoch(source, target, node, chain.epoch, service.public_key)
        present = target.files(node, chain.epoch)
        for segment in todo:
            if self.halt.is_set():
                return
            for file_name in segment_names(service.name, *segment):
                if file_name in present:
                    continue
                data = source.get_bytes(node, chain.epoch, file_name, limit=1 << 30)
                with target.open_write(node, chain.epoch, file_name) as sink:
                    sink.write(data)
            done.add(segment)
            state["backlog"] -= sum(local.get(n, 0) for n in segment_names(service.name, *segment))
        self.done[name] = (chain.epoch, done)
        state.pop("error", None)
