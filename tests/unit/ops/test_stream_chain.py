"""ops/_stream_chain: a segment's record pins the sealed bytes and never the WAL frames' plain digest;
the service's configuration is refused with the setting it lacks."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import Digest, SealResult
from ansible_collections.nodekeep.backup.plugins.module_utils.core.wal import FRAME_HEADER_SIZE
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import _stream_chain as chain_mod

NODE = "node1"
EPOCH = "20261207T180000Z"
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def pending(frames: bytes, page_size=4096) -> chain_mod.Pending:
    item = chain_mod.Pending(salt=b"\x01\x02\x03\x04\x05\x06\x07\x08", page_size=page_size, first_frame=1)
    item.frames.extend(frames)
    item.commits.append([2, 1796666400.25, 8192, 1])
    item.last_cksum = (11, 22)
    return item


def chain(first=True) -> chain_mod.Chain:
    position = chain_mod.Position(salt=b"\x01" * 8, frame=0, cksum=None, page_size=4096)
    return chain_mod.Chain(epoch=EPOCH, seq=0, prev="f" * 64, position=position, consistent_after=1796666399.0,
                           started=1796666399.0, first=first)  # fmt: skip


def test_a_segment_record_pins_the_sealed_bytes_and_no_plain_digest():
    frames = os.urandom(2 * (FRAME_HEADER_SIZE + 4096))
    sealed = Digest(size=5000, sha256=hashlib.sha256(b"sealed bytes").hexdigest())
    result = SealResult(content=Digest(size=len(frames), sha256=hashlib.sha256(frames).hexdigest()), sealed=sealed,
                        compressed=True)  # fmt: skip
    data = chain_mod.segment_record(chain(), pending(frames), 1, "app-db.wal.00000001", result, NODE, "app-db",
                                    "/srv/app.db", [RECIPIENT])  # fmt: skip
    record = Manifest.from_bytes(data, node=NODE, epoch=EPOCH)
    (artifact,) = record.artifacts
    assert artifact.sha256 == sealed.sha256 and artifact.size == 5000
    assert artifact.content_size == len(frames) and artifact.content_sha256 is None
    assert hashlib.sha256(frames).hexdigest() not in data.decode()  # the frames' plain digest is nowhere
    source = artifact.source
    assert source["frames"] == 2 and source["seq"] == 1 and source["prev"] == "f" * 64
    assert source["commits"][0][0] == 2 and source["last_cksum"] == [11, 22]
    assert "consistent_after" in source and source["chain_position"]["frame"] == 0  # the chain's first segment
    later = chain_mod.segment_record(chain(first=False), pending(frames), 2, "app-db.wal.00000002", result, NODE,
                                     "app-db", "/srv/app.db", [RECIPIENT])  # fmt: skip
    assert "consistent_after" not in Manifest.from_bytes(later).artifacts[0].source


def test_pending_counts_whole_frames():
    assert pending(b"\0" * 3 * (FRAME_HEADER_SIZE + 1024), page_size=1024).count() == 3


def test_the_configuration_is_read_from_the_module_args_file(tmp_path):
    path = tmp_path / "stream.json"
    args = {"node": NODE, "repository": "/srv/repo", "asset": {"name": "app-db"}, "signing_key": "/k"}
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    assert chain_mod.load_config(str(path)) == args


@pytest.mark.parametrize("missing", ["node", "repository", "asset", "signing_key"])
def test_a_configuration_without_a_required_setting_names_it(tmp_path, missing):
    args = {"node": NODE, "repository": "/srv/repo", "asset": {"name": "app-db"}, "signing_key": "/k"}
    del args[missing]
    path = tmp_path / "stream.json"
    path.write_text(json.dumps(args))
    with pytest.raises(NodekeepError, match="lacks %s" % missing):
        chain_mod.load_config(str(path))


def test_a_configuration_that_is_not_json_or_missing_is_named(tmp_path):
    path = tmp_path / "stream.json"
    path.write_text("node: x\n")
    with pytest.raises(NodekeepError, match="is not JSON"):
        chain_mod.load_config(str(path))
    with pytest.raises(NodekeepError, match="stream configuration"):
        chain_mod.load_config(str(tmp_path / "absent.json"))
