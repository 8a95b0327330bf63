# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed integrity proofs: a deep verify's full check of an epoch's restored image, recorded for restores.

An epoch captured with ``quick_check`` (docs/incremental.md, check policy) claims no full
``PRAGMA integrity_check``. A deep verify that rebuilds its image, proves the image's bytes against the
signed manifest and then runs the full check records it here, once, write-once beside the manifest:

    ROOT/NODE/EPOCH/<asset>.proof.json     {"record": "<canonical JSON>", "signature": "<SSHSIG armor>"}

The record names the node, the epoch, the artifact, its sealed size and SHA-256 (what the signed manifest
records, which pins every byte of the image) and the check that ran; it is signed with the node's key in its
own namespace (``nodekeep-proof``: a proof can never pass for a manifest, nor a manifest for a proof). A
restore trusts a proof only when the signature verifies with the node's public key (the one it checks the
manifest with) and every field matches the artifact it restores; otherwise it runs the check itself.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import utc_now_iso
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import Repository

FORMAT = "nodekeep.integrity-proof/v1"
NAMESPACE = "nodekeep-proof"
SUFFIX = ".proof.json"
#: a proof is a few hundred bytes; a larger file is not read
LIMIT = 64 << 10


def proof_name(artifact: Artifact) -> str:
    return artifact.name + SUFFIX


def _bound(node: str, epoch: str, artifact: Artifact) -> dict[str, Any]:
    """The fields that tie a proof to exactly one artifact's sealed bytes."""
    return {
        "format": FORMAT,
        "node": node,
        "epoch": epoch,
        "artifact": artifact.name,
        "file": artifact.file,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "content_sha256": artifact.content_sha256,
    }


def write_proof(
    repository: Repository, node: str, epoch: str, artifact: Artifact, check_how: str, private_key
) -> dict[str, Any]:
    """Record that the full ``PRAGMA integrity_check`` (``check_how``: what exactly ran) passed on the image
    rebuilt from ``artifact``'s sealed bytes; ``{"file", "written"}`` (``written`` False: an earlier proof is
    kept, the repository is write-once)."""
    name = proof_name(artifact)
    if repository.exists(node, epoch, name):
        return {"file": name, "written": False}
    record = dict(_bound(node, epoch, artifact), check="integrity", result="ok", check_how=check_how)
    record["proven_at"] = utc_now_iso()
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    armored = signing.sign(text.encode(), private_key, namespace=NAMESPACE)
    body = json.dumps({"record": text, "signature": armored}, sort_keys=True, indent=1) + "\n"
    repository.put_bytes(node, epoch, name, body.encode())
    return {"file": name, "written": True}


def load_proof(repository: Repository, node: str, epoch: str, artifact: Artifact, public_key: str) -> tuple[str, str]:
    """(proof, problem): the words of a trusted proof of ``artifact``'s full check ('' when none), and why a
    present proof was not trusted ('' when none is present or it is trusted)."""
    name = proof_name(artifact)
    try:
        if not repository.exists(node, epoch, name):
            return "", ""
        body = json.loads(repository.get_bytes(node, epoch, name, limit=LIMIT).decode("utf-8"))
        text, armored = body["record"], body["signature"]
        signing.verify(text.encode("utf-8"), str(armored), public_key, namespace=NAMESPACE)
        record = json.loads(text)
    except NodekeepError as exc:
        return "", "%s not trusted: %s" % (name, exc.message)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return "", "%s not trusted: it is not a proof record (%s)" % (name, exc)
    if not isinstance(record, dict):
        return "", "%s not trusted: it is not a proof record" % name
    wanted = dict(_bound(node, epoch, artifact), check="integrity", result="ok")
    wrong = sorted(key for key, value in wanted.items() if record.get(key) != value)
    if wrong:
        return "", "%s not trusted: its %s do not match this epoch's artifact" % (name, ", ".join(wrong))
    return (
        "by deep verify at %s (%s) of the image rebuilt from this artifact's sealed bytes, recorded in the signed "
        "%s; the restored file is the same bytes (the sealed SHA-256 the signed manifest records)"
        % (record.get("proven_at"), record.get("check_how") or "PRAGMA integrity_check", name)
    ), ""
