# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``run_state``: the states of the btrfs_snapshot and zfs_snapshot modules."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import check_range
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import output_text
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities, load_recipients
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    DEFAULT_PREFIX,
    Snap,
    SnapshotError,
    check_prefix,
    snapshot_name,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.volumes import (
    prune_snapshots,
    receive_from_file,
    send_to_file,
    zfs_cutover,
)

# --------------------------------------------------------------------------
# the modules' states, for both backends
# --------------------------------------------------------------------------

POLICY_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within")


def _listing(fs, volume: str, snapshot_dir: str | None) -> list[str]:
    snaps = fs.snapshots(volume) if fs.kind == "zfs" else fs.snapshots(volume, snapshot_dir, with_info=False)
    return [s.name for s in snaps]


def _diff(before: list[str], after: list[str], volume: str) -> dict[str, str]:
    return {
        "before": "".join("%s@%s\n" % (volume, n) for n in before),
        "after": "".join("%s@%s\n" % (volume, n) for n in after),
        "before_header": "%s (snapshots)" % volume,
        "after_header": "%s (snapshots)" % volume,
    }


def _need(params: dict[str, Any], key: str, state: str) -> Any:
    if not params.get(key):
        raise SnapshotError("state %s needs %s" % (state, key), "set %s" % key)
    return params[key]


