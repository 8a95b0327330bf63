"""Node key trust the way AWX runs playbooks: the inventory lives outside the project directory, in a
throwaway directory made for each job (so ``{{ inventory_dir }}/keys`` forgets everything), and the job
is non-interactive (AWX sets ``awx_job_id``).

- a node with no trusted key is refused (nothing recorded, no epoch) unless first contact is allowed
  for that run (``nodekeep_allow_first_contact``), which prints the inventory line that keeps the key;
- the key carried in the inventory (``nodekeep_signing_public_key``) is trusted in a fresh throwaway
  inventory: backup.yml (agent step first) and verify.yml pass;
- a node presenting another key than the inventory's is refused, even with
  ``nodekeep_accept_new_signing_key`` (the inventory is what must change), and no epoch is written;
- keys committed in the project's tree (``nodekeep_keys_dir`` pointing into it) are trusted too.

The node virtualenv is the test's own Python environment (it has requirements/node.txt):
``nodekeep_agent_install: false``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from playbook_helpers import PlaybookLab, require_playbook_tools

NODE = "awxnode"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
AWX = ("-e", "awx_job_id=4242")  # what AWX passes to every job


class JobLab:
    """The node's state (data, repository, signing key) once; a fresh inventory directory per job."""

    def __init__(self, base: Path, age_key, playbook_bin: str) -> None:
        self.base = base
        self.playbook_bin = playbook_bin
        self.jobs = 0
        self.live_db = base / "node" / "chain.db"
        self.live_db.parent.mkdir(parents=True)
        db = sqlite3.connect(self.live_db)
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        db.executemany("INSERT INTO t(v) VALUES (?)", [("row %d" % i,) for i in range(500)])
        db.commit()
        db.close()
        self.repository = base / "repository"
        self.signing_key = base / "signing" / "signing_key"
        self.project = base / "project"  # the AWX project (an SCM checkout): not where the inventory is
        self.node_vars = {
            "ansible_connection": "local",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "nodekeep_agent_install": False,
            "nodekeep_venv": sys.prefix,
            "nodekeep_repository_path": str(self.repository),
            "nodekeep_signing_key_path": str(self.signing_key),
            "nodekeep_age_recipients": [age_key.recipient],
            "nodekeep_assets": [{"name": "chain-db", "type": "sqlite", "path": str(self.live_db)}],
        }

    def job(self, playbook: str, *args: str, node_vars: dict | None = None):
        """One AWX-like job: a new inventory directory outside the project, then the playbook."""
        self.jobs += 1
        lab = PlaybookLab(self.base / ("job-%d" % self.jobs), self.playbook_bin)
        hostvars = dict(self.node_vars, **(node_vars or {}))
        lab.write_inventory({"all": {"children": {"nodekeep_nodes": {"hosts": {NODE: hostvars}}}}})
        assert not str(lab.inventory_dir).startswith(str(self.project))
        return lab, lab.run(playbook, *AWX, *args, check=False)

    def epochs(self) -> list:
        node_dir = self.repository / NODE
        return sorted(p.name for p in node_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) if (
            node_dir.exists()) else []  # fmt: skip

    def public_line(self) -> str:
        """The node key's "ssh-ed25519 BASE64" (what the node presents), read with ssh-keygen."""
        out = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(self.signing_key)], capture_output=True, text=True, check=True
        )
        return " ".join(out.stdout.split()[:2])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, age_key) -> JobLab:
    return JobLab(tmp_path_factory.mktemp("awx-trust"), age_key, require_playbook_tools("sqlite3"))


@pytest.fixture(scope="module")
def refused_first(jobs):
    """The very first AWX job against the new node, without first contact allowed."""
    return jobs.job("backup.yml")


@pytest.fixture(scope="module")
def enrolled(jobs, refused_first):
    """The enrolment job: agent.yml with first contact allowed for that run."""
    lab, proc = jobs.job("agent.yml", "-e", "nodekeep_allow_first_contact=true")
    assert proc.returncode == 0, proc.stdout[-4000:]
    return lab, proc


