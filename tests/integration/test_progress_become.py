"""Live progress under ``become`` to an unprivileged user other than the connection user (issue 16).

The module runs as the become user, which cannot write into the connection user's temporary directory; the
action plugin has the become user make a private directory (0700, its own) for the status file, and its looks
(run with become too) read it there. A real ansible-playbook run: connection local as root, ``become_method: su``
to a test user, a backup of a rollback-journal SQLite database whose EXCLUSIVE lock this test holds: the module
starts the asset's capture step (writing the status file) and waits for the lock; the test releases it only once
the live line of that step was printed. No timing: the order is the line, then the lock's release.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest
from playbook_helpers import ROOT, require_playbook_tools

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

USER = "nodekeep-progress"

PLAY = """
- hosts: node1
  gather_facts: false
  tasks:
    - name: Back up as the unprivileged user
      nodekeep.backup.epoch_backup:
        node: node1
        repository: "{work}/repo"
        assets: [{{name: app-db, type: sqlite, path: "{work}/app.db", busy_timeout: 60000}}]
        recipients: ["{recipient}"]
        signing_key: "{work}/key/signing_key"
      become: true
      become_method: ansible.builtin.su
      become_user: {user}
      environment:
        PYTHONPATH: "{site}"
      register: backup
    - name: Show who ran it
      ansible.builtin.debug:
        msg: "epoch {{{{ backup.epoch }}}}"
"""


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    if os.geteuid() != 0 or not shutil.which("su") or not shutil.which("useradd"):
        pytest.skip("needs root, su and useradd (a test user to become)")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", USER], check=True)
        return pwd.getpwnam(USER)


def test_progress_lines_show_under_become_to_another_user(user, age_key, signing_key):
    playbook_bin = require_playbook_tools("sqlite3")
    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        pytest.skip("/usr/bin/python3 is needed: the test user cannot run a Python under /root")
    work = Path(tempfile.mkdtemp(prefix="nodekeep-become-", dir="/tmp"))
    try:
        (work / "key").mkdir()
        shutil.copy(signing_key.path, work / "key" / "signing_key")
        db = work / "app.db"
        with sqlite3.connect(db) as connection:
            connection.execute("PRAGMA journal_mode=DELETE")
            connection.execute("CREATE TABLE t(x)")
            connection.execute("INSERT INTO t VALUES (randomblob(300000))")
        connection.close()
        for path in [work, *work.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
        (work / "hosts.yml").write_text(
            "all:\n  hosts:\n    node1:\n      ansible_connection: local\n"
            "      ansible_python_interpreter: %s\n      ansible_remote_tmp: %s\n" % (python, work / ".ansible-tmp")
        )
        site = sysconfig.get_paths()["purelib"]  # pyrage, zstandard, apsw, cryptography of this venv (cp311)
        (work / "play.yml").write_text(PLAY.format(work=work, recipient=age_key.recipient, user=USER, site=site))
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOCALHOST_WARNING="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
        )
        # The test holds the database's EXCLUSIVE lock: the backup's capture step starts, then waits for it.
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        out = open(work / "stdout", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [playbook_bin, "-i", str(work / "hosts.yml"), str(work / "play.yml"), "-e", "nodekeep_progress_interval=0.5"],
            stdout=out, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL, cwd=str(work),
        )  # fmt: skip
        seen = []
        try:
            for line in proc.stderr:
                seen.append(line)
                if line.startswith("nodekeep: node1 backup [1/1] app-db capture: ") and "ETA" in line:
                    break  # the live line of the running step, read from the become user's status file
        finally:
            holder.execute("COMMIT")
            holder.close()
        rest = proc.stderr.read()
        proc.wait(timeout=240)
        out.close()
        stdout = (work / "stdout").read_text()
        assert any("app-db capture" in line and "ETA" in line for line in seen), "".join(seen) + rest + stdout
        assert proc.returncode == 0, stdout[-3000:] + rest[-2000:]
        assert "epoch 2" in stdout
        assert "nodekeep: node1 backup [1/1] app-db seal: " in rest  # the phases' end lines follow
        # the epoch is the become user's, and no status directory is left behind
        epochs = list((work / "repo" / "node1").iterdir())
        assert len(epochs) == 1 and epochs[0].stat().st_uid == user.pw_uid
        assert not [p for p in Path("/tmp").glob("nodekeep-progress.*") if p.stat().st_uid == user.pw_uid]
    finally:
        shutil.rmtree(work, ignore_errors=True)
