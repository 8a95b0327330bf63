"""assets/config.py: one config file comes back with its bytes, mode, owner, mtime and extended attributes (the
deep check refuses a restore that lost them); a directory is a tree; a FIFO is refused by name; verify tells
whether the live config still matches the backup."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import RunContext
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.config import ConfigAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact

CONFIG = ConfigAssetType()
STAMP = 981173106_123456789


@pytest.fixture
def live(tmp_path):
    path = tmp_path / "etc" / "app.conf"
    path.parent.mkdir()
    path.write_bytes(b"listen = 8080\n")
    os.chmod(path, 0o640)
    os.setxattr(path, "user.nodekeep-test", b"label")
    os.utime(path, ns=(STAMP, STAMP))
    return path


def capture(path) -> tuple[bytes, dict, dict]:
    asset = CONFIG.normalize({"name": "app-conf", "path": str(path)})
    with CONFIG.capture(asset, "/nonexistent-scratch") as captured:
        data = captured.stream.read()
        return data, {**captured.facts, "path": str(path)}, asset


def artifact(facts: dict, data: bytes) -> Artifact:
    return Artifact(
        "app-conf", "config", "app-conf.zst.age", "config+zstd+age", 0, "0", len(data),
        hashlib.sha256(data).hexdigest(), source=facts,
    )  # fmt: skip


def test_a_config_file_comes_back_with_its_metadata(live, tmp_path):
    data, facts, asset = capture(live)
    assert asset["content"] == "file" and CONFIG.artifact_file(asset) == "app-conf.zst.age"
    assert data == b"listen = 8080\n" and facts["mode"] == "0640" and facts["mtime_ns"] == STAMP
    assert "sha256" not in facts  # no unkeyed hash of the file: a keyed MAC is taken once it is sealed
    recorded = artifact(facts, data)
    target = tmp_path / "restore" / "etc" / "app.conf"
    context = RunContext(None, "node1", "20260101T000000Z", None, artifact=recorded)
    with CONFIG.restore_into(str(target), context=context) as staged:
        staged.stream.write(data)
        assert staged.complete() == {"mode": "0640", "xattrs": ["user.nodekeep-test"]}
    info = os.stat(target)
    assert target.read_bytes() == data and stat.S_IMODE(info.st_mode) == 0o640 and info.st_mtime_ns == STAMP
    assert (info.st_uid, info.st_gid) == (os.stat(live).st_uid, os.stat(live).st_gid)
    assert os.getxattr(target, "user.nodekeep-test") == b"label"
    assert CONFIG.deep_check(str(target), recorded) == {"mode": "0640", "size": len(data), "xattrs": 1}
    os.removexattr(target, "user.nodekeep-test")
    with pytest.raises(RestoreError, match="lacks extended attributes or ACLs the backup recorded"):
        CONFIG.deep_check(str(target), recorded)


def test_verify_compares_the_live_config_by_a_keyed_mac(live, tmp_path):
    """The manifest records HMAC(node key, SHA-256) and no plain hash; only a host with the node's key compares."""
    data, facts, asset = capture(live)
    asset["state_dir"] = str(tmp_path / "state")
    context = RunContext(None, "node1", "20260101T000000Z", None)
    plain = hashlib.sha256(data).hexdigest()
    facts.update(CONFIG.content_facts(asset, plain, context))
    assert facts["content_mac"] != plain and facts["state_dir"] == asset["state_dir"]
    assert oct(os.stat(tmp_path / "state" / "node1" / "object-name.key").st_mode & 0o777) == "0o600"
    recorded = Artifact(
        "app-conf", "config", "app-conf.zst.age", "config+zstd+age", 0, "0", len(data), None, source=facts
    )
    assert CONFIG.verify_extra(recorded, context, deep=False) == {"live": "same"}
    live.write_bytes(b"listen = 9090\n")
    assert CONFIG.verify_extra(recorded, context, deep=False) == {"live": "differs"}
    elsewhere = RunContext(None, "node2", "20260101T000000Z", None)  # no key for that node: nothing made
    assert CONFIG.verify_extra(recorded, elsewhere, deep=False)["live"] == "not compared"
    assert not (tmp_path / "state" / "node2").exists()


def test_verify_compares_an_older_epochs_plain_sha256(live):
    """Epochs written before the keyed MAC recorded content_sha256: still compared."""
    data, facts, _asset = capture(live)
    recorded = artifact(facts, data)
    assert CONFIG.verify_extra(recorded, None, deep=False) == {"live": "same"}
    live.write_bytes(b"listen = 9090\n")
    assert CONFIG.verify_extra(recorded, None, deep=False) == {"live": "differs"}
    live.unlink()
    assert CONFIG.verify_extra(recorded, None, deep=False) == {"live": "absent"}


def test_a_directory_is_a_tree_and_a_fifo_is_refused(live, tmp_path):
    asset = CONFIG.normalize({"name": "etc", "path": str(live.parent)})
    assert asset["content"] == "tree" and CONFIG.artifact_file(asset) == "etc.tar.zst.age"
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CaptureError, match="config asset p: .*pipe is neither a file nor a directory"):
        CONFIG.normalize({"name": "p", "path": str(tmp_path / "pipe")})
    with pytest.raises(CaptureError, match="config asset m: .*missing does not exist"):
        CONFIG.normalize({"name": "m", "path": str(tmp_path / "missing")})
