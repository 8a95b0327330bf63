# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replication chains in a repository: the segments of an SQLite asset's WAL, written into their base epoch.

A segment of asset A is three write-once files in its chain's base epoch: ``A.wal.SEQ.ATTEMPT`` (the WAL
frames, sealed by the one seal pipeline), ``A.wal.SEQ.ATTEMPT.json`` (its record, in the manifest format:
one artifact, the chain position, the observed commit times, the SHA-256 of the previous record or of the
base manifest) and ``A.wal.SEQ.ATTEMPT.json.sig`` (the node's signature of the record, written last: the
commit point). ATTEMPT is random, so a writer killed before the signature never blocks the name of the
next try; exactly one attempt per SEQ is ever signed (one service per database). Written by
``ops/stream.py``; read here for restores and retention. The format is documented in docs/replication.md.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import io
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    NodekeepError,
    RepositoryError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest

SEGMENT_FORMAT = "sqlite-wal-frames"
STREAM_LABEL = "stream-segment"
SEGMENT_RE = re.compile(
    r"^(?P<asset>[A-Za-z0-9][A-Za-z0-9._-]*?)\.wal\.(?P<seq>\d{8})\.(?P<attempt>[0-9a-f]{8})(?P<ext>|\.json|\.json\.sig)\Z"
)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def segment_names(asset: str, seq: int, attempt: str) -> tuple[str, str, str]:
    stem = "%s.wal.%08d.%s" % (asset, seq, attempt)
    return stem, stem + ".json", stem + ".json.sig"


def committed_segments(files, asset: str) -> list[tuple[int, str]]:
    """(seq, attempt) of the asset's segments whose signature was written, in order."""
    found = []
    for name in files:
        match = SEGMENT_RE.match(name)
        if match and match.group("asset") == asset and match.group("ext") == ".json.sig":
            found.append((int(match.group("seq")), match.group("attempt")))
    return sorted(found)


def is_segment_file(name: str) -> bool:
    return bool(SEGMENT_RE.match(name))


def read_record(repository, node: str, epoch: str, asset: str, seq: int, attempt: str, public_key: str):
    _stem, record_name, sig_name = segment_names(asset, seq, attempt)
    data = repository.get_bytes(node, epoch, record_name, limit=4 << 20)
    signature = repository.get_bytes(node, epoch, sig_name, limit=64 << 10).decode("ascii", "replace")
    signing.verify(data, signature, public_key)
    record = Manifest.from_bytes(data, node=node, epoch=epoch)
    if (
        record.labels.get("stream") != STREAM_LABEL
        or len(record.artifacts) != 1
        or record.artifacts[0].name != asset
        or record.artifacts[0].format != SEGMENT_FORMAT
        or record.artifacts[0].source.get("seq") != seq
        or record.artifacts[0].source.get("chain") != epoch
    ):
        raise IntegrityError(
            "segment %d of %s in epoch %s does not describe itself" % (seq, asset, epoch),
            "the repository was tampered with; restore an earlier point or another copy",
        )
    return record, data


@dataclass
class ChainInfo:
    epoch: str
    records: list  # (Manifest, source dict) in order
    start: float  # first restorable commit time
    end: float  # last shipped commit time


def load_chain(repository, node: str, epoch: str, asset: str, public_key: str) -> ChainInfo | None:
    """The signed, contiguous, hash-linked segments of ``asset`` in ``epoch`` (None: no chain there)."""
    segments = committed_segments(repository.files(node, epoch), asset)
    if not segments:
        return None
    base_bytes = repository.get_bytes(node, epoch, "manifest.json")
    prev = hashlib.sha256(base_bytes).hexdigest()
    records = []
    numbers = [seq for seq, _attempt in segments]
    if len(set(numbers)) != len(numbers):
        raise IntegrityError(
            "a segment of %s in %s is committed twice" % (asset, epoch),
            "only one service writes a chain: the repository was tampered with",
        )
    for expected, (seq, attempt) in enumerate(segments, start=1):
        if seq != expected:
            break  # a hole: the chain is usable up to it (``end`` says where it stops)
        record, data = read_record(repository, node, epoch, asset, seq, attempt, public_key)
        source = record.artifacts[0].source
        if source.get("prev") != prev:
            raise IntegrityError(
                "segment %d of %s in %s does not follow segment %d (hash chain broken)" % (seq, asset, epoch, seq - 1),
                "the repository was tampered with; restore an earlier point or another copy",
            )
        prev = hashlib.sha256(data).hexdigest()
        records.append((record, source))
    if not records:
        return None
    consistent_after = timestamp(records[0][1].get("consistent_after") or records[0][0].started)
    start = None
    for _record, source in records:
        for commit in source["commits"]:
            if timestamp(commit[1]) > consistent_after:
                start = timestamp(commit[1])
                break
        if start is not None:
            break
    if start is None:
        return None  # no commit observed after the base was complete yet: the base epoch is the point
    return ChainInfo(epoch, records, start, timestamp(records[-1][1]["commits"][-1][1]))


def chain_point(chain: ChainInfo, when: float | None) -> float | None:
    """The newest commit time of ``chain`` at or before ``when`` (restorable ones only)."""
    best = None
    for _record, source in chain.records:
        for commit in source["commits"]:
            moment = timestamp(commit[1])
            if moment >= chain.start and (when is None or moment <= when):
                best = moment
    return best


