"""The real playbooks, run with ansible-playbook against this machine (connection local).

One temporary inventory (node ``itnode``) for the whole module, its data, repository,
keys and staging paths under a temporary directory:

- agent: the node virtualenv, repository, signing key, the public key recorded on the
  controller, idempotence, and a refused (then deliberately accepted) changed key;
- backup of a live SQLite database while ``scripts/demo_writer.py`` writes to it
  (a separate process), twice; check mode writes nothing; no recipients fails clearly;
- verify (deep), and failures for a damaged artifact and for a wrong public key;
- staged restore (live data untouched, an existing target refused);
- cutover with a passing health check, and a cutover whose health check fails rolls
  back (the live database is the original again).

The inventory, the playbook runner and the writer are tests/integration/playbook_helpers.py's.
The node virtualenv: by default the agent role makes a fresh one in the temporary
directory (offline from ``.cache/wheelhouse`` when it exists, else from the package
index: slow the first time). ``NODEKEEP_TEST_NODE_VENV=/path/to/venv`` (e.g. the
project's ``.venv``) uses an existing virtualenv instead (``nodekeep_agent_install: false``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from integration_helpers import plain_sha256
from playbook_helpers import PlaybookLab, Writer, require_playbook_tools
from playbook_helpers import ansible_playbook as _ansible_playbook  # noqa: F401  s3/test_backup_role_offsite.py

NODE = "itnode"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def sha256(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def rows(path) -> dict:
    """Every row of the demo writer's ``chain`` table by seq (stdlib sqlite3: this process never uses apsw)."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return {r[0]: r for r in db.execute("SELECT * FROM chain ORDER BY seq")}
    finally:
        db.close()


def integrity(path) -> str:
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


class Lab(PlaybookLab):
    """The temporary inventory of the node and a runner for the collection's playbooks."""

    def __init__(self, base: Path, age_key, playbook_bin: str) -> None:
        super().__init__(base, playbook_bin)
        self.live_db = base / "node" / "chain.db"
        self.repository = base / "repository"
        self.signing_key = base / "signing" / "signing_key"
        self.results = base / "results"
        self.identity = age_key.identity_path
        node_vars = dict(
            self.install_vars,
            ansible_connection="local",
            ansible_python_interpreter="{{ ansible_playbook_python }}",
            nodekeep_venv=str(self.venv),
            nodekeep_repository_path=str(self.repository),
            nodekeep_signing_key_path=str(self.signing_key),
            nodekeep_age_recipients=[age_key.recipient],
            nodekeep_age_identity_file=str(self.identity),
            nodekeep_results_dir=str(self.results),
            nodekeep_service_manager="none",
            nodekeep_health_retries=2,
            nodekeep_health_delay=0,
            nodekeep_assets=[{
                "name": "chain-db", "type": "sqlite", "path": str(self.live_db), "pages_per_step": 16,
                "health_command": "test \"$(sqlite3 \"$NODEKEEP_PATH\" 'PRAGMA quick_check;')\" = ok",
            }],
        )  # fmt: skip
        inventory = {"all": {"children": {"nodekeep_nodes": {"children": {"testnet": {"hosts": {NODE: node_vars}}}}}}}
        self.write_inventory(inventory)

    def epochs(self) -> list:
        node_dir = self.repository / NODE
        return (
            sorted(p.name for p in node_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
            if node_dir.exists()
            else []
        )

    def result(self, name: str) -> dict:
        return json.loads((self.results / NODE / name).read_text())


def recap(proc: subprocess.CompletedProcess) -> dict:
    """The PLAY RECAP counters of the node, e.g. {"ok": 12, "changed": 0, "failed": 0, ...}."""
    for line in proc.stdout.splitlines():
        if line.startswith(NODE) and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    raise AssertionError("no PLAY RECAP line for %s in:\n%s" % (NODE, proc.stdout[-3000:]))


def refused_backup(lab: Lab, recipients: list, needle: str) -> subprocess.CompletedProcess:
    """backup.yml with these ``nodekeep_age_recipients`` fails, says ``needle`` and writes no epoch."""
    before = lab.epochs()
    extra = json.dumps({"nodekeep_age_recipients": recipients})
    proc = lab.run("backup.yml", "--skip-tags", "agent", "-e", extra, check=False)
    assert proc.returncode != 0
    assert needle in proc.stdout
    assert lab.epochs() == before
    return proc


def failures(proc: subprocess.CompletedProcess) -> list:
    """The failed task lines of the node: each failure is printed once (not by the module and again by a rescue)."""
    return [line for line in proc.stdout.splitlines() if line.startswith("fatal: [%s" % NODE)]


# --------------------------------------------------------------------------
# fixtures: each builds on the previous one, once per module
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory, age_key) -> Lab:
    playbook_bin = require_playbook_tools("sqlite3")
    return Lab(tmp_path_factory.mktemp("playbooks"), age_key, playbook_bin)


