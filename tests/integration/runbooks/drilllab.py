"""The five runbook systems drilled the operator's way: ``agent.yml``, ``backup.yml`` twice with
writes in between, ``drill.yml`` into a staging host, against each system's own RPO/RTO targets.

Used by ``test_runbook_drills.py`` (``make test``: small size) and ``make drill-runbooks``
(``SIZE=1G``: 1 GiB of SQLite, 1 GiB of RocksDB and 1 GiB of files on the node).

``SystemDrill(system, base, size, playbook_bin, venv, age_key, pg_cluster=None)``
    one system of ``inventories/SYSTEM``: its node (the inventory's first node, in its group) and
    its first staging host, both this machine (connection local) with their paths mirrored under
    ``base``; ``run()`` builds the node's whole asset set (``inventory_assets``), starts the live
    writers, runs the playbooks, checks the staged copy against the live data and, for runbook
    000, times the runbook's own shell restore of the same data; returns a ``row`` (dict).
    Every place where this machine lacks the real service is listed in ``substitutions`` and
    printed.
``table(rows)``
    the summary table (system, assets, plain and stored size, RTO, RPO, target met, report path).
``parse_size("1G")``
    bytes (None: the small default size).

The inventory, the playbook runner and the node virtualenv come from
tests/integration/playbook_helpers.py (``PlaybookLab``, as the drill and playbook tests); the
node's data from rbhelpers.py (as the runbook round trips); PostgreSQL from
tests/integration/postgres/pgcluster.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent, HERE.parent / "postgres"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import pgcluster
from playbook_helpers import ROOT, PlaybookLab
from rbhelpers import (
    SqliteWriter,
    content_store,
    inventory_assets,
    inventory_vars,
    make_sqlite,
    ssh_key,
    tree_state,
    write_file,
)
from rbhelpers import (
    age_key as make_age_key,
)

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import human_seconds

MIB = 1 << 20
GIB = 1 << 30

#: runbook number of each system (inventories/SYSTEM/group_vars/nodekeep_nodes.yml cites it)
RUNBOOKS = {"animica": "000", "aurora-pds": "001", "guts": "002", "factory": "003", "ripple-env": "004"}
SYSTEMS = tuple(RUNBOOKS)


def parse_size(text: str | None) -> int | None:
    """``1G``, ``512M``, ``200MiB``... in bytes; empty or ``small``: None (the small default node)."""
    text = (text or "").strip()
    if not text or text.lower() in ("small", "default", "0"):
        return None
    units = {"": 1, "K": 1 << 10, "M": MIB, "G": GIB}
    number = text.upper().removesuffix("IB").removesuffix("B")
    unit = number[-1] if number[-1] in "KMG" else ""
    try:
        value = float(number[:-1] if unit else number)
    except ValueError:
        raise ValueError("SIZE=%s is not a size: use e.g. SIZE=1G, SIZE=200M or SIZE=small" % text) from None
    if value <= 0:
        raise ValueError("SIZE=%s must be more than 0 (SIZE=small for the small node)" % text)
    return int(value * units[unit])


def human(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return "%.0f %s" % (size, unit) if unit == "B" else "%.1f %s" % (size, unit)
        size /= 1024
    return "?"


#: durations as the drill report writes them
duration_text = human_seconds
seconds = human_seconds


def first_hosts(system: str) -> tuple[str, str, str]:
    """(node, its group, staging host): the inventory's first node and first staging host."""
    hosts = yaml.safe_load((ROOT / "inventories" / system / "hosts.yml").read_text())["all"]["children"]
    group, members = next(iter(hosts["nodekeep_nodes"]["children"].items()))
    node = next(iter(members["hosts"]))
    stage = next(iter(hosts["staging"]["hosts"]))
    return node, group, stage


def group_vars(system: str, group: str) -> dict:
    path = ROOT / "inventories" / system / "group_vars" / ("%s.yml" % group)
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


# --------------------------------------------------------------------------
# data: live SQLite writers, RocksDB batches, file trees (rbhelpers where they fit)
# --------------------------------------------------------------------------

_SQLITE_FILL = (
    "PRAGMA journal_mode=%s;"
    "CREATE TABLE ledger (id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, payload BLOB);"
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
    " INSERT INTO ledger (txn, payload) SELECT (i + 1) / 2, randomblob(%d) FROM n;"
)


