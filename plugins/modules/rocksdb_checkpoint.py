#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: rocksdb_checkpoint
short_description: Take a verified consistent copy of a live RocksDB
version_added: 0.2.0
description:
  - Makes the new directory O(dest) a consistent copy of the RocksDB directory O(path) by one of the honest
    methods (O(method)); a second process cannot checkpoint a live RocksDB it does not own, because only the
    process holding the database's C(LOCK) sees its memtables.
  - V(checkpoint_command) runs the application's own checkpoint or admin command (O(checkpoint_command),
    with C({dest}) replaced by the directory to create). V(stop) stops the service, copies the closed
    database and starts the service again, always, also when the copy failed; RV(stop_seconds) is the
    window the service was down. V(snapshot) copies a crash-consistent view of the database (a filesystem
    snapshot mounted at O(path)). V(offline) copies a database nobody has open, and refuses one whose
    C(LOCK) is held, naming the process.
  - SST and blob files are hard-linked when O(dest) is on the database's filesystem (RocksDB never changes
    them once written), everything else is copied, as RocksDB's own checkpoint does.
  - The copy is built under a temporary name beside O(dest), opened read-only (with the rocksdict library's
    RocksDB, through a throwaway directory of hard links, so that the copy stays byte for byte what the
    node's own RocksDB wrote), its column families listed and, with O(count_keys), every key of every
    column family read with checksums verified. Only then is it given its name. On any error nothing is
    left behind and an existing O(dest) is untouched.
  - Nothing is ever written into the database directory, and the live database is never opened.
  - This is the standalone building block; M(nodekeep.backup.epoch_backup) does the same for assets of
    type C(rocksdb) (with the same options) and seals the result into the repository.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details:
      - Checks that O(path) is a RocksDB directory, that the directory of O(dest) exists and is writable and
        that O(dest) is absent (or O(force=true)), that the commands exist, and for V(offline) and
        V(snapshot) that nobody holds the database's C(LOCK). Reports C(changed) and RV(would).
      - In check mode no service is stopped and no command is run.
  diff_mode:
    support: full
    details:
      - With C(--diff), O(dest) before and after - absent, or a directory with its mode, owner and entries by
        name, size and mode - never a byte of data; in check mode, what O(dest) would become.
  idempotent:
    support: none
    details:
      - A checkpoint is an action, not a state. Every successful run takes a new copy and reports C(changed).
      - A second run with the same O(dest) fails because O(dest) exists, unless O(force=true).
options:
  path:
    description: The RocksDB directory (the one holding C(CURRENT), C(MANIFEST-*) and C(*.sst)).
    type: path
    required: true
  dest:
    description:
      - The new directory to hold the copy. Its parent must exist.
      - Must not be inside O(path) and must not contain it.
      - For V(checkpoint_command), the application writes the checkpoint (under a temporary name) in the
        parent of O(dest), so the application's user must be allowed to write there.
    type: path
    required: true
  state:
    description: V(present) takes a new copy.
    type: str
    choices: [present]
    default: present
  method:
    description:
      - How a consistent copy is obtained; see the description and C(docs/rocksdb.md) for which to choose.
    type: str
    choices: [checkpoint_command, stop, snapshot, offline]
    required: true
  checkpoint_command:
    description:
      - With O(method=checkpoint_command), the application's checkpoint command, as a string (split like a
        shell would, but no shell runs) or a list of arguments.
      - C({dest}) is replaced by the directory to create (it does not exist yet), C({path}) by O(path).
    type: raw
  service:
    description:
      - With O(method=stop), the systemd unit that owns the database (C(systemctl stop) and C(systemctl start)).
    type: str
  stop_command:
    description:
      - With O(method=stop), the command that stops the application, instead of O(service). A string or a
        list of arguments. The module waits until the database's C(LOCK) is released.
    type: raw
  start_command:
    description: With O(method=stop), the command that starts the application again. Required with O(stop_command).
    type: raw
  stop_timeout:
    description:
      - Seconds the stop and start commands may take each, and to wait for the C(LOCK) to be released.
      - From V(1) to V(86400) (one day).
    type: int
    default: 120
  command_timeout:
    description: Seconds the O(checkpoint_command) may take, from V(1) to V(86400) (one day).
    type: int
    default: 3600
  count_keys:
    description:
      - Count the keys of every column family of the copy (RV(key_counts)), reading every block with its
        checksum verified. Takes time proportional to the database size.
    type: bool
    default: false
  verify:
    description:
      - V(open) opens the copy read-only. V(list) only lists the column families from the MANIFEST, for
        databases whose custom comparator or merge operator a generic reader cannot open.
    type: str
    choices: [open, list]
    default: open
  force:
    description:
      - Replace an existing O(dest) directory. The new copy is complete and verified first; the old one is
        then removed. RV(replaced) reports that it happened.
    type: bool
    default: false
