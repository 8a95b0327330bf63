#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: epoch_prune
short_description: Apply a retention policy to a node's epochs, locally and on S3, respecting Object Lock
version_added: 0.1.0
description:
  - Keeps the epochs a policy selects (C(keep_last), C(keep_hourly), C(keep_daily), C(keep_weekly), C(keep_monthly),
    C(keep_yearly), C(keep_within)) and removes the others, with the same policy on the local repository and on
    every S3 target.
  - The policy is computed per copy from its complete epochs whose signed manifest verifies against O(public_key);
    an epoch whose signature does not verify is neither counted nor removed (it is reported in C(unverified)).
    Periods are UTC; the newest epoch is always kept, and a policy that keeps nothing is refused.
  - An epoch is removed whole or not at all. On S3 every object version is checked first; if one is under
    Object Lock or legal hold, nothing of the epoch is removed and it is reported in C(locked). Locks are never
    bypassed. Otherwise the signature goes first (the epoch stops counting at once), then the rest.
  - Incomplete epochs (no signed manifest, left by a failed run) older than O(incomplete_grace) are removed too;
    on S3 the unfinished multipart uploads of the node older than that are aborted.
  - Run it with the pruner credentials (C(docs/s3.md)); the writer credentials of M(nodekeep.backup.epoch_copy)
    are refused deletes by the server.
  - See C(docs/retention.md) for how periods are counted and how the policy and Object Lock fit together.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._repository
  - nodekeep.backup._s3
  - nodekeep.backup._retention
  - nodekeep.backup._attributes.REPOSITORY
attributes:
  check_mode:
    support: full
    details:
      - In check mode (as with O(dry_run=true)) the plan is computed, locks are inspected, and nothing is removed.
      - Check mode reports C(changed) when the real run would remove an epoch or an object; O(dry_run=true)
        outside check mode never reports C(changed) (nothing changed). RV(summary) lists every epoch kept and
        removed with the rule that keeps it or why it goes, as C(restic forget --dry-run) does.
  diff_mode:
    support: full
    details:
      - With C(--diff), one diff per copy, the epochs before and after retention, one line each (the removed
        ones, or in check mode the ones that would be removed, are the lines that go).
  idempotent:
    support: full
    details: A second run with the same policy finds nothing more to remove.