def find_chain(repository, node: str, asset: str, public_key: str, when: float | None) -> ChainInfo:
    """What to restore for time ``when`` (None: the newest state): the chain or the epoch whose newest
    point at or before it is the latest. An epoch without segments is a chain with no records."""
    best_chain = best_epoch = None
    seen = []
    for epoch in reversed(repository.complete_epochs(node)):
        try:
            manifest = load_manifest(repository, node, epoch, public_key)
        except NodekeepError:
            continue  # not signed by this node: never a restore source
        if asset not in [a.name for a in manifest.artifacts]:
            continue
        if best_chain is None and committed_segments(repository.files(node, epoch), asset):
            chain = load_chain(repository, node, epoch, asset, public_key)
            if chain is not None:
                seen.append(chain)
                if chain_point(chain, when) is not None:
                    best_chain = chain
        finished = timestamp(manifest.finished)
        if best_epoch is None and (when is None or finished <= when):
            best_epoch = ChainInfo(epoch, [], finished, finished)
        # Chains never overlap: an older chain ended before a newer base began.
        if best_epoch is not None and (best_chain is not None or manifest.labels.get("stream") == "base"):
            break
    if best_chain is not None and (best_epoch is None or chain_point(best_chain, when) >= best_epoch.end):
        return best_chain
    if best_epoch is not None:
        return best_epoch
    raise RepositoryError(
        "node %s has no epoch or replication chain of %s at or before %s"
        % (node, asset, "now" if when is None else iso(when)),
        "chains found: %s"
        % (", ".join("%s (%s .. %s)" % (c.epoch, iso(c.start), iso(c.end)) for c in seen[:5]) or "none")
        + "; pick a later time",
    )


class _BoundedSink(io.BytesIO):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data) -> int:
        if self.tell() + len(data) > self.limit:
            raise IntegrityError("a segment decrypts to more bytes than its signed record says", "do not trust it")
        return super().write(data)


def segment_frames(repository, node: str, epoch: str, record: Manifest, identities: list) -> bytes:
    artifact = record.artifacts[0]
    sink = _BoundedSink(artifact.content_size)
    with repository.open_read(node, epoch, artifact.file) as stream:
        result = unseal(stream, sink, identities, sink_name="memory")
    if (
        result.sealed.size != artifact.size
        or result.sealed.sha256 != artifact.sha256
        or result.content.size != artifact.content_size
        # segments of older versions record the plain SHA-256 of their frames (compared); newer ones none: the
        # sealed SHA-256 above, signed, pins the bytes and age authenticates what they decrypt to
        or (artifact.content_sha256 is not None and result.content.sha256 != artifact.content_sha256)
    ):
        raise IntegrityError(
            "segment %s does not match its signed record" % artifact.file,
            "the repository was tampered with or damaged; restore an earlier point or another copy",
        )
    return sink.getvalue()


def chains_report(repository, node: str, asset: str, public_key: str) -> list[dict[str, Any]]:
    """Every chain of ``asset``: base epoch, first and last restorable commit times, segments."""
    out = []
    for epoch in repository.complete_epochs(node):
        if committed_segments(repository.files(node, epoch), asset):
            chain = load_chain(repository, node, epoch, asset, public_key)
            if chain is not None:
                out.append(
                    {"epoch": epoch, "start": iso(chain.start), "end": iso(chain.end), "segments": len(chain.records)}
                )
    return out


def parse_time(text: str) -> float:
    """An ISO 8601 time (``Z`` or an offset; naive means UTC), an epoch name, or UNIX seconds."""
    value = str(text).strip()
    with contextlib.suppress(ValueError):
        return float(value)
    for pattern in ("%Y%m%dT%H%M%SZ",):
        with contextlib.suppress(ValueError):
            return datetime.strptime(value, pattern).replace(tzinfo=timezone.utc).timestamp()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise NodekeepError(
            "point_in_time %r is not a time" % (text,),
            "give latest, an ISO 8601 UTC time such as 2026-12-07T10:15:30Z, or UNIX seconds",
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def random_point(repository, node: str, asset: str, public_key: str, seed: str, until: float | None = None):
    """A commit point of ``asset`` drawn at random among every restorable commit time of its retained chains at
    or before ``until`` (None: now), reproducibly: the same ``seed`` over the same chains draws the same point.

    Returns the point (``time``: an observed commit time, so a restore to it reaches exactly it; ``epoch``: the
    base epoch of its chain), the window it was drawn from (``start``, ``end``, ``points``, ``chains``) and the
    newest commit shipped at or before ``until`` (``last_shipped``: the end of that window). Raises
    RepositoryError when the asset has no chain with a restorable commit in the window.
    """
    points = []  # (commit time as recorded, epoch), oldest first: chains never overlap
    for epoch in repository.complete_epochs(node):
        if not committed_segments(repository.files(node, epoch), asset):
            continue
        chain = load_chain(repository, node, epoch, asset, public_key)
        if chain is None:
            continue
        for _record, source in chain.records:
            for commit in source["commits"]:
                moment = timestamp(commit[1])
                if moment >= chain.start and (until is None or moment <= until):
                    points.append((commit[1], epoch))
    if not points:
        raise RepositoryError(
            "node %s has no replication chain of %s with a commit at or before %s"
            % (node, asset, "now" if until is None else iso(until)),
            "start the replication service for it (playbook nodekeep.backup.stream, nodekeep_stream_assets) and let it ship a "
            "segment, or drop the asset from nodekeep_drill_stream_assets",
        )
    # str seeds are hashed with SHA-512 by random.Random (version 2): stable across runs and Python versions.
    # The node and asset are part of it, so one drill seed draws independent points for each streamed asset.
    moment, epoch = points[random.Random("%s/%s/%s" % (seed, node, asset)).randrange(len(points))]
    return {
        "time": moment,
        "epoch": epoch,
        "seed": str(seed),
        "start": points[0][0],
        "end": points[-1][0],
        "until": None if until is None else iso(until),
        "points": len(points),
        "chains": len({e for _t, e in points}),
        "last_shipped": points[-1][0],
    }