class _Run:
    """One module run on ``volume``: the listing before, the result being built, one step per state."""

    def __init__(self, fs, volume: str, params: dict[str, Any], check_mode: bool) -> None:
        self.fs = fs
        self.volume = volume
        self.params = params
        self.check_mode = check_mode
        self.state = params["state"]
        self.prefix = check_prefix(params.get("prefix") or DEFAULT_PREFIX)
        self.snapshot_dir = params.get("snapshot_dir")
        self.recursive = bool(params.get("recursive"))
        self.before = _listing(fs, volume, self.snapshot_dir) if self.state != "received" else []
        self.result: dict[str, Any] = {
            "changed": False,
            "volume": volume,
            "state": self.state,
            "features": dict(fs.features),
        }

    def need(self, key: str) -> Any:
        return _need(self.params, key, self.state)

    def find(self, name: str) -> Snap | None:
        if self.fs.kind == "zfs":
            return self.fs.snapshot(self.volume, name)
        return self.fs.snapshot(self.volume, name, self.snapshot_dir)

    def existing(self, name: str) -> Snap:
        snap = self.find(name)
        if snap is None:
            raise SnapshotError(
                "%s has no snapshot %s" % (self.volume, name),
                "choose one of: %s" % ", ".join(self.before[-5:] or ["(none)"]),
            )
        return snap

    # Each step updates ``self.result`` and returns the listing after the run.

    def present(self) -> list[str]:
        after = list(self.before)
        name = self.params.get("name") or snapshot_name(self.prefix, epoch_name())
        snap = self.find(name)
        if snap is None:
            self.result["changed"] = True
            after.append(name)
            if not self.check_mode:
                if self.fs.kind == "zfs":
                    snap = self.fs.create(self.volume, name, self.recursive)
                else:
                    snap = self.fs.create(self.volume, name, snapshot_dir=self.snapshot_dir)
        self.result["snapshot"] = snap.facts() if snap is not None else {"volume": self.volume, "name": name}
        return after

    def absent(self) -> list[str]:
        after = list(self.before)
        name = self.need("name")
        snap = self.find(name)
        if snap is not None:
            if snap.held:
                raise SnapshotError(
                    "the snapshot %s is held (%d hold(s)) and is never destroyed" % (snap.ident, snap.userrefs),
                    "release its holds first (state: released)",
                )
            self.result["changed"] = True
            after.remove(name)
            if not self.check_mode:
                self.fs.destroy(snap, recursive=self.recursive, dependents=bool(self.params.get("allow_dependents")))
        return after

    def hold_or_release(self) -> list[str]:
        if self.fs.kind != "zfs":
            raise SnapshotError("btrfs has no snapshot holds", "use zfs_snapshot for holds")
        snap = self.existing(self.need("name"))
        tag = self.params.get("tag") or "nodekeep"
        tags = self.fs.holds(snap)
        # zfs-fuse cannot list holds (None): try the change (a release of an absent tag fails harmlessly).
        has = (tag in tags) if tags is not None else None
        if self.state == "held" and has is not True:
            self.result["changed"] = self._hold(snap, tag, has)
        elif self.state == "released" and has is not False:
            if self.check_mode:
                self.result["changed"] = snap.held if has is None else True
            else:
                self.result["changed"] = self.fs.release(snap, tag, recursive=self.recursive, check=False)
        now = self.find(snap.name) or snap
        self.result.update(snapshot=now.facts(), userrefs=now.userrefs, tag=tag)
        return list(self.before)

    def _hold(self, snap: Snap, tag: str, has: bool | None) -> bool:
        if self.check_mode:
            return has is False or has is None
        argv = ["hold"] + (["-r"] if self.recursive else []) + [tag, snap.ident]
        done = self.fs._run(argv, "holding", check=False)
        message = output_text(done.stderr)
        if done.returncode != 0 and "already exists" not in message and "tag already" not in message:
            raise SnapshotError("holding %s failed: %s" % (snap.ident, message.strip()), "see the message")
        return done.returncode == 0

    def pruned(self) -> list[str]:
        options = {k: self.params.get(k) for k in POLICY_KEYS + ("pick",) if self.params.get(k) is not None}
        policy = RetentionPolicy.from_options(options)
        protect = set(self.params.get("protect") or [])
        if self.fs.kind == "zfs":
            backend = {"recursive": self.recursive, "dependents": bool(self.params.get("allow_dependents"))}
        else:
            backend = {"snapshot_dir": self.snapshot_dir}
        report = prune_snapshots(self.fs, self.volume, policy, self.prefix, protect, dry_run=self.check_mode, **backend)
        gone = {e["name"] for e in report["destroyed"]}
        self.result.update({k: report[k] for k in ("kept", "destroyed", "held", "errors", "policy")})
        self.result["changed"] = bool(gone)
        if report["errors"]:
            raise SnapshotError(
                "some snapshots could not be destroyed: %s" % "; ".join(e["error"] for e in report["errors"]),
                "see the errors; the others were pruned",
            )
        return [n for n in self.before if n not in gone]

    def sent(self) -> list[str]:
        level = self.params.get("level")
        level = check_range(3 if level is None else level, "level", 1, 22, why="zstd levels; 3 is the default")
        snap = self.existing(self.need("name"))
        dest = self.need("dest")
        base = self.existing(self.params["base"]) if self.params.get("base") else None
        recipients = load_recipients(self.params.get("recipients") or [], self.params.get("recipients_files") or [])
        self.result["snapshot"] = snap.facts()
        self.result["base"] = base.facts() if base else None
        if os.path.exists(dest) and not self.params.get("force"):
            self.result["dest"] = dest
            self.result["msg"] = "%s exists; nothing was sent (force: true sends again)" % dest
        else:
            self.result["changed"] = True
            if not self.check_mode:
                self.result.update(send_to_file(self.fs, snap, base, dest, recipients, level, self.recursive))
        return list(self.before)

    def received(self) -> list[str]:
        src = self.need("src")
        target = self.need("target")
        identities = load_identities(self.params.get("identities") or [], self.params.get("identity_files") or [])
        if not os.path.isfile(src):
            raise SnapshotError("the stream file %s does not exist" % src, "give src an existing sealed stream")
        self.result["changed"] = True
        self.result["target"] = target
        if not self.check_mode:
            if self.fs.kind == "zfs":
                argv = self.fs.receive_argv(target, bool(self.params.get("force")), self.recursive)
            else:
                os.makedirs(target, mode=0o700, exist_ok=True)
                argv = ["btrfs", "receive", "-e", target]
            what = "%s receive into %s" % (self.fs.kind, target)
            self.result.update(receive_from_file(argv, src, identities, what))
        return list(self.before)

    def rolled_back(self) -> list[str]:
        snap = self.existing(self.need("name"))
        newer = self.before[self.before.index(snap.name) + 1 :]
        if newer and not self.params.get("discard_newer"):
            raise SnapshotError(
                "%s has newer snapshots than %s (%s)" % (self.volume, snap.name, ", ".join(newer)),
                "set discard_newer: true to destroy them with the rollback (zfs rollback -r)",
            )
        self.result["changed"] = True
        if not self.check_mode:
            self.fs.rollback(snap, discard_newer=bool(self.params.get("discard_newer")))
        return self.before[: self.before.index(snap.name) + 1]

    def cutover(self) -> list[str]:
        staging = self.need("staging")
        self.result["changed"] = True
        if not self.check_mode:
            mode = self.params.get("cutover_mode") or "auto"
            self.result.update(zfs_cutover(staging, self.volume, mode=mode, fs=self.fs))
        return list(self.before)


_STEPS = {
    "present": _Run.present,
    "absent": _Run.absent,
    "held": _Run.hold_or_release,
    "released": _Run.hold_or_release,
    "pruned": _Run.pruned,
    "sent": _Run.sent,
    "received": _Run.received,
    "rolled_back": _Run.rolled_back,
    "cutover": _Run.cutover,
}


def run_state(fs, volume: str, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """One module run: ``params`` are the module's options (see zfs_snapshot / btrfs_snapshot)."""
    step = _STEPS.get(params["state"])
    if step is None:
        raise SnapshotError("unknown state %r" % (params["state"],), "see the module documentation")
    run = _Run(fs, volume, params, check_mode)
    after = step(run)
    run.result["snapshots"] = after
    run.result["diff"] = _diff(run.before, after, volume)
    return run.result
