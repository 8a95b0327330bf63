#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: drill_report
short_description: Judge a restore drill against its RTO/RPO targets and store its signed report
version_added: 0.2.0
description:
  - Takes each node's raw drill result (the staged restore, its checks, the health commands run in staging and the
    moment the data was verified), measures RTO (drill start to verified data in staging) and RPO (drill start minus
    the restored epoch's start) per node and asset, compares them with the targets, and builds the report
    (format C(nodekeep.drill/v1), see C(docs/drills.md)).
  - Writes it into the repository beside the epochs, under C(REPOSITORY/_drills/SERIES/DRILL_ID/) -
    C(report.html) (a self-contained page with a chart of RTO and RPO over the last drills of the series, read back
    from the repository), C(report.json), and last its SSHSIG signature C(report.json.sig) (namespace
    C(nodekeep-drill)), checkable with C(ssh-keygen -Y verify). C(_drills) is never a node, so epochs, verify,
    restore and retention never see the reports. Write-once like epochs.
  - Optionally writes the drill's Prometheus textfile metrics.
  - The module does not fail when the drill failed; it returns RV(ok=false) and the problems, so the playbook
    can store the report first and fail afterwards.
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the report is built and returned (with C(changed=true) - a report would be written), and
        nothing is written.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Each drill writes a new report (a report is a record of an action).
options:
  repository:
    description:
      - The repository the report is stored in - an absolute path on the host the module runs on, or
        C(s3://BUCKET/PREFIX) (endpoint, region and credentials from that host's usual AWS sources, as for the
        O(nodekeep.backup.epoch_backup#module:repository) option of M(nodekeep.backup.epoch_backup) -
        C(AWS_ACCESS_KEY_ID), C(AWS_PROFILE) and C(~/.aws/), an instance role, C(AWS_ENDPOINT_URL) for a server
        other than AWS; a bucket with a default Object Lock retention locks the report like the epochs).
        Reports go to its C(_drills) area.
      - Point it at the repository whose epochs are kept longest, so the drill record outlives what it tested.
    type: str
    default: /var/backups/nodekeep
  series:
    description: The series of drills the report belongs to (its history and chart); a name such as V(weekly).
    type: str
    default: drill
  drill_id:
    description: The drill's id, its UTC start time C(YYYYMMDDTHHMMSSZ). Defaults to the one of O(started).
    type: str
  started:
    description: When the drill started, as a UNIX timestamp (seconds). RTO and RPO are measured from here.
    type: float
    required: true
  finished:
    description: When the drill's last node finished; defaults to now.
    type: float
  nodes:
    description:
      - "The drilled nodes, a mapping of each node name to its raw result as the drill role collects it (the fact
        C(nodekeep_drill_node_result)): C(restore) (the epoch_restore result - epoch, artifacts, manifest),
        C(failed_assets) (assets whose restore or deep check failed, each with C(name) and C(error)), C(started)
        and C(verified_at) (UNIX timestamps), C(staging_host), C(staging_path), C(health) (one entry per health
        command - the asset, C(rc), C(attempts), or C(skipped)), C(skipped) (assets not restored - names, or
        C(name) and C(reason)), C(error), C(targets) (C(rpo_seconds) and C(rto_seconds), seconds or texts such as
        V(5m)) and C(asset_targets) (per asset name, the same keys)."
      - An empty result means the node's drill did not run; the node fails the drill.
    type: dict
    required: true
  labels:
    description: Free-form labels recorded in the report (for example the AWX job id).
    type: dict
    default: {}
  signing_key:
    description: The Ed25519 private key (OpenSSH format, mode 0600) that signs the report, on the host the module runs on.
    type: path
    default: /etc/nodekeep/signing_key
  public_key:
    description:
      - The public key (C(ssh-ed25519 ...)) that signed the earlier reports of the series. When given, only earlier
        reports whose signature verifies are charted; otherwise every complete one is (marked unchecked).
    type: str
  history:
    description: How many earlier drills of the series the chart shows, from V(0) to V(10000).
    type: int
    default: 20
  reporter:
    description: Who signs the report (recorded in it), usually the inventory name of the host the module runs on.
    type: str
    default: ""
  metrics_dir:
    description:
      - A node_exporter textfile collector directory; when set, C(nodekeep_drill.prom) is written there atomically.
        Labels are series and node names only.
    type: path
notes:
  - Runs on the host that stores the report (the drill role uses the first staging host), with the Python of the
    agent role's virtualenv (cryptography).
requirements:
  - cryptography
seealso:
  - module: nodekeep.backup.epoch_restore
  - module: nodekeep.backup.integrity_check
"""

EXAMPLES = r"""
- name: Store the drill's report in the staging host's repository
  nodekeep.backup.drill_report:
    repository: /var/backups/nodekeep
    started: "{{ nodekeep_drill_started }}"
    nodes:
      animica-main-1: "{{ hostvars['animica-main-1'].nodekeep_drill_node_result }}"
    signing_key: /etc/nodekeep/signing_key
  register: drill

- name: Fail the job when the drill failed (after the report was stored)
  ansible.builtin.fail:
    msg: "{{ drill.problems | join('; ') }}"
  when: not drill.ok
"""

RETURN = r"""
ok:
  description: Whether every node was restored, every check and health command passed and every target was met.
  returned: success
  type: bool
  sample: true
drill_id:
  description: The drill's id.
  returned: success
  type: str
  sample: 20261122T040000Z
report:
  description: The whole C(nodekeep.drill/v1) report (see C(docs/drills.md)).
  returned: success
  type: dict
  sample: {format: nodekeep.drill/v1, drill_id: 20261122T040000Z, ok: true, rto_seconds: 412.3, rpo_seconds: 181.0}
problems:
  description: What failed or missed its target, one line each.
  returned: success
  type: list
  elements: str
  sample: ["animica-main-1/node-db: RPO 7 min 12 s misses the target 5 min 00 s"]
summary_lines:
  description: One readable line per node and one for the drill.
  returned: success
  type: list
  elements: str
  sample: ["animica-main-1: ok epoch 20261122T035700Z on animica-staging-1, 1 asset(s) (node-db ok); RTO 41.2 s ..."]
locations:
  description: Where the report, the page and the signature were written.
  returned: success and not check mode
  type: dict
  sample:
    report: /var/backups/nodekeep/_drills/drill/20261122T040000Z/report.json
    html: /var/backups/nodekeep/_drills/drill/20261122T040000Z/report.html
    signature: /var/backups/nodekeep/_drills/drill/20261122T040000Z/report.json.sig
html:
  description: The self-contained HTML page.
  returned: success
  type: str
  sample: "<!DOCTYPE html>..."
history:
  description:
    - The earlier drills of the series the chart shows (oldest first), each with its own targets (the strictest
      of its nodes), when it started (the chart's x labels give the date and UTC time) and C(rto_breakdown), the
      RTO of its slowest node in C(ship), C(restore), C(check) and C(other) seconds (drawn as a stacked bar;
      null for reports written before it was recorded).
  returned: success
  type: list
  elements: dict
  sample:
    - drill_id: 20261115T040000Z
      started: "2026-11-15T04:00:00.000Z"
      ok: true
      rto_seconds: 398.0
      rpo_seconds: 120.0
      rto_target_seconds: 1800.0
      rpo_target_seconds: 3600.0
      rto_breakdown: {ship: 120.5, restore: 210.0, check: 60.2, other: 7.3}
      signature: valid
history_problems:
  description: Earlier reports that could not be read or did not verify (they are left out of the chart).
  returned: success
  type: list
  elements: str
  sample: []
metrics_file:
  description: The metrics file written, when O(metrics_dir) is set.
  returned: when O(metrics_dir) is set and not check mode
  type: str
  sample: /var/lib/prometheus/node-exporter/nodekeep_drill.prom
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import require_libraries, run
from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError, check_range
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import DEFAULT_LOCAL_ROOT, check_name
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import drill, drill_html, drill_store
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.metrics import write_textfile


def main():
    module = AnsibleModule(
        argument_spec={
            "repository": {"type": "str", "default": DEFAULT_LOCAL_ROOT},
            "series": {"type": "str", "default": drill.DEFAULT_SERIES},
            "drill_id": {"type": "str"},
            "started": {"type": "float", "required": True},
            "finished": {"type": "float"},
            "nodes": {"type": "dict", "required": True},
            "labels": {"type": "dict", "default": {}},
            "signing_key": {"type": "path", "default": "/etc/nodekeep/signing_key"},
            "public_key": {"type": "str"},
            "history": {"type": "int", "default": 20},
            "reporter": {"type": "str", "default": ""},
            "metrics_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    require_libraries(module, "cryptography")
    params = module.params

    def action():
        check_range(params["history"], "history", 0, 10000, "reports", why="earlier reports shown in the chart")
        series = check_name("drill series", params["series"])
        finished = params["finished"] if params["finished"] is not None else time.time()
        report = drill.build_report(
            params["nodes"],
            params["started"],
            finished,
            series=series,
            identifier=params["drill_id"],
            labels=params["labels"],
            reporter=params["reporter"],
        )
        private_key = None if module.check_mode else signing.load_private_key(params["signing_key"])
        try:
            store = drill_store.drill_store(params["repository"], create=not module.check_mode)
        except RepositoryError:
            if not module.check_mode:
                raise
            store = None  # check mode, and no report was ever stored there
        history, history_problems = [], []
        if store is not None:
            history, history_problems = drill_store.load_history(
                store, series, params["public_key"], params["history"], before=report["drill_id"]
            )
        page = drill_html.render_html(report, history)
        result = {
            "changed": True,  # every drill writes a new report (in check mode: would write)
            "ok": report["ok"],
            "drill_id": report["drill_id"],
            "report": report,
            "problems": report["problems"],
            "summary_lines": drill.summary_lines(report),
            "html": page,
            "history": history,
            "history_problems": history_problems,
        }
        if module.check_mode:
            return result
        result["locations"] = drill_store.write_report(store, series, report, page, private_key)
        if params["metrics_dir"]:
            text = drill_store.drill_metrics(report, finished).render()
            result["metrics_file"] = write_textfile(params["metrics_dir"], "nodekeep_drill.prom", text)
        return result

    run(module, action)


if __name__ == "__main__":
    main()
