"""Expansion is bounded by the signed manifest: a small hostile age file, encrypted to the public
recipients (anyone can read them in the manifest), stops at the plaintext size its manifest or
signed index records; it never fills the disk. The modules run in their own process with
RLIMIT_FSIZE a little above the recorded size, so an unbounded expansion fails there (EFBIG)
instead of filling the test machine; the error must name the expansion, not the disk.

Covered: staged restore (epoch_restore), deep verify's scratch (integrity_check deep), a files
tree's own objects and its packs, the files index of the random-sample check.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyrage
import pytest
import zstandard
from modrun import module

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_capture as files_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities, unseal

pytestmark = pytest.mark.timeout(300)

BOMB = 256 << 20  # plaintext of the hostile file: 256 MiB of zeros in ~10 KiB of age


def bomb(recipient: str, size: int = BOMB) -> bytes:
    compressor = zstandard.ZstdCompressor(level=19).compressobj()
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _chunk in range(size >> 20)]
    parts.append(compressor.flush())
    return pyrage.encrypt(b"".join(parts), [pyrage.x25519.Recipient.from_str(recipient)])


def plant(path: Path, data: bytes) -> None:
    """What an attacker with write access to the repository does."""
    path.unlink()
    path.write_bytes(data)


def files_in(root: Path) -> list[tuple[str, int]]:
    return [(str(p), p.stat().st_size) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


@pytest.fixture
def hostile_epoch(node, live_db, age_key):
    manifest = node.backup([node.sqlite_asset(live_db.path)])
    (artifact,) = manifest.artifacts
    data = bomb(age_key.recipient)
    assert len(data) < 64 << 10
    plant(node.epoch_dir(manifest.epoch) / artifact.file, data)
    return manifest, artifact


def common(node, age_key) -> dict:
    return {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
    }


def test_a_restore_stops_at_the_manifest_size(node, hostile_epoch, age_key, tmp_path):
    _manifest, artifact = hostile_epoch
    staging = tmp_path / "staging"
    result = module(
        "epoch_restore",
        dict(common(node, age_key), dest=str(staging)),
        tmp_path / "args",
        max_file_size=artifact.content_size + (8 << 20),
    )
    assert result["failed"]
    assert "more than the %d bytes its signed manifest records" % artifact.content_size in result["msg"], result["msg"]
    assert not staging.exists() or files_in(staging) == []  # nothing left in staging


def test_deep_verify_scratch_stops_at_the_manifest_size(node, hostile_epoch, age_key, tmp_path):
    _manifest, artifact = hostile_epoch
    scratch = tmp_path / "scratch"
    result = module(
        "integrity_check",
        dict(common(node, age_key), deep=True, scratch_dir=str(scratch), fail_on_error=False),
        tmp_path / "args",
        max_file_size=artifact.content_size + (8 << 20),
    )
    text = repr(result)
    assert "more than the %d bytes its signed manifest records" % artifact.content_size in text, text
    assert files_in(scratch) == []


class TestFilesTrees:
    @pytest.fixture
    def tree_epoch(self, node, tmp_path, age_key):
        data = tmp_path / "data"
        data.mkdir()
        (data / "big.bin").write_bytes(os.urandom(files_mod.PACK_MEMBER_MAX + 4096))  # its own object
        (data / "small.txt").write_bytes(b"small file, stored in a pack\n")
        asset = {"name": "da", "type": "files", "path": str(data), "state_dir": str(tmp_path / "state")}
        manifest = node.backup([asset])
        (artifact,) = manifest.artifacts
        index = io.BytesIO()
        with (node.epoch_dir(manifest.epoch) / artifact.file).open("rb") as stream:
            unseal(stream, index, load_identities([age_key.identity]))
        entries = [json.loads(line) for line in index.getvalue().decode().splitlines()[1:] if line.strip()]
        objects = {Path(e["path"]).name: e for e in entries if e.get("type") == "file"}
        assert "offset" in objects["small.txt"] and "offset" not in objects["big.bin"]
        return manifest, objects

    @pytest.mark.parametrize("which", ["big.bin", "small.txt"], ids=["own-object", "pack"])
    def test_a_hostile_object_stops_at_the_index_size(self, node, tree_epoch, age_key, tmp_path, which):
        _manifest, objects = tree_epoch
        entry = objects[which]
        name = entry["object"]
        plant(Path(node.repository.root) / node.name / "objects" / name[:2] / name, bomb(age_key.recipient))
        staging = tmp_path / "staging"
        result = module(
            "epoch_restore",
            dict(common(node, age_key), dest=str(staging)),
            tmp_path / "args",
            max_file_size=16 << 20,
        )
        assert result["failed"]
        assert "signed manifest records" in result["msg"], result["msg"]


def test_the_engine_bound_itself(age_key, tmp_path):
    """unseal(limit=N) writes at most N bytes, whatever the sealed file expands to."""

    class Counting:
        written = 0

        def write(self, data):
            self.written += len(data)
            return len(data)

        def flush(self):
            pass

    sink = Counting()
    hostile = tmp_path / "hostile.age"
    hostile.write_bytes(bomb(age_key.recipient, 64 << 20))
    with hostile.open("rb") as stream, pytest.raises(IntegrityError) as excinfo:
        unseal(stream, sink, load_identities([age_key.identity]), sink_name="x", limit=1 << 20)
    assert sink.written <= 1 << 20
    assert "more than the 1048576 bytes" in excinfo.value.message
