#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: restore_cutover
short_description: Put a verified restored copy in place of the live data, or roll back
version_added: 0.1.0
description:
  - The cutover step of a staged restore. Stop the service before it and start and health-check it after;
    the M(nodekeep.backup.epoch_restore) module stages and checks the copy, the restore role drives the whole
    sequence and rolls back when the health check fails.
  - With O(state=cutover), the live data at O(path) is renamed to a safety copy beside it (for an SQLite
    database together with its C(-wal), C(-shm) and C(-journal), see O(sqlite_sidecars)) and the staged copy
    O(staged) is renamed into O(path). The live data is only ever renamed on its own filesystem, never copied
    and deleted. A staged copy on another filesystem is first copied (fsynced, keeping modes, ownership, mtimes
    and links) to a temporary name beside O(path), so the switch itself is two renames. If anything fails on
    the way, everything is renamed back and the live data is where it was.
  - With O(state=rollback), the data at O(path) (the restored data) is renamed to C(PATH.nodekeep-failed-TIME)
    (kept, with its side files) and the safety copy is renamed back to O(path).
  - Nothing is ever deleted.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details:
      - Runs every check (paths, kinds, filesystems, free space for a copy, owner and group, an existing safety
        copy) and returns the planned RV(safety_copy), without touching anything.
  diff_mode:
    support: full
    details:
      - With C(--diff), every path the renames touch (O(path), O(staged), the safety copy, with
        O(state=rollback) the C(PATH.nodekeep-failed-TIME) copy, and SQLite side files) before and after - absent,
        or its kind, size in bytes, mode and owner (a directory with its entries by name) - never a byte of data.
      - In check mode the after side is what the renames would make of what is there now, and the owner and
        mode the placed data would get (RV(attributes)).
  idempotent:
    support: none
    details:
      - Cutover and rollback are actions. After a cutover the staged copy has moved into place, so running the
        same cutover again fails with a message saying so; after a rollback the safety copy is back at O(path),
        so a second rollback fails because no safety copy is left.
options:
  state:
    description:
      - V(cutover) puts O(staged) in place of O(path), keeping the live data as O(safety_copy).
      - V(rollback) puts O(safety_copy) back at O(path), keeping the data found there as C(PATH.nodekeep-failed-TIME).
    type: str
    choices: [cutover, rollback]
    default: cutover
  path:
    description:
      - Absolute live path of the asset, a file (for example an SQLite database) or a directory.
      - May be absent (a first restore onto a new host). A symlink or a mount point is refused.
    type: path
    required: true
  staged:
    description:
      - Absolute path of the verified restored copy, as restored by M(nodekeep.backup.epoch_restore),
        for example C(/srv/staging/node1/var/lib/x/app.db). Must be the same kind (file or directory) as O(path).
      - Required with O(state=cutover).
    type: path
  safety_copy:
    description:
      - Where the live data is kept.
      - With O(state=cutover), default C(PATH.nodekeep-pre-restore-TIME) (UTC, C(YYYYMMDDTHHMMSSZ)) beside O(path).
        It must be on the same filesystem as O(path) and must not exist.
      - With O(state=rollback), default the newest C(PATH.nodekeep-pre-restore-TIME) beside O(path).
    type: path
  owner:
    description:
      - User (name or uid) to own the placed data; for a directory applied to everything in it.
      - Default for a file, the owner of the live file it replaces; for a directory, as restored.
      - Only with O(state=cutover).
    type: str
  group:
    description:
      - Group (name or gid) of the placed data; for a directory applied to everything in it.
      - Default for a file, the group of the live file it replaces; for a directory, as restored.
      - Only with O(state=cutover).
    type: str
  mode:
    description:
      - Mode of the placed file, or of the placed directory itself (not of its content), as a quoted octal string.
      - Default for a file, the mode of the live file it replaces; for a directory, as restored.
      - Only with O(state=cutover).
    type: raw
  sqlite_sidecars:
    description:
      - For a file, also move C(PATH-wal), C(PATH-shm) and C(PATH-journal) with it (into the safety copy on
        cutover, to the failed copy and back from the safety copy on rollback), so that a stale write-ahead log
        is never replayed onto the restored database. They are moved even when O(path) itself is absent.
      - With V(true), a staged copy with a non-empty C(-wal) or C(-journal) beside it is refused, because it
        is not self-contained.
    type: bool
    default: true
  service:
    description:
      - The service that uses O(path), stopped by the play before this step and started after it (the
        nodekeep.backup.restore role does both). Only recorded and listed in RV(steps); the module never stops it.
      - Without O(service) and O(health_command) the cutover is refused unless O(allow_unguarded).
    type: str
  health_command:
    description:
      - The health command the play runs after the swap (listed in RV(steps), never returned).
      - Without O(service) and O(health_command) the cutover is refused unless O(allow_unguarded).
    type: str
  allow_unguarded:
    description:
      - Swap even though no O(service) was stopped and no O(health_command) checks the result, or while a
        process still holds O(path) (or its C(-wal), C(-shm), C(-journal); for a directory anything in it)
        open, as read from C(/proc). Off by default, since a database swapped under a running writer is corrupted.
    type: bool
    default: false
  staging_root:
    description:
      - The staging directory O(staged) was restored into (the restore role passes C(nodekeep_restore_to)).
        O(staged) must be inside it, and no directory between them may be a symlink.
      - Without it, no directory of O(staged) from C(/) may be a symlink. No directory of O(path) may be one either.
    type: path
