"""Real ZFS (zfs-fuse) pools and btrfs filesystems on image files, made and torn down by tests/snapshot_pools.py.

``zfs_pool`` (session)
    ``ZfsPool(name, mountpoint, image)``: a pool on a 512 MiB image file, served by a
    ``zfs-fuse`` daemon this session starts (``zfs-fuse --pidfile F --no-kstat-mount``)
    or shares with another pytest worker (a lock file counts the users; the starter
    stops it last: ``zfs umount -a; zpool export POOL; kill -TERM PID``).
``zfs_dataset``
    a fresh dataset ``POOL/tNNN`` (mounted under the pool's mountpoint) with a few files;
    destroyed after the test with every staging dataset the test received.
``btrfs_fs`` (session)
    ``BtrfsFs(mountpoint, device, image)``: a 512 MiB btrfs image on a loop device,
    mounted; unmounted and detached at the end, also when tests fail.
``btrfs_volume``
    a fresh subvolume ``MNT/tNNN/data`` with a few files (and its snapshot directory
    beside it), deleted after the test.
``live_db`` (overrides the shared one)
    the SQLite database lives inside ``btrfs_volume`` (``db/app.db``), so the shared
    ``writer`` fixture writes to a database on the subvolume.

Plain helpers (``sh``, ``write_files``) are in ``snaphelpers.py`` (from snapshot_pools): tests import them from
there, never ``from conftest`` (ambiguous when several suites are collected in one run).

Tests are skipped only when the kernel lacks what they need (``/dev/fuse`` and fuse,
btrfs or loop devices); a missing package is a failure naming it.
"""

from __future__ import annotations

import pytest

# the pools and filesystems are shared with the unit tests of snapshot/ (tests/snapshot_pools.py)
from snapshot_pools import btrfs_fs, btrfs_volume, zfs_dataset, zfs_pool  # noqa: F401 - fixtures


@pytest.fixture
def live_db(btrfs_volume, dbtools):  # noqa: F811 - the fixture imported above
    directory = btrfs_volume / "db"
    directory.mkdir()
    return dbtools.make(directory / "app.db", journal_mode="wal")
