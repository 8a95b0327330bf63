# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``run_state``: the states of the btrfs_snapshot and zfs_snapshot modules."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
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


def run_state(fs, volume: str, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """One module run: ``params`` are the module's options (see zfs_snapshot / btrfs_snapshot)."""
    state = params["state"]
    prefix = check_prefix(params.get("prefix") or DEFAULT_PREFIX)
    snapshot_dir = params.get("snapshot_dir")
    recursive = bool(params.get("recursive"))
    before = _listing(fs, volume, snapshot_dir) if state != "received" else []
    result: dict[str, Any] = {"changed": False, "volume": volume, "state": state, "features": dict(fs.features)}

    def find(name: str) -> Snap | None:
        return fs.snapshot(volume, name) if fs.kind == "zfs" else fs.snapshot(volume, name, snapshot_dir)

    def existing(name: str) -> Snap:
        snap = find(name)
        if snap is None:
            raise SnapshotError(
                "%s has no snapshot %s" % (volume, name), "choose one of: %s" % ", ".join(before[-5:] or ["(none)"])
            )
        return snap

    after = list(before)
    if state == "present":
        name = params.get("name") or snapshot_name(prefix, epoch_name())
        snap = find(name)
        if snap is None:
            result["changed"] = True
            after.append(name)
            if not check_mode:
                snap = (
                    fs.create(volume, name, recursive)
                    if fs.kind == "zfs"
                    else fs.create(volume, name, snapshot_dir=snapshot_dir)
                )
        result["snapshot"] = snap.facts() if snap is not None else {"volume": volume, "name": name}
    elif state == "absent":
        name = _need(params, "name", state)
        snap = find(name)
        if snap is not None:
            if snap.held:
                raise SnapshotError(
                    "the snapshot %s is held (%d hold(s)) and is never destroyed" % (snap.ident, snap.userrefs),
                    "release its holds first (state: released)",
                )
            result["changed"] = True
            after.remove(name)
            if not check_mode:
                fs.destroy(snap, recursive=recursive, dependents=bool(params.get("allow_dependents")))
    elif state in ("held", "released"):
        if fs.kind != "zfs":
            raise SnapshotError("btrfs has no snapshot holds", "use zfs_snapshot for holds")
        snap = existing(_need(params, "name", state))
        tag = params.get("tag") or "nodekeep"
        tags = fs.holds(snap)
        if tags is not None:
            has = tag in tags
        else:
            # zfs-fuse cannot list holds: try the change (a release of an absent tag fails harmlessly).
            has = None
        if state == "held" and has is not True:
            if check_mode:
                result["changed"] = has is False or has is None
            else:
                done = fs._run(["hold"] + (["-r"] if recursive else []) + [tag, snap.ident], "holding", check=False)
                message = output_text(done.stderr)
                if done.returncode != 0 and "already exists" not in message and "tag already" not in message:
                    raise SnapshotError("holding %s failed: %s" % (snap.ident, message.strip()), "see the message")
                result["changed"] = done.returncode == 0
        elif state == "released" and has is not False:
            if check_mode:
                result["changed"] = snap.held if has is None else True
            else:
                result["changed"] = fs.release(snap, tag, recursive=recursive, check=False)
        result["snapshot"] = (find(snap.name) or snap).facts()
        result["userrefs"] = (find(snap.name) or snap).userrefs
        result["tag"] = tag
    elif state == "pruned":
        options = {k: params.get(k) for k in POLICY_KEYS + ("pick",) if params.get(k) is not None}
        policy = RetentionPolicy.from_options(options)
        protect = set(params.get("protect") or [])
        if fs.kind == "zfs":
            report = prune_snapshots(
                fs,
                volume,
                policy,
                prefix,
                protect,
                dry_run=check_mode,
                recursive=recursive,
                dependents=bool(params.get("allow_dependents")),
            )
        else:
            report = prune_snapshots(fs, volume, policy, prefix, protect, dry_run=check_mode, snapshot_dir=snapshot_dir)
        gone = {e["name"] for e in report["destroyed"]}
        after = [n for n in before if n not in gone]
        result.update({k: report[k] for k in ("kept", "destroyed", "held", "errors", "policy")})
        result["changed"] = bool(gone)
        if report["errors"]:
            raise SnapshotError(
                "some snapshots could not be destroyed: %s" % "; ".join(e["error"] for e in report["errors"]),
                "see the errors; the others were pruned",
            )
    elif state == "sent":
        snap = existing(_need(params, "name", state))
        dest = _need(params, "dest", state)
        base = existing(params["base"]) if params.get("base") else None
        recipients = load_recipients(params.get("recipients") or [], params.get("recipients_files") or [])
        result["snapshot"] = snap.facts()
        result["base"] = base.facts() if base else None
        if os.path.exists(dest) and not params.get("force"):
            result["dest"] = dest
            result["msg"] = "%s exists; nothing was sent (force: true sends again)" % dest
        else:
            result["changed"] = True
            if not check_mode:
                result.update(send_to_file(fs, snap, base, dest, recipients, int(params.get("level") or 3), recursive))
    elif state == "received":
        src = _need(params, "src", state)
        target = _need(params, "target", state)
        identities = load_identities(params.get("identities") or [], params.get("identity_files") or [])
        if not os.path.isfile(src):
            raise SnapshotError("the stream file %s does not exist" % src, "give src an existing sealed stream")
        result["changed"] = True
        result["target"] = target
        if not check_mode:
            if fs.kind == "zfs":
                argv = fs.receive_argv(target, bool(params.get("force")), recursive)
            else:
                os.makedirs(target, mode=0o700, exist_ok=True)
                argv = ["btrfs", "receive", "-e", target]
            result.update(receive_from_file(argv, src, identities, "%s receive into %s" % (fs.kind, target)))
    elif state == "rolled_back":
        snap = existing(_need(params, "name", state))
        newer = before[before.index(snap.name) + 1 :]
        if newer and not params.get("discard_newer"):
            raise SnapshotError(
                "%s has newer snapshots than %s (%s)" % (volume, snap.name, ", ".join(newer)),
                "set discard_newer: true to destroy them with the rollback (zfs rollback -r)",
            )
        result["changed"] = True
        after = before[: before.index(snap.name) + 1]
        if not check_mode:
            fs.rollback(snap, discard_newer=bool(params.get("discard_newer")))
    elif state == "cutover":
        staging = _need(params, "staging", state)
        result["changed"] = True
        if not check_mode:
            result.update(zfs_cutover(staging, volume, mode=params.get("cutover_mode") or "auto", fs=fs))
    else:
        raise SnapshotError("unknown state %r" % (state,), "see the module documentation")
    result["snapshots"] = after
    result["diff"] = _diff(before, after, volume)
    return result
