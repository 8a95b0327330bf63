# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The epoch manifest: one format, one writer, one reader.

``manifest.json`` lists every artifact of an epoch with its size, SHA-256 and
source facts. It is written last, beside a detached SSH signature
(``manifest.json.sig``). The format is documented in ``docs/manifest.md``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    ManifestError,
)

FORMAT = "nodekeep.manifest/v1"
#: written when an artifact is stored as pieces (``source.layout: pieces``): older readers refuse it by its
#: format instead of restoring a page map as if it were the data; this version reads both
FORMAT_V2 = "nodekeep.manifest/v2"
FORMATS = (FORMAT, FORMAT_V2)


MANIFEST_NAME = "manifest.json"


SIGNATURE_NAME = "manifest.json.sig"


TOOL_NAME = "nodekeep.backup"


TOOL_VERSION = "0.1.0"


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")


#: asset types whose plaintext is secret: the manifest records no hash of it (content_sha256 is null)
SECRET_TYPES = ("secret",)


def check_name(kind: str, value: str) -> str:
    if not NAME_RE.match(value or ""):
        raise ManifestError(
            "%s %r is not a valid name" % (kind, value),
            "use letters, digits, dot, dash and underscore (at most 128 characters), starting with a letter or digit",
        )
    return value


@dataclass
class Artifact:
    """One sealed asset of an epoch."""

    name: str
    asset_type: str
    file: str
    format: str
    size: int
    sha256: str
    content_size: int
    #: None for backed-up data (every type but the maps of pieces: files indexes, page maps) since this
    #: version, and always for ``secret``: its integrity is the signed ``sha256`` of the sealed bytes, which
    #: age authenticates; an unkeyed hash of the plaintext would confirm a guessed content (a 6-digit secret).
    content_sha256: str | None
    compressed: bool = True
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "asset_type": self.asset_type,
            "file": self.file,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "content_size": self.content_size,
            "content_sha256": self.content_sha256,
            "compressed": self.compressed,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        try:
            artifact = cls(
                name=check_name("artifact name", data["name"]),
                asset_type=str(data["asset_type"]),
                file=check_name("artifact file", data["file"]),
                format=str(data["format"]),
                size=int(data["size"]),
                sha256=str(data["sha256"]),
                content_size=int(data["content_size"]),
                content_sha256=None if data["content_sha256"] is None else str(data["content_sha256"]),
                compressed=bool(data.get("compressed", True)),
                source=dict(data.get("source") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError("an artifact entry of the manifest is malformed (%s)" % exc, "the epoch cannot be used")
        if not HEX64_RE.match(artifact.sha256):
            raise ManifestError("artifact %s has a malformed SHA-256" % artifact.name, "the epoch cannot be used")
        if artifact.content_sha256 is not None and not HEX64_RE.match(artifact.content_sha256):
            raise ManifestError(
                "artifact %s has a malformed content SHA-256" % artifact.name, "the epoch cannot be used"
            )
        if artifact.file in (MANIFEST_NAME, SIGNATURE_NAME):
            raise ManifestError("artifact %s claims a reserved file name" % artifact.name, "the epoch cannot be used")
        return artifact


def _whole(value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise TypeError("not a whole number of at least %d" % least)
    return value


def check_sequence(value: Any) -> dict[str, Any]:
    """The ``sequence`` object of a manifest, validated: ``number`` and ``previous`` (or null).

    ``previous`` names the epoch the node signed before this one (``epoch``, its ``number`` and the SHA-256
    of its ``manifest.json``) and whether it was a complete epoch of the repository when this one was
    signed (``present``): false means the node's newest epochs had been deleted (a rollback).
    """
    try:
        number = _whole(value["number"], 1)
        previous = value.get("previous")
        if previous is not None:
            previous = {
                "epoch": check_name("previous epoch", previous["epoch"]),
                "number": _whole(previous["number"], 0),
                "manifest_sha256": str(previous["manifest_sha256"]),
                "present": previous["present"],
            }
            if not isinstance(previous["present"], bool) or not HEX64_RE.match(previous["manifest_sha256"]):
                raise TypeError("previous is malformed")
            epoch_time(previous["epoch"])
            if previous["number"] >= number:
                raise TypeError("the previous number is not smaller")
    except (KeyError, TypeError, AttributeError, ManifestError) as exc:
        raise ManifestError("the manifest's sequence is malformed (%s)" % exc, "the epoch cannot be used")
    return {"number": number, "previous": previous}


@dataclass
class Manifest:
    """The signed table of contents of one epoch."""

    node: str
    epoch: str
    started: str
    finished: str
    recipients: list[str]
    artifacts: list[Artifact] = field(default_factory=list)
    tool: dict[str, str] = field(default_factory=lambda: {"name": TOOL_NAME, "version": TOOL_VERSION})
    labels: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    #: the node's signed, monotonic lineage of epochs (docs/manifest.md, "Sequence"); None in older manifests
    sequence: dict[str, Any] | None = None

    def artifact(self, name: str) -> Artifact:
        for artifact in self.artifacts:
            if artifact.name == name:
                return artifact
        raise ManifestError(
            "epoch %s of %s has no artifact named %s" % (self.epoch, self.node, name),
            "choose one of: %s" % ", ".join(a.name for a in self.artifacts),
        )

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_V2 if any(a.source.get("layout") == "pieces" for a in self.artifacts) else self.format,
            "node": self.node,
            "epoch": self.epoch,
            "started": self.started,
            "finished": self.finished,
            "tool": dict(self.tool),
            "recipients": list(self.recipients),
            "labels": dict(self.labels),
            "artifacts": [a.to_dict() for a in self.artifacts],
            **({"sequence": self.sequence} if self.sequence is not None else {}),
        }

    def to_bytes(self) -> bytes:
        """Canonical bytes: sorted keys, two-space indent, UTF-8, trailing newline."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, node: str | None = None, epoch: str | None = None) -> Manifest:
        """Parse and validate; ``node``/``epoch`` must match where the manifest was found."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ManifestError("manifest.json is not valid JSON (%s)" % exc, "the epoch cannot be used")
        if not isinstance(doc, dict) or doc.get("format") not in FORMATS:
            raise ManifestError(
                "manifest.json is not a %s document" % " or ".join(FORMATS),
                "it was written by another tool or version; upgrade nodekeep.backup",
            )
        try:
            manifest = cls(
                node=check_name("node", doc["node"]),
                epoch=str(doc["epoch"]),
                started=str(doc["started"]),
                finished=str(doc["finished"]),
                recipients=[str(r) for r in doc.get("recipients") or []],
                artifacts=[Artifact.from_dict(a) for a in doc["artifacts"]],
                tool=dict(doc.get("tool") or {}),
                labels=dict(doc.get("labels") or {}),
                format=str(doc["format"]),
                sequence=check_sequence(doc["sequence"]) if "sequence" in doc else None,
            )
        except (KeyError, TypeError) as exc:
            raise ManifestError("manifest.json lacks a required field (%s)" % exc, "the epoch cannot be used")
        epoch_time(manifest.epoch)
        if node is not None and manifest.node != node:
            raise ManifestError(
                "the manifest names node %s but was found under node %s" % (manifest.node, node),
                "an epoch was copied between nodes; do not restore it as this node",
            )
        if epoch is not None and manifest.epoch != epoch:
            raise ManifestError(
                "the manifest names epoch %s but was found in epoch %s" % (manifest.epoch, epoch),
                "the epoch directory was renamed or tampered with",
            )
        names = [a.name for a in manifest.artifacts]
        files = [a.file for a in manifest.artifacts]
        if len(set(names)) != len(names) or len(set(files)) != len(files):
            raise ManifestError("the manifest lists an artifact twice", "the epoch cannot be used")
        return manifest

    def summary(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "epoch": self.epoch,
            "started": self.started,
            "finished": self.finished,
            "artifacts": len(self.artifacts),
            "size": self.total_size,
        }


# --------------------------------------------------------------------------
# chains: which epochs an artifact needs, and reading them back
# --------------------------------------------------------------------------


def chain_epochs(artifact: Artifact) -> list[str]:
    """Earlier epochs an incremental artifact needs (oldest first); empty for a full one.

    Retention must keep these while it keeps the epoch of ``artifact``.
    """
    return [str(link.get("epoch")) for link in artifact.source.get("chain") or [] if link.get("epoch")]


def manifest_needs(manifest: Manifest) -> set[str]:
    """Every earlier epoch the snapshot artifacts of ``manifest`` depend on."""
    needs: set[str] = set()
    for artifact in manifest.artifacts:
        if artifact.asset_type in ("zfs", "btrfs"):
            needs.update(chain_epochs(artifact))
    return needs


DEFAULT_LOCAL_ROOT = "/var/backups/nodekeep"
