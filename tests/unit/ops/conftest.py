"""Fixtures of the replication unit tests (ops/stream, ops/_stream_copy, ops/pitr).

``wal_lab``
    a ``WalLab``: the replication tests' ``StreamLab`` (tests/integration/streams/streamhelpers.py: a WAL-mode
    database written by the numbered writer, a real process whose every command returns once its commits are
    done: row n is the n-th commit, so a consistent state holds exactly rows 1..k; ``restore(point)``: a
    point-in-time restore into a fresh file, its report and k), with the replication ``Service`` driven in
    this process one step at a time (``step()``: one poll, what was read handed over and shipped as a
    segment), so the order of commits, reads and segments is explicit: no thread of the service runs,
    nothing waits on a clock.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
from ansible_collections.nodekeep.backup.plugins.module_utils.ops._stream_chain import load_config
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import restore_point_in_time
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.stream import Service
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import committed_segments

_HELPERS = Path(__file__).resolve().parents[2] / "integration" / "streams" / "streamhelpers.py"
_spec = importlib.util.spec_from_file_location("nodekeep_unit_streamhelpers", _HELPERS)
streamhelpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streamhelpers)

NODE = "node1"
ASSET = "app-db"
#: every step hands what it read over (no clock decides)
STEPPED = {"interval": 1e-6, "poll": 1e-6}


class WalLab(streamhelpers.StreamLab):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.services: list[Service] = []

    def settings(self, **options) -> dict:
        """The service's configuration, written and read back as the stream role's file is."""
        return load_config(str(self.config(**dict(STEPPED, **options))))

    def writer(self, autocheckpoint: int = 0):
        """The application (autocheckpoint 0: the log restarts only when a test checkpoints)."""
        return super().writer(autocheckpoint)

    def service(self, targets=None, **options) -> Service:
        service = Service(self.settings(**options), repository=self.repository, targets=targets)
        service.open()
        self.services.append(service)
        return service

    @staticmethod
    def step(service: Service) -> None:
        """One tick of the service (a new chain, or one poll handed over), then everything queued shipped."""
        service.tick()
        service.ship()

    def chain_segments(self, epoch: str) -> list[tuple[int, str]]:
        return committed_segments(self.repository.files(NODE, epoch), ASSET)

    def identities(self) -> list:
        return load_identities(identity_files=[str(self.age_key.identity_path)])

    def restore_to(self, dest: str = "", point: str = "latest", **kwargs) -> dict:
        """``restore_point_in_time`` into ``dest`` (a file) or under ``target_root``; its report."""
        return restore_point_in_time(
            self.repository, NODE, ASSET, self.signing_key.public_line, self.identities(),
            point_in_time=point, dest=dest, **kwargs,
        )  # fmt: skip

    @staticmethod
    def rows(path) -> int:
        """k of a restored database holding exactly rows 1..k (checked, with PRAGMA integrity_check)."""
        return streamhelpers.restored_numbers(path)

    def cleanup(self) -> None:
        for service in self.services:
            service.close()
        super().cleanup()


@pytest.fixture
def wal_lab(tmp_path, repository, age_key, signing_key, child_env):
    lab = WalLab(tmp_path, repository, age_key, signing_key, child_env)
    yield lab
    lab.cleanup()
