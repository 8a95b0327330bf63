"""One round trip per runbook system: the inventory's asset list, real data, backup, wipe, restore, compare.

Each test builds the node of ``inventories/SYSTEM`` under a temp root (its real
paths mirrored there), backs it up with the engine using exactly that
inventory's ``nodekeep_assets`` (paths rewritten by ``inventory_assets``),
deep-verifies the epoch, removes the node's data, restores the epoch in place
and compares everything: SQLite rows (written by live writer processes during
the backup), RocksDB keys per column family, trees (content, modes, owners,
mtimes, symlinks), key bytes, PostgreSQL rows.

Deliberate test substitutions (the real ones are covered by their own suites):
filesystem snapshots (``snapshot:``) are dropped (tests/integration/snapshots),
a RocksDB whose inventory method is ``stop``/``snapshot`` is captured with
``offline`` after its writer closed it (tests/integration/rocksdb covers the
other methods), and the PostgreSQL of runbook 004 is reached over the test
cluster's socket instead of ``docker compose exec`` (no Docker daemon here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pgcluster
import pytest
from integration_helpers import read_rocksdb
from rbhelpers import (
    age_key,
    assert_sqlite_snapshot,
    assert_sqlite_snapshots,
    content_store,
    inventory_assets,
    make_rocksdb,
    make_sqlite,
    sqlite_rows,
    sqlite_snapshots,
    ssh_key,
    tree_state,
    write_file,
)

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def by_name(assets) -> dict:
    return {asset["name"]: asset for asset in assets}


def remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        target = path + suffix
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        elif os.path.lexists(target):
            os.unlink(target)


def wipe_all(assets) -> None:
    for asset in assets:
        if asset["type"] != "postgres":
            remove(asset["path"])
            assert not os.path.lexists(asset["path"])


def without(state: dict, *prefixes: str, suffixes=()) -> dict:
    """A tree state without the entries an asset excludes."""
    return {
        rel: value
        for rel, value in state.items()
        if not any(rel == p or rel.startswith(p + "/") for p in prefixes)
        and not any(os.path.basename(rel).endswith(s) for s in suffixes)
    }


def strip_mtimes(state: dict) -> dict:
    return {rel: value[:6] for rel, value in state.items()}


def test_animica_node_runbook_000(node, node_root, sqlite_writers, round_trip, tmp_path):
    """Runbook 000: SQLite node + services DBs (live writers), RocksDB, DA store, peerstore, keys, configs."""
    assets = inventory_assets("animica", node_root, {"node-rocksdb": {"method": "offline", "service": None}})
    named = by_name(assets)
    node_db = make_sqlite(Path(named["node-db"]["path"]), rows=3000)
    services_db = make_sqlite(Path(named["studio-services-db"]["path"]), rows=1000, journal_mode="delete")
    make_rocksdb(Path(named["node-rocksdb"]["path"]))
    da = Path(named["da-store"]["path"])
    content_store(da, 240, "da")
    write_file(da / "upload.tmp", "partial", 0o600)
    write_file(da / "tmp" / "scratch.bin", b"\0" * 100)
    peers = Path(named["p2p-peerstore"]["path"])
    write_file(peers / "peers.json", '{"peers": ["12D3KooW..."]}\n', 0o640, mtime=1_700_000_123.5)
    write_file(peers / "ban" / "list.txt", "10.0.0.9\n", 0o600)
    keys = Path(named["node-keys"]["path"])
    ssh_key(keys / "node_identity" / "key", "animica-node")
    age_key(keys / "wallet-watch.age")
    config = Path(named["animica-config"]["path"])
    write_file(config / "chain.toml", 'chain_id = 1\npolicy_root = "0xabc"\n', 0o644, mtime=1_690_000_000)
    write_file(config / "allowlist.txt", "10.0.0.0/8\n", 0o640)
    write_file(config / "cors.json", '{"origins": ["https://studio.animica"]}\n', 0o644)
    (config / "current").symlink_to("chain.toml")

    writers = [sqlite_writers(node_db), sqlite_writers(services_db)]
    for writer in writers:
        writer.wait_for(30)
    expected = {}

    def wipe(kept):
        for writer in writers:
            writer.stop()
        expected["node-db"] = sqlite_rows(node_db)
        expected["studio-services-db"] = sqlite_rows(services_db)
        expected["rocksdb"] = read_rocksdb(named["node-rocksdb"]["path"])
        expected["da"] = without(tree_state(da), "tmp", suffixes=(".tmp",))
        expected["peers"] = tree_state(peers)
        expected["keys"] = strip_mtimes(tree_state(keys))
        expected["config"] = tree_state(config)
        wipe_all(kept)

    def compare(kept, manifest, result):
        restored = by_name(result["artifacts"])
        assert assert_sqlite_snapshot(node_db, expected["node-db"]) > 0
        assert assert_sqlite_snapshot(services_db, expected["studio-services-db"]) > 0
        data = read_rocksdb(named["node-rocksdb"]["path"])
        assert data == expected["rocksdb"]
        assert sorted(data) == ["accounts", "blocks", "default", "meta"]
        assert {len(values) for values in data.values()} == {1501}
        assert tree_state(da) == expected["da"]
        assert tree_state(peers) == expected["peers"]
        assert restored["node-keys"]["path"] == str(keys)  # a secret directory restores as a directory
        assert strip_mtimes(tree_state(keys)) == expected["keys"]
        assert tree_state(config) == expected["config"]
        facts = by_name([a.to_dict() for a in manifest.artifacts])
        assert facts["node-db"]["source"]["integrity"] == "ok"

    round_trip(assets, wipe, compare)


def test_aurora_pds_runbook_001(node, node_root, sqlite_writers, round_trip):
    """Runbook 001: account, sequencer and DID cache DBs (live writers), blobs, actor store, .env."""
    assets = inventory_assets("aurora-pds", node_root)
    named = by_name(assets)
    dbs = {
        name: make_sqlite(Path(named[name]["path"]), rows=rows)
        for name, rows in (("account-db", 1200), ("sequencer-db", 4000), ("did-cache-db", 600))
    }
    blobs = Path(named["blobs"]["path"])
    content_store(blobs, 150, "blob", size=2000)
    write_file(blobs / "incoming.tmp", "half an upload", 0o600)
    actors = Path(named["actors"]["path"])
    for i in range(12):
        did = "did:plc:%024d" % i
        make_sqlite(actors / did / "store.sqlite", rows=40, journal_mode="delete")
        write_file(actors / did / "blocks" / ("bafy%04d.car" % i), os.urandom(900), 0o640, mtime=1_700_000_000 + i)
    write_file(actors / "did:plc:000000000000000000000000" / "store.sqlite-journal", "stale", 0o600)
    env = write_file(Path(named["pds-env"]["path"]), "PDS_JWT_SECRET=abc123\nPDS_ADMIN_PASSWORD=hunter2\n", 0o600)
    writers = {name: sqlite_writers(dbs[name]) for name in ("account-db", "sequencer-db")}
    for writer in writers.values():
        writer.wait_for(25)
    expected = {}

    def wipe(kept):
        for writer in writers.values():
            writer.stop()
        expected["rows"] = sqlite_snapshots(dbs)
        expected["blobs"] = without(tree_state(blobs), suffixes=(".tmp",))
        expected["actors"] = without(tree_state(actors), suffixes=("-journal",))
        expected["env"] = env.read_bytes()
        wipe_all(kept)

    def compare(kept, manifest, result):
        assert_sqlite_snapshots(dbs, expected["rows"])
        assert tree_state(blobs) == expected["blobs"]
        assert tree_state(actors) == expected["actors"]
        assert env.read_bytes() == expected["env"]
        assert oct(env.stat().st_mode & 0o777) == "0o600"
        assert by_name([a.to_dict() for a in manifest.artifacts])["did-cache-db"]["source"]["integrity"] == "ok"

    round_trip(assets, wipe, compare)


def test_guts_node_runbook_002(node, node_root, round_trip):
    """Runbook 002: node key, config, data directory with RocksDB, consensus state."""
    overrides = {"guts-db": {"method": "offline", "snapshot": None, "service": None}}
    overrides.update({name: {"snapshot": None} for name in ("guts-data", "consensus")})
    assets = inventory_assets("guts", node_root, overrides)
    named = by_name(assets)
    key = ssh_key(Path(named["node-key"]["path"]), "guts-node")
    config = write_file(
        Path(named["guts-config"]["path"]),
        'api:\n  addr: "0.0.0.0:8080"\nstorage:\n  data_dir: "/var/lib/guts"\n',
        0o640,
        mtime=1_699_000_000,
    )
    data = Path(named["guts-data"]["path"])
    content_store(data / "objects", 180, "git", size=400)
    write_file(data / "repos" / "alice" / "hello.git" / "HEAD", "ref: refs/heads/main\n")
    write_file(data / "repos" / "alice" / "hello.git" / "refs" / "heads" / "main", "a" * 40 + "\n")
    write_file(data / "collab" / "issues.json", '[{"id": 1}]\n', 0o600)
    make_rocksdb(Path(named["guts-db"]["path"]), batches=800)
    consensus = Path(named["consensus"]["path"])
    for height in range(1, 41):
        write_file(
            consensus / "blocks" / ("%08d.json" % height), '{"height": %d}\n' % height, mtime=1_700_000_000 + height
        )
    write_file(consensus / "state.json", '{"height": 40, "round": 2}\n', 0o600)
    expected = {}

    def wipe(kept):
        expected["key"] = key.read_bytes()
        expected["config"] = tree_state(config.parent)["config.yaml"]
        expected["data"] = without(tree_state(data), "rocksdb", "consensus")
        expected["db"] = read_rocksdb(named["guts-db"]["path"])
        expected["consensus"] = tree_state(consensus)
        wipe_all(kept)

    def compare(kept, manifest, result):
        assert key.read_bytes() == expected["key"] and oct(key.stat().st_mode & 0o777) == "0o600"
        facts = by_name([a.to_dict() for a in manifest.artifacts])["node-key"]["source"]
        assert facts.get("public_key", "").startswith("ssh-ed25519 ")
        assert tree_state(config.parent)["config.yaml"] == expected["config"]
        assert without(tree_state(data), "rocksdb", "consensus") == expected["data"]
        assert read_rocksdb(named["guts-db"]["path"]) == expected["db"]
        assert tree_state(consensus) == expected["consensus"]

    round_trip(assets, wipe, compare)


def test_factory_runtime_runbook_003(node, node_root, sqlite_writers, round_trip):
    """Runbook 003: proof files, federation ledger (live writer), nonce store, receipts DB, config, logs."""
    assets = inventory_assets("factory", node_root)
    named = by_name(assets)
    proofs = Path(named["proofs"]["path"])
    for day in range(1, 6):
        for i in range(30):
            write_file(
                proofs / ("2025-10-%02d" % day) / ("proof-%03d.json" % i),
                '{"merkle_root": "%064x", "seq": %d}\n' % (day * 1000 + i, i),
                0o444,
                mtime=1_760_000_000 + day * 86400 + i,
            )
    dbs = {
        name: make_sqlite(Path(named[name]["path"]), rows=rows)
        for name, rows in (("federation-ledger", 3000), ("nonce-store", 800), ("receipts-db", 1500))
    }
    config = Path(named["factory-config"]["path"])
    write_file(config / "key_registry.json", '{"keys": [{"id": "factory-1", "alg": "ed25519"}]}\n')
    write_file(config / "governance" / "policies.yaml", "gates:\n  - proof_continuity\n", 0o640)
    write_file(config / "alerts" / "rules.yaml", "- alert: ProofGap\n")
    logs = Path(named["logs"]["path"])
    write_file(logs / "runtime.log", "started\n" * 50)
    write_file(logs / "runtime.lock", "1234")
    writer = sqlite_writers(dbs["federation-ledger"])
    writer.wait_for(30)
    expected = {}

    def wipe(kept):
        writer.stop()
        expected["rows"] = sqlite_snapshots(dbs)
        expected["proofs"] = tree_state(proofs)
        expected["config"] = tree_state(config)
        expected["logs"] = without(tree_state(logs), suffixes=(".lock",))
        wipe_all(kept)

    def compare(kept, manifest, result):
        assert_sqlite_snapshots(dbs, expected["rows"])
        assert tree_state(proofs) == expected["proofs"]
        assert tree_state(config) == expected["config"]
        assert tree_state(logs) == expected["logs"]

    round_trip(assets, wipe, compare)


def test_ripple_env_runbook_004(node, node_root, pg_cluster, age_key, round_trip, tmp_path):
    """Runbook 004: .env, age secrets, lock files and configs, docker data volumes, Postgres (live writer)."""
    database = "flexnetos"
    check_db = "flexnetos_nodekeep_check"
    for name in (database, check_db):
        pg_cluster.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    pgcluster.make_ledger(pg_cluster, database)
    overrides = {"postgres": dict(pg_cluster.settings(), exec_prefix=None, user=None)}
    assets = inventory_assets("ripple-env", node_root, overrides)
    named = by_name(assets)
    repo = Path(named["repo-config"]["path"])
    for name in ("flake.lock", "pixi.lock", "pixi.toml", "flake.nix", "docker-compose.dev.yml", ".env.agixt.example"):
        write_file(repo / name, "# %s\n" % name, mtime=1_720_000_000)
    write_file(repo / "README.md", "not part of the config asset\n")
    write_file(repo / ".git" / "HEAD", "ref: refs/heads/main\n")
    env = write_file(Path(named["env-file"]["path"]), "POSTGRES_PASSWORD=s3cret\nOPENAI_API_KEY=sk-test\n", 0o600)
    secrets = Path(named["age-secrets"]["path"])
    write_file(secrets / "secrets.nix", 'let admin = "ssh-ed25519 AAAA..."; in {}\n', 0o644)
    for name in ("api-token", "db-password"):
        plain = tmp_path / name
        plain.write_text("%s value\n" % name)
        subprocess.run(["age", "-r", age_key.recipient, "-o", str(secrets / ("%s.age" % name)), str(plain)], check=True)
    data = Path(named["docker-data"]["path"])
    write_file(data / "localai" / "models" / "tiny.gguf", os.urandom(300_000), 0o644, mtime=1_710_000_000)
    write_file(data / "localai" / "logs" / "api.log", "ok\n" * 100)
    write_file(data / "postgres" / "PG_VERSION", "15\n", 0o600)  # dumped by the postgres asset, not copied
    neo4j = Path(named["neo4j-data"]["path"])
    write_file(neo4j / "databases" / "neo4j" / "neostore", os.urandom(8192), 0o600)
    write_file(neo4j / "transactions" / "neo4j" / "neostore.transaction.db.0", os.urandom(4096), 0o600)

    writer = pgcluster.Writer(pg_cluster, database).start()
    expected = {}
    try:
        writer.wait_for(40)

        def wipe(kept):
            writer.stop()
            expected["repo"] = {
                rel: value
                for rel, value in tree_state(repo).items()
                if rel
                in ("flake.lock", "pixi.lock", "pixi.toml", "flake.nix", "docker-compose.dev.yml", ".env.agixt.example")
            }
            expected["env"] = env.read_bytes()
            expected["secrets"] = strip_mtimes(tree_state(secrets))
            expected["data"] = without(tree_state(data), "postgres", "neo4j")
            expected["neo4j"] = tree_state(neo4j)
            expected["entries"] = pg_cluster.psql("SELECT id, txn, account, amount FROM entries ORDER BY id", database)
            wipe_all(kept)
            pg_cluster.psql('DROP DATABASE "%s" WITH (FORCE)' % database)  # the node's database is gone too

        def compare(kept, manifest, result):
            restored = by_name(result["artifacts"])
            assert tree_state(repo).keys() >= expected["repo"].keys()
            assert {rel: tree_state(repo)[rel] for rel in expected["repo"]} == expected["repo"]
            assert not (repo / "README.md").exists() and not (repo / ".git").exists()
            assert env.read_bytes() == expected["env"] and oct(env.stat().st_mode & 0o777) == "0o600"
            assert restored["age-secrets"]["path"] == str(secrets)
            assert strip_mtimes(tree_state(secrets)) == expected["secrets"]
            assert without(tree_state(data), "neo4j") == expected["data"]
            assert not (data / "postgres").exists()  # a live data directory is dumped, never copied
            assert tree_state(neo4j) == expected["neo4j"]
            # The staged check database (restore_database) was loaded and counted by the restore itself.
            check = restored["postgres"]["checks"]["restore"]
            assert check["database"] == check_db and check["tables"] == 4
            # And the node's own database is restored under its name from the restored dump.
            artifact = next(a for a in manifest.artifacts if a.name == "postgres")
            loaded = asset_type("postgres").load(restored["postgres"]["path"], artifact, database, replace_source=True)
            assert loaded["rows"] == check["rows"]
            counter = int(pg_cluster.psql("SELECT n FROM counter", database))
            assert counter >= 40
            entries = pg_cluster.psql("SELECT id, txn, account, amount FROM entries ORDER BY id", database)
            live = expected["entries"].splitlines()
            assert entries.splitlines() == live[: len(entries.splitlines())]
            assert len(entries.splitlines()) == 4000 + 2 * counter
            assert pg_cluster.psql("SELECT sum(balance) FROM accounts", database) == "0"
            comment = pg_cluster.psql(
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = '%s'"
                % database
            )
            assert comment == ""

        round_trip(assets, wipe, compare)
    finally:
        writer.stop()
        for name in (database, check_db):
            pg_cluster.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name, check=False)
