#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: integrity_check
short_description: Verify an epoch's signed manifest, checksums and, on request, the data itself
version_added: 0.1.0
description:
  - Checks the Ed25519 signature of the epoch's C(manifest.json) against the node's public key supplied by
    the controller (a key found next to the data is never trusted). Nothing else is read from an epoch whose
    signature does not verify.
  - Checks the size and SHA-256 of every artifact (or the ones named in O(artifacts)) against the manifest.
  - With O(deep=true), decrypts and decompresses each artifact into private scratch space in the same pass,
    compares the content checksum, and runs the asset's own check (C(PRAGMA integrity_check) for SQLite,
    unless the manifest records it passed on the captured copy, which the matching SHA-256 then proves, said in
    C(checks.integrity_proven)), then removes the scratch copy.
  - With O(signing_key) and O(deep=true), records a signed integrity proof (C(ASSET.proof.json), write-once,
    beside the manifest) for each SQLite artifact whose full C(PRAGMA integrity_check) ran here (its capture
    ran only C(quick_check)); a later restore that proves the same sealed bytes trusts it and does not run the
    check again (docs/incremental.md, check policy).
  - With O(targets), verifies the same epoch in the local repository and in each off-site copy and reports
    per copy (RV(copies)).
  - With O(subset=N/T), a rolling verification. It checks every signature of every complete epoch, and the share of
    artifacts assigned to run N of a cycle of T runs, so that T runs read every artifact once (on every copy).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._progress
  - nodekeep.backup._repository.EPOCH
  - nodekeep.backup._repository.AGE_IDENTITIES
  - nodekeep.backup._s3
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details: Verification only reads; it runs the same in check mode, where no integrity proof is recorded.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Changes nothing but, with O(signing_key), the integrity proofs it records (C(changed) then true); a
        second run keeps the first proofs and reports C(changed=false).
