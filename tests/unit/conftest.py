"""Fixtures of the unit tests.

``recipients`` / ``identities`` (module)
    ``seal.load_recipients`` of the key's recipient, ``seal.load_identities`` of its identity file.
``epochs``
    an ``Epochs``: ``backup(assets, **options)`` runs ``backup_epoch`` of node1 into the ``repository`` fixture
    (epochs named a second apart from 2026-12-07T00:00:00Z, in order: no epoch waits for the next second),
    ``restore(manifest, staging=None)`` runs ``restore_epoch`` into ``staging`` (default: a fresh directory) and
    returns it (its result in ``epochs.report``), ``restored(staging, path)`` is where a source path lands under it.
``zfs_pool`` / ``zfs_dataset``, ``btrfs_fs`` / ``btrfs_volume``
    real zfs-fuse (a pool on an image file) and btrfs (a loop device) for the snapshot/ and zfs/btrfs asset
    tests, made and torn down by tests/snapshot_pools.py, the same fixtures as tests/integration/snapshots
    (defined once here: a session pool defined in two conftests would be made twice under one name).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from snapshot_pools import btrfs_fs, btrfs_volume, zfs_dataset, zfs_pool  # noqa: F401  # pylint: disable=unused-import

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch as flow


@pytest.fixture(scope="module")
def recipients(age_key):
    return seal.load_recipients([age_key.recipient])


@pytest.fixture(scope="module")
def identities(age_key):
    return seal.load_identities([], [str(age_key.identity_path)])


class Epochs:
    NODE = "node1"
    START = 1796601600.0  # 2026-12-07T00:00:00Z

    def __init__(self, tmp_path: Path, repository, age_key, signing_key) -> None:
        self.tmp, self.repository, self.age_key, self.signing_key = tmp_path, repository, age_key, signing_key
        self.made = 0
        self.restores = 0

    def backup(self, assets: list, **options):
        self.made += 1
        return flow.backup_epoch(
            self.repository, self.NODE, assets, seal.load_recipients([self.age_key.recipient]),
            [self.age_key.recipient], self.signing_key.key, now=self.START + self.made, **options,
        )  # fmt: skip

    def restore(self, manifest, staging: Path | None = None, **options) -> Path:
        self.restores += 1
        staging = staging or self.tmp / ("restore-%d" % self.restores)
        identities = seal.load_identities([self.age_key.identity])
        self.report = flow.restore_epoch(
            self.repository,
            self.NODE,
            manifest.epoch,
            self.signing_key.public_line,
            identities,
            str(staging),
            **options,
        )
        return staging

    @staticmethod
    def restored(staging: Path, path) -> Path:
        return staging / str(path).lstrip("/")


@pytest.fixture
def epochs(tmp_path, repository, age_key, signing_key) -> Epochs:
    return Epochs(tmp_path, repository, age_key, signing_key)