options:
  public_key:
    description: The node's Ed25519 public key (C(ssh-ed25519 AAAA...)) held on the controller.
    type: str
    required: true
  prune_local:
    description:
      - Apply the policy to O(repository) too, normally the local repository. An C(s3://) O(repository) is pruned
        the same way, with the AWS credentials of the host the module runs on (its report's C(location) is the URL).
    type: bool
    default: true
  dry_run:
    description: Report what would be removed and why, and remove nothing (the same as check mode).
    type: bool
    default: false
  prune_incomplete:
    description: Remove incomplete epochs older than O(incomplete_grace).
    type: bool
    default: true
  pending_epoch:
    description:
      - In a dry run only (check mode or O(dry_run=true)), count this epoch name (C(YYYYMMDDTHHMMSSZ)) as if it
        existed, as the newest epoch a backup in check mode would make, so that the preview removes what the real
        run after that backup will remove. It is reported in C(kept) with C(pending=true). Refused when epochs
        would really be removed.
    type: str
  incomplete_grace:
    description:
      - Age after which an incomplete epoch is considered abandoned rather than a backup still running,
        and after which unfinished S3 multipart uploads are aborted.
    type: str
    default: 1d
requirements:
  - cryptography
  - boto3 (for S3 targets)
seealso:
  - module: nodekeep.backup.epoch_copy
  - module: nodekeep.backup.epoch_info
"""

EXAMPLES = r"""
- name: Show what the policy would remove, locally and off-site
  nodekeep.backup.epoch_prune:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    dry_run: true
    targets:
      - bucket: fleet-backups
        prefix: nodekeep
        access_key: "{{ vault_s3_pruner_access_key }}"
        secret_key: "{{ vault_s3_pruner_secret_key }}"
  register: plan

- name: List what would go, and why
  ansible.builtin.debug:
    msg: "{{ item.location }}: {{ item.removed | map(attribute='epoch') | list }} (locked: {{ item.locked | length }})"
  loop: "{{ plan.copies }}"

- name: Print every epoch kept or removed with its reason, as restic forget --dry-run does
  ansible.builtin.debug:
    var: plan.summary

- name: Apply it
  nodekeep.backup.epoch_prune:
    node: "{{ inventory_hostname }}"
    public_key: "{{ lookup('ansible.builtin.file', inventory_dir ~ '/keys/' ~ inventory_hostname ~ '.pub') }}"
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 12
    targets:
      - bucket: fleet-backups
        prefix: nodekeep
        access_key: "{{ vault_s3_pruner_access_key }}"
        secret_key: "{{ vault_s3_pruner_secret_key }}"
  register: pruned
"""

RETURN = r"""
copies:
  description: One report per copy (the local repository first, then each target).
  returned: always
  type: list
  elements: dict
  contains:
    location:
      description: The repository (a path or C(s3://BUCKET/PREFIX)).
      type: str
      sample: s3://fleet-backups/nodekeep
    kind:
      description: V(local) or V(s3).
      type: str
      sample: s3
    kept:
      description: Epochs kept, each with the rules that keep it.
      type: list
      elements: dict
      sample: [{epoch: 20261122T023000Z, reasons: ["last 1", "daily 2026-11-22 (1 of 7)", "monthly 2026-11 (1 of 12)"]}]
    removed:
      description: Epochs removed (or, in a dry run, that would be removed, with C(dry_run=true)), and why.
      type: list
      elements: dict
      sample: [{epoch: 20261001T023000Z, reasons: ["no rule keeps it (policy: daily 7, weekly 4, monthly 12 (pick first of each period))"]}]
    locked:
      description: Epochs the policy drops but that have locked objects; nothing of them was removed.
      type: list
      elements: dict
      sample:
        - epoch: 20261001T023000Z
          reasons: ["no rule keeps it (...)", "not removed: 3 object(s) locked (COMPLIANCE until 2026-12-01T02:30:00Z)"]
          objects: [{name: manifest.json.sig, lock_mode: COMPLIANCE, retain_until: "2026-12-01T02:30:00Z", legal_hold: false}]
    unverified:
      description: Complete epochs whose signature does not verify; neither counted nor removed.
      type: list
      elements: dict
      sample: []
    incomplete:
      description: Incomplete epochs left alone (younger than O(incomplete_grace), or O(prune_incomplete=false)).
      type: list
      elements: dict
      sample: [{epoch: 20261122T030000Z, reasons: ["incomplete but younger than 1d: it may still be running"]}]
    changes:
      description: Whether something is removed from this copy (in a dry run, would be).
      type: bool
      sample: true
    summary:
      description: This copy's plan as lines, every epoch kept or removed with its reasons (see RV(summary)).
      type: list
      elements: str
      sample: ["keep 1 epoch:", "  20261122T023000Z  last 1"]
    errors:
      description: Epochs whose removal failed (for example refused by the server), with the error.
      type: list
      elements: dict
      sample: []
    aborted_uploads:
      description: On S3, keys of unfinished multipart uploads that were aborted.
      type: list
      elements: str
      sample: []
    objects:
      description:
        - Garbage collection of the content-addressed objects of V(files) assets, after the epochs were removed.
        - An object is removed only when no remaining complete epoch references it, it is older than
          O(incomplete_grace), it is not locked, and no backup younger than that is still running.
      type: dict
      sample: {total: 2000, referenced: 1980, removed: 20, removed_bytes: 81920, young: 0, locked: 0, missing: 0}
removed:
  description: Number of epochs removed in all copies (would be removed, in a dry run).
  returned: always
  type: int
  sample: 3
locked:
  description: Number of epochs skipped because of Object Lock, in all copies.
  returned: always
  type: int
  sample: 1
dry_run:
  description: Whether nothing was removed on purpose (O(dry_run) or check mode).
  returned: always
  type: bool
  sample: false
summary:
  description:
    - Every copy's plan as lines an operator reads, as C(restic forget --dry-run) prints it - each epoch kept with the
      rules that keep it (C(last N), C(daily 2026-11-22 (1 of 7)), C(within 7d of the newest epoch), the newest
      epoch, a kept epoch's snapshot chain, the newest replication chain's base), each epoch removed (or that would
      be) and why, epochs kept by Object Lock, unverified and incomplete epochs, and the objects collected.
  returned: always
  type: list
  elements: str
  sample:
    - "/var/backups/nodekeep (local), node db1, policy: last 1, daily 7 (pick first of each period) [dry run: nothing removed]"
    - "keep 2 epochs:"
    - "  20261121T023000Z  daily 2026-11-21 (2 of 7)"
    - "  20261122T023000Z  last 1; daily 2026-11-22 (1 of 7)"
    - "would remove 1 epoch:"
    - "  20261001T023000Z  no rule keeps it (policy: last 1, daily 7 (pick first of each period))"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import (
    REPOSITORY_OPTIONS,
    RETENTION_OPTIONS,
    argspec,
    require_libraries,
    run,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    parse_calendar_duration,
    subtract_duration,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import (
    apply_retention,
    retention_diff,
    retention_summary,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3_TARGET_OPTIONS


def main():
    module = AnsibleModule(
        argument_spec=argspec(
            REPOSITORY_OPTIONS,
            RETENTION_OPTIONS,
            public_key={"type": "str", "required": True, "no_log": False},
            prune_local={"type": "bool", "default": True},
            targets={"type": "list", "elements": "dict", "default": [], "options": S3_TARGET_OPTIONS},
            dry_run={"type": "bool", "default": False},
            pending_epoch={"type": "str"},
            prune_incomplete={"type": "bool", "default": True},
            incomplete_grace={"type": "str", "default": "1d"},
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["targets"]:
        require_libraries(module, "boto3")
    require_libraries(module, "cryptography")
    dry_run = params["dry_run"] or module.check_mode

    def action():
        policy = RetentionPolicy.from_options(params)
        grace = parse_calendar_duration(params["incomplete_grace"], "incomplete_grace")
        if not params["prune_local"] and not params["targets"]:
            raise NodekeepError("nothing to prune: prune_local is false and no target was given", "set one of them")
        copies = []
        if params["prune_local"]:
            copies.append(("local", lambda: open_repository(params["repository"], create=False)))
        for spec in params["targets"]:
            copies.append(
                (
                    spec.get("name") or "s3://%s/%s" % (spec["bucket"], spec.get("prefix") or ""),
                    lambda spec=spec: S3Repository.from_spec(spec),
                )
            )
        reports = []
        for name, opener in copies:
            try:
                repository = opener()
                report = apply_retention(
                    repository,
                    params["node"],
                    policy,
                    params["public_key"],
                    dry_run=dry_run,
                    prune_incomplete=params["prune_incomplete"],
                    incomplete_grace=params["incomplete_grace"],
                    pending_epoch=params["pending_epoch"],
                )
                if getattr(repository, "kind", "") == "s3" and params["prune_incomplete"]:
                    report["aborted_uploads"] = (
                        [] if dry_run else repository.abort_stale_uploads(params["node"], subtract_now(grace))
                    )
            except NodekeepError as exc:
                report = {
                    "location": name,
                    "node": params["node"],
                    "dry_run": dry_run,
                    "changes": False,
                    "kept": [],
                    "removed": [],
                    "locked": [],
                    "unverified": [],
                    "incomplete": [],
                    "errors": [{"error": exc.message}],
                }
            report["name"] = name
            report["summary"] = retention_summary(report)
            reports.append(report)
        changes = any(r["changes"] for r in reports)
        result = {
            # check mode says what the real run would change; dry_run outside check mode changes nothing
            "changed": changes and (module.check_mode or not params["dry_run"]),
            "dry_run": dry_run,
            "copies": reports,
            "removed": sum(len([e for e in r["removed"] if not e.get("pending")]) for r in reports),
            "locked": sum(len(r["locked"]) for r in reports),
            "summary": [line for r in reports for line in r["summary"]],
        }
        if module._diff:
            result["diff"] = [retention_diff(r) for r in reports]
        errors = [(r["name"], e) for r in reports for e in r["errors"]]
        if errors:
            module.fail_json(
                msg="retention failed in part: %s"
                % "; ".join(
                    "%s: %s%s" % (n, e.get("epoch", "") and e["epoch"] + ": ", e.get("error")) for n, e in errors
                ),
                **result,
            )
        return result

    run(module, action)


def subtract_now(duration):
    """The timedelta between now and now minus a calendar duration."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    return now - subtract_duration(now, duration)


if __name__ == "__main__":
    main()
