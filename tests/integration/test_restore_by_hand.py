"""The by-hand restore script (age, zstd, jq and coreutils only: no nodekeep, no Python) rebuilds an
incremental SQLite epoch, a whole (v1-layout) SQLite epoch and an incremental RocksDB epoch byte for byte,
and refuses a damaged piece."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "restore-by-hand.sh"
pytestmark = pytest.mark.timeout(300)


def run_by_hand(node, epoch, asset, out, check=True):
    env = {"PATH": "/usr/bin:/bin"}  # standard tools only
    return subprocess.run(
        ["bash", str(SCRIPT), node.repository.root, node.name, epoch, asset, str(node.age_key.identity_path), str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=check,
    )


def _sha(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_sqlite_incremental_and_whole_epochs_by_hand(node, live_db, tmp_path):
    asset = node.sqlite_asset(live_db.path, incremental=True, state_dir=str(tmp_path / "state"))
    node.backup([asset])
    subprocess.run(
        ["sqlite3", str(live_db.path), "UPDATE t SET payload = randomblob(300) WHERE id % 97 = 0"],
        check=True,
        capture_output=True,
    )
    second = node.backup([asset])
    whole = node.backup([node.sqlite_asset(live_db.path, name="plain-db")])
    engine = node.restore(tmp_path / "engine", epoch=second.epoch)["artifacts"][0]["path"]
    by_hand = tmp_path / "by-hand.db"
    result = run_by_hand(node, second.epoch, "app-db", by_hand)
    assert "SHA-256 checked" in result.stdout
    assert _sha(by_hand) == _sha(engine)
    check = subprocess.run(
        ["sqlite3", str(by_hand), "PRAGMA integrity_check"], capture_output=True, text=True, check=True
    )
    assert check.stdout.strip() == "ok"
    plain = tmp_path / "plain.db"
    run_by_hand(node, whole.epoch, "plain-db", plain)
    assert _sha(plain) == _sha(node.restore(tmp_path / "engine2", epoch=whole.epoch)["artifacts"][0]["path"])


def test_a_damaged_piece_stops_the_script(node, live_db, tmp_path):
    asset = node.sqlite_asset(live_db.path, incremental=True, state_dir=str(tmp_path / "state"))
    manifest = node.backup([asset])
    objects = Path(node.repository.root) / node.name / "objects"
    victim = next(p for p in objects.rglob("*") if p.is_file())
    os.chmod(victim, 0o600)
    data = bytearray(victim.read_bytes())
    data[-100] ^= 1
    victim.write_bytes(bytes(data))
    result = run_by_hand(node, manifest.epoch, "app-db", tmp_path / "out.db", check=False)
    assert result.returncode != 0 and "SHA-256 differs" in result.stderr
    assert not (tmp_path / "out.db").exists()


def _attributes(root: Path) -> dict:
    """Every entry's type, owner, mode and mtime (of a link: its own), by path relative to ``root``."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = os.lstat(path)
        found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns)
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="owners other than one's own need root")
def test_a_files_tree_by_hand_keeps_owners_modes_and_mtimes(node, tmp_path):
    tree = tmp_path / "tree"
    (tree / "conf" / "keys").mkdir(parents=True)
    (tree / "conf" / "node.toml").write_text("port = 30303\n")
    (tree / "conf" / "keys" / "id").write_bytes(os.urandom(5000))
    (tree / "data.bin").write_bytes(os.urandom(300_000))
    os.symlink("conf/node.toml", tree / "current.toml")
    owners = {"conf": (1201, 1301), "conf/node.toml": (1202, 1302), "conf/keys": (1203, 1303),
              "conf/keys/id": (1204, 1304), "data.bin": (1205, 1305), "current.toml": (1206, 1306), ".": (1207, 1307)}  # fmt: skip
    modes = {"conf": 0o750, "conf/keys": 0o700, "conf/node.toml": 0o640, "conf/keys/id": 0o600, "data.bin": 0o4755}
    for number, (rel, (uid, gid)) in enumerate(sorted(owners.items(), key=lambda item: -item[0].count("/"))):
        path = tree / rel
        os.chown(path, uid, gid, follow_symlinks=False)
        if rel in modes:
            os.chmod(path, modes[rel])
        stamp = 1_600_000_000_123_456_789 + number * 86_400_000_000_007
        os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
    manifest = node.backup([{"name": "tree", "type": "files", "path": str(tree), "state_dir": str(tmp_path / "st")}])
    by_hand = tmp_path / "by-hand"
    result = run_by_hand(node, manifest.epoch, "tree", by_hand)
    assert "owners, modes and mtimes set" in result.stdout and "not kept" not in result.stderr, result.stderr
    assert _attributes(by_hand) == _attributes(tree)
    assert (by_hand / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()
