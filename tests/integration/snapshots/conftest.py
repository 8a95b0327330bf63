"""The snapshot tests' fixtures: real ZFS (zfs-fuse) pools and btrfs filesystems on image files, ``zfs_pool`` /
``zfs_dataset`` and ``btrfs_fs`` / ``btrfs_volume``, made and torn down by tests/snapshot_pools.py (shared with
the unit tests, which documents them); plain helpers (``sh``, ``write_files``) are in ``snaphelpers.py``: tests
import them from there, never ``from conftest`` (ambiguous when several suites are collected in one run).

``live_db`` (overrides the shared one)
    the SQLite database lives inside ``btrfs_volume`` (``db/app.db``), so the shared
    ``writer`` fixture writes to a database on the subvolume.
"""

from __future__ import annotations

import pytest

# the pools and filesystems are shared with the unit tests of snapshot/ (tests/snapshot_pools.py)
from snapshot_pools import btrfs_fs, btrfs_volume, zfs_dataset, zfs_pool  # noqa: F401  # pylint: disable=unused-import


@pytest.fixture
def live_db(btrfs_volume, dbtools):  # noqa: F811 - the fixture imported above
    directory = btrfs_volume / "db"
    directory.mkdir()
    return dbtools.make(directory / "app.db", journal_mode="wal")