@pytest.fixture(scope="module")
def writer(lab):
    w = Writer(lab.live_db, lab.base)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def agent(lab, writer) -> subprocess.CompletedProcess:
    return lab.run("agent.yml")


@pytest.fixture(scope="module")
def backed_up(lab, agent, writer) -> list:
    """Two epochs of the live database, taken while the writer writes."""
    lab.run("backup.yml", "--skip-tags", "agent")
    # A second backup within the same second: the engine claims the next second's name (new_epoch), no sleep here.
    lab.run("backup.yml")  # with the agent role again: nothing to change
    return lab.epochs()


# --------------------------------------------------------------------------
# agent
# --------------------------------------------------------------------------


class TestAgent:
    def test_agent_makes_the_venv_repository_and_signing_key(self, lab, agent):
        assert (lab.venv / "bin" / "python").exists()
        assert lab.repository.stat().st_mode & 0o777 == 0o700
        assert lab.signing_key.stat().st_mode & 0o777 == 0o600
        public = (lab.keys_dir / ("%s.pub" % NODE)).read_text()
        assert public.startswith("ssh-ed25519 ") and public.endswith("\n")
        assert "signing key SHA256:" in agent.stdout

    def test_a_second_run_changes_nothing(self, lab, agent):
        assert recap(lab.run("agent.yml"))["changed"] == 0

    def test_a_different_recorded_key_fails_until_accepted(self, lab, agent, other_signing_key):
        recorded = lab.keys_dir / ("%s.pub" % NODE)
        real = recorded.read_text()
        recorded.write_text(other_signing_key.public_line + "\n")  # the controller knew another key
        refused = lab.run("agent.yml", check=False)
        assert refused.returncode != 0
        assert "is not the key trusted for it in %s" % recorded in " ".join(refused.stdout.split())
        assert "nodekeep_accept_new_signing_key=true" in refused.stdout
        assert recorded.read_text() == other_signing_key.public_line + "\n"  # nothing was overwritten

        lab.run("agent.yml", "-e", "nodekeep_accept_new_signing_key=true")
        assert recorded.read_text().split()[:2] == real.split()[:2]
        assert any(p.name.startswith("%s.pub." % NODE) for p in lab.keys_dir.iterdir()), "the old key was not kept"


# --------------------------------------------------------------------------
# backup
# --------------------------------------------------------------------------


