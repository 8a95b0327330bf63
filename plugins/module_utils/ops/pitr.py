# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time restore of an SQLite asset: its base epoch restored, its chain's segments applied.

The base goes through the epoch restore (signature, checksums, size bound) into a private directory
beside the target, inside the staging jail; each segment's record is signature-checked and hash-linked
to the one before (``storage/segments.py``), its frames unsealed no further than the record says, and
their pages written up to the last commit observed at or before the requested time. The result is
checked (``PRAGMA integrity_check``) and linked into place; the report names the commit time reached.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
import shutil
import time
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import run_check
from ansible_collections.nodekeep.backup.plugins.module_utils.core import safefs, wal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    RepositoryError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import restore_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import (
    ChainInfo,
    find_chain,
    iso,
    parse_time,
    segment_frames,
    timestamp,
)

PITR_REMEDY = (
    "remove the link, or restore to a real directory (no symlink at any level); "
    "a restore never reads or writes through a link it did not create"
)


def _final_target(artifact, dest: str, target_root: str) -> tuple[str, str]:
    """Where the rebuilt database goes, and the jail root walked to it."""
    if dest:
        final = os.path.abspath(dest)
        return final, os.path.dirname(final)
    if not target_root or not os.path.isabs(target_root):
        raise RepositoryError(
            "the restore target %r is not an absolute path" % (target_root,),
            "set nodekeep_restore_to (a staging directory) or nodekeep_restore_output (a file)",
        )
    return asset_type("sqlite").staging_path(artifact, target_root), target_root


def _refuse_taken(jail, final: str, force: bool) -> None:
    if jail.check(final) and not force:
        raise RepositoryError(
            "the restore target %s already exists" % final,
            "choose another nodekeep_restore_output or set nodekeep_restore_force: true (the existing file is kept beside it)",
        )


def _plan(
    repository, node: str, asset: str, public_key: str, point_in_time: str, dest: str, target_root: str
) -> tuple[float | None, ChainInfo, str, str]:
    """What a point-in-time restore and its check mode both start with: the moment asked for (None: the newest),
    the chain that reaches it (signatures checked), the final path and the root it is walked from."""
    when = None if point_in_time in (None, "", "latest") else parse_time(point_in_time)
    chain = find_chain(repository, node, asset, public_key, when)
    manifest = load_manifest(repository, node, chain.epoch, public_key)
    final, root = _final_target(manifest.artifact(asset), dest, target_root)
    return when, chain, final, root


def plan_point_in_time(
    repository,
    node: str,
    asset: str,
    public_key: str,
    point_in_time: str = "latest",
    dest: str = "",
    target_root: str = "",
    force: bool = False,
) -> dict[str, Any]:
    """Check mode of ``restore_point_in_time``: the chain found and the target walked as for real (no link followed)."""
    _when, chain, final, root = _plan(repository, node, asset, public_key, point_in_time, dest, target_root)
    with safefs.Jail(root, RestoreError, PITR_REMEDY) as jail:
        _refuse_taken(jail, final, force)
    return {
        "changed": True,
        "epoch": chain.epoch,
        "source": "chain" if chain.records else "epoch",
        "chain": {"segments": len(chain.records)},
        "path": final,
    }


def restore_point_in_time(
    repository,
    node: str,
    asset: str,
    public_key: str,
    identities: list,
    point_in_time: str = "latest",
    dest: str = "",
    target_root: str = "",
    force: bool = False,
    check: str = "integrity",
) -> dict[str, Any]:
    """Rebuild ``asset`` as of the last commit observed at or before ``point_in_time`` (or the newest).

    The report names the commit reached (``restored_commit_time``, ``source``, ``segment``, ``commits_applied``),
    the database's ``size`` in bytes, its ``integrity`` and the ``seconds`` the restore took.

    The result goes to ``dest`` (a file) or, as an epoch restore would put it, under ``target_root``.
    It is written beside its final name, checked, and linked into place; an existing target is refused
    unless ``force`` (then kept beside it as ``.nodekeep-replaced-<time>``).
    """

    began = time.monotonic()
    when, chain, final, root = _plan(repository, node, asset, public_key, point_in_time, dest, target_root)
    with safefs.Jail(root, RestoreError, PITR_REMEDY) as jail:
        _refuse_taken(jail, final, force)
        place = jail.anchor(final)  # the checked directory, pinned: later steps cannot be redirected
        name = ".%s.nodekeep-%s" % (os.path.basename(final), os.urandom(4).hex())
        try:
            os.mkdir(os.path.join(os.path.dirname(place), name), 0o700)
        except OSError as exc:
            raise describe_os_error(exc, "preparing the restore directory", os.path.dirname(final))
        work = os.path.join(os.path.dirname(final), name)
        try:
            reached, applied, integrity, size = _rebuild(
                repository, node, asset, public_key, identities, chain, when, work, place, force, check
            )
        finally:
            shutil.rmtree(os.path.join(os.path.dirname(place), name), ignore_errors=True)
    return {
        "node": node,
        "asset": asset,
        "epoch": chain.epoch,
        "point_in_time": point_in_time or "latest",
        "restored_commit_time": reached["time"],
        "source": reached["source"],
        "segment": reached["segment"],
        "commits_applied": applied,
        "chain": {"start": iso(chain.start), "end": iso(chain.end), "segments": len(chain.records)},
        "path": final,
        "size": size,
        "integrity": integrity,
        "seconds": round(time.monotonic() - began, 3),
    }


def _rebuild(repository, node, asset, public_key, identities, chain, when, work, place, force, check):
    """The base unsealed into ``work``, the segments' pages applied up to ``when``, checked, linked at ``place``."""

    base = restore_epoch(repository, node, chain.epoch, public_key, identities, work, artifacts=[asset], check="none")
    path = base["artifacts"][0]["path"]
    reached = None
    applied = 0
    size = page_size = None
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        try:
            for record, source in chain.records:
                commits = [c for c in source["commits"] if when is None or timestamp(c[1]) <= when]
                if not commits:
                    break
                frames = segment_frames(repository, node, chain.epoch, record, identities)
                page_size = int(source["page_size"])
                if len(frames) != int(source["frames"]) * (wal.FRAME_HEADER_SIZE + page_size):
                    raise IntegrityError("segment %d holds a wrong number of frames" % source["seq"])
                salt = bytes.fromhex(source["salt"])
                if any(frame.salt != salt for _offset, frame in wal.iter_frames(frames, page_size)):
                    raise IntegrityError("segment %d holds a frame of another log" % source["seq"])
                upto, moment = commits[-1][0], commits[-1][1]
                size = wal.apply_frames(fd, frames, page_size, upto=upto) or size
                applied += sum(int(c[3]) for c in commits)
                reached = {"segment": source["seq"], "time": moment, "source": "chain"}
                if len(commits) < len(source["commits"]):
                    break
            if size is not None:
                os.ftruncate(fd, size * page_size)
            os.fsync(fd)
            restored_bytes = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if reached is None:
            # An epoch without segments (or none early enough): the point is the epoch itself.
            reached = {"segment": 0, "time": iso(chain.end), "source": "epoch"}
        integrity = run_check(path, check) if check != "none" else "skipped"
        if force and os.path.lexists(place):
            os.rename(place, "%s.nodekeep-replaced-%s" % (place, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
        os.link(path, place)
        dfd = os.open(os.path.dirname(place), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except FileExistsError:
        raise RepositoryError("the restore target %s appeared during the restore" % place, "nothing was overwritten")
    except OSError as exc:
        raise describe_os_error(exc, "restoring %s to a point in time" % asset, place)
    return reached, applied, integrity, restored_bytes