notes:
  - Stop the service that uses O(path) first. The module refuses while any process holds the data open
    (C(/proc/PID/fd)); run it as root so that every process is seen.
  - The safety copy stays until you remove it; the restore role reports it.
seealso:
  - module: nodekeep.backup.epoch_restore
    description: Stages and checks the copy this module puts in place; the nodekeep.backup.restore role drives both.
"""

EXAMPLES = r"""
- name: Stop the service
  ansible.builtin.service:
    name: pds
    state: stopped

- name: Put the restored database in place
  nodekeep.backup.restore_cutover:
    path: /srv/pds/account.sqlite
    staged: /srv/staging/node1/srv/pds/account.sqlite
    staging_root: /srv/staging/node1
    service: pds
    health_command: curl -fsS http://127.0.0.1:3000/xrpc/_health
    owner: pds
    group: pds
    mode: '0640'
  register: cutover

- name: Start and health-check the service, roll back if it fails
  block:
    - name: Start the service
      ansible.builtin.service:
        name: pds
        state: started

    - name: Health check
      ansible.builtin.uri:
        url: http://127.0.0.1:3000/xrpc/_health
      register: health
      retries: 10
      delay: 3
      until: health.status == 200
  rescue:
    - name: Stop the service again
      ansible.builtin.service:
        name: pds
        state: stopped

    - name: Roll back to the safety copy
      nodekeep.backup.restore_cutover:
        state: rollback
        path: /srv/pds/account.sqlite
        safety_copy: "{{ cutover.safety_copy }}"

    - name: Start the service on the old data
      ansible.builtin.service:
        name: pds
        state: started
"""

RETURN = r"""
path:
  description: The live path.
  returned: always
  type: str
  sample: /srv/pds/account.sqlite
safety_copy:
  description:
    - Where the live data was (or in check mode would be) kept; V(null) when O(path) was absent.
    - With O(state=rollback), the safety copy that was put back.
  returned: success
  type: str
  sample: /srv/pds/account.sqlite.nodekeep-pre-restore-20261122T023000Z
staged:
  description: The staged copy that was put in place.
  returned: success and O(state=cutover)
  type: str
  sample: /srv/staging/node1/srv/pds/account.sqlite
kind:
  description: V(file) or V(directory).
  returned: success
  type: str
  sample: file
copied:
  description: Whether the staged copy was on another filesystem and so was copied beside O(path) first.
  returned: success and O(state=cutover)
  type: bool
  sample: false
sidecars:
  description:
    - With O(state=cutover), the SQLite side files of the live database that were moved into the safety copy.
    - With O(state=rollback), the side files of the safety copy that were put back.
  returned: success
  type: list
  elements: str
  sample: [/srv/pds/account.sqlite-wal, /srv/pds/account.sqlite-shm]
steps:
  description: What the cutover does (in check mode, will really do), in order, including the play's service steps.
  returned: success and O(state=cutover)
  type: list
  elements: str
  sample: [stop the service pds, move /srv/pds/account.sqlite to /srv/pds/account.sqlite.nodekeep-pre-restore-20261122T023000Z,
           move the restored copy into /srv/pds/account.sqlite, start the service pds, run the health command]
guard:
  description:
    - What protected the swap. C(service), C(health_check) (true when a health command was given), C(open_by)
      (processes found holding the data open, each C(pid), C(command), C(file)) and C(overridden) (true when
      O(allow_unguarded) let a refused swap run).
  returned: success and O(state=cutover)
  type: dict
  sample: {service: pds, health_check: true, open_by: [], overridden: false}
attributes:
  description:
    - What was (or in check mode would be) applied to the placed data. V(null) values mean left as restored.
    - C(from_live) lists which of owner, group and mode were taken from the live file because they were not given.
  returned: success and O(state=cutover)
  type: dict
  sample: {uid: 1001, gid: 1001, mode: '0640', from_live: [owner, group, mode]}