class TestBackup:
    def test_two_epochs_of_the_live_database(self, lab, backed_up):
        assert len(backed_up) == 2
        for epoch in backed_up:
            names = {p.name for p in (lab.repository / NODE / epoch).iterdir()}
            assert {"manifest.json", "manifest.json.sig", "chain-db.sqlite.zst.age"} <= names
            result = lab.result("backup-%s.json" % epoch)
            assert result["status"] == "ok"
            assert result["size"] == sum(a["size"] for a in result["artifacts"]) > 0
            assert result["artifacts"][0]["source"]["integrity"] == "ok"
        last = json.loads((lab.repository / NODE / "last-backup.json").read_text())
        assert last["status"] == "ok" and last["epoch"] == backed_up[-1]
        assert (lab.repository / NODE / "last-backup.json").stat().st_mode & 0o777 == 0o600
        manifest = json.loads((lab.repository / NODE / backed_up[-1] / "manifest.json").read_text())
        assert set(manifest["labels"]["groups"]) == {"nodekeep_nodes", "testnet"}

    def test_check_mode_writes_no_epoch(self, lab, backed_up):
        before = lab.epochs()
        proc = lab.run("backup.yml", "--check")
        assert "check mode, would back up chain-db" in proc.stdout
        assert lab.epochs() == before

    def test_check_mode_previews_retention_with_reasons(self, lab, backed_up):
        """backup.yml --check lists what retention would keep and remove, and why, counting the epoch the
        backup would make (keep_last 2: the newest existing epoch and the new one stay); nothing is removed."""
        before = lab.epochs()
        complete = [e for e in before if (lab.repository / NODE / e / "manifest.json.sig").exists()]
        assert len(complete) >= 2
        proc = lab.run(
            "backup.yml", "--check", "--skip-tags", "agent", "-e", '{"nodekeep_retention": {"keep_last": 2}}'
        )
        assert lab.epochs() == before
        out = proc.stdout
        assert "[dry run: nothing removed]" in out
        assert "would remove %d epoch" % (len(complete) - 1) in out
        assert "%s  last 2" % complete[-1] in out
        for epoch in complete[:-1]:
            assert "%s  no rule keeps it (policy: last 2" % epoch in out
        assert "the epoch this backup would make" in out

    def test_no_recipients_fails_clearly_and_writes_nothing(self, lab, backed_up):
        refused_backup(lab, [], "nodekeep_age_recipients is empty")

    def test_the_example_placeholders_are_refused(self, lab, backed_up):
        refused_backup(lab, ["age1-PLACEHOLDER-X"], "still holds the example")

    def test_an_invalid_recipient_fails_and_is_recorded(self, lab, backed_up):
        proc = refused_backup(lab, ["age1notavalidrecipient"], "backup failed")
        last = json.loads((lab.repository / NODE / "last-backup.json").read_text())
        assert last["status"] == "failed" and last["error"]
        (fatal,) = failures(proc)
        assert "backup failed" in fatal and proc.stdout.count("age1notavalidrecipient") <= 2, proc.stdout
        lab.run("backup.yml", "--skip-tags", "agent")  # and the next good run records ok again
        assert json.loads((lab.repository / NODE / "last-backup.json").read_text())["status"] == "ok"

    def test_a_full_disk_while_recording_the_run_fails_clearly_and_contradicts_nothing(self, lab, backed_up, tmp_path):
        """last-backup.json on a filesystem that is full: the epoch is complete, the play fails saying so and
        why, and no record is left that says "failed" beside it; verify goes by the signed epoch."""
        full = tmp_path / "full"
        full.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(full)], capture_output=True, check=False
        )
        if mounted.returncode != 0:
            pytest.skip("needs root to mount a tiny tmpfs: %s" % mounted.stderr.decode().strip())
        try:
            status = full / "last-backup.json"
            status.write_text(json.dumps({"format": "nodekeep.last-backup/v1", "status": "failed", "error": "earlier"}))
            fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
            before = lab.epochs()
            proc = lab.run(
                "backup.yml", "--skip-tags", "agent", "-e", "nodekeep_backup_status_file=%s" % status, check=False
            )
            assert proc.returncode != 0, proc.stdout[-6000:]
            (new,) = sorted(set(lab.epochs()) - set(before))
            (fatal,) = failures(proc)
            assert "epoch %s is complete and signed" % new in fatal and "no space left on the device" in fatal, fatal
            assert "nodekeep_backup_status_file" in fatal and "Failed to replace" not in proc.stdout
            assert not status.exists(), "a record that contradicts the repository was left: %s" % status.read_text()
            # readers trust the signed epochs: verify checks the new epoch
            lab.run("verify.yml")
            assert lab.result("verify-%s.json" % new)["ok"] is True
        finally:
            subprocess.run(["umount", str(full)], check=False)


# --------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------


