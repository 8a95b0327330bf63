# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where restore drill reports live (``drill_store``), writing one with its signature last
(``write_report``), the history read back (``load_history``) and a drill's textfile metrics
(``drill_metrics``). The report itself is built by ``drill``.

Where reports live: ``ROOT/_drills/SERIES/DRILL_ID/`` beside the nodes' epochs
(``ROOT/NODE/EPOCH/``). ``_drills`` can never be a node name (node names start with a
letter or digit), so no node's epochs, verify, restore or retention ever see it. The
area is opened as a repository of its own (``drill_store``): local ``ROOT/_drills`` or
``s3://BUCKET/PREFIX/_drills``, so reports are written with the same write-once
primitives as epochs (temporary name, fsync, link; S3 with If-None-Match and the
bucket's Object Lock), ``SERIES`` taking the place of the node and the drill id (the
drill's UTC start, ``YYYYMMDDTHHMMSSZ``) the place of the epoch. A report is complete
when ``report.json.sig`` exists; it is written last.

The signature is SSHSIG (Ed25519) like a manifest's, in the namespace ``nodekeep-drill``
(so a drill signature can never pass for a manifest signature):
``ssh-keygen -Y verify -f ALLOWED -I HOST -n nodekeep-drill -s report.json.sig < report.json``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import os
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import DEFAULT_LOCAL_ROOT
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.drill import FORMAT, DrillError, report_bytes
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.metrics import Metrics
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import Repository

AREA = "_drills"


REPORT_NAME = "report.json"


HTML_NAME = "report.html"


SIGNATURE_NAME = "report.json.sig"


NAMESPACE = "nodekeep-drill"


# --------------------------------------------------------------------------
# where reports live
# --------------------------------------------------------------------------


def drill_store(spec: Any, create: bool = True) -> Repository:
    """The report area ``_drills`` of a repository (an absolute path or ``s3://...``) as a repository.

    ``create=False`` (check mode) never makes a local directory: a missing area raises RepositoryError.
    """
    text = str(spec or DEFAULT_LOCAL_ROOT)
    if text.startswith("s3://"):
        return open_repository(text.rstrip("/") + "/" + AREA)
    if "://" not in text and not os.path.isabs(text):
        raise RepositoryError(
            "the drill repository %r is not an absolute path" % text, "set nodekeep_drill_repository to one"
        )
    return open_repository(os.path.join(text, AREA) if "://" not in text else text, create=create)


# --------------------------------------------------------------------------
# history: earlier reports of the series, read back from the repository
# --------------------------------------------------------------------------


def history_point(report: dict[str, Any], verified: bool | None) -> dict[str, Any]:
    """One drill on the history chart: its RTO and RPO, its own targets (the strictest of its nodes), when it
    started, and the RTO's breakdown (ship, restore, check, other) of the node that set the drill's RTO."""
    nodes = report.get("nodes") or []
    timed = [n for n in nodes if (n.get("rto") or {}).get("seconds") is not None]
    worst = max(timed, key=lambda n: n["rto"]["seconds"], default=None)
    return {
        "drill_id": report.get("drill_id"),
        "started": report.get("started"),
        "rto_breakdown": (worst or {}).get("rto_breakdown"),
        "ok": bool(report.get("ok")),
        "rto_seconds": report.get("rto_seconds"),
        "rpo_seconds": report.get("rpo_seconds"),
        "rto_target_seconds": min((n["rto"]["target_seconds"] for n in nodes if n.get("rto")), default=None),
        "rpo_target_seconds": min((n["rpo"]["target_seconds"] for n in nodes if n.get("rpo")), default=None),
        "signature": "valid" if verified else ("unchecked" if verified is None else "invalid"),
    }


def load_history(
    store: Repository, series: str, public_key: str | None, limit: int = 20, before: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The last ``limit`` complete reports of ``series`` (oldest first), and what could not be read.

    With ``public_key`` only reports whose signature verifies are returned; without it every
    complete report is (marked ``unchecked``).
    """
    points, problems = [], []
    try:
        names = store.epoch_names(series)
    except NodekeepError as exc:
        return [], ["the earlier drill reports could not be listed: %s" % exc.message]
    # Newest first, listing only until ``limit`` complete reports are found (one listing per report on S3).
    complete = []
    for name in reversed([n for n in names if before is None or n < before]):
        if len(complete) >= limit:
            break
        if SIGNATURE_NAME in store.files(series, name):
            complete.append(name)
    for name in reversed(complete):
        try:
            data = store.get_bytes(series, name, REPORT_NAME, limit=32 << 20)
            verified = None
            if public_key:
                armored = store.get_bytes(series, name, SIGNATURE_NAME, limit=64 << 10).decode("ascii")
                signing.verify(data, armored, public_key, namespace=NAMESPACE)
                verified = True
            report = json.loads(data.decode("utf-8"))
            if report.get("format") != FORMAT:
                raise DrillError("format %r" % report.get("format"))
        except (NodekeepError, ValueError, UnicodeDecodeError) as exc:
            problems.append("drill report %s/%s skipped: %s" % (series, name, getattr(exc, "message", exc)))
            continue
        points.append(history_point(report, verified))
    return points, problems


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def write_report(store: Repository, series: str, report: dict[str, Any], page: str, private_key) -> dict[str, str]:
    """Write the page, the JSON and last its signature, write-once; return the three locations."""
    identifier = report["drill_id"]
    if not store.claim_epoch(series, identifier):
        raise DrillError(
            "a drill report %s already exists" % store.describe(series, identifier),
            "reports are write-once; run the drill again (it gets a new id) or use another series",
        )
    data = report_bytes(report)
    armored = signing.sign(data, private_key, namespace=NAMESPACE)
    store.put_bytes(series, identifier, HTML_NAME, page.encode("utf-8"))
    store.put_bytes(series, identifier, REPORT_NAME, data)
    store.put_bytes(series, identifier, SIGNATURE_NAME, armored.encode("ascii"))
    return {
        "report": store.describe(series, identifier, REPORT_NAME),
        "html": store.describe(series, identifier, HTML_NAME),
        "signature": store.describe(series, identifier, SIGNATURE_NAME),
    }


def drill_metrics(report: dict[str, Any], finished: float) -> Metrics:
    """Textfile metrics of a drill (names only as labels)."""
    metrics = Metrics()
    series = report["series"]
    metrics.add(
        "nodekeep_drill_last_run_timestamp_seconds", finished, "When the last restore drill finished.", series=series
    )
    metrics.add("nodekeep_drill_success", bool(report["ok"]), "1 if the last drill passed.", series=series)
    if report["ok"]:
        metrics.add(
            "nodekeep_drill_last_success_timestamp_seconds", finished, "When a drill last passed.", series=series
        )
    for node in report["nodes"]:
        labels = {"series": series, "node": node["node"]}
        metrics.add("nodekeep_drill_node_success", bool(node["ok"]), "1 if the node passed the drill.", **labels)
        for key, what in (("rto", "Recovery time measured by the drill"), ("rpo", "Data age measured by the drill")):
            if node[key]["seconds"] is not None:
                metrics.add("nodekeep_drill_%s_seconds" % key, node[key]["seconds"], what + ".", **labels)
            metrics.add(
                "nodekeep_drill_%s_target_seconds" % key,
                node[key]["target_seconds"],
                "The %s target." % key.upper(),
                **labels,
            )
    return metrics
