#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sqlite_backup
short_description: Take a consistent copy of a live SQLite database
version_added: 0.1.0
description:
  - Copies the live database O(src) to the new file O(dest) with the SQLite online backup API, from one pinned
    read snapshot, so the copy is exactly one committed state of the database however busy its writers are.
    WAL-mode writers keep committing during the copy; rollback-journal writers wait for it (their busy timeout),
    as with C(sqlite3 .backup).
  - The copy is written under a temporary name beside O(dest), checked (O(check)), given its O(owner), O(group)
    and O(mode) and fsynced, and only then given its name. On any error nothing is left behind
    and an existing O(dest) is untouched.
  - The result holds no hash of the copy (an unkeyed SHA-256 of a database in a log confirms a guessed content);
    RV(size), RV(page_count) and RV(integrity) describe it. Seal it with M(nodekeep.backup.age_seal), whose signed
    SHA-256 of the sealed bytes proves it later.
  - This is the standalone building block; M(nodekeep.backup.epoch_backup) does the same for every asset
    and seals the result into the repository.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details:
      - Checks that O(src) exists, is readable and is an SQLite database, that the directory of O(dest) exists
        and is writable, and that O(dest) is absent (or O(force=true)); reports C(changed) without copying.
  diff_mode:
    support: full
    details:
      - With C(--diff), O(dest) before and after - absent, or a file with its size in bytes, mode and owner -
        never its content nor a hash of it; in check mode, what O(dest) would become (a copy of O(src), whose
        size is known once written).
  idempotent:
    support: none
    details:
      - A backup is an action, not a state. Every successful run takes a new copy and reports C(changed).
      - A second run with the same O(dest) fails because O(dest) exists, unless O(force=true).
options:
  src:
    description: The live SQLite database file.
    type: path
    required: true
  dest:
    description:
      - The file to write the consistent copy to. Its directory must exist.
      - SQLite side files next to it (C(DEST-wal), C(DEST-shm), C(DEST-journal)) make the module fail, since
        SQLite would apply them to the new copy.
    type: path
    required: true
  busy_timeout:
    description:
      - Milliseconds to wait for a lock held by a writer (a rollback-journal writer in the middle of a commit,
        or a C(BEGIN EXCLUSIVE) transaction) before failing.
      - From V(0) to V(3600000) (one hour); other values are refused, naming O(busy_timeout).
    type: int
    default: 5000
  pages_per_step:
    description:
      - Pages copied per step of the online backup. The read snapshot is held for the whole copy, so steps
        never restart. V(-1) copies everything in one step (slower for big databases).
      - V(1) to V(1000000), or V(-1); other values are refused, naming O(pages_per_step).
    type: int
    default: 1024
  check:
    description:
      - The check run on the copy before it is given its name. V(integrity) is C(PRAGMA integrity_check),
        V(quick) is C(PRAGMA quick_check), V(none) skips it.
    type: str
    choices: [integrity, quick, none]
    default: integrity
  force:
    description:
      - Replace an existing O(dest).
      - The new copy is complete and checked before the old file is replaced, by an atomic rename; the old
        file is B(not kept) (copy it elsewhere first if you need it). RV(replaced) reports that it happened.
      - With V(false) an existing O(dest) is an error and nothing is written.
    type: bool
    default: false
  mode:
    description:
      - Mode of the copy, as a quoted octal string. The copy is private (mode V(0600) under a umask of V(077))
        until this mode is set.
    type: raw
    default: '0600'
  owner:
    description: User (name or uid) that owns the copy. Default the user running the module.
    type: str
  group:
    description: Group (name or gid) of the copy. Default the primary group of the user running the module.
    type: str
notes:
  - Runs on the node, with the Python of the agent role's virtualenv (apsw).
  - The source is opened read-only; the module never writes to the live database.
requirements:
  - apsw
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.age_seal
    description: Seal the copy with age for an off-host copy.
  - name: SQLite online backup API
    description: How the copy is taken.
    link: https://www.sqlite.org/backup.html
"""

EXAMPLES = r"""
- name: Take a consistent copy of the node database
  nodekeep.backup.sqlite_backup:
    src: /var/lib/animica/node/animica.db
    dest: /var/backups/animica/animica-{{ ansible_date_time.iso8601_basic_short }}.db
    owner: animica
    mode: '0640'
  register: copy

- name: Stop when the copy is not a sound database
  ansible.builtin.assert:
    that:
      - copy.integrity == 'ok'
      - copy.size == copy.page_count * copy.page_size
    fail_msg: "{{ copy.dest }}: {{ copy.integrity }}"

