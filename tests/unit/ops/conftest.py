"""Fixtures of the replication unit tests (ops/stream, ops/_stream_copy, ops/pitr).

``wal_lab``
    a ``WalLab``: a WAL-mode database written by the replication tests' numbered writer (a real process,
    tests/integration/streams/numbered_writer.py: row n is the n-th commit, so a consistent state holds
    exactly rows 1..k) and the replication ``Service`` driven in this process, one step at a time
    (``step()``: one poll, what was read handed over and shipped as a segment), so the order of commits,
    reads and segments is explicit: no thread of the service runs, nothing waits on a clock.
    ``restore(point)`` is a point-in-time restore into a fresh file; it returns the report and k.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import restore_point_in_time
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.stream import Service
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import committed_segments

_HELPERS = Path(__file__).resolve().parents[2] / "integration" / "streams" / "streamhelpers.py"
_spec = importlib.util.spec_from_file_location("nodekeep_unit_streamhelpers", _HELPERS)
streamhelpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streamhelpers)

NODE = "node1"
ASSET = "app-db"


class WalLab:
    def __init__(self, tmp_path: Path, repository, age_key, signing_key, env: dict) -> None:
        self.tmp = tmp_path
        self.repository = repository
        self.age_key = age_key
        self.signing_key = signing_key
        self.env = env
        self.db = tmp_path / "app" / "app.db"
        self.db.parent.mkdir()
        self.state_dir = tmp_path / "state"
        self.writers: list = []
        self.services: list[Service] = []
        self.restores = 0

    def config(self, **options) -> dict:
        config = {
            "node": NODE,
            "repository": str(self.repository.root),
            "asset": {"name": ASSET, "type": "sqlite", "path": str(self.db)},
            "recipients": [self.age_key.recipient],
            "signing_key": str(self.signing_key.path),
            "state_dir": str(self.state_dir),
            "interval": 1e-6,  # every step hands what it read over (no clock decides)
            "poll": 1e-6,
        }
        config.update(options)
        return config

    def writer(self, autocheckpoint: int = 0):
        """The application (autocheckpoint 0: the log restarts only when a test checkpoints)."""
        writer = streamhelpers.NumberedWriter(self.db, self.env, autocheckpoint)
        self.writers.append(writer)
        return writer

    def service(self, targets=None, **options) -> Service:
        service = Service(self.config(**options), repository=self.repository, targets=targets)
        service.open()
        self.services.append(service)
        return service

    @staticmethod
    def step(service: Service) -> None:
        """One tick of the service (a new chain, or one poll handed over), then everything queued shipped."""
        service.tick()
        service.ship()

    def segments(self, epoch: str) -> list[tuple[int, str]]:
        return committed_segments(self.repository.files(NODE, epoch), ASSET)

    def identities(self) -> list:
        return load_identities(identity_files=[str(self.age_key.identity_path)])

    def restore_to(self, dest: str = "", point: str = "latest", **kwargs) -> dict:
        """``restore_point_in_time`` into ``dest`` (a file) or under ``target_root``; its report."""
        return restore_point_in_time(
            self.repository, NODE, ASSET, self.signing_key.public_line, self.identities(),
            point_in_time=point, dest=dest, **kwargs,
        )  # fmt: skip

    def restore(self, point: str = "latest", **kwargs):
        """A restore into a fresh file: its report and k (the restored rows are exactly 1..k, checked)."""
        self.restores += 1
        dest = self.tmp / "restored" / ("r%d.db" % self.restores)
        report = self.restore_to(str(dest), point, **kwargs)
        return report, self.rows(dest)

    @staticmethod
    def rows(path) -> int:
        """k of a restored database holding exactly rows 1..k (checked, with PRAGMA integrity_check)."""
        return streamhelpers.restored_numbers(path)

    def cleanup(self) -> None:
        for service in self.services:
            service.close()
        for writer in self.writers:
            writer.kill()


@pytest.fixture
def wal_lab(tmp_path, repository, age_key, signing_key, child_env):
    lab = WalLab(tmp_path, repository, age_key, signing_key, child_env)
    yield lab
    lab.cleanup()