mode:
  description: Mode of O(path) as found on disk after the run (before it, in check mode).
  returned: success, when O(path) exists
  type: str
  sample: '0640'
size:
  description: Size of O(path) as found on disk (for a directory, the size of the directory entry itself).
  returned: success, when O(path) exists
  type: int
  sample: 533463040
owner:
  description: Owner of O(path), as Ansible reports it for file results.
  returned: success, when O(path) exists
  type: str
  sample: root
group:
  description: Group of O(path).
  returned: success, when O(path) exists
  type: str
  sample: root
uid:
  description: Numeric owner of O(path).
  returned: success, when O(path) exists
  type: int
  sample: 0
gid:
  description: Numeric group of O(path).
  returned: success, when O(path) exists
  type: int
  sample: 0
state:
  description: What O(path) is, V(file), V(directory), V(link) or V(hard) (a file with several links).
  returned: success, when O(path) exists
  type: str
  sample: file
failed_copy:
  description: Where the data found at O(path) was kept by a rollback (V(null) when O(path) was absent).
  returned: success and O(state=rollback)
  type: str
  sample: /srv/pds/account.sqlite.nodekeep-failed-20261122T024500Z
failed_sidecars:
  description: Where the side files found beside O(path) were kept by a rollback.
  returned: success and O(state=rollback)
  type: list
  elements: str
  sample: [/srv/pds/account.sqlite.nodekeep-failed-20261122T024500Z-wal]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import PathDiff, argspec, describe_path, run
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import parse_mode
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.cutover import cutover, rollback


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            state={"type": "str", "choices": ["cutover", "rollback"], "default": "cutover"},
            path={"type": "path", "required": True},
            staged={"type": "path"},
            safety_copy={"type": "path"},
            owner={"type": "str"},
            group={"type": "str"},
            mode={"type": "raw"},
            sqlite_sidecars={"type": "bool", "default": True},
            service={"type": "str"},
            health_command={"type": "str"},
            allow_unguarded={"type": "bool", "default": False},
            staging_root={"type": "path"},
        ),
        required_if=[("state", "cutover", ["staged"])],
        supports_check_mode=True,
    )
    params = module.params

    def act(check_only):
        if params["state"] == "rollback":
            return rollback(params["path"], params["safety_copy"], params["sqlite_sidecars"], check_only=check_only)
        return cutover(
            params["path"],
            params["staged"],
            safety_copy=params["safety_copy"],
            owner=params["owner"],
            group=params["group"],
            mode=parse_mode(params["mode"]),
            sqlite_sidecars=params["sqlite_sidecars"],
            check_only=check_only,
            service=params["service"],
            health_command=params["health_command"],
            allow_unguarded=params["allow_unguarded"],
            staging_root=params["staging_root"],
        )

    def action():
        if not module._diff:
            return act(module.check_mode)
        # --diff: the plan names every path the renames touch; each is described before anything moves.
        plan = act(True)
        paths = PathDiff(module, *[p for move in _moves(plan) for p in move])
        return _with_diff(paths, plan if module.check_mode else act(False))

    run(module, action)


def _moves(plan):
    """The renames of a cutover or rollback plan, in order (source, target)."""
    path = plan["path"]
    if "failed_copy" in plan:  # a rollback
        failed = plan["failed_copy"]
        moves = [(path, failed)] if failed else []
        moves += [(path + side[len(failed) :], side) for side in plan["failed_sidecars"]]
        moves.append((plan["safety_copy"], path))
        return moves + [(plan["safety_copy"] + side[len(path) :], side) for side in plan["sidecars"]]
    safety = plan["safety_copy"]
    moves = []
    if safety is not None:
        moves += [(path, safety)] + [(side, safety + side[len(path) :]) for side in plan["sidecars"]]
    return moves + [(plan["staged"], path)]


def _with_diff(paths, plan):
    """The result with its diff: in check mode the renames are played on the descriptions of what is there now."""
    planned = {}
    for source, target in _moves(plan):
        planned[target] = planned.get(source, describe_path(source))
        if not (plan.get("copied") and source == plan.get("staged")):
            planned[source] = "absent\n"
    attributes = plan.get("attributes")
    if attributes:
        planned[plan["path"]] += "  then owner %s:%s, mode %s\n" % (
            "-" if attributes["uid"] is None else attributes["uid"],
            "-" if attributes["gid"] is None else attributes["gid"],
            attributes["mode"] or "as restored",
        )
    created = [target for _source, target in _moves(plan)]
    return paths.add(plan, created=created, planned={p: "(check mode) would be:\n" + t for p, t in planned.items()})


if __name__ == "__main__":
    main()
