"""pieces.py: the node's piece store (keyed names, the node key, writing, packing, reading back).

A real local repository and the real seal pipeline (age, zstd); no mocks.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal as seal_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(60)
EPOCH = "20260101T000000Z"


def test_names_and_page_digests_are_keyed_never_a_plain_hash():
    data = b"a known page" * 100
    digest = hashlib.sha256(data).hexdigest()
    name = pieces.piece_name(b"k" * 32, digest)
    assert name != digest and name == pieces.piece_name(b"k" * 32, digest)
    assert name != pieces.piece_name(b"o" * 32, digest)
    mac = pieces.page_mac(b"k" * 32)
    assert mac(data) != hashlib.blake2b(data, digest_size=16).digest()
    assert mac(data) != pieces.page_mac(b"o" * 32)(data) and len(mac(data)) == 16


def test_node_key_is_made_once_private_and_refused_when_exposed(tmp_path):
    key, created = pieces.node_key(str(tmp_path), "node1")
    assert created and len(key) == 32
    path = tmp_path / "node1" / pieces.KEY_FILE
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert pieces.node_key(str(tmp_path), "node1") == (key, False)
    os.chmod(path, 0o644)
    with pytest.raises(CaptureError, match="chmod 0600"):
        pieces.node_key(str(tmp_path), "node1")


@pytest.fixture
def store(tmp_path, age_key):
    repo = LocalRepository(str(tmp_path / "repo"))
    repo.claim_epoch("node1", EPOCH)
    recipients = seal_utils.load_recipients([age_key.recipient])
    writer = pieces.PieceWriter(repo, "node1", EPOCH, recipients, 3, b"k" * 32)
    identities = seal_utils.load_identities([age_key.identity])
    return repo, writer, identities


def test_packs_are_written_once_and_read_back_exactly(store):
    repo, writer, identities = store
    builder = pieces.PackBuilder(writer, size=3 * 4096)
    pages = [os.urandom(4096) for _page in range(7)]
    where = [builder.add(page) for page in pages]
    builder.finish()
    assert [number for number, _offset in where] == [0, 0, 0, 1, 1, 1, 2]
    assert len(builder.packs) == 3 and writer.work["new"] == 3
    for (number, offset), page in zip(where, pages):
        name, sealed_size, sealed_sha, size = builder.packs[number]
        data = pieces.read_piece(repo, "node1", name, (sealed_size, sealed_sha), size, identities)
        assert bytes(data[offset : offset + 4096]) == page
    # the same content again is found by name, not stored twice
    again = pieces.PackBuilder(writer, size=3 * 4096)
    for page in pages[:3]:
        again.add(page)
    again.finish()
    assert again.packs[0] == builder.packs[0] and writer.work["new"] == 3


def test_a_piece_is_checked_against_its_record(store):
    repo, writer, identities = store
    name, sealed_size, sealed_sha = writer.put(b"x" * 10000)
    with pytest.raises(IntegrityError, match="do not match the epoch's record"):
        pieces.read_piece(repo, "node1", name, (sealed_size, "0" * 64), 10000, identities)
    with pytest.raises(NodekeepError):
        pieces.read_piece(repo, "node1", name, (sealed_size, sealed_sha), 100, identities)  # more than recorded
    listed = pieces.write_piece_list(repo, "node1", EPOCH, "a.refs.txt", writer.refs)
    assert listed["objects"] == 1 and listed["bytes"] == sealed_size


def test_recheck_refuses_an_epoch_whose_reused_piece_vanished(store):
    repo, writer, _identities = store
    name, sealed_size, sealed_sha = writer.put(b"y" * 5000)
    other = pieces.PieceWriter(repo, "node1", EPOCH, writer.recipients, 3, writer.key)
    assert other.reuse(name, (sealed_size, sealed_sha)) == (sealed_size, sealed_sha)
    repo.remove_object("node1", name)
    with pytest.raises(CaptureError, match="garbage collection ran at the same time"):
        other.recheck()
