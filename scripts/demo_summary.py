# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print a short, readable summary of a demo run from the JSON results the playbooks saved.

    demo_summary.py --results DIR --node NODE [--demo-dir DIR] [--inventory FILE]

Reads DIR/NODE/backup-*.json, verify-*.json, restore-*.json and drill-*.json (saved by
the roles when nodekeep_results_dir is set) and checks.json, checks-drill.json and
checks-pitr.json (scripts/demo.sh's own checks with standard tools). Standard library only. Exits 1 when no backup result exists.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shlex
import sys
from datetime import datetime, timezone
from typing import Any


def load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def load_all(directory: str, pattern: str) -> list[dict[str, Any]]:
    return [load(p) for p in sorted(glob.glob(os.path.join(directory, pattern)))]


def _load_human():
    """The collection's one formatting helper (core/human.py, standard library only), loaded by its path."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins", "module_utils", "core", "human.py")
    spec = importlib.util.spec_from_file_location("nodekeep_human", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HUMAN = _load_human()


def size(n: float | None) -> str:
    return "?" if n is None else _HUMAN.human_bytes(n)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    text = text.rstrip("Z")
    for fmt in ("%Y%m%dT%H%M%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def duration(seconds: float | None) -> str:
    return "not measured" if seconds is None else _HUMAN.human_seconds(seconds)


def against(measure: dict[str, Any]) -> str:
    """``12.3 s (target 30 min 00 s): target met`` (the drill's own wording, ops/drill.verdict)."""
    return "%s (target %s): %s" % (
        duration(measure.get("seconds")),
        duration(measure.get("target_seconds")),
        "not measured" if measure.get("seconds") is None else ("target met" if measure.get("met") else "target missed"),
    )


def print_drill(d: dict[str, Any], checks: dict[str, Any]) -> None:
    print(
        "Restore drill %s (series %s): %s, %d/%d node(s) ok"
        % (
            d.get("drill_id"),
            d.get("series"),
            d.get("verdict") or ("PASSED" if d.get("ok") else "FAILED"),
            d.get("summary", {}).get("nodes_ok", 0),
            d.get("summary", {}).get("nodes", 0),
        )
    )
    for n in d.get("nodes", []):
        print(
            "    node %s: epoch %s restored on %s (staged in %s, %s)"
            % (
                n.get("node"),
                n.get("epoch"),
                n.get("staging_host"),
                n.get("staging_path"),
                "removed after the checks" if n.get("staged_copy_removed") else "kept",
            )
        )
        if n.get("error"):
            print("      FAILED: %s" % n["error"])
        print("      RTO %s  (drill start -> data verified in staging)" % against(n.get("rto", {})))
        print("      RPO %s  (age of the restored data at drill start)" % against(n.get("rpo", {})))
        for a in n.get("assets", []):
            health = a.get("health") or {}
            print(
                "      %-16s %s: %s; health command %s"
                % (
                    a.get("name"),
                    "ok" if a.get("ok") else "FAILED",
                    a.get("error") or checks_text(a.get("checks")),
                    ("passed" if health.get("ok") else "FAILED (exit %s)" % health.get("rc"))
                    if health.get("ran")
                    else "not given",
                )
            )
        for skipped in n.get("skipped", []):
            print("      %-16s not restored: %s" % (skipped.get("name"), skipped.get("reason")))
    for problem in d.get("problems", []):
        print("    PROBLEM: %s" % problem)
    if checks.get("dir"):
        print("    report (signed by %s): %s/report.json" % (checks.get("signer"), checks["dir"]))
        print("                           %s/report.html" % checks["dir"])
        print("    ssh-keygen -Y verify -n nodekeep-drill: %s" % checks.get("ssh_keygen_verify"))


def checks_text(checks: dict[str, Any] | None) -> str:
    return ", ".join("%s %s" % (k.replace("_", " "), v) for k, v in (checks or {}).items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--demo-dir", default="/var/lib/nodekeep-demo")
    parser.add_argument("--inventory", default="inventories/demo/hosts.yml")
    args = parser.parse_args(argv)
    here = os.path.join(args.results, args.node)
    q = shlex.quote

    backups = [b for b in load_all(here, "backup-*.json") if b.get("epoch")]
    if not backups:
        print("demo_summary: no backup results in %s" % here, file=sys.stderr)
        return 1
    verifies = load_all(here, "verify-*.json")
    restores = load_all(here, "restore-*.json")
    drills = load_all(here, "drill-*.json")
    checks = load(os.path.join(here, "checks.json")) if os.path.exists(os.path.join(here, "checks.json")) else {}
    drill_checks_file = os.path.join(here, "checks-drill.json")
    drill_checks = load(drill_checks_file) if os.path.exists(drill_checks_file) else {}
    pitr_file = os.path.join(here, "checks-pitr.json")
    pitr = load(pitr_file) if os.path.exists(pitr_file) else {}

    print("Node %s, repository %s" % (args.node, backups[-1].get("repository")))
    print()
    print("Backups (one epoch per run, the live database kept changing in between):")
    for b in backups:
        plain = sum(
            (a.get("source") or {}).get("page_count", 0) * (a.get("source") or {}).get("page_size", 0)
            or a.get("content_size")
            or 0
            for a in b.get("artifacts", [])
        )
        stored = b.get("stored_bytes") or b.get("size")
        print(
            "  epoch %s  %s plain -> %s stored (zstd+age)  in %.2f s"
            % (b["epoch"], size(plain), size(stored), float(b.get("duration") or 0))
        )
        for a in b.get("artifacts", []):
            src = a.get("source") or {}
            pages = src.get("pages")
            if src.get("layout") == "pieces" and pages:
                print(
                    "    %-18s %s epoch: %d of %d pages changed, %d stored, %s of packs uploaded%s"
                    % (
                        a["name"],
                        "full" if src.get("full") else "incremental",
                        pages.get("changed", 0),
                        pages.get("total", 0),
                        pages.get("stored", 0),
                        size((src.get("pieces") or {}).get("uploaded_bytes")),
                        " (%s)" % src["full_reason"]
                        if src.get("full_reason")
                        else " (base %s)" % src.get("base_epoch"),
                    )
                )
            print(
                "    %-18s %s, %s pages, journal %s, integrity %s on the snapshot copy"
                % (
                    a["name"],
                    a.get("file"),
                    src.get("page_count", "?"),
                    src.get("journal_mode", "?"),
                    src.get("integrity", "?"),
                )
            )
    print()
    for v in verifies:
        print(
            "Verify %s%s: %s (signature %s against the controller's key)"
            % (
                v.get("epoch"),
                " (deep)" if v.get("deep") else "",
                "OK" if v.get("ok") else "FAILED",
                v.get("signature"),
            )
        )
        for a in v.get("artifacts", []):
            detail = ["checksum %s" % a.get("checksum", "-")]
            if a.get("deep"):
                detail.append("decrypted %s" % a["deep"])
            if a.get("checks"):
                detail.append(checks_text(a["checks"]))
            print("    %-18s %s (%.2f s)" % (a["name"], ", ".join(detail), float(a.get("seconds") or 0)))
        for problem in v.get("problems", []):
            print("    PROBLEM: %s" % problem)
    for r in restores:
        print()
        print("Restore of epoch %s into %s (staged; live data untouched):" % (r.get("epoch"), r.get("staging")))
        for a in r.get("artifacts", []):
            print("    %-18s -> %s" % (a["name"], a.get("path")))
            print(
                "    %-18s    %s, %s, in %.2f s"
                % ("", size(a.get("size")), checks_text(a.get("checks")), float(a.get("seconds") or 0))
            )
    if checks:
        print()
        print("Checked with standard tools (sqlite3, age, zstd, ssh-keygen):")
        print("    restored DB PRAGMA integrity_check: %s" % checks.get("integrity_check"))
        print(
            "    %d restored rows, %d differ from the live DB; %d half-restored transactions; %d seq gaps"
            % (
                checks.get("restored_rows", 0),
                checks.get("rows_differing_from_live", 0),
                checks.get("half_restored_transactions", 0),
                checks.get("seq_gaps", 0),
            )
        )
        newest = parse_time(checks.get("restored_newest_row"))
        restored_at = parse_time(restores[-1].get("recorded_at")) if restores else None
        if newest and restored_at:
            print(
                "    recovery point: newest restored row written %s (epoch %s); %.1f s old when restored"
                % (
                    checks.get("restored_newest_row"),
                    checks.get("epoch"),
                    max(0.0, (restored_at - newest).total_seconds()),
                )
            )
        print("    the live DB has %d rows now (the writer kept going)" % checks.get("live_rows_now", 0))
        print("    age -d | zstd -d of the artifact: SHA-256 matches the manifest")
        print("    ssh-keygen -Y verify: %s" % checks.get("ssh_keygen_verify"))
    for d in drills:
        print()
        print_drill(d, drill_checks if d is drills[-1] else {})

    if pitr:
        print()
        print("Point-in-time restore (playbooks/stream.yml replicating, then restore.yml):")
        print(
            "    chain %s: base epoch + %d signed WAL segments shipped by nodekeep-stream@node-db"
            % (pitr.get("chain"), pitr.get("segments", 0))
        )
        print(
            "    asked for %s -> restored the commit seen at %s" % (pitr.get("asked"), pitr.get("restored_commit_time"))
        )
        print(
            "    %s: integrity_check %s, %d rows up to seq %d, %d differ from the live DB; %d half-restored"
            " transactions; %d seq gaps; the live DB has %d later rows"
            % (
                pitr.get("output"),
                pitr.get("integrity_check"),
                pitr.get("rows", 0),
                pitr.get("max_seq", 0),
                pitr.get("rows_differing_from_live", 0),
                pitr.get("half_restored_transactions", 0),
                pitr.get("seq_gaps", 0),
                pitr.get("live_rows_after", 0),
            )
        )

    epoch = checks.get("epoch") or backups[-1]["epoch"]
    repository = backups[-1].get("repository") or os.path.join(args.demo_dir, "repository")
    epoch_dir = os.path.join(repository, args.node, epoch)
    artifact = checks.get("artifact") or os.path.join(
        epoch_dir, (backups[-1]["artifacts"] or [{}])[0].get("file", "ARTIFACT")
    )
    identity = checks.get("identity") or os.path.join(args.demo_dir, "age", "identity.txt")
    allowed = checks.get("allowed_signers") or os.path.join(args.demo_dir, "allowed_signers")
    restored = checks.get("restored_db") or "(see the restore result)"
    print()
    print("Where things are:")
    print("    epochs            %s" % os.path.join(repository, args.node))
    print("    last run record   %s" % os.path.join(repository, args.node, "last-backup.json"))
    print("    restored DB       %s" % restored)
    print("    live DB           %s" % (checks.get("live_db") or os.path.join(args.demo_dir, "node", "node.db")))
    print("    age identity      %s (0600; the only key that decrypts the demo's artifacts)" % identity)
    print(
        "    node public key   %s (the controller's trust anchor)"
        % (checks.get("public_key") or "inventories/demo/keys/")
    )
    if drill_checks.get("dir"):
        print("    drill report      %s/report.html (page), report.json, report.json.sig" % drill_checks["dir"])
    print("    JSON results      %s" % here)
    print()
    print("Inspect by hand:")
    print("    ls -l %s" % q(epoch_dir))
    print("    python3 -m json.tool %s" % q(os.path.join(epoch_dir, "manifest.json")))
    if artifact.endswith(".pages.jsonl.zst.age"):
        # an incremental epoch: its page map and the node's pieces rebuild the file (age, zstd, jq, coreutils)
        print(
            "    rm -f /tmp/node-db.sqlite; bash scripts/restore-by-hand.sh %s %s %s %s %s /tmp/node-db.sqlite"
            % (
                q(repository),
                q(args.node),
                q(os.path.basename(epoch_dir)),
                q(os.path.basename(artifact).split(".")[0]),
                q(identity),
            )
        )
    else:
        print("    age -d -i %s %s | zstd -d > /tmp/node-db.sqlite" % (q(identity), q(artifact)))
    print("    sqlite3 /tmp/node-db.sqlite 'PRAGMA integrity_check; SELECT count(*), max(seq) FROM chain;'")
    print(
        "    ssh-keygen -Y verify -f %s -I %s -n nodekeep-manifest -s %s < %s"
        % (
            q(allowed),
            q(args.node),
            q(os.path.join(epoch_dir, "manifest.json.sig")),
            q(os.path.join(epoch_dir, "manifest.json")),
        )
    )
    if drill_checks.get("dir"):
        print(
            "    ssh-keygen -Y verify -f %s -I %s -n nodekeep-drill -s %s < %s"
            % (
                q(drill_checks.get("allowed_signers", "ALLOWED_SIGNERS")),
                q(drill_checks.get("signer", "STAGING_HOST")),
                q(os.path.join(drill_checks["dir"], "report.json.sig")),
                q(os.path.join(drill_checks["dir"], "report.json")),
            )
        )
        print(
            "    ANSIBLE_COLLECTIONS_PATH=build/collections .venv/bin/ansible-playbook -i %s playbooks/drill.yml"
            % q(args.inventory)
        )
    print(
        "    ANSIBLE_COLLECTIONS_PATH=build/collections .venv/bin/ansible-playbook -i %s playbooks/verify.yml -e nodekeep_verify_epoch=%s"
        % (q(args.inventory), q(backups[0]["epoch"]))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
