"""No unkeyed digest of any plaintext that was backed up is stored in the repository or printed in a module result.

One real epoch of every common asset type (sqlite whole and incremental, rocksdb, files, config file and tree,
secret) is made, verified deep and restored by the modules, as Ansible runs them. The test then computes, as an
attacker would, the unkeyed digests (SHA-256, SHA-512, SHA-1, MD5, BLAKE2b/BLAKE2s at the usual sizes) of every
plaintext it could guess: each live and restored file, each SQLite page, each 4 MiB chunk, and each artifact's
decrypted stream (a tar, a database copy). None of them, as hex, base64 or raw bytes, may appear in any byte of
any file of the repository, nor in the results. A config file's drift check uses a keyed MAC instead
(docs/safety.md). Not covered here: the node's own state directory (the files index cache keeps plain SHA-256s
of the files on the node that holds them; docs/safety.md). Stream segments: tests/integration/streams/
test_stream_no_plaintext_digest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from integration_helpers import CHUNK, needles, scan, units
from modrun import module

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, Manifest

pytestmark = pytest.mark.timeout(300)


def files_under(root: Path) -> list[Path]:
    return sorted(Path(d) / n for d, _dirs, names in os.walk(root) for n in names if (Path(d) / n).is_file())


@pytest.fixture
def data(tmp_path):
    """Live data of every type, small, with distinct contents."""
    root = tmp_path / "live"
    root.mkdir()
    db = root / "app.db"
    with sqlite3.connect(str(db)) as conn:
        conn.execute("PRAGMA journal_mode=delete")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("row %d %s" % (n, "p" * 300),) for n in range(300)])
    conn.close()
    inc = root / "inc.db"
    with sqlite3.connect(str(inc)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [("inc %d %s" % (n, "q" * 200),) for n in range(300)])
    conn.close()
    from rocksdict import Rdict

    rdb = Rdict(str(root / "chain"))
    for n in range(200):
        rdb[b"key-%d" % n] = b"value-%d-" % n + b"r" * 100
    rdb.close()
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha file of the files tree\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(3000))
    (tree / "big.bin").write_bytes(os.urandom(CHUNK + 5000))
    conf = root / "app.conf"
    conf.write_text("password_hint = blue\n")
    conf_dir = root / "conf.d"
    conf_dir.mkdir()
    (conf_dir / "x.toml").write_text("x = 1\n")
    secret = root / "pin.txt"
    secret.write_bytes(b"482913")
    secret.chmod(0o600)
    state = str(tmp_path / "state")
    assets = [
        {"name": "db", "type": "sqlite", "path": str(db)},
        {"name": "inc", "type": "sqlite", "path": str(inc), "incremental": True, "state_dir": state},
        {"name": "chain", "type": "rocksdb", "path": str(root / "chain"), "method": "offline"},
        {"name": "tree", "type": "files", "path": str(tree), "state_dir": state},
        {"name": "conf", "type": "config", "path": str(conf), "state_dir": state},
        {"name": "confd", "type": "config", "path": str(conf_dir), "state_dir": state},
        {"name": "pin", "type": "secret", "path": str(secret)},
    ]
    return root, assets


def test_no_unkeyed_digest_of_backed_up_plaintext_is_stored_or_printed(data, age_key, signing_key, tmp_path):
    live, assets = data
    repo = tmp_path / "repo"
    common = {"repository": str(repo), "node": "node1"}
    results = []
    backup = module(
        "epoch_backup",
        dict(common, assets=assets, recipients=[age_key.recipient], signing_key=str(signing_key.path)),
        tmp_path / "args",
    )
    assert not backup.get("failed"), backup
    results.append(backup)
    keys = {"public_key": signing_key.public_line}
    for deep in (False, True):
        extra = {"deep": True, "identity_files": [str(age_key.identity_path)]} if deep else {}
        checked = module("integrity_check", dict(common, **keys, **extra), tmp_path / "args")
        assert checked.get("ok") is True, checked
        results.append(checked)
    staging = tmp_path / "staging"
    restored = module(
        "epoch_restore",
        dict(common, **keys, identity_files=[str(age_key.identity_path)], dest=str(staging)),
        tmp_path / "args",
    )
    assert not restored.get("failed"), restored
    results.append(restored)

    # what an attacker would guess: every live and restored file, page and chunk, and each artifact's plaintext
    plaintexts = []
    for path in files_under(live) + files_under(staging):
        plaintexts += units(path.read_bytes(), pages=path.suffix == ".db")
    (epoch,) = [d for d in os.listdir(repo / "node1") if d[0].isdigit()]
    manifest = Manifest.from_bytes((repo / "node1" / epoch / MANIFEST_NAME).read_bytes())
    identities = seal.load_identities([], [str(age_key.identity_path)])
    # every artifact but the maps of pieces (a files index, a page map: nodekeep's own, whose SHA-256 is kept)
    data_artifacts = [a for a in manifest.artifacts if a.asset_type != "files" and a.source.get("layout") != "pieces"]
    assert {a.name for a in data_artifacts} == {"db", "chain", "conf", "confd", "pin"}
    for artifact in data_artifacts:
        plaintexts += units(seal.unseal_bytes((repo / "node1" / epoch / artifact.file).read_bytes(), identities))
    found = needles(plaintexts)
    # the scan can fail: the plain SHA-256 of the database is one of the needles
    db_hex = hashlib.sha256((live / "app.db").read_bytes()).hexdigest()
    assert scan(json.dumps({"x": db_hex}).encode(), found)

    leaks = {}
    for path in files_under(repo):
        hits = scan(path.read_bytes(), found)
        if hits:
            leaks[str(path.relative_to(repo))] = hits
    for name, result in zip(("epoch_backup", "integrity_check", "integrity_check deep", "epoch_restore"), results):
        for line in json.dumps(result, indent=1, sort_keys=True).splitlines():
            hits = scan(line.encode(), found)
            if hits:
                leaks["%s: %s" % (name, line.strip())] = hits
    assert leaks == {}, leaks
    # the config drift check still works, by the keyed MAC under the node's key
    lives = {a["name"]: a.get("extra", {}).get("live") for a in results[1]["artifacts"]}
    assert lives["conf"] == lives["confd"] == "same"
