"""storage/segments.py: segment names and their parsing (only signed segments count, in order, per asset), the
times an operator may give, and the choice of what a point-in-time restore starts from on a real repository:
an epoch signed by this node's key, finished at or before the time asked for; never one of another key."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact, Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import segments
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

NODE = "node1"


def test_segment_names_and_committed_segments():
    stem, record, signature = segments.segment_names("app-db", 7, "0123abcd")
    assert (stem, record, signature) == (
        "app-db.wal.00000007.0123abcd",
        "app-db.wal.00000007.0123abcd.json",
        "app-db.wal.00000007.0123abcd.json.sig",
    )
    files = [
        "app-db.wal.00000002.89abcdef.json.sig",
        "app-db.wal.00000001.0123abcd.json.sig",
        "app-db.wal.00000003.0123abcd.json",  # no signature yet: not committed
        "app.db.wal.00000001.0123abcd.json.sig",  # another asset whose name starts the same
        "manifest.json.sig",
    ]
    assert segments.committed_segments(files, "app-db") == [(1, "0123abcd"), (2, "89abcdef")]
    assert segments.committed_segments(files, "app.db") == [(1, "0123abcd")]
    assert all(segments.is_segment_file(name) for name in (stem, record, signature))
    assert not segments.is_segment_file("app-db.sqlite.zst.age")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1796650000", 1796650000.0),
        ("20261207T101530Z", 1796638530.0),
        ("2026-12-07T10:15:30Z", 1796638530.0),
        ("2026-12-07T11:15:30+01:00", 1796638530.0),
        ("2026-12-07T10:15:30", 1796638530.0),  # naive is UTC
    ],
)
def test_parse_time(text, expected):
    assert segments.parse_time(text) == expected


def test_a_time_that_is_not_one_names_the_option():
    with pytest.raises(NodekeepError, match="point_in_time 'yesterday' is not a time"):
        segments.parse_time("yesterday")
    assert segments.timestamp(segments.iso(1796638530.25)) == 1796638530.25


def test_find_chain_picks_the_epoch_signed_by_this_node(tmp_path, dbtools, age_key, signing_key, other_signing_key):
    dbtools.make(tmp_path / "app.db", rows=20, payload=10)
    repository = LocalRepository(str(tmp_path / "repo"))
    recipients = [age_key.recipient]
    asset = {"name": "app-db", "type": "sqlite", "path": str(tmp_path / "app.db")}
    manifest = backup_epoch(repository, NODE, [asset], seal.load_recipients(recipients), recipients, signing_key.key)
    finished = segments.timestamp(manifest.finished)
    chain = segments.find_chain(repository, NODE, "app-db", signing_key.public_line, None)
    assert (chain.epoch, chain.records, chain.end) == (manifest.epoch, [], finished)
    assert segments.find_chain(repository, NODE, "app-db", signing_key.public_line, finished + 1).epoch == manifest.epoch
    with pytest.raises(RepositoryError, match="node node1 has no epoch or replication chain of app-db at or before"):
        segments.find_chain(repository, NODE, "app-db", signing_key.public_line, finished - 3600)
    with pytest.raises(RepositoryError, match="of other-db"):
        segments.find_chain(repository, NODE, "other-db", signing_key.public_line, None)
    # an epoch another key signed is never a restore source
    with pytest.raises(RepositoryError, match="no epoch or replication chain"):
        segments.find_chain(repository, NODE, "app-db", other_signing_key.public_line, None)
    assert segments.chains_report(repository, NODE, "app-db", signing_key.public_line) == []


def _sealed_segment(tmp_path, age_key, frames: bytes):
    """A segment payload sealed into a real repository, and the artifact a record of it holds."""
    repository = LocalRepository(str(tmp_path / "repo"))
    payload, _record, _sig = segments.segment_names("app-db", 1, "0a0b0c0d")
    with repository.open_write(NODE, "20261207T100000Z", payload) as sink:
        result = seal.seal(io.BytesIO(frames), sink, seal.load_recipients([age_key.recipient]), threads=0)
    artifact = Artifact(
        name="app-db",
        asset_type="sqlite",
        file=payload,
        format=segments.SEGMENT_FORMAT,
        size=result.sealed.size,
        sha256=result.sealed.sha256,
        content_size=result.content.size,
        content_sha256=None,
        source={"seq": 1, "chain": "20261207T100000Z"},
    )
    return repository, artifact


def _record(artifact):
    return Manifest(
        node=NODE,
        epoch="20261207T100000Z",
        started="2026-12-07T10:00:00.000000Z",
        finished="2026-12-07T10:00:01.000000Z",
        recipients=[],
        artifacts=[artifact],
        labels={"stream": segments.STREAM_LABEL},
    )


def test_segment_frames_proves_bytes_without_a_plain_digest_and_still_checks_old_records(tmp_path, age_key):
    frames = b"frame-%d " * 500 % tuple(range(500))
    repository, artifact = _sealed_segment(tmp_path, age_key, frames)
    identities = seal.load_identities([], [str(age_key.identity_path)])
    epoch = "20261207T100000Z"
    # new records: no plain SHA-256; the sealed SHA-256 and size pin the bytes (age authenticates them)
    assert segments.segment_frames(repository, NODE, epoch, _record(artifact), identities) == frames
    # records of older versions kept the plain SHA-256 of the frames: still accepted, still compared
    old = dataclasses.replace(artifact, content_sha256=hashlib.sha256(frames).hexdigest())
    assert segments.segment_frames(repository, NODE, epoch, _record(old), identities) == frames
    wrong = dataclasses.replace(artifact, content_sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(NodekeepError, match="does not match its signed record"):
        segments.segment_frames(repository, NODE, epoch, _record(wrong), identities)
    # a payload replaced by another sealed to the same (public) recipients: refused by the sealed SHA-256
    _other_repository, _other = _sealed_segment(tmp_path / "other", age_key, frames[::-1])
    (tmp_path / "repo" / NODE / epoch / artifact.file).write_bytes(
        (tmp_path / "other" / "repo" / NODE / epoch / artifact.file).read_bytes()
    )
    with pytest.raises(NodekeepError, match="does not match its signed record"):
        segments.segment_frames(repository, NODE, epoch, _record(artifact), identities)
