"""assets/base.py: an asset's options are checked and defaulted; a file asset is restored beside its target,
linked into place only when complete, never over an existing file without force (then the old one is kept
aside), and a failed restore leaves neither the target nor a temporary behind."""

from __future__ import annotations

import os
import stat
from typing import Any, ClassVar

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import AssetType, FileAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact


class Plain(FileAssetType):
    name = "plain"
    extension = ".bin"
    content_format = "raw"
    options: ClassVar[dict[str, Any]] = {"level": 3}


def test_normalize_defaults_options_and_refuses_a_relative_path():
    normalized = Plain().normalize({"name": "app-db", "path": "/srv/app/../app/db.bin"})
    assert normalized == {"name": "app-db", "path": "/srv/app/db.bin", "level": 3}
    assert Plain().normalize({"name": "a", "path": "/x", "level": 9})["level"] == 9
    with pytest.raises(CaptureError, match="asset app-db has no absolute path: give every entry of nodekeep_assets"):
        Plain().normalize({"name": "app-db", "path": "srv/db.bin"})


def test_artifact_names_and_staging_path():
    plain = Plain()
    assert plain.artifact_file({"name": "app-db"}) == "app-db.bin.zst.age"
    assert plain.artifact_format == "raw+zstd+age"
    artifact = Artifact("app-db", "plain", "app-db.bin.zst.age", "raw+zstd+age", 1, "0", 1, "0", source={"path": "/srv/db"})
    assert plain.staging_path(artifact, "/restore") == "/restore/srv/db"
    assert AssetType().deep_check("/x", artifact) == {} and AssetType().extra_files(artifact) == []


def test_a_file_is_written_beside_its_target_and_linked_when_complete(tmp_path):
    target = tmp_path / "srv" / "app" / "db.bin"
    with Plain().restore_into(str(target)) as staged:
        assert os.path.dirname(staged.path) == str(target.parent) and not target.exists()
        assert stat.S_IMODE(os.stat(staged.path).st_mode) == 0o600
        staged.stream.write(b"restored bytes")
    assert target.read_bytes() == b"restored bytes"
    assert os.listdir(target.parent) == ["db.bin"]
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700


def test_an_existing_target_is_refused_unless_forced_then_kept_aside(tmp_path):
    target = tmp_path / "db.bin"
    target.write_bytes(b"live")
    with pytest.raises(RestoreError, match="the restore target %s already exists" % target), Plain().restore_into(
        str(target)
    ):
        pass
    assert os.listdir(tmp_path) == ["db.bin"] and target.read_bytes() == b"live"
    with Plain().restore_into(str(target), force=True) as staged:
        staged.stream.write(b"restored")
    assert target.read_bytes() == b"restored"
    kept = [name for name in os.listdir(tmp_path) if name.startswith("db.bin.nodekeep-replaced-")]
    assert len(kept) == 1 and (tmp_path / kept[0]).read_bytes() == b"live"


def test_a_failed_restore_leaves_nothing(tmp_path):
    target = tmp_path / "db.bin"
    with pytest.raises(ValueError, match="checksum mismatch"), Plain().restore_into(str(target)) as staged:
        staged.stream.write(b"half")
        raise ValueError("checksum mismatch")
    assert os.listdir(tmp_path) == []