notes:
  - Runs on the node, with the Python of the agent role's virtualenv (rocksdict).
  - The verification reads the copy with rocksdict's bundled RocksDB (newer than most nodes'), strictly
    read-only and through a separate directory of hard links, so no file of the copy is rewritten in a format
    the node's own, older RocksDB could not read.
requirements:
  - rocksdict
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.sqlite_backup
  - name: RocksDB checkpoints
    description: What a checkpoint is and why it needs the owning process.
    link: https://github.com/facebook/rocksdb/wiki/Checkpoints
"""

EXAMPLES = r"""
- name: Ask the node for a checkpoint through its admin command
  nodekeep.backup.rocksdb_checkpoint:
    path: /var/lib/guts/db
    dest: /var/lib/guts/checkpoints/guts-{{ ansible_date_time.iso8601_basic_short }}
    method: checkpoint_command
    checkpoint_command: guts-node backup checkpoint --output {dest}
    count_keys: true
  register: checkpoint

- name: Show what it holds
  ansible.builtin.debug:
    msg: "{{ checkpoint.column_families | join(', ') }}: {{ checkpoint.key_counts }}"

- name: Cold copy with a brief stop of the service, hard-linked on the same filesystem
  nodekeep.backup.rocksdb_checkpoint:
    path: /var/lib/animica/node/rocksdb
    dest: /var/lib/animica/rocksdb-copy
    method: stop
    service: animica-node
    force: true
  register: cold

- name: Fail when the stop window was too long
  ansible.builtin.assert:
    that: cold.stop_seconds < 30
    fail_msg: "animica-node was down {{ cold.stop_seconds }} s"

- name: Copy a database whose service is already stopped
  nodekeep.backup.rocksdb_checkpoint:
    path: /srv/chain/db
    dest: /srv/export/chain-db
    method: offline
"""

RETURN = r"""
path:
  description: The database that was copied.
  returned: always
  type: str
  sample: /var/lib/animica/node/rocksdb
dest:
  description: The copy.
  returned: always
  type: str
  sample: /var/lib/animica/rocksdb-copy
method:
  description: The method used.
  returned: always
  type: str
  sample: stop
would:
  description: What the module would do.
  returned: check mode
  type: str
  sample: stop the service (systemctl stop animica-node), copy the closed DB to /var/lib/animica, start it again
hard_links:
  description: With O(method=stop) in check mode, whether SST files would be hard-linked (same filesystem).
  returned: check mode with O(method=stop)
  type: bool
  sample: true
replaced:
  description: Whether an existing O(dest) was (or in check mode would be) replaced; only with O(force=true).
  returned: always
  type: bool
  sample: false
column_families:
  description: The column families of the copy.
  returned: success and not check mode
  type: list
  elements: str
  sample: [default, accounts, blocks]
key_counts:
  description:
    - Keys per column family, with O(count_keys=true).
    - Called C(keys) in the manifest's facts (write C(source['keys']) in Jinja there, since C(.keys) is a method).
  returned: success and not check mode, with O(count_keys=true)
  type: dict
  sample: {default: 120400, accounts: 98012, blocks: 4410}
sequence:
  description: The last sequence number of the copy (what it holds, as RocksDB counts writes).
  returned: success and not check mode, with O(verify=open)
  type: int
  sample: 912334