options:
  deep:
    description: Also decrypt each artifact and run its asset check. Needs O(identities) or O(identity_files).
    type: bool
    default: false
  signing_key:
    description:
      - The node's signing key (Ed25519, the one O(public_key) belongs to; the agent role's
        C(nodekeep_signing_key_path)). With O(deep=true) and O(check=integrity), records a signed proof of each
        SQLite artifact's full C(PRAGMA integrity_check) that ran here (C(proof) in RV(artifacts)).
      - A key that is not the node's is refused before anything is read. With O(targets) each copy gets its own
        proof (its image was rebuilt from its own bytes), with O(subset) each epoch checked by this run. A
        repository that refuses the write (read-only credentials) is reported in C(proof.error); the verified data
        stays ok.
    type: path
  scratch_dir:
    description:
      - Private directory for deep-check copies. Defaults to C(.scratch) in a local repository, and to
        C($TMPDIR/nodekeep-scratch-UID) (private to the user) with an C(s3://) repository or a local one this run
        may only read (a read-only mount). A directory given here that is not writable is refused, saying so.
    type: path
  subset:
    description:
      - Rolling verification, V(N/T) (run N of a cycle of T, 1-based) or V(daily/T) (the run is taken from
        the UTC date, so a daily timer needs no state). O(epoch) and O(artifacts) are ignored then.
      - T is 1 to 10000 and N 1 to T; anything else is refused, quoted as given.
    type: str
  fail_on_error:
    description:
      - Fail the task when anything does not verify. With V(false) the report is returned with RV(ok=false).
      - Errors that prevent any check at all (no repository, no complete epoch, a malformed public key) fail in any case.
    type: bool
    default: true
requirements:
  - pyrage
  - zstandard
  - cryptography
  - apsw
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.epoch_restore
"""

EXAMPLES = r"""
- name: Verify the latest epoch, decrypting it
  nodekeep.backup.integrity_check:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    deep: true
    identity_files:
      - /root/.config/nodekeep/age-identity.txt
  register: verified

- name: Report
  ansible.builtin.debug:
    msg: "{{ verified.epoch }}: signature {{ verified.signature }}, {{ verified.artifacts | length }} artifacts ok"
"""

RETURN = r"""
asset_warnings:
  description:
    - What an asset's check says the operator must know, also printed as Ansible warnings - a PostgreSQL dump
      loaded without its owners, GRANTs and default privileges (the restoring role is not a superuser, or the
      epoch has no globals), or with its objects in the default tablespace (a tablespace the cluster lacks).
  returned: when an asset's check has one
  type: list
  elements: str
  sample: ["shop-pg of shop was loaded into shop_check WITHOUT its owners, GRANTs and default privileges ..."]
rollback:
  description:
    - Warnings of the rollback check with O(on_rollback=warn) (the newest epoch the controller recorded,
      O(known_latest), is missing from a checked repository). Empty when none.
  returned: always
  type: list
  elements: str
  sample: []
ok:
  description: Whether the signature and every checked artifact verified.
  returned: always
  type: bool
  sample: true
epoch:
  description: The epoch that was verified.
  returned: always
  type: str
  sample: 20261122T023000Z
signature:
  description: V(valid) or V(invalid).
  returned: always
  type: str
  sample: valid
artifacts:
  description:
    - Per artifact, what was checked and the result.
    - C(extra) holds the checks beyond the artifact's own checksum, for types that have them. V(files) reports
      C(objects) and C(objects_ok) (every object the tree needs exists with its checksum) and, when deep with a
      C(sample), C(sample) (files restored and compared with the live tree); V(config) reports C(live)
      (V(same), V(differs), V(absent) or V(unreadable)).
    - C(proof) (with O(signing_key)) - C(file), the integrity proof recorded beside the manifest, and C(written),
      false when an earlier run's proof was kept or the repository refused the write (then C(error) says why).
      C(checks.check_how) says what exactly ran.
  returned: always
  type: list
  elements: dict
  sample:
    - name: node-db
      asset_type: sqlite
      ok: true
      checksum: ok
      deep: ok
      checks: {integrity: ok, page_count: 130240, check_how: PRAGMA integrity_check}
      proof: {file: node-db.proof.json, written: true}
copies:
  description: With O(targets) or O(subset), one report per copy (local first), each with its C(location).
  returned: when O(targets) or O(subset) is given
  type: list
  elements: dict
  sample:
    - {location: /var/backups/nodekeep, ok: true, epoch: 20261122T023000Z, signature: valid, problems: []}
    - {location: s3://offsite/nodekeep, ok: true, epoch: 20261122T023000Z, signature: valid, problems: []}
problems:
  description: Each problem found, in words.
  returned: always
  type: list
  elements: str
  sample: ["node-db: SHA-256 does not match the manifest (the artifact was modified or damaged)"]
stats:
  description:
    - What the run checked per asset and in total, like the backup's RV(nodekeep.backup.epoch_backup#module:stats),
      sizes in bytes - C(bytes) checked (the plaintext when O(deep), else the sealed bytes read), C(seconds),
      C(rate_bytes_per_second), C(result) (V(ok) or V(FAILED)) and C(proven) - what was proven (the signature, the
      sealed and, when deep, the plain size against the signed manifest - a secret's plain size only, it has no
      plain SHA-256 - and the asset's own check), or the problem of a failed asset.
    - Each artifact of each copy (named after the copy's location) with O(targets), each C(EPOCH/ASSET) with O(subset).
    - C(lines) is the same as a table in IEC units, which the verify role prints.
  returned: always, but not on an error before any check
  type: dict
  sample:
    assets:
      - {name: app-db, asset_type: sqlite, bytes: 4161536, seconds: 0.109, rate_bytes_per_second: 38179229.4,
         result: ok, proven: "signature, sealed SHA-256, plain size (age-authenticated), integrity ok (at capture, same bytes)"}
    total: {assets: 1, bytes: 4161536, seconds: 0.137, rate_bytes_per_second: 30376175.9, result: ok, proven: ""}
    lines:
      - "asset   type        checked   duration  throughput  result  proven"
      - "------------------------------------------------------------------"
      - "app-db  sqlite      3.97 MiB  0.1 s     36.4 MiB/s  ok      signature, sealed SHA-256, plain size (age-authenticated), integrity ok"
      - "total   1 asset(s)  3.97 MiB  0.1 s     29.0 MiB/s  ok"
progress:
  description:
    - Each asset's phases as they ended, the last live status of each (see O(progress_file) and
      C(docs/progress.md)); the action plugin prints them as one line each.
    - Only when O(progress_file) was set (the collection's action plugin sets it, unless check mode, the task's own
      C(async) or C(nodekeep_progress_interval=0)).
  returned: when O(progress_file) was set
  type: list
  elements: dict
  sample:
    - {asset: app-db, phase: seal, state: done, done_bytes: 61599744, total_bytes: 61599744, percent: 100.0,
       rate_bytes_per_second: 35651584.0, eta_seconds: 0.0, elapsed_seconds: 1.73, operation: backup, node: node1,
       asset_index: 1, assets: 1, format: nodekeep.progress/v1, run_seconds: 2.1, updated: "2026-12-07T13:59:22Z"}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    AGE_IDENTITY_OPTIONS,
    EPOCH_OPTIONS,
    REPOSITORY_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
from ansible_collections.nodekeep.backup.plugins.module_utils.core.signing import load_private_key
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.progress_file import PROGRESS_OPTIONS, tracked
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import (
    parse_subset,
    rolling_verify,
    verify_copies,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import check_rollback
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3_TARGET_OPTIONS
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.stats import verify_stats


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            PROGRESS_OPTIONS,
            AGE_IDENTITY_OPTIONS,
            EPOCH_OPTIONS,
            deep={"type": "bool", "default": False},
            scratch_dir={"type": "path"},
            fail_on_error={"type": "bool", "default": True},
            targets={"type": "list", "elements": "dict", "default": [], "options": S3_TARGET_OPTIONS},
            subset={"type": "str"},
            signing_key={"type": "path"},
        ),
        supports_check_mode=True,
    )
    require_libraries(module, "cryptography")
    params = module.params
    if params["deep"]:
        require_libraries(module, "pyrage", "zstandard", "apsw")

    if params["targets"]:
        require_libraries(module, "boto3")

    def run_subset(copies, options):
        run_number, runs = parse_subset(params["subset"])
        reports = [rolling_verify(c, params["node"], params["public_key"], run_number, runs, **options) for c in copies]
        return {
            "ok": all(r["ok"] for r in reports),
            "epoch": None,
            "signature": "valid" if all(r["ok"] or not r["problems"] for r in reports) else "see copies",
            "artifacts": [item for r in reports for item in r["checked"]],
            "problems": ["%s: %s" % (r["location"], p) for r in reports for p in r["problems"]],
            "subset": "%d/%d" % (run_number, runs),
            "copies": reports,
        }

    def action():
        started = time.monotonic()
        identities = None
        if params["deep"]:
            identities = load_identities(params["identities"], params["identity_files"])
        copies = [open_repository(params["repository"], create=False)]
        copies += [open_repository(dict(spec, type="s3")) for spec in params["targets"]]
        warnings = [
            text
            for copy in copies
            for text in check_rollback(
                copy, params["node"], params["known_latest"], params["public_key"], params["on_rollback"]
            )
        ]
        for text in warnings:
            module.warn(text)
        options = {
            "proof_key": load_private_key(params["signing_key"]) if params["signing_key"] and not module.check_mode else None,
            "deep": params["deep"],
            "identities": identities,
            "scratch_dir": params["scratch_dir"],
            "check": params["check"],
        }
        if params["subset"]:
            report = run_subset(copies, options)
        elif params["targets"]:
            result = verify_copies(
                copies,
                params["node"],
                params["epoch"],
                params["public_key"],
                artifacts=params["artifacts"] or None,
                **options,
            )
            report = dict(result["copies"][0])
            report["copies"] = result["copies"]
            report["ok"] = result["ok"]
            report["problems"] = ["%s: %s" % (r["location"], p) for r in result["copies"] for p in r["problems"]]
        else:
            report = verify_epoch(
                copies[0],
                params["node"],
                params["epoch"],
                params["public_key"],
                artifacts=params["artifacts"] or None,
                **options,
            )
        report["changed"] = _proofs_written(report)
        report["rollback"] = warnings
        report["stats"] = verify_stats(_checked(report), params["deep"], time.monotonic() - started)
        for text in report.get("asset_warnings") or []:
            module.warn(text)
        if not report["ok"] and params["fail_on_error"]:
            module.fail_json(
                msg="%s of %s does not verify: %s"
                % (
                    "epoch %s" % report["epoch"] if report.get("epoch") else "the rolling check",
                    params["node"],
                    "; ".join(report["problems"]),
                ),
                **report,
            )
        return report

    run(module, tracked(params, "verify", action))


def _proofs_written(report) -> bool:
    """Whether this run recorded an integrity proof (in any copy, any epoch of a rolling subset)."""
    entries = list(report.get("artifacts") or [])
    for copy in report.get("copies") or []:
        entries += copy.get("artifacts") or []
        for epoch in copy.get("epochs") or []:
            entries += epoch.get("results") or []
    return any(isinstance(e, dict) and (e.get("proof") or {}).get("written") for e in entries)


def _checked(report):
    """Every artifact the run checked: of each copy (named by its location when there are several), and of each
    epoch of a rolling subset (named EPOCH/ASSET)."""
    copies = report.get("copies") or [report]
    entries = []
    for copy in copies:
        where = "%s: " % copy["location"] if len(copies) > 1 and copy.get("location") else ""
        if "epochs" in copy:  # a rolling subset
            for epoch in copy["epochs"]:
                entries += [
                    dict(e, name="%s%s/%s" % (where, epoch["epoch"], e["name"])) for e in epoch.get("results", [])
                ]
        else:
            entries += [dict(e, name=where + e["name"]) for e in copy.get("artifacts", [])]
    return entries


if __name__ == "__main__":
    main()