- name: Refresh a fixed copy for another tool, replacing the previous one
  nodekeep.backup.sqlite_backup:
    src: /srv/pds/account.sqlite
    dest: /srv/export/account.sqlite
    check: quick
    force: true
"""

RETURN = r"""
dest:
  description: The copy.
  returned: always
  type: str
  sample: /var/backups/animica/animica-20261122T023000.db
src:
  description: The live database that was copied.
  returned: always
  type: str
  sample: /var/lib/animica/node/animica.db
size:
  description: Size of the copy in bytes.
  returned: success and not check mode
  type: int
  sample: 533463040
page_count:
  description: Pages in the copy.
  returned: success and not check mode
  type: int
  sample: 130240
page_size:
  description: Page size of the database in bytes.
  returned: success and not check mode
  type: int
  sample: 4096
journal_mode:
  description: V(wal) or V(rollback), read from the database header.
  returned: success and not check mode
  type: str
  sample: wal
integrity:
  description: Result of O(check) on the copy, V(ok), or V(skipped) with O(check=none).
  returned: success and not check mode
  type: str
  sample: ok
sqlite_version:
  description: Version of the SQLite library that made the copy.
  returned: success and not check mode
  type: str
  sample: 3.54.1
snapshot_at:
  description: UTC time the read snapshot was taken; the copy is the database as it was then.
  returned: success and not check mode
  type: str
  sample: "2026-11-22T02:30:00Z"
copy_seconds:
  description: Seconds the online backup took.
  returned: success and not check mode
  type: float
  sample: 0.88
check_seconds:
  description: Seconds the check took.
  returned: success and not check mode
  type: float
  sample: 0.35
hot_journal:
  description:
    - Set when the live database had a hot rollback journal (its writer crashed mid-transaction) - the database
      and journal were copied privately and the journal played back on that copy (the last committed state),
      never on the live file, which its application rolls back when it next opens it.
  returned: when the database had a hot rollback journal
  type: str
  sample: rolled back on a private copy
duration:
  description: Seconds the whole module run took.
  returned: success
  type: float
  sample: 1.62
mode:
  description: Mode of the copy.
  returned: success and not check mode
  type: str
  sample: '0600'
owner:
  description: Owner of O(dest), as Ansible reports it for file results.
  returned: success, when O(dest) exists
  type: str
  sample: root
group:
  description: Group of O(dest).
  returned: success, when O(dest) exists
  type: str
  sample: root
uid:
  description: Numeric owner of O(dest).
  returned: success, when O(dest) exists
  type: int
  sample: 0
gid:
  description: Numeric group of O(dest).
  returned: success, when O(dest) exists
  type: int
  sample: 0
state:
  description: What O(dest) is, V(file), V(directory), V(link) or V(hard) (a file with several links).
  returned: success, when O(dest) exists
  type: str
  sample: file
replaced:
  description: Whether an existing O(dest) was (or in check mode would be) replaced; only with O(force=true).
  returned: success
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import backup_sqlite
from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    PathDiff,
    argspec,
    plan_line,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import parse_mode


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            src={"type": "path", "required": True},
            dest={"type": "path", "required": True},
            busy_timeout={"type": "int", "default": 5000},
            pages_per_step={"type": "int", "default": 1024},
            check={"type": "str", "choices": ["integrity", "quick", "none"], "default": "integrity"},
            force={"type": "bool", "default": False},
            mode={"type": "raw", "default": "0600"},
            owner={"type": "str"},
            group={"type": "str"},
        ),
        supports_check_mode=True,
    )
    require_libraries(module, "apsw")
    params = module.params

    def action():
        paths = PathDiff(module, params["dest"])
        mode = parse_mode(params["mode"])
        result = backup_sqlite(
            params["src"],
            params["dest"],
            busy_timeout_ms=params["busy_timeout"],
            pages_per_step=params["pages_per_step"],
            check=params["check"],
            force=params["force"],
            mode=mode,
            owner=params["owner"],
            group=params["group"],
            check_only=module.check_mode,
        )
        what = "a copy of the SQLite database %s (%s), mode %s" % (
            params["src"],
            "checked with PRAGMA %s_check" % params["check"] if params["check"] != "none" else "not checked",
            "0600" if mode is None else "%04o" % mode,
        )
        return paths.add(result, planned={params["dest"]: plan_line(what)})

    run(module, action)


if __name__ == "__main__":
    main()
