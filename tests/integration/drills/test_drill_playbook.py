"""playbooks/drill.yml for real: a live node backed up, its epoch restored into the staging host,
checked, health-checked, timed, and a signed JSON + HTML report stored beside the epochs.

- the report's JSON fields, the RTO/RPO numbers against the wall clock, the targets;
- the HTML page is self-contained (inline CSS and SVG, no external reference) and charts the history;
- ``ssh-keygen -Y verify`` accepts the signature (namespace nodekeep-drill, not the manifest's);
- a tiny target makes the drill fail *after* the report was stored;
- a staging host in a production group is refused before anything is written;
- nothing is written on the node; the staged plaintext is removed after the checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime, timezone

import pytest
from drillhelpers import NODE, RUNBOOK, STAGE

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import human_bytes, human_seconds

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def parse(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def tree(path) -> dict:
    found = {}
    for directory, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(directory, name)
            info = os.stat(full)
            found[full] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def drilled(fleet):
    """One passing drill of the node: (proc, report dir, seconds the playbook took, epoch drilled)."""
    fleet.prepare()
    epoch = fleet.epochs()[-1]
    node_repo_before = tree(fleet.repository)
    began = time.time()
    proc = fleet.run("drill.yml", "-l", NODE)
    took = time.time() - began
    (report_dir,) = fleet.drill_dirs()
    return proc, report_dir, began, took, epoch, node_repo_before


def load(report_dir):
    return json.loads((report_dir / "report.json").read_text())


class TestDrill:
    def test_the_report_is_stored_beside_the_epochs(self, fleet, drilled):
        _proc, report_dir, _began, _took, _epoch, _before = drilled
        assert report_dir.parent.parent == fleet.stage_repository / "_drills"
        assert sorted(p.name for p in report_dir.iterdir()) == ["report.html", "report.json", "report.json.sig"]
        for item in report_dir.iterdir():
            assert item.stat().st_mode & 0o777 == 0o600

    def test_json_fields(self, fleet, drilled):
        _proc, report_dir, _began, _took, epoch, _before = drilled
        report = load(report_dir)
        assert report["format"] == "nodekeep.drill/v1"
        assert report["series"] == "drill" and report["drill_id"] == report_dir.name
        assert report["ok"] is True and report["problems"] == []
        assert report["reporter"] == STAGE
        assert report["summary"] == {
            "nodes": 1, "nodes_ok": 1, "assets": 1, "assets_ok": 1, "checks_failed": 0, "restores_failed": 0,
            "health_failed": 0, "rto_missed": 0, "rpo_missed": 0, "skipped_assets": 0,
        }  # fmt: skip
        (node,) = report["nodes"]
        assert node["node"] == NODE and node["staging_host"] == STAGE and node["epoch"] == epoch
        assert node["staging_path"] == "%s/%s/%s" % (fleet.drills, report["drill_id"], NODE)
        assert node["staged_copy_removed"] is True
        (asset,) = node["assets"]
        assert asset["name"] == "chain-db" and asset["asset_type"] == "sqlite"
        assert asset["checks"]["integrity"] == "ok" and asset["checks_ok"] is True
        assert asset["staged_path"] == node["staging_path"] + str(fleet.live_db)
        assert asset["source_path"] == str(fleet.live_db)
        assert asset["health"] == {"ran": True, "ok": True, "rc": 0, "attempts": 1}
        manifest = json.loads((fleet.repository / NODE / epoch / "manifest.json").read_text())
        assert asset["sha256"] is None and manifest["artifacts"][0]["content_sha256"] is None  # no plaintext hash
        # readable by the runbook: which runbook, data from when, checked how, which target
        assert report["runbook"] == RUNBOOK and node["runbook"] == RUNBOOK
        assert report["verdict"] == "PASSED" and node["verdict"] == "ok" and asset["verdict"] == "ok"
        assert node["check"] == "integrity"
        assert node["recovery_point_age_seconds"] == node["rpo"]["seconds"]
        first, check, pages = asset["checked_how"]
        assert first == "size and SHA-256 compared with the signed manifest: ok"
        # the capture passed the full check; the signed sealed bytes prove the same bytes (not re-run)
        assert check.startswith("PRAGMA integrity_check: ok, at backup (PRAGMA integrity_check"), check
        assert "the restored file is that copy, decrypted from the sealed file" in check
        assert pages == "page count equals the manifest's: {:,} pages".format(asset["checks"]["page_count"])
        assert asset["plain_size"] == asset["size"] == manifest["artifacts"][0]["content_size"]
        assert node["target_sources"] == asset["target_sources"] == {
            "rpo": "runbook 000: mainnet nodes 5 min", "rto": "runbook 000: mainnet nodes 30 min",
        }  # fmt: skip

    def test_rto_and_rpo_are_measured_and_plausible(self, fleet, drilled):
        _proc, report_dir, began, took, epoch, _before = drilled
        report = load(report_dir)
        (node,) = report["nodes"]
        started = parse(report["started"])
        assert began - 1 <= started <= began + took
        # RTO: drill start -> verified data, inside the playbook's own wall time
        assert 0 < node["rto"]["seconds"] <= took
        assert node["rto"] == {"seconds": node["rto"]["seconds"], "target_seconds": 1800.0, "met": True}
        assert report["rto_seconds"] == node["rto"]["seconds"]
        assert parse(node["verified_at"]) - started == pytest.approx(node["rto"]["seconds"], abs=0.01)
        # RPO: drill start - the epoch's start (the backup ran moments before the drill)
        manifest = json.loads((fleet.repository / NODE / epoch / "manifest.json").read_text())
        epoch_started = parse(manifest["started"] if "." in manifest["started"] else manifest["started"][:-1] + ".0Z")
        assert node["rpo"]["seconds"] == pytest.approx(started - epoch_started, abs=0.01)
        assert 0 < node["rpo"]["seconds"] < 900
        assert node["rpo"]["target_seconds"] == 300.0 and node["rpo"]["met"] is True
        print("measured RTO %.2f s, RPO %.2f s" % (node["rto"]["seconds"], node["rpo"]["seconds"]))

    def test_the_html_page_is_self_contained(self, drilled):
        _proc, report_dir, _began, _took, _epoch, _before = drilled
        page = (report_dir / "report.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<svg" in page
        for external in ("http://", "https://", "<script", "src=", "<link", "url(", "@import", "//cdn"):
            assert external not in page, external
        assert NODE in page and "chain-db" in page and "PASSED" in page
        assert "RTO" in page and "RPO" in page and "target" in page
        report = load(report_dir)
        (node,) = report["nodes"]
        head = page[: page.index("<h2>")]
        assert "Runbook: runbook 000" in head and "Backups and restores: DB, keys, seeds" in head
        assert "RPO target: mainnet nodes 5 min" in head and "RTO target: mainnet nodes 30 min" in head
        point = parse(node["recovery_point"])
        shown = datetime.fromtimestamp(point, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert "%s (%s before the drill)" % (shown, human_seconds(node["recovery_point_age_seconds"])) in page
        assert "PRAGMA integrity_check: ok" in page and "Checked how" in page
        assert "target from runbook 000: mainnet nodes 30 min" in page and "target met" in page
        assert human_bytes(node["assets"][0]["plain_size"]) in page

    def test_ssh_keygen_verifies_the_signature(self, fleet, drilled, tmp_path):
        _proc, report_dir, _began, _took, _epoch, _before = drilled
        public = (fleet.keys_dir / ("%s.pub" % STAGE)).read_text().split()
        allowed = tmp_path / "allowed_signers"
        allowed.write_text("%s %s %s\n" % (STAGE, public[0], public[1]))

        def verify(namespace):
            with open(report_dir / "report.json", "rb") as data:
                return subprocess.run(
                    ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", STAGE, "-n", namespace,
                     "-s", str(report_dir / "report.json.sig")],
                    stdin=data, capture_output=True, text=True, check=False,
                )  # fmt: skip

        good = verify("nodekeep-drill")
        assert good.returncode == 0, good.stderr
        assert "Good" in good.stdout + good.stderr
        # a drill signature can never pass for a manifest signature
        assert verify("nodekeep-manifest").returncode != 0

    def test_nothing_was_written_on_the_node(self, fleet, drilled):
        _proc, _report_dir, _began, _took, _epoch, before = drilled
        after = tree(fleet.repository)
        # the writer of the live DB does not touch the repository; the drill must not either
        assert {k: v for k, v in after.items() if k in before} == before
        assert not [k for k in after if k not in before and "/_drills/" in k]
        assert not (fleet.repository / "_drills").exists()

    def test_the_staged_copy_is_removed_and_the_shipped_epoch_kept(self, fleet, drilled):
        _proc, report_dir, _began, _took, epoch, _before = drilled
        assert not (fleet.drills / report_dir.name / NODE).exists()
        assert (fleet.shipped / NODE / epoch / "manifest.json.sig").exists()

    def test_the_controller_copy_and_summary(self, fleet, drilled):
        proc, report_dir, _began, _took, _epoch, _before = drilled
        saved = json.loads((fleet.results / NODE / ("drill-%s.json" % report_dir.name)).read_text())
        assert saved == load(report_dir)
        assert (fleet.results / NODE / ("drill-%s.html" % report_dir.name)).exists()
        assert re.search(r"drnode: ok epoch \d{8}T\d{6}Z \(data of [^)]*\) on drstage, 1 asset\(s\) \(chain-db ok\); RTO", proc.stdout)
        assert "PASSED" in proc.stdout

    def test_a_second_drill_charts_the_history(self, fleet, drilled):
        # The module's epoch was made before the first drill: on a loaded box it can be older than the
        # 5-minute target by now, which is not what this test is about.
        fleet.run("drill.yml", "-l", NODE, "-e", "nodekeep_rpo_target=86400")
        first, second = fleet.drill_dirs()[-2:]
        page = (second / "report.html").read_text()
        assert "RTO and RPO over the last 2 drill(s)" in page
        assert page.count("<circle") == 4  # two drills, two charts
        assert first.name in page  # the earlier drill's point, read back from the repository

    def test_a_tiny_target_fails_the_drill_after_storing_the_report(self, fleet, drilled):
        before = fleet.drill_dirs()
        proc = fleet.run("drill.yml", "-l", NODE, "-e", "nodekeep_rto_target=0.001", "-e", "nodekeep_rpo_target=86400", check=False)
        assert proc.returncode != 0
        assert "TARGET MISSED" in proc.stdout and "misses the target" in proc.stdout
        assert "drnode: target missed" in proc.stdout and "chain-db target missed" in proc.stdout
        (new,) = [d for d in fleet.drill_dirs() if d not in before]
        report = load(new)
        assert report["ok"] is False and report["summary"]["rto_missed"] == 1
        (node,) = report["nodes"]
        assert node["rto"]["met"] is False and node["rto"]["target_seconds"] == 0.001
        assert node["rpo"]["met"] is True and node["rpo"]["target_seconds"] == 86400  # only the RTO was missed
        assert report["verdict"] == "TARGET MISSED" and node["verdict"] == "target missed"
        assert report["summary"]["checks_failed"] == 0
        page = (new / "report.html").read_text()
        assert "target missed" in page and "TARGET MISSED" in page
        assert (new / "report.json.sig").exists()
        assert "Fail the drill (the report is stored)" in proc.stdout

    def test_a_failing_health_command_fails_the_drill(self, fleet, drilled):
        before = fleet.drill_dirs()
        assets = [{"name": "chain-db", "type": "sqlite", "path": str(fleet.live_db), "drill_health_command": "exit 7"}]
        proc = fleet.run(
            "drill.yml", "-l", NODE, "-e", json.dumps({"nodekeep_assets": assets, "nodekeep_drill_health_retries": 0}),
            check=False,
        )  # fmt: skip
        assert proc.returncode != 0
        (new,) = [d for d in fleet.drill_dirs() if d not in before]
        (node,) = load(new)["nodes"]
        assert node["assets"][0]["health"]["ok"] is False and node["assets"][0]["health"]["rc"] == 7
        assert "health command failed in staging (exit 7" in proc.stdout

    def test_a_damaged_repository_fails_the_drill_whatever_staging_holds(self, fleet, drilled):
        """One byte of the node repository's sealed artifact is flipped after an earlier drill shipped a good
        copy to the staging host: the drill proves the repository as it is now (byte for byte against the
        signed manifest), never that older copy; the report says why and the job fails after storing it."""
        _proc, _report_dir, _began, _took, epoch, _before = drilled
        before = fleet.drill_dirs()
        manifest = json.loads((fleet.repository / NODE / epoch / "manifest.json").read_text())
        artifact = fleet.repository / NODE / epoch / manifest["artifacts"][0]["file"]
        shipped = fleet.shipped / NODE / epoch / manifest["artifacts"][0]["file"]
        original = artifact.read_bytes()
        assert shipped.read_bytes() == original  # the good copy an earlier drill left on the staging host
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0x55
        artifact.write_bytes(bytes(tampered))
        try:
            proc = fleet.run("drill.yml", "-l", NODE, "-e", "nodekeep_drill_epoch=%s" % epoch, check=False)
        finally:
            artifact.write_bytes(original)
        assert proc.returncode != 0
        assert "SHA-256 does not match the manifest" in proc.stdout
        assert "Fail the drill (the report is stored)" in proc.stdout
        (new,) = [d for d in fleet.drill_dirs() if d not in before]
        report = load(new)
        assert report["ok"] is False
        (node,) = report["nodes"]
        assert node["ok"] is False
        assert node["rto"]["seconds"] is None and node["rto"]["met"] is False  # the data was never verified
        assert not (fleet.drills / new.name).exists()  # nothing staged is left behind

    def test_a_damaged_copy_left_on_staging_is_replaced_by_the_repositorys_bytes(self, fleet, drilled):
        """The staging host's shipped copy is damaged (one byte): the next drill ships the repository's bytes
        over it and passes, because the repository itself is intact."""
        _proc, _report_dir, _began, _took, epoch, _before = drilled
        manifest = json.loads((fleet.repository / NODE / epoch / "manifest.json").read_text())
        original = (fleet.repository / NODE / epoch / manifest["artifacts"][0]["file"]).read_bytes()
        shipped = fleet.shipped / NODE / epoch / manifest["artifacts"][0]["file"]
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0x55
        shipped.write_bytes(bytes(tampered))
        proc = fleet.run("drill.yml", "-l", NODE, "-e", "nodekeep_drill_epoch=%s" % epoch, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert shipped.read_bytes() == original

    def test_a_drilled_node_is_never_its_own_staging_host(self, fleet, drilled):
        before = fleet.drill_dirs()
        proc = fleet.run(
            "drill.yml", "-l", NODE, "-e", json.dumps({"nodekeep_drill_staging_hosts": [NODE]}), check=False
        )
        assert proc.returncode != 0
        assert "Refusing staging host %s: it is one of the nodes being drilled" % NODE in proc.stdout
        assert fleet.drill_dirs() == before

    def test_a_production_staging_host_is_refused(self, fleet, drilled):
        before = fleet.drill_dirs()
        shipped_before = tree(fleet.shipped)
        proc = fleet.run(
            "drill.yml", "-l", NODE, "-e", json.dumps({"nodekeep_drill_staging_hosts": ["prodhost"]}), check=False
        )
        assert proc.returncode != 0
        assert "Refusing staging host prodhost: it is a production host (in mainnet" in proc.stdout
        assert "The drill did not start and nothing was written" in proc.stdout
        assert fleet.drill_dirs() == before
        assert tree(fleet.shipped) == shipped_before
        assert "Restore the epoch" not in proc.stdout

    def test_a_production_report_host_is_refused(self, fleet, drilled):
        proc = fleet.run("drill.yml", "-l", NODE, "-e", "nodekeep_drill_report_host=prodhost", check=False)
        assert proc.returncode != 0
        assert "Refusing the report host prodhost" in proc.stdout

    def test_check_mode_writes_nothing(self, fleet, drilled):
        before = fleet.drill_dirs()
        shipped_before, staged_before = tree(fleet.shipped), tree(fleet.drills)
        proc = fleet.run("drill.yml", "-l", NODE, "--check")
        # the plan names the epoch "latest" resolves to, read from the node's repository
        assert "check mode, would restore epoch latest (%s, 3 files" % fleet.epochs()[-1] in proc.stdout
        assert "check mode: nothing was shipped, restored or written" in proc.stdout
        assert fleet.drill_dirs() == before
        assert tree(fleet.shipped) == shipped_before and tree(fleet.drills) == staged_before
