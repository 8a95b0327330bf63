"""End-of-run stats of verify and restore (issue 16), like epoch_backup's: per asset the bytes checked or
restored, duration, throughput, the result and what was proven, and a total, as data (``stats.assets``,
``stats.total``) and as the table the roles print (``stats.lines``, IEC units, the same formatter as backup).

integrity_check and epoch_restore run in their own process, as Ansible runs them, on a real epoch of a SQLite
database and a secret; a tampered artifact shows up as FAILED in its row.
"""

from __future__ import annotations

import os

import pytest
from safety.modrun import module

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def epoch(node, live_db, tmp_path):
    secret = tmp_path / "node.key"
    secret.write_bytes(os.urandom(64))
    secret.chmod(0o600)
    return node.backup([node.sqlite_asset(live_db.path), {"name": "key", "type": "secret", "path": str(secret)}])


def verify(node, age_key, tmp_path, **extra) -> dict:
    args = {"repository": node.repository.root, "node": node.name, "public_key": node.public_line}
    args.update(extra)
    return module("integrity_check", args, tmp_path / "args")


def test_verify_stats_per_asset_and_total_quick_and_deep(node, age_key, epoch, tmp_path):
    db, key = epoch.artifact("app-db"), epoch.artifact("key")
    quick = verify(node, age_key, tmp_path)
    assert quick["ok"] is True
    rows = {a["name"]: a for a in quick["stats"]["assets"]}
    assert rows["app-db"]["bytes"] == db.size and rows["key"]["bytes"] == key.size  # the sealed bytes read
    assert rows["app-db"]["proven"] == "signature, sealed SHA-256" and rows["app-db"]["result"] == "ok"
    total = quick["stats"]["total"]
    assert total["assets"] == 2 and total["bytes"] == db.size + key.size and total["result"] == "ok"
    assert total["seconds"] >= max(float(a["seconds"]) for a in rows.values())

    deep = verify(node, age_key, tmp_path, deep=True, identity_files=[str(age_key.identity_path)])
    rows = {a["name"]: a for a in deep["stats"]["assets"]}
    assert rows["app-db"]["bytes"] == db.content_size  # decrypted and checked
    assert rows["app-db"]["proven"].startswith("signature, sealed SHA-256, plain size (age-authenticated), integrity ok")
    # a secret has no plain SHA-256 in its manifest: the table does not claim one
    assert rows["key"]["proven"] == "signature, sealed SHA-256, plain size (age-authenticated)"
    lines = deep["stats"]["lines"]
    assert lines[0].split() == ["asset", "type", "checked", "duration", "throughput", "result", "proven"]
    assert lines[-1].startswith("total") and "2 asset(s)" in lines[-1] and " ok" in lines[-1]
    assert any(line.startswith("app-db") and "iB " in line for line in lines)  # IEC units

    # a tampered byte: its row says FAILED with the problem, the total counts it
    path = node.epoch_dir(epoch.epoch) / db.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    bad = verify(node, age_key, tmp_path, fail_on_error=False)
    rows = {a["name"]: a for a in bad["stats"]["assets"]}
    assert rows["app-db"]["result"] == "FAILED" and "SHA-256 does not match" in rows["app-db"]["proven"]
    assert rows["key"]["result"] == "ok" and bad["stats"]["total"]["result"] == "FAILED (1)"


def test_restore_stats_per_asset_and_total(node, age_key, epoch, tmp_path):
    db = epoch.artifact("app-db")
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
        "dest": str(tmp_path / "staging"),
    }
    result = module("epoch_restore", args, tmp_path / "args")
    assert not result.get("failed"), result.get("msg")
    rows = {a["name"]: a for a in result["stats"]["assets"]}
    restored = {a["name"]: a for a in result["artifacts"]}
    assert rows["app-db"]["bytes"] == os.path.getsize(restored["app-db"]["path"]) == db.content_size
    assert rows["app-db"]["proven"].startswith("signature, sealed SHA-256, plain size (age-authenticated), integrity ok")
    assert rows["key"]["bytes"] == 64 and rows["key"]["proven"].startswith("signature, sealed SHA-256, plain size")
    assert result["stats"]["total"]["bytes"] == db.content_size + 64
    lines = result["stats"]["lines"]
    assert lines[0].split()[:3] == ["asset", "type", "restored"] and lines[-1].startswith("total")