class TestVerify:
    def test_deep_verify_of_the_latest_epoch(self, lab, backed_up):
        proc = lab.run("verify.yml", "-e", "nodekeep_verify_deep=true")
        latest = lab.epochs()[-1]
        result = lab.result("verify-%s-deep.json" % latest)
        assert result["ok"] is True and result["signature"] == "valid" and result["problems"] == []
        (artifact,) = result["artifacts"]
        assert artifact["deep"] == "ok" and artifact["checks"]["integrity"] == "ok"
        assert "verified" in proc.stdout
        # the stats table (issue 16): per asset and in total, bytes checked, throughput, what was proven
        (row,) = result["stats"]["assets"]
        assert row["name"] == "chain-db" and row["bytes"] == artifact["checked_bytes"] > 0 and row["result"] == "ok"
        assert row["proven"].startswith("signature, sealed SHA-256, plain size (age-authenticated), integrity ok")
        # the columns are as wide as their widest cell (a 3.30 MiB database widens "checked")
        assert re.search(r"checked +duration +throughput +result +proven", proc.stdout)
        assert any(line.strip().strip('"').startswith("chain-db  sqlite") for line in proc.stdout.splitlines())

    def test_a_rolled_back_repository_fails_verify(self, lab, backed_up, tmp_path):
        """The newest epoch the controller recorded (results/NODE/backup-EPOCH.json) is gone from the repository:
        verify refuses instead of verifying an older epoch as the latest; with nodekeep_rollback_check=warn it goes on."""
        latest = lab.epochs()[-1]
        assert (lab.results / NODE / ("backup-%s.json" % latest)).exists()
        aside = tmp_path / latest
        shutil.move(str(lab.repository / NODE / latest), str(aside))
        try:
            proc = lab.run("verify.yml", check=False)
            warned = lab.run("verify.yml", "-e", "nodekeep_rollback_check=warn", check=False)
        finally:
            shutil.move(str(aside), str(lab.repository / NODE / latest))
        assert proc.returncode != 0
        assert "the newest epoch the controller recorded" in proc.stdout and latest in proc.stdout
        assert warned.returncode == 0, warned.stdout[-3000:]
        assert "rolled back" in warned.stdout + warned.stderr

    def test_an_older_epoch_by_name(self, lab, backed_up):
        lab.run("verify.yml", "-e", "nodekeep_verify_epoch=%s" % backed_up[0])
        assert lab.result("verify-%s.json" % backed_up[0])["ok"] is True

    def test_a_damaged_artifact_fails_with_the_problem_listed(self, lab, backed_up, tmp_path):
        copy = tmp_path / "repository"
        shutil.copytree(lab.repository, copy)
        artifact = copy / NODE / backed_up[-1] / "chain-db.sqlite.zst.age"
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0x01
        artifact.write_bytes(bytes(data))
        proc = lab.run(
            "verify.yml", "-e", "nodekeep_repository_path=%s" % copy, "-e", "nodekeep_verify_epoch=%s" % backed_up[-1],
            check=False,
        )  # fmt: skip
        assert proc.returncode != 0
        assert "does not verify" in proc.stdout and "chain-db: SHA-256 does not match" in proc.stdout

    def test_a_wrong_public_key_fails(self, lab, backed_up, other_signing_key):
        proc = lab.run(
            "verify.yml", "-e", "nodekeep_signing_public_key='%s'" % other_signing_key.public_line, check=False
        )
        assert proc.returncode != 0
        assert "does not verify" in proc.stdout and "signature invalid" in proc.stdout

    def test_no_recorded_key_fails_clearly(self, lab, backed_up, tmp_path):
        proc = lab.run("verify.yml", "-e", "nodekeep_keys_dir=%s" % tmp_path, check=False)
        assert proc.returncode != 0
        assert "No public key for this node" in proc.stdout and "the playbook nodekeep.backup.agent" in proc.stdout


# --------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------