class TestFirstContact:
    def test_an_unknown_key_is_refused_in_a_non_interactive_run(self, jobs, refused_first):
        lab, proc = refused_first
        assert proc.returncode != 0
        out = " ".join(proc.stdout.split())
        assert "No signing key is trusted for %s" % NODE in out
        assert "an AWX job" in out
        assert "nodekeep_allow_first_contact=true" in out
        assert "nodekeep_signing_public_key: '%s " % jobs.public_line() in out, out[-1500:]
        assert not (lab.keys_dir / ("%s.pub" % NODE)).exists(), "the presented key was recorded"
        assert jobs.epochs() == [], "a backup ran signed by an untrusted key"

    def test_first_contact_allowed_for_one_run_records_and_prints_the_key(self, jobs, enrolled):
        lab, proc = enrolled
        out = " ".join(proc.stdout.split())
        assert "first contact" in out
        assert "nodekeep_signing_public_key: '%s " % jobs.public_line() in out, out[-1500:]
        assert (lab.keys_dir / ("%s.pub" % NODE)).read_text().startswith(jobs.public_line() + " ")

    def test_an_interactive_run_still_records_on_first_contact(self, jobs, tmp_path):
        lab = PlaybookLab(tmp_path / "cli", jobs.playbook_bin)
        lab.write_inventory({"all": {"children": {"nodekeep_nodes": {"hosts": {NODE: jobs.node_vars}}}}})
        lab.run("agent.yml")
        assert (lab.keys_dir / ("%s.pub" % NODE)).read_text().startswith(jobs.public_line() + " ")


class TestTrustCarriedByTheInventory:
    def test_the_inventory_key_is_trusted_in_a_throwaway_inventory(self, jobs, enrolled):
        key = {"nodekeep_signing_public_key": jobs.public_line()}
        lab, proc = jobs.job("backup.yml", node_vars=key)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert "trusted in the inventory variable nodekeep_signing_public_key" in " ".join(proc.stdout.split())
        assert len(jobs.epochs()) == 1
        assert not (lab.keys_dir / ("%s.pub" % NODE)).exists()
        lab, proc = jobs.job("verify.yml", node_vars=key)
        assert proc.returncode == 0, proc.stdout[-4000:]

    def test_another_key_in_the_inventory_is_refused_even_with_accept(self, jobs, enrolled, other_signing_key):
        before = jobs.epochs()
        for extra in ((), ("-e", "nodekeep_accept_new_signing_key=true")):
            lab, proc = jobs.job(
                "backup.yml", *extra, node_vars={"nodekeep_signing_public_key": other_signing_key.public_line}
            )
            assert proc.returncode != 0
            out = " ".join(proc.stdout.split())
            assert "is not the key trusted for it in the inventory variable nodekeep_signing_public_key" in out
            assert "into nodekeep_signing_public_key for %s in the inventory" % NODE in out
            assert jobs.epochs() == before
            assert not (lab.keys_dir / ("%s.pub" % NODE)).exists()


class TestTrustCarriedByTheProject:
    def test_keys_committed_in_the_project_tree_are_trusted(self, jobs, enrolled):
        keys = jobs.project / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        (keys / ("%s.pub" % NODE)).write_text(jobs.public_line() + "\n")
        _lab, proc = jobs.job("agent.yml", node_vars={"nodekeep_keys_dir": str(keys)})
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert "trusted in %s/%s.pub" % (keys, NODE) in " ".join(proc.stdout.split())

    def test_another_key_in_the_project_tree_is_refused(self, jobs, enrolled, other_signing_key):
        keys = jobs.project / "other-keys"
        keys.mkdir(parents=True)
        (keys / ("%s.pub" % NODE)).write_text(other_signing_key.public_line + "\n")
        _lab, proc = jobs.job("agent.yml", node_vars={"nodekeep_keys_dir": str(keys)})
        assert proc.returncode != 0
        assert "is not the key trusted for it in %s/%s.pub" % (keys, NODE) in " ".join(proc.stdout.split())
        assert (keys / ("%s.pub" % NODE)).read_text().strip() == other_signing_key.public_line.strip()
