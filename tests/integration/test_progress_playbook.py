"""Live progress through Ansible: the action plugins print each asset's phases on stderr while stdout
stays the stdout callback's own (``ANSIBLE_STDOUT_CALLBACK=json`` output still parses), and the task's
result is the module's (with ``progress``). A real backup and deep verify of a SQLite database on
this machine (connection local). No timing: the phases' end lines come from the result, whatever
the number of looks at the status file while the module ran.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from playbook_helpers import json_callback_collections

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Back up
      nodekeep.backup.epoch_backup:
        node: node1
        repository: "{repo}"
        assets: [{{name: app-db, type: sqlite, path: "{db}"}}]
        recipients: ["{recipient}"]
        signing_key: "{key}"
      register: backup
    - name: Deep verify
      nodekeep.backup.integrity_check:
        node: node1
        repository: "{repo}"
        epoch: "{{{{ backup.epoch }}}}"
        public_key: "{public}"
        deep: true
        identity_files: ["{identity}"]
"""
LINE = re.compile(
    r"^nodekeep: node1 (backup|verify) \[1/1\] app-db (capture|seal|deep verify): "
    r"[\d.]+ (B|KiB|MiB) of [\d.]+ (B|KiB|MiB) \([\d.]+%\), ([\d.]+ (B|KiB|MiB)/s|rate -), (ETA|done in) ",
    re.MULTILINE,
)


@pytest.fixture
def lab(tmp_path, dbtools, age_key, signing_key):
    db = dbtools.make(tmp_path / "app.db", rows=6000, payload=1000)
    book = tmp_path / "progress.yml"
    book.write_text(
        PLAYBOOK.format(
            repo=tmp_path / "repo",
            db=db.path,
            recipient=age_key.recipient,
            key=signing_key.path,
            public=signing_key.public_line,
            identity=age_key.identity_path,
        )
    )
    return book, os.path.getsize(db.path)


@pytest.fixture(scope="module")
def collections_path() -> str:
    """This collection, and ansible.posix for its json stdout callback (scripts/ansible-collections.sh)."""
    return json_callback_collections()


def _play(
    book: Path, callback: str, collections: str, interpreter: str = sys.executable, **extra_env: str
) -> subprocess.CompletedProcess:
    env = dict(os.environ, **extra_env)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=collections,
        ANSIBLE_STDOUT_CALLBACK=callback,
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_NOCOLOR="1",
    )
    playbook = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [str(playbook), "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=%s" % interpreter,
         "-e", "nodekeep_progress_interval=0.2", str(book)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip


def test_json_output_still_parses_and_progress_goes_to_stderr(lab, collections_path):
    book, size = lab
    done = _play(book, "ansible.posix.json", collections_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)  # stdout is the json callback's document alone
    tasks = report["plays"][0]["tasks"]
    backup = tasks[0]["hosts"]["localhost"]
    assert backup["epoch"] and "ansible_job_id" not in backup and "started" not in backup
    phases = {(p["phase"], p["state"]): p for p in backup["progress"]}
    seal = phases[("seal", "done")]
    assert seal["done_bytes"] == seal["total_bytes"] == size and seal["rate_bytes_per_second"] > 0
    verify = tasks[1]["hosts"]["localhost"]
    assert verify["ok"] and [p["phase"] for p in verify["progress"]] == ["deep verify"]
    lines = LINE.findall(done.stderr)
    assert {(found[0], found[1]) for found in lines} >= {
        ("backup", "capture"),
        ("backup", "seal"),
        ("verify", "deep verify"),
    }
    assert "nodekeep:" not in done.stdout


def test_the_default_callback_shows_the_lines_and_one_result(lab):
    book, _size = lab
    done = _play(book, "default", str(ROOT / "build" / "collections"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert LINE.search(done.stderr)
    assert done.stdout.count("changed: [localhost]") == 1  # the backup, once; the verify is ok
    assert "ok=2" in done.stdout and "failed=0" in done.stdout


def test_a_look_runs_no_module_on_the_node(lab, tmp_path):
    """Each look at a background module is one shell command: async_status runs once per task (to read the
    finished result), not once per look plus once to clean up; the async job files are removed."""
    book, _size = lab
    runs = tmp_path / "module-runs.log"
    interpreter = tmp_path / "python"
    interpreter.write_text('#!/bin/sh\necho "$@" >> %s\nexec %s "$@"\n' % (runs, sys.executable))
    interpreter.chmod(0o755)
    async_dir = tmp_path / "async"
    done = _play(
        book, "default", str(ROOT / "build" / "collections"), str(interpreter), ANSIBLE_ASYNC_DIR=str(async_dir)
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert LINE.search(done.stderr) and "ok=2" in done.stdout
    modules = runs.read_text().splitlines()
    polls = [line for line in modules if "async_status" in line]
    assert len(polls) == 2, modules  # one per task: the backup and the deep verify
    assert list(async_dir.iterdir()) == []