class TestRestore:
    def test_staged_restore_leaves_the_live_data_alone(self, lab, backed_up, writer):
        staging = lab.base / "staging-1"
        live_inode = lab.live_db.stat().st_ino
        proc = lab.run("restore.yml", "-e", "nodekeep_restore_to=%s" % staging)
        restored = Path(str(staging) + str(lab.live_db))
        assert restored.is_file()
        assert integrity(restored) == "ok"
        assert lab.live_db.stat().st_ino == live_inode
        result = lab.result("restore-%s.json" % lab.epochs()[-1])
        assert result["cutover"] == "not requested"
        assert result["artifacts"][0]["path"] == str(restored)
        # the stats table (issue 16): bytes restored per asset and in total, what was proven
        (row,) = result["stats"]["assets"]
        assert row["bytes"] == result["stats"]["total"]["bytes"] == restored.stat().st_size
        assert row["proven"].startswith("signature, sealed SHA-256, plain size (age-authenticated), integrity ok") and row["result"] == "ok"
        assert any(line.strip().strip('"').startswith("chain-db  sqlite") for line in proc.stdout.splitlines())
        # every restored row equals the live row with the same seq (the writer only appends)
        restored_rows = rows(restored)
        live_rows = rows(lab.live_db)
        assert restored_rows and all(live_rows[seq] == row for seq, row in restored_rows.items())
        heights = {}
        for row in restored_rows.values():
            heights[row[1]] = heights.get(row[1], 0) + 1
        assert set(heights.values()) == {2}, "a transaction was torn"

    def test_one_asset_to_a_file_of_your_choice(self, lab, backed_up):
        """nodekeep_restore_output (litestream restore -o): the asset lands at that path, checked; a second run
        refuses the taken file naming nodekeep_restore_force, once."""
        output = lab.base / "chosen" / "chain-copy.db"
        extra = ["-e", '{"nodekeep_restore_assets": ["chain-db"]}', "-e", "nodekeep_restore_output=%s" % output]
        lab.run("restore.yml", *extra)
        assert output.is_file() and integrity(output) == "ok"
        epoch = lab.epochs()[-1]
        manifest = json.loads((lab.repository / NODE / epoch / "manifest.json").read_text())
        (artifact,) = [a for a in manifest["artifacts"] if a["name"] == "chain-db"]
        sealed = lab.repository / NODE / epoch / artifact["file"]
        assert artifact["content_sha256"] is None  # no unkeyed hash of the database in the manifest
        assert hashlib.sha256(output.read_bytes()).hexdigest() == plain_sha256(sealed, lab.identity)
        again = lab.run("restore.yml", *extra, check=False)
        assert again.returncode != 0
        (fatal,) = failures(again)
        assert "already exists" in fatal and "nodekeep_restore_force: true" in fatal, fatal

    def test_an_existing_staging_target_is_refused(self, lab, backed_up):
        staging = lab.base / "staging-1"
        restored = Path(str(staging) + str(lab.live_db))
        before = sha256(restored)
        proc = lab.run("restore.yml", "-e", "nodekeep_restore_to=%s" % staging, check=False)
        assert proc.returncode != 0
        assert "already exists" in proc.stdout
        assert sha256(restored) == before
        # printed once, naming the variable the operator sets, not the module's option
        (fatal,) = failures(proc)
        assert "nodekeep_restore_force: true" in fatal, fatal
        assert not re.search(r"(?<!nodekeep_restore_)\bforce: true", proc.stdout), proc.stdout

    def test_a_relative_staging_path_is_refused(self, lab, backed_up):
        proc = lab.run("restore.yml", "-e", "nodekeep_restore_to=staging", check=False)
        assert proc.returncode != 0
        assert "absolute staging directory" in proc.stdout


class TestCutover:
    def test_cutover_with_a_passing_health_check(self, lab, backed_up, writer):
        writer.stop()  # the "service" of this node; nodekeep_service_manager is none
        original = sha256(lab.live_db)
        staging = lab.base / "staging-2"
        proc = lab.run(
            "restore.yml", "-e", "nodekeep_restore_to=%s" % staging, "-e", "nodekeep_restore_cutover=true",
            "-e", "nodekeep_restore_epoch=%s" % backed_up[0],
        )  # fmt: skip
        result = lab.result("restore-%s.json" % backed_up[0])
        (done,) = result["cutover"]
        assert done["name"] == "chain-db" and done["ok"] is True
        # the live path now holds the restored epoch (the same bytes a second restore of it gives; the
        # result records no plain SHA-256 of the data), the old live data is the safety copy
        again = lab.base / "staging-2-again"
        lab.run("restore.yml", "-e", "nodekeep_restore_to=%s" % again, "-e", "nodekeep_restore_epoch=%s" % backed_up[0])
        (restored,) = lab.result("restore-%s.json" % backed_up[0])["artifacts"]
        assert sha256(lab.live_db) == sha256(restored["path"])
        assert sha256(done["safety_copy"]) == original
        assert integrity(lab.live_db) == "ok"
        assert not Path(result["artifacts"][0]["path"]).exists()  # moved into place
        assert "cut over: chain-db" in proc.stdout

    def test_a_failing_health_check_rolls_back(self, lab, backed_up, writer):
        writer.stop()
        before = sha256(lab.live_db)
        before_inode = lab.live_db.stat().st_ino
        staging = lab.base / "staging-3"
        proc = lab.run(
            "restore.yml", "-e", "nodekeep_restore_to=%s" % staging, "-e", "nodekeep_restore_cutover=true",
            "-e", "nodekeep_health_command='exit 3'", "-e", '{"nodekeep_assets": []}',
            check=False,
        )  # fmt: skip
        assert proc.returncode != 0
        assert "Rolled back" in proc.stdout and "holds the pre-restore data again" in proc.stdout
        assert "Health check of chain-db" in proc.stdout
        # the live database is the original again: same content, same file
        assert sha256(lab.live_db) == before
        assert lab.live_db.stat().st_ino == before_inode
        assert integrity(lab.live_db) == "ok"
        failed = [p for p in lab.live_db.parent.iterdir() if ".nodekeep-failed-" in p.name]
        assert failed, "the restored data that failed was not kept"