stop_seconds:
  description: Seconds the service was stopped (from the stop command until the start command returned).
  returned: success and not check mode, with O(method=stop)
  type: float
  sample: 1.84
checkpoint_seconds:
  description: Seconds the O(checkpoint_command) took.
  returned: success and not check mode, with O(method=checkpoint_command)
  type: float
  sample: 0.31
copy_seconds:
  description: Seconds the copy of the closed or snapshotted database took.
  returned: success and not check mode, with O(method=stop), V(offline) or V(snapshot)
  type: float
  sample: 0.12
verify_seconds:
  description: Seconds the read-only verification took.
  returned: success and not check mode
  type: float
  sample: 0.4
files:
  description: Files copied or linked.
  returned: success and not check mode, with O(method=stop), V(offline) or V(snapshot)
  type: int
  sample: 212
linked:
  description: Of RV(files), how many SST and blob files were hard-linked instead of copied.
  returned: success and not check mode, with O(method=stop), V(offline) or V(snapshot)
  type: int
  sample: 180
bytes:
  description: Bytes of the database's files.
  returned: success and not check mode, with O(method=stop), V(offline) or V(snapshot)
  type: int
  sample: 734003200
rocksdb_version:
  description: The RocksDB version that last wrote the database's options file (the node's own RocksDB).
  returned: success and not check mode, when the database has an OPTIONS file
  type: str
  sample: 7.8.3
format_version:
  description: The block-based table C(format_version) of the database's options file.
  returned: success and not check mode, when the database has an OPTIONS file
  type: int
  sample: 5
verified_with:
  description: The library that verified the copy.
  returned: success and not check mode
  type: str
  sample: rocksdict 0.3.29
duration:
  description: Seconds the whole module run took.
  returned: success
  type: float
  sample: 2.61
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _rocksdb_db, rocksdb
from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    PathDiff,
    argspec,
    plan_line,
    require_libraries,
    run,
)

OPTIONS = (
    "method",
    "checkpoint_command",
    "service",
    "stop_command",
    "start_command",
    "stop_timeout",
    "command_timeout",
    "count_keys",
    "verify",
)


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            path={"type": "path", "required": True},
            dest={"type": "path", "required": True},
            state={"type": "str", "choices": ["present"], "default": "present"},
            method={"type": "str", "choices": list(rocksdb.METHODS), "required": True},
            checkpoint_command={"type": "raw"},
            service={"type": "str"},
            stop_command={"type": "raw"},
            start_command={"type": "raw"},
            stop_timeout={"type": "int", "default": 120},
            command_timeout={"type": "int", "default": 3600},
            count_keys={"type": "bool", "default": False},
            verify={"type": "str", "choices": list(_rocksdb_db.VERIFY_MODES), "default": "open"},
            force={"type": "bool", "default": False},
        ),
        required_if=[
            ("method", "checkpoint_command", ["checkpoint_command"]),
            ("method", "stop", ["service", "stop_command"], True),
        ],
        required_together=[["stop_command", "start_command"]],
        mutually_exclusive=[["service", "stop_command"]],
        supports_check_mode=True,
    )
    require_libraries(module, "rocksdict")
    params = module.params

    def action():
        started = time.monotonic()
        paths = PathDiff(module, params["dest"])
        options = {key: params[key] for key in OPTIONS if params[key] is not None}
        options["path"] = params["path"]
        if module.check_mode:
            plan = rocksdb.plan_checkpoint(options, params["dest"], force=params["force"])
            plan.pop("options", None)
            plan["changed"] = True
            plan["duration"] = round(time.monotonic() - started, 3)
            what = "a directory: a checkpoint of the RocksDB %s (method %s)%s" % (
                params["path"],
                params["method"],
                ", replacing the one there" if plan.get("replaced") else "",
            )
            return paths.add(plan, planned={params["dest"]: plan_line(what)})
        return paths.add(rocksdb.checkpoint_to(options, params["dest"], force=params["force"]))

    run(module, action)


if __name__ == "__main__":
    main()
