#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: epoch_copy
short_description: Copy a node's complete epochs from the local repository to S3 (the off-site copies of 3-2-1)
version_added: 0.1.0
description:
  - Replicates complete epochs of a node from the local repository to one or more S3 targets, for example a
    bucket with Object Lock at another provider.
  - Only epochs whose C(manifest.json) signature verifies against O(public_key) are copied. Each artifact is
    streamed as it is (still age-encrypted, so the bucket never sees plaintext) as a multipart upload whose parts
    carry SHA-256 checksums the server checks; the artifact's SHA-256 is compared with the manifest before the
    object is committed, then C(manifest.json) is uploaded, then C(manifest.json.sig) last. An epoch without its
    signature object is incomplete by definition, so an interrupted copy never looks like a backup.
  - For V(files) assets, the content-addressed objects the target lacks are copied before C(manifest.json),
    O(targets[].object_workers) at a time, four by default (objects of at least O(targets[].part_size), multipart
    uploads, one at a time beside them), each checked like an artifact; reused objects have their Object Lock
    extended to the new epoch's. The first failure stops the copy of the epoch before its manifest; the objects
    already copied are kept and reused by the next run.
  - Keys are write-once (C(If-None-Match), checked with a C(HEAD) first). Object Lock mode and retain-until
    (per epoch, from O(targets[].object_lock_mode), O(targets[].retain_days) and O(targets[].lock_periods)),
    legal hold and server-side encryption are confirmed with a C(HEAD) of every stored object.
  - An interrupted copy continues on the next run. Artifacts already at the target are checked against the
    manifest and kept, and an upload cut by the network resumes part by part (parts whose checksums match
    are not sent again). Any other failure aborts the multipart upload, so nothing partial stays visible.
  - Run it with the append-only writer credentials (put, get, list); they cannot delete anything
    (C(docs/s3.md)). Retention runs separately with the pruner credentials (M(nodekeep.backup.epoch_prune)).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._progress
  - nodekeep.backup._s3
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details: Lists what would be copied to each target (reading the targets' listings) and writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: An epoch already complete at a target is skipped, so a second run copies nothing and reports no change.
options:
  public_key:
    description:
      - The node's Ed25519 public key (C(ssh-ed25519 AAAA...)) held on the controller. Epochs whose manifest
        signature does not verify are not copied.
    type: str
    required: true
  epochs:
    description:
      - Which complete local epochs to copy, oldest first. V(all) (every complete epoch not yet complete at a
        target, so a target that was down catches up), V(latest), or epoch names.
    type: list
    elements: str
    default: [all]
  verify:
    description:
      - After copying an epoch, read it back from the target and check every artifact's SHA-256 against the
        manifest (costs a download of the epoch).
    type: bool
    default: false
notes:
  - With several targets, a failing target does not stop the others; the task fails at the end and reports
    each target.
requirements:
  - boto3
  - cryptography
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.epoch_prune
  - module: nodekeep.backup.integrity_check
"""

EXAMPLES = r"""
- name: Back up the node locally
  nodekeep.backup.epoch_backup:
    node: "{{ inventory_hostname }}"
    assets: "{{ nodekeep_assets }}"
    recipients: "{{ nodekeep_age_recipients }}"
  register: backup

- name: Copy the new epoch (and any a previous run missed) off-site
  nodekeep.backup.epoch_copy:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    targets:
      - name: offsite-eu
        bucket: fleet-backups
        prefix: nodekeep
        region: eu-central-1
        access_key: "{{ vault_s3_writer_access_key }}"
        secret_key: "{{ vault_s3_writer_secret_key }}"
        object_lock_mode: GOVERNANCE
        retain_days: 35
        lock_periods:
          monthly: {mode: COMPLIANCE, days: 400}
        bandwidth_limit: 20M
  register: copied

- name: Show what went off-site
  ansible.builtin.debug:
    msg: "{{ item.name }}: copied {{ item.copied | map(attribute='epoch') | list }}, skipped {{ item.skipped | length }}"
  loop: "{{ copied.targets }}"
"""

RETURN = r"""
epochs:
  description: The complete local epochs considered (oldest first).
  returned: success
  type: list
  elements: str
  sample: [20261121T023000Z, 20261122T023000Z]
targets:
  description: One report per target.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The target's name (or C(s3://BUCKET/PREFIX)).
      type: str
      sample: offsite-eu
    location:
      description: C(s3://BUCKET/PREFIX).
      type: str
      sample: s3://fleet-backups/nodekeep
    ok:
      description: Whether every epoch reached the target.
      type: bool
      sample: true
    copied:
      description:
        - Epochs copied in this run, with bytes, seconds, rate and per object the version, lock and the number of
          parts a resumed upload did not send again.
        - For epochs with V(files) assets, C(contents) counts the content-addressed objects copied before the
          manifest (C(objects)), those the target already had (C(present)), and the locks extended on reused
          objects (C(locks_extended)); C(bytes) includes the objects.
      type: list
      elements: dict
      sample:
        - epoch: 20261122T023000Z
          status: copied
          bytes: 272629760
          seconds: 14.2
          rate_mib_s: 18.3
          resumed_parts: 0
          objects:
            - {file: node-db.sqlite.zst.age, size: 272629760, lock_mode: COMPLIANCE,
               retain_until: "2027-12-27T02:30:00Z", version_id: 3HL4kqtJlcpXroDTDmjVBH40Nrjfkd}
    skipped:
      description: Epochs already complete at the target.
      type: list
      elements: str
      sample: [20261121T023000Z]
    would_copy:
      description: In check mode, the epochs that would be copied.
      type: list
      elements: str
      sample: [20261122T023000Z]
    failed:
      description: The epoch whose copy failed and why (the copy stopped there; it resumes on the next run).
      type: dict
      sample: {epoch: 20261122T023000Z, error: "Failed to upload part 3 of s3://...: ..."}
    verify:
      description: With O(verify=true), the verification report of each copied epoch read back from the target.
      type: list
      elements: dict
      sample: [{epoch: 20261122T023000Z, ok: true, signature: valid}]
    throttled_seconds:
      description: Wall-clock time spent waiting for O(targets[].bandwidth_limit) (transfers waiting side by side
        count once).
      type: float
      sample: 0.0
    throttled_bytes:
      description: Bytes that went through the O(targets[].bandwidth_limit) bucket (uploads and read-backs).
      type: int
      sample: 0
    bandwidth_limit:
      description: The limit in bytes per second (V(0) is none).
      type: int
      sample: 0
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    REPOSITORY_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.progress_file import PROGRESS_OPTIONS, tracked
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import replicate, select_epochs
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3_TARGET_OPTIONS


def _target_name(spec):
    return spec.get("name") or "s3://%s/%s" % (spec.get("bucket"), spec.get("prefix") or "")


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            PROGRESS_OPTIONS,
            public_key={"type": "str", "required": True, "no_log": False},
            epochs={"type": "list", "elements": "str", "default": ["all"]},
            targets={"type": "list", "elements": "dict", "default": [], "options": S3_TARGET_OPTIONS},
            verify={"type": "bool", "default": False},
        ),
        supports_check_mode=True,
    )
    require_libraries(module, "boto3", "cryptography")
    params = module.params
    node = params["node"]

    def action():
        if not params["targets"]:
            raise NodekeepError("no S3 target was given", "list at least one bucket in targets")
        source = open_repository(params["repository"], create=False)
        epochs = select_epochs(source, node, params["epochs"])
        reports = []
        for spec in params["targets"]:
            name = _target_name(spec)
            try:
                target = S3Repository.from_spec(spec)
                if module.check_mode:
                    complete = set(target.complete_epochs(node))
                    reports.append(
                        {
                            "name": name,
                            "location": target.location,
                            "ok": True,
                            "would_copy": [e for e in epochs if e not in complete],
                            "skipped": [e for e in epochs if e in complete],
                            "copied": [],
                        }
                    )
                    continue
                report = replicate(source, target, node, epochs, params["public_key"], name=name)
                if params["verify"]:
                    report["verify"] = [
                        verify_epoch(target, node, entry["epoch"], params["public_key"]) for entry in report["copied"]
                    ]
                    if not all(v["ok"] for v in report["verify"]):
                        report["ok"] = False
                report.update(target.transfer_stats())
            except NodekeepError as exc:
                report = {"name": name, "ok": False, "copied": [], "skipped": [], "failed": {"error": exc.message}}
            reports.append(report)
        result = {
            "changed": any(r.get("copied") or r.get("would_copy") for r in reports),
            "epochs": epochs,
            "targets": reports,
        }
        failed = [r for r in reports if not r["ok"]]
        if failed:
            module.fail_json(
                msg="copy to %d of %d target(s) failed: %s"
                % (
                    len(failed),
                    len(reports),
                    "; ".join(
                        "%s: %s" % (r["name"], (r.get("failed") or {}).get("error", "verification failed"))
                        for r in failed
                    ),
                ),
                **result,
            )
        return result

    run(module, tracked(params, "copy", action))


if __name__ == "__main__":
    main()