def sized_sqlite(path: Path, size: int | None, rows: int, journal_mode: str = "wal") -> Path:
    """rbhelpers.make_sqlite (``rows`` rows), or about ``size`` bytes of the same ledger (4 KiB payloads)."""
    if size is None:
        return make_sqlite(path, rows=rows, journal_mode=journal_mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = max(2, size // 4150) // 2 * 2
    script = _SQLITE_FILL % (journal_mode, count, 4096)
    subprocess.run(["sqlite3", str(path)], input=script, text=True, check=True, capture_output=True)
    return path


_ROCKS_WRITER = textwrap.dedent(
    """
    import os, sys
    from rocksdict import Options, Rdict, WriteBatch
    path, first, batches, value_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    families = ["accounts", "blocks", "meta"]
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    db = Rdict(path, options, column_families={name: Options(raw_mode=True) for name in families})
    handles = {"default": db.get_column_family_handle("default")}
    handles.update({name: db.get_column_family_handle(name) for name in families})
    for n in range(first, first + batches):
        batch = WriteBatch(raw_mode=True)
        for family, handle in handles.items():
            batch.put(b"k%08d" % n, os.urandom(value_size), handle)
            batch.put(b"counter", n.to_bytes(8, "big"), handle)
        db.write(batch)
    db.flush()
    db.close()
    """
)


def rocksdb_batches(path: Path, first: int, batches: int, value_size: int = 200) -> None:
    """``batches`` write batches (one key per column family each, random values) in a separate process; closed after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", _ROCKS_WRITER, str(path), str(first), str(batches), str(value_size)],
        check=True, capture_output=True,
    )  # fmt: skip


_ROCKS_DIGEST = textwrap.dedent(
    """
    import hashlib, json, os, shutil, sys, tempfile
    from rocksdict import AccessType, Options, Rdict
    with tempfile.TemporaryDirectory(prefix="digest-rocksdb-") as scratch:
        copy = os.path.join(scratch, "db")
        shutil.copytree(sys.argv[1], copy, symlinks=True, copy_function=os.link)
        names = Rdict.list_cf(copy, Options(raw_mode=True))
        db = Rdict(copy, Options(raw_mode=True),
                   column_families={n: Options(raw_mode=True) for n in names if n != "default"} or None,
                   access_type=AccessType.read_only(False))
        out = {}
        for name in sorted(names):
            digest, count = hashlib.sha256(), 0
            for key, value in db.get_column_family(name).items():
                digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(8, "big") + value)
                count += 1
            out[name] = [count, digest.hexdigest()]
        db.close()
    print(json.dumps(out))
    """
)


def rocksdb_digest(path) -> dict:
    """``{family: [keys, sha256 of every key and value in order]}``, read-only from a hard-linked copy."""
    out = subprocess.run([sys.executable, "-c", _ROCKS_DIGEST, str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, "reading the RocksDB %s failed: %s" % (path, out.stderr[-2000:])
    return json.loads(out.stdout)


def big_files(root: Path, size: int, seed: str, file_size: int = 4 * MIB) -> None:
    """About ``size`` bytes of random files in a content-addressed layout (``ab/abcdef...``)."""
    for i in range(max(1, size // file_size)):
        name = hashlib.sha256(("%s-%d" % (seed, i)).encode()).hexdigest()
        write_file(root / name[:2] / name, os.urandom(file_size), 0o640, mtime=1_700_000_000 + i)


_COMPARE_SQLITE = (
    "ATTACH '%s' AS live;"
    "SELECT (SELECT count(*) FROM main.ledger),"
    " (SELECT count(*) FROM (SELECT * FROM main.ledger EXCEPT SELECT * FROM live.ledger)),"
    " (SELECT count(*) FROM live.ledger WHERE txn <= (SELECT max(txn) FROM main.ledger)),"
    " (SELECT count(*) FROM (SELECT txn FROM main.ledger GROUP BY txn HAVING count(*) != 2)),"
    " (SELECT max(txn) FROM main.ledger);"
)


def compare_sqlite(staged: Path, live: Path) -> str:
    """The staged DB is exactly the live DB's rows up to one committed transaction (sqlite3 CLI, SQL only)."""
    out = subprocess.run(
        ["sqlite3", "-separator", " ", str(staged), _COMPARE_SQLITE % str(live).replace("'", "''")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, "comparing %s with %s failed: %s" % (staged, live, out.stderr)
    rows, differing, live_rows, torn, last = (int(v) for v in out.stdout.split())
    assert rows > 0, "%s is empty" % staged
    assert differing == 0, "%d rows of %s differ from the live DB" % (differing, staged)
    assert live_rows == rows, "%s holds %d rows, the live DB %d up to txn %d" % (staged, rows, live_rows, last)
    assert torn == 0, "%d transactions of %s are torn" % (torn, staged)
    return "%d rows = the live DB up to transaction %d" % (rows, last)


def without(state: dict, prefixes=(), suffixes=()) -> dict:
    return {
        rel: value
        for rel, value in state.items()
        if not any(rel == p or rel.startswith(p + "/") for p in prefixes)
        and not any(os.path.basename(rel).endswith(s) for s in suffixes)
    }


def excluded(asset: dict) -> tuple[tuple, tuple]:
    """(prefixes, suffixes) of an asset's ``exclude`` patterns of the forms the inventories use (NAME, *SUFFIX)."""
    prefixes, suffixes = [], []
    for pattern in asset.get("exclude", []):
        (suffixes if pattern.startswith("*") else prefixes).append(pattern.lstrip("*"))
    return tuple(prefixes), tuple(suffixes)


# --------------------------------------------------------------------------
# one system
# --------------------------------------------------------------------------


class SystemDrill(PlaybookLab):
    """One runbook system's node and staging host on this machine (see the module docstring)."""

    def __init__(self, system, base, size, playbook_bin, venv, age, pg_cluster=None, log=print) -> None:
        super().__init__(base, playbook_bin)
        # The node virtualenv: ``venv`` (the controller's own by default, which holds requirements/node.txt)
        # for the five systems at once; agent.yml still makes the repositories and signing keys. The agent
        # role's install is tested by tests/integration/test_playbooks.py and the Molecule scenarios.
        self.venv = Path(venv)
        self.install_vars = {"nodekeep_agent_install": False}
        self.system = system
        self.runbook = RUNBOOKS[system]
        self.size = size
        self.age = age
        self.pg = pg_cluster
        self.log = log
        self.root = base / "node"  # the node's filesystem root: /var/lib/x is ROOT/var/lib/x
        self.stage_root = base / "stage"
        self.root.mkdir(parents=True)
        self.root.chmod(0o755)
        self.node, self.group, self.stage = first_hosts(system)
        self.substitutions: list[str] = []
        self.writers: list[SqliteWriter] = []
        self.pg_writer = None
        self.checks: list[str] = []
        self.row: dict = {"system": system, "runbook": self.runbook, "node": self.node}

    # ---------------------------------------------------------------- inventory
    def substitute(self, text: str) -> None:
        self.substitutions.append(text)

    def node_vars(self, assets: list[dict]) -> dict:
        own = inventory_vars(self.system)
        own.update(group_vars(self.system, self.group))  # the node's group overrides nodekeep_nodes
        keep = ("nodekeep_rpo_target", "nodekeep_rto_target", "nodekeep_targets", "nodekeep_retention",
                "nodekeep_verify_deep", "nodekeep_production_groups", "nodekeep_backup_labels",
                "nodekeep_service_manager", "nodekeep_runbook")  # fmt: skip
        node_vars = {key: own[key] for key in keep if key in own}
        node_vars.update(
            self.install_vars,
            ansible_connection="local",
            ansible_python_interpreter="{{ ansible_playbook_python }}",
            nodekeep_venv=str(self.venv),
            nodekeep_assets=assets,
            nodekeep_age_recipients=[self.age.recipient],
            nodekeep_repository_path=str(self.root) + own["nodekeep_repository_path"],
            nodekeep_signing_key_path=str(self.base / "signing" / "signing_key"),
            nodekeep_results_dir=str(self.base / "results"),
            nodekeep_service_manager="none",
        )
        self.substitute(
            "connection: local (this machine is %s and %s; inventory: ssh as root)" % (self.node, self.stage)
        )
        self.substitute("paths: every absolute path of the inventory under %s" % self.root)
        self.substitute("node virtualenv: %s (nodekeep_agent_install false; no fresh install per system)" % self.venv)
        self.substitute("age recipients: the placeholders replaced by a drill key (%s...)" % self.age.recipient[:12])
        if own.get("nodekeep_s3_targets"):
            self.substitute(
                "off-site copy: nodekeep_s3_targets (%s) left out, the drill restores from the node's repository"
                % ", ".join(t["name"] for t in own["nodekeep_s3_targets"])
            )
        if own.get("nodekeep_service_manager") != "none":
            self.substitute("services: nodekeep_service_manager none (no systemd units of the system here)")
        return node_vars

    def stage_vars(self) -> dict:
        own = group_vars(self.system, "staging")
        stage_vars = {key: value for key, value in own.items() if key.startswith("nodekeep_drill_")}
        stage_vars.update(
            ansible_connection="local",
            ansible_python_interpreter="{{ ansible_playbook_python }}",
            nodekeep_agent_install=False,
            nodekeep_venv=str(self.venv),
            nodekeep_repository_path=str(self.stage_root / "var/backups/nodekeep"),
            nodekeep_signing_key_path=str(self.stage_root / "signing" / "signing_key"),
            nodekeep_restore_host_repository=str(self.stage_root / "var/backups/nodekeep-shipped"),
            nodekeep_restore_to=str(self.stage_root) + own.get("nodekeep_restore_to", "/srv/nodekeep-staging"),
            nodekeep_age_identity_file=str(self.age.identity_path),
        )
        return stage_vars

    def write(self, assets: list[dict]) -> None:
        inventory = {
            "all": {
                "vars": {
                    "nodekeep_drill_staging_root": str(self.stage_root / "srv/nodekeep-drills"),
                    "nodekeep_drill_keep_staged": True,  # compared with the live data below, then removed
                    "nodekeep_drill_series": "runbook-%s" % self.runbook,
                },
                "children": {
                    "nodekeep_nodes": {"children": {self.group: {"hosts": {self.node: self.node_vars(assets)}}}},
                    "staging": {"hosts": {self.stage: self.stage_vars()}},
                },
            }
        }
        self.write_inventory(inventory)

    # ---------------------------------------------------------------- the node's data
    def build(self) -> list[dict]:
        return getattr(self, "build_" + self.system.replace("-", "_"))()

    def start_writer(self, path: Path) -> SqliteWriter:
        writer = SqliteWriter(path)
        self.writers.append(writer)
        return writer

    def offline_health(self, assets: list[dict], name: str, command: str) -> None:
        asset = next(a for a in assets if a["name"] == name)
        if "drill_health_command" in asset:
            return
        asset["drill_health_command"] = command
        self.substitute(
            "%s: health_command %r needs the running service: the drill checks the staged copy with %r"
            % (name, asset["health_command"].split()[0] + " ...", command)
        )

    def offline_rocksdb(self, assets: list[dict], name: str) -> None:
        asset = next(a for a in assets if a["name"] == name)
        was = "method %s, service %s" % (asset.get("method", "checkpoint"), asset.get("service", "-"))
        if asset.get("snapshot"):
            was = "snapshot %s" % asset["snapshot"].removeprefix(str(self.root))
        asset.update(method="offline")
        for option in ("service", "snapshot", "stop_timeout"):
            asset.pop(option, None)
        self.substitute(
            "%s: %s -> method offline (no service to stop or filesystem to snapshot here; the DB is"
            " closed between the writer's batches, as a stopped service leaves it)" % (name, was)
        )

    def no_snapshot(self, assets: list[dict]) -> None:
        dropped = [a["name"] for a in assets if a.pop("snapshot", None) and a["type"] != "rocksdb"]
        if dropped:
            self.substitute(
                "%s: snapshot: dropped (no ZFS/btrfs under the scratch root; read in place,"
                " tests/integration/snapshots covers snapshots)" % ", ".join(dropped)
            )

    SQLITE_HEALTH = 'test "$(sqlite3 "$NODEKEEP_PATH" \'PRAGMA quick_check;\')" = ok'

    def build_animica(self) -> list[dict]:
        size = self.size
        assets = inventory_assets("animica", self.root)
        named = {a["name"]: a for a in assets}
        self.offline_rocksdb(assets, "node-rocksdb")
        node_db = sized_sqlite(Path(named["node-db"]["path"]), size, rows=3000)
        services = sized_sqlite(Path(named["studio-services-db"]["path"]), None, rows=1000, journal_mode="delete")
        rocks = Path(named["node-rocksdb"]["path"])
        self.rocks_value = 200 if size is None else 16384
        self.rocks_next = 1 + (1500 if size is None else size // (4 * (self.rocks_value + 40)))
        rocksdb_batches(rocks, 1, self.rocks_next - 1, self.rocks_value)
        da = Path(named["da-store"]["path"])
        content_store(da, 240, "da")
        if size is not None:
            big_files(da / "blobs", size, "da-big")
        write_file(da / "upload.tmp", "partial", 0o600)
        write_file(da / "tmp" / "scratch.bin", b"\0" * 100)
        peers = Path(named["p2p-peerstore"]["path"])
        write_file(peers / "peers.json", '{"peers": ["12D3KooW..."]}\n', 0o640, mtime=1_700_000_123.5)
        keys = Path(named["node-keys"]["path"])
        ssh_key(keys / "node_identity" / "key", "animica-node")
        make_age_key(keys / "wallet-watch.age")
        config = Path(named["animica-config"]["path"])
        write_file(config / "chain.toml", 'chain_id = 1\npolicy_root = "0xabc"\n', 0o644, mtime=1_690_000_000)
        write_file(config / "allowlist.txt", "10.0.0.0/8\n", 0o640)
        (config / "current").symlink_to("chain.toml")
        self.start_writer(node_db)
        self.start_writer(services)

        def between():
            rocksdb_batches(rocks, self.rocks_next, 50, self.rocks_value)
            self.rocks_next += 50
            content_store(da / "new", 30, "da-new")
            write_file(peers / "peers.json", '{"peers": ["12D3KooW...", "12D3KooX..."]}\n', 0o640)

        self.between = between
        return assets

    def build_aurora_pds(self) -> list[dict]:
        size = self.size
        assets = inventory_assets("aurora-pds", self.root)
        named = {a["name"]: a for a in assets}
        self.offline_health(assets, "account-db", self.SQLITE_HEALTH)
        dbs = {
            "account-db": sized_sqlite(Path(named["account-db"]["path"]), None, rows=1200),
            "sequencer-db": sized_sqlite(Path(named["sequencer-db"]["path"]), size, rows=4000),
            "did-cache-db": sized_sqlite(Path(named["did-cache-db"]["path"]), None, rows=600),
        }
        blobs = Path(named["blobs"]["path"])
        content_store(blobs, 150, "blob", size=2000)
        if size is not None:
            big_files(blobs / "big", size, "blob-big")
        write_file(blobs / "incoming.tmp", "half an upload", 0o600)
        actors = Path(named["actors"]["path"])
        for i in range(12):
            did = "did:plc:%024d" % i
            make_sqlite(actors / did / "store.sqlite", rows=40, journal_mode="delete")
            write_file(actors / did / "blocks" / ("bafy%04d.car" % i), os.urandom(900), 0o640, mtime=1_700_000_000 + i)
        write_file(Path(named["pds-env"]["path"]), "PDS_JWT_SECRET=abc123\nPDS_ADMIN_PASSWORD=hunter2\n", 0o600)
        self.start_writer(dbs["account-db"])
        self.start_writer(dbs["sequencer-db"])

        def between():
            content_store(blobs / "new", 20, "blob-new", size=3000)
            write_file(actors / "did:plc:000000000000000000000012" / "blocks" / "bafy0012.car", os.urandom(700))

        self.between = between
        return assets

    def build_guts(self) -> list[dict]:
        size = self.size
        assets = inventory_assets("guts", self.root)
        named = {a["name"]: a for a in assets}
        self.offline_rocksdb(assets, "guts-db")
        self.no_snapshot(assets)
        self.offline_health(assets, "guts-db", 'ldb --db="$NODEKEEP_PATH" list_column_families | grep -q default')
        ssh_key(Path(named["node-key"]["path"]), "guts-node")
        write_file(
            Path(named["guts-config"]["path"]),
            'api:\n  addr: "0.0.0.0:8080"\nstorage:\n  data_dir: "/var/lib/guts"\n', 0o640, mtime=1_699_000_000,
        )  # fmt: skip
        data = Path(named["guts-data"]["path"])
        content_store(data / "objects", 180, "git", size=400)
        if size is not None:
            big_files(data / "packs", size, "git-big")
        write_file(data / "repos" / "alice" / "hello.git" / "HEAD", "ref: refs/heads/main\n")
        rocks = Path(named["guts-db"]["path"])
        self.rocks_value = 200 if size is None else 16384
        self.rocks_next = 1 + (800 if size is None else size // (4 * (self.rocks_value + 40)))
        rocksdb_batches(rocks, 1, self.rocks_next - 1, self.rocks_value)
        consensus = Path(named["consensus"]["path"])
        for height in range(1, 41):
            write_file(consensus / "blocks" / ("%08d.json" % height), '{"height": %d}\n' % height)
        write_file(consensus / "state.json", '{"height": 40, "round": 2}\n', 0o600)

        def between():
            rocksdb_batches(rocks, self.rocks_next, 40, self.rocks_value)
            self.rocks_next += 40
            for height in range(41, 45):
                write_file(consensus / "blocks" / ("%08d.json" % height), '{"height": %d}\n' % height)
            write_file(consensus / "state.json", '{"height": 44, "round": 0}\n', 0o600)

        self.between = between
        return assets

    def build_factory(self) -> list[dict]:
        size = self.size
        assets = inventory_assets("factory", self.root)
        named = {a["name"]: a for a in assets}
        self.offline_health(assets, "federation-ledger", self.SQLITE_HEALTH)
        proofs = Path(named["proofs"]["path"])
        for day in range(1, 4):
            for i in range(30):
                write_file(
                    proofs / ("2025-10-%02d" % day) / ("proof-%03d.json" % i),
                    '{"merkle_root": "%064x", "seq": %d}\n' % (day * 1000 + i, i), 0o444,
                    mtime=1_760_000_000 + day * 86400 + i,
                )  # fmt: skip
        if size is not None:
            big_files(proofs / "bulk", size, "proof-big")
        dbs = {
            "federation-ledger": sized_sqlite(Path(named["federation-ledger"]["path"]), size, rows=3000),
            "nonce-store": sized_sqlite(Path(named["nonce-store"]["path"]), None, rows=800),
            "receipts-db": sized_sqlite(Path(named["receipts-db"]["path"]), None, rows=1500),
        }
        config = Path(named["factory-config"]["path"])
        write_file(config / "key_registry.json", '{"keys": [{"id": "factory-1", "alg": "ed25519"}]}\n')
        write_file(config / "governance" / "policies.yaml", "gates:\n  - proof_continuity\n", 0o640)
        logs = Path(named["logs"]["path"])
        write_file(logs / "runtime.log", "started\n" * 50)
        write_file(logs / "runtime.lock", "1234")
        self.start_writer(dbs["federation-ledger"])
        self.start_writer(dbs["receipts-db"])

        def between():
            for i in range(30):
                write_file(proofs / "2025-10-04" / ("proof-%03d.json" % i), '{"seq": %d}\n' % i, 0o444)
            with open(logs / "runtime.log", "a") as handle:
                handle.write("hour 2\n" * 10)

        self.between = between
        return assets

    def build_ripple_env(self) -> list[dict]:
        assert self.pg is not None, "ripple-env needs the PostgreSQL cluster"
        size = self.size
        database = "flexnetos"
        for name in (database, "flexnetos_nodekeep_check"):
            self.pg.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        pgcluster.make_ledger(self.pg, database)
        overrides = {"postgres": dict(self.pg.settings(), exec_prefix=None, user=None)}
        assets = inventory_assets("ripple-env", self.root, overrides)
        self.substitute(
            "postgres: docker compose exec -T postgres pg_dump -> pg_dump of a private PostgreSQL 15 over its"
            " socket as the postgres user (no Docker daemon here)"
        )
        named = {a["name"]: a for a in assets}
        repo = Path(named["repo-config"]["path"])
        for name in ("flake.lock", "pixi.lock", "pixi.toml", "flake.nix", "docker-compose.dev.yml"):
            write_file(repo / name, "# %s\n" % name, mtime=1_720_000_000)
        write_file(repo / "README.md", "not part of the config asset\n")
        write_file(Path(named["env-file"]["path"]), "POSTGRES_PASSWORD=s3cret\nOPENAI_API_KEY=sk-test\n", 0o600)
        secrets = Path(named["age-secrets"]["path"])
        write_file(secrets / "secrets.nix", 'let admin = "ssh-ed25519 AAAA..."; in {}\n', 0o644)
        data = Path(named["docker-data"]["path"])
        write_file(data / "localai" / "models" / "tiny.gguf", os.urandom(300_000), 0o644, mtime=1_710_000_000)
        if size is not None:
            big_files(data / "localai" / "models" / "big", size, "model-big")
        write_file(data / "localai" / "logs" / "api.log", "ok\n" * 100)
        write_file(data / "postgres" / "PG_VERSION", "15\n", 0o600)
        neo4j = Path(named["neo4j-data"]["path"])
        write_file(neo4j / "databases" / "neo4j" / "neostore", os.urandom(8192), 0o600)
        self.pg_writer = pgcluster.Writer(self.pg, database).start()

        def between():
            write_file(data / "localai" / "logs" / "api.log", "ok\n" * 120)

        self.between = between
        return assets

    # ---------------------------------------------------------------- the drill
    def wait_for_writes(self, count: int) -> None:
        """Each live writer commits ``count`` more transactions (ordered by their status, no sleep race)."""
        for writer in self.writers:
            writer.wait_for(count)
        if self.pg_writer is not None:
            self.pg_writer.wait_for(self.pg_writer.committed() + count)

    def stop_writers(self) -> None:
        for writer in self.writers:
            writer.stop()
        if self.pg_writer is not None:
            self.pg_writer.stop()

    def timed(self, label: str, playbook: str, *args: str):
        began = time.monotonic()
        proc = self.run(playbook, *args, check=False)
        took = time.monotonic() - began
        self.log(
            "    %-34s %6.1f s%s" % (label, took, "" if proc.returncode == 0 else "  FAILED (rc %d)" % proc.returncode)
        )
        if proc.returncode != 0:
            raise AssertionError(
                "%s: %s failed (rc %d):\n%s\n%s"
                % (self.system, playbook, proc.returncode, proc.stdout[-30000:], proc.stderr[-3000:])
            )
        self.row.setdefault("playbooks", {})[label] = round(took, 2)
        return proc

    def run_system(self) -> dict:
        """Build, back up twice, drill; check the staged copy; the runbook's own restore for 000."""
        self.log("==> %s (runbook %s): node %s (group %s), staging host %s, size %s"
                 % (self.system, self.runbook, self.node, self.group, self.stage,
                    "small" if self.size is None else human(self.size)))  # fmt: skip
        began = time.monotonic()
        assets = self.build()
        self.row["build_seconds"] = round(time.monotonic() - began, 1)
        self.assets = assets
        self.write(assets)
        for line in self.substitutions:
            self.log("    substitution: %s" % line)
        try:
            self.timed("agent.yml", "agent.yml", "-e", "nodekeep_hosts=nodekeep_nodes:staging")
            self.wait_for_writes(20)
            self.timed("backup.yml #1", "backup.yml", "-l", self.group, "--skip-tags", "agent")
            self.between()
            self.wait_for_writes(20)
            self.timed("backup.yml #2", "backup.yml", "-l", self.group, "--skip-tags", "agent")
            self.timed("drill.yml", "drill.yml", "-l", self.group)
        finally:
            self.stop_writers()
        self.collect()
        self.compare()
        if self.system == "animica":
            self.runbook_procedure()
        return self.row

    def collect(self) -> None:
        results = self.base / "results" / self.node
        (report_json,) = sorted(results.glob("drill-*.json"))
        report = json.loads(report_json.read_text())
        self.report = report
        (node,) = report["nodes"]
        self.node_report = node
        drill_dir = self.stage_root / "var/backups/nodekeep/_drills" / report["series"] / report["drill_id"]
        repository = Path(self.inventory_node_vars()["nodekeep_repository_path"])
        manifest = json.loads((repository / self.node / node["epoch"] / "manifest.json").read_text())
        epochs = sorted(p.name for p in (repository / self.node).iterdir() if p.name[:1].isdigit())
        # plain: the data captured (a files tree's bytes, else the artifact's plaintext stream); stored: the
        # epoch's sealed artifacts plus the sealed objects its files assets reference (shared with epoch 1)
        plain = stored = 0
        for artifact in manifest["artifacts"]:
            source = artifact.get("source") or {}
            if source.get("layout") == "objects":
                plain += int(source["entries"]["bytes"])
                stored += int(source["refs"]["bytes"])
            else:
                plain += int(artifact["content_size"])
            stored += int(artifact["size"])
        self.row.update(
            assets=len(manifest["artifacts"]),
            drilled=len(node["assets"]),
            skipped=[s["name"] for s in node.get("skipped", [])],
            epochs=epochs,
            epoch=node["epoch"],
            plain=plain,
            stored=stored,
            rto=node["rto"]["seconds"],
            rto_target=node["rto"]["target_seconds"],
            rpo=node["rpo"]["seconds"],
            rpo_target=node["rpo"]["target_seconds"],
            met=bool(report["ok"]),
            ok=bool(report["ok"]),
            problems=report["problems"],
            report=str(drill_dir / "report.html"),
            report_dir=str(drill_dir),
            restore_seconds=node.get("restore_seconds"),
            breakdown=node.get("rto_breakdown") or node.get("breakdown"),
            substitutions=list(self.substitutions),
        )

    def clean(self, keep_reports: bool) -> None:
        """Remove the node's data and every repository; with ``keep_reports`` the signed drill reports and the
        controller's results stay (make drill-runbooks prints their paths)."""
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.stage_root / "var/backups/nodekeep-shipped", ignore_errors=True)
        shutil.rmtree(self.stage_root / "srv", ignore_errors=True)
        if not keep_reports:
            shutil.rmtree(self.base, ignore_errors=True)

    def inventory_node_vars(self) -> dict:
        inventory = json.loads((self.inventory_dir / "hosts.yml").read_text())
        return inventory["all"]["children"]["nodekeep_nodes"]["children"][self.group]["hosts"][self.node]

    def compare(self) -> None:
        """Every drilled asset's staged copy against the live data (writers stopped); then the copy is removed."""
        staged = {a["name"]: a for a in self.node_report["assets"]}
        for asset in self.assets:
            name, kind = asset["name"], asset["type"]
            if kind == "secret":
                assert name in self.row["skipped"], "%s: a secret was restored into staging" % name
                self.checks.append("%s: secret, not restored into staging (runbook: never in test environments)" % name)
                continue
            got = staged[name]
            assert got["ok"], "%s: %s" % (name, got.get("error"))
            path = Path(got["staged_path"])
            if kind == "sqlite":
                self.checks.append("%s: %s" % (name, compare_sqlite(path, Path(asset["path"]))))
            elif kind == "rocksdb":
                live = rocksdb_digest(asset["path"])
                assert rocksdb_digest(path) == live, "%s: the staged RocksDB differs from the live one" % name
                self.checks.append(
                    "%s: %d column families, %d keys, every key and value equal to the live DB"
                    % (name, len(live), sum(c for c, _d in live.values()))
                )
            elif kind in ("files", "config"):
                prefixes, suffixes = excluded(asset)
                if kind == "config" and asset.get("include"):
                    live = {
                        rel: value for rel, value in tree_state(asset["path"]).items()
                        if any(Path(rel).match(p) for p in asset["include"]) and "/" not in rel
                    }  # fmt: skip
                    restored = {rel: v for rel, v in tree_state(path).items() if rel in live}
                elif Path(asset["path"]).is_dir():
                    live = without(tree_state(asset["path"]), prefixes, suffixes)
                    restored = tree_state(path)
                    # nested assets restored on their own into the same staging tree
                    restored = without(restored, prefixes, suffixes)
                else:
                    live = tree_state(Path(asset["path"]).parent)[Path(asset["path"]).name]
                    restored = tree_state(path.parent)[path.name]
                assert restored == live, "%s: the staged tree differs from the live one" % name
                count = len(live) if isinstance(live, dict) else 1
                self.checks.append("%s: %d entries equal to live (content, mode, owner, mtime, links)" % (name, count))
            elif kind == "postgres":
                checks = got["checks"]
                self.checks.append(
                    "%s: pg_restore into a scratch DB, %s" % (name, json.dumps(checks, sort_keys=True)[:200])
                )
        shutil.rmtree(self.node_report["staging_path"], ignore_errors=True)
        self.row["checks"] = list(self.checks)

    def runbook_procedure(self) -> None:
        """Runbook 000's own shell restore of the same data (runbook_000.sh), timed, beside the drill."""
        named = {a["name"]: a for a in self.assets}
        work = self.base / "runbook-000"
        work.mkdir()
        script = HERE / "runbook_000.sh"
        env = dict(os.environ, IDENTITY=str(self.age.identity_path), RECIPIENT=self.age.recipient)
        args = [named[n]["path"] for n in ("node-db", "studio-services-db", "node-rocksdb", "da-store", "p2p-peerstore",
                                           "animica-config")]  # fmt: skip
        backup = subprocess.run(["bash", str(script), "backup", str(work), *args], env=env, capture_output=True,
                                text=True, check=False)  # fmt: skip
        assert backup.returncode == 0, "runbook 000 backup failed: %s" % backup.stderr[-3000:]
        began = time.monotonic()
        restore = subprocess.run(["bash", str(script), "restore", str(work)], env=env, capture_output=True,
                                 text=True, check=False)  # fmt: skip
        took = time.monotonic() - began
        assert restore.returncode == 0, "runbook 000 restore failed: %s" % restore.stderr[-3000:]
        stages = {}
        for line in restore.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAGE":
                stages[parts[1]] = float(parts[2])
        self.row["runbook_restore"] = round(took, 2)
        self.row["runbook_stages"] = stages
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict]) -> str:
    head = ("system", "runbook", "assets", "plain", "stored", "RTO (target)", "RPO (target)", "target met",
            "runbook shell restore", "report")  # fmt: skip
    lines = []
    for row in rows:
        if "rto" not in row:
            lines.append(
                (
                    row["system"],
                    row["runbook"],
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "FAILED: %s" % row.get("error", "?")[:60],
                    "-",
                    "-",
                )
            )
            continue
        assets = "%d (%d drilled, %d secret%s skipped)" % (
            row["assets"],
            row["drilled"],
            len(row["skipped"]),
            "" if len(row["skipped"]) == 1 else "s",
        )
        lines.append((
            row["system"], row["runbook"], assets, human(row["plain"]), human(row["stored"]),
            "%s (%s)" % (seconds(row["rto"]), seconds(row["rto_target"])),
            "%s (%s)" % (seconds(row["rpo"]), seconds(row["rpo_target"])),
            "yes" if row["met"] else "NO: " + "; ".join(row["problems"])[:80],
            seconds(row.get("runbook_restore")) if row.get("runbook_restore") is not None else "-",
            row["report"],
        ))  # fmt: skip
    widths = [max(len(str(r[i])) for r in [head, *lines]) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def details(rows: list[dict]) -> list[str]:
    """Below the table: per system the playbooks' times, the RTO breakdown, the runbook's shell restore."""
    out = []
    for row in rows:
        if "rto" not in row:
            continue
        out.append("%s (runbook %s, node %s, epoch %s):" % (row["system"], row["runbook"], row["node"], row["epoch"]))
        out.append("  playbooks: " + ", ".join("%s %s" % (k, seconds(v)) for k, v in row["playbooks"].items()))
        parts = row.get("breakdown") or {}
        if parts:
            out.append(
                "  drill RTO %s = " % seconds(row["rto"])
                + " + ".join(
                    "%s %s" % (name, seconds(parts[name]))
                    for name in ("ship", "restore", "check", "other")
                    if name in parts
                )
            )
        else:
            out.append(
                "  drill RTO %s (restore and deep checks %s of it)"
                % (seconds(row["rto"]), seconds(row["restore_seconds"]))
            )
        if row.get("runbook_restore") is not None:
            stages = row["runbook_stages"]
            out.append(
                "  runbook %s shell procedure, same data: %s (checksums %s, age -d | zstd -d | tar -x %s,"
                " integrity_check + ldb %s)  vs drill RTO %s"
                % (row["runbook"], seconds(row["runbook_restore"]), seconds(stages.get("checksums")),
                   seconds(stages.get("restore")), seconds(stages.get("check")), seconds(row["rto"]))
            )  # fmt: skip
    return out
