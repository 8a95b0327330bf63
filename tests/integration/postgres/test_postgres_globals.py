"""Roles, grants and default privileges come back on a FRESH cluster (initdb), exactly.

A real PostgreSQL 15: roles with attributes, settings and memberships, grants on a schema, tables, a
sequence and a function, default privileges (in a schema and database-wide), the database's own GRANT.
The epoch is restored to a staging path and loaded into a brand-new cluster; the ``\\dp``/``\\ddp``/``\\du``
equivalents (catalog queries) must equal the source's. No password hash is captured unless asked.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import uuid

import pgcluster
import pytest
from module_driver import run_module

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

pytestmark = pytest.mark.timeout(300)

PRIVILEGES = {
    "relations": "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, '')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN"
    " ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' AND c.relkind IN ('r', 'S', 'v')"
    " ORDER BY 1, 2",
    "schemas": "SELECT nspname, pg_get_userbyid(nspowner), coalesce(nspacl::text, '') FROM pg_namespace"
    " WHERE nspname NOT LIKE 'pg_%%' AND nspname <> 'information_schema' ORDER BY 1",
    "default privileges": "SELECT pg_get_userbyid(defaclrole), coalesce(n.nspname, '-'), defaclobjtype,"
    " defaclacl::text FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace ORDER BY 1, 2, 3",
    "functions": "SELECT p.proname, pg_get_userbyid(p.proowner), coalesce(p.proacl::text, '') FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'sales' ORDER BY 1",
    "database": "SELECT coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()",
}

ROLES = (
    "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,"
    " rolbypassrls, rolconnlimit, coalesce(rolconfig::text, '') FROM pg_roles WHERE rolname LIKE '{p}%' ORDER BY 1"
)
MEMBERS = (
    "SELECT r.rolname, m.rolname, a.admin_option FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid"
    " JOIN pg_roles m ON m.oid = a.member WHERE r.rolname LIKE '{p}%' OR m.rolname LIKE '{p}%' ORDER BY 1, 2"
)


def setup_sql(p: str, database: str) -> tuple[str, str]:
    """(cluster SQL, database SQL) making roles ``p*`` and every kind of grant."""
    cluster = f"""
    CREATE ROLE {p}owner NOLOGIN;
    CREATE ROLE {p}reader LOGIN PASSWORD 'reader-Secret-77' CONNECTION LIMIT 5;
    CREATE ROLE {p}writer NOLOGIN INHERIT;
    CREATE ROLE "{p}Odd Name" NOLOGIN;
    GRANT {p}reader TO {p}writer;
    GRANT {p}writer TO "{p}Odd Name" WITH ADMIN OPTION;
    ALTER ROLE {p}reader SET statement_timeout = '5s';
    GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {p}reader;
    REVOKE ALL ON DATABASE "{database}" FROM PUBLIC;
    """
    inside = f"""
    CREATE SCHEMA sales AUTHORIZATION {p}owner;
    SET ROLE {p}owner;
    CREATE TABLE sales.orders (id serial PRIMARY KEY, total numeric);
    CREATE VIEW sales.big AS SELECT * FROM sales.orders WHERE total > 100;
    CREATE FUNCTION sales.tax(numeric) RETURNS numeric LANGUAGE sql AS 'SELECT $1 * 0.2';
    INSERT INTO sales.orders (total) SELECT g FROM generate_series(1, 50) g;
    GRANT USAGE ON SCHEMA sales TO {p}reader;
    GRANT SELECT ON sales.orders, sales.big TO {p}reader;
    GRANT INSERT, UPDATE ON sales.orders TO {p}writer;
    GRANT USAGE, SELECT ON SEQUENCE sales.orders_id_seq TO {p}writer;
    REVOKE EXECUTE ON FUNCTION sales.tax(numeric) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION sales.tax(numeric) TO "{p}Odd Name";
    ALTER DEFAULT PRIVILEGES IN SCHEMA sales GRANT SELECT ON TABLES TO {p}reader;
    ALTER DEFAULT PRIVILEGES GRANT USAGE ON SEQUENCES TO {p}writer;
    RESET ROLE;
    ALTER DEFAULT PRIVILEGES FOR ROLE {p}owner IN SCHEMA sales GRANT ALL ON SEQUENCES TO {p}writer;
    ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
    """
    return cluster, inside


def catalog(cluster, database: str, prefix: str) -> dict:
    found = {name: cluster.psql(sql.replace("%%", "%"), database) for name, sql in PRIVILEGES.items()}
    found["roles"] = cluster.psql(ROLES.format(p=prefix))
    found["memberships"] = cluster.psql(MEMBERS.format(p=prefix))
    return found


@pytest.fixture
def granted(pg_cluster):
    """A database on the session cluster with roles ``nkXXXX_*`` and grants of every kind; dropped after."""
    if not pg_cluster.running():
        pg_cluster.start()
    prefix = "nk%s_" % uuid.uuid4().hex[:6]
    database = prefix + "shop"
    pg_cluster.create_database(database)
    cluster_sql, inside = setup_sql(prefix, database)
    pg_cluster.psql(cluster_sql)
    pg_cluster.psql(inside, database)
    yield pg_cluster, database, prefix
    pg_cluster.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database, check=False)
    pg_cluster.psql('DROP DATABASE IF EXISTS "%s_check" WITH (FORCE)' % database, check=False)
    roles = pg_cluster.psql("SELECT quote_ident(rolname) FROM pg_roles WHERE rolname LIKE '%s%%'" % prefix).split()
    for role in roles:
        pg_cluster.psql("DROP OWNED BY %s CASCADE" % role, check=False)
    if roles:
        pg_cluster.psql("DROP ROLE IF EXISTS %s" % ", ".join(roles), check=False)


@pytest.fixture(scope="module")
def fresh_cluster():
    """A second, brand-new cluster (initdb): only the bootstrap superuser exists (each test's roles and database
    carry their own prefix, so the tests of this module share it)."""
    cluster = pgcluster.Cluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


def asset(cluster, database, **options) -> dict:
    item = {"name": "shop-pg", "type": "postgres", "path": "/var/backups/postgres/shop.pgdump"}
    item.update(cluster.settings(database=database))
    item.update(options)
    return item


def test_grants_and_default_privileges_survive_a_restore_onto_a_fresh_cluster(node, granted, fresh_cluster, tmp_path):
    source, database, prefix = granted
    before = catalog(source, database, prefix)
    assert "%sreader=r/%sowner" % (prefix, prefix) in before["relations"]  # the fixture really granted
    assert before["default privileges"].count("\n") >= 3

    manifest = node.backup([asset(source, database)])
    (artifact,) = manifest.artifacts
    facts = artifact.source["globals"]
    assert facts["file"] == "shop-pg.globals.sql.zst.age" and facts["roles"] >= 5
    assert facts["role_hashes"] is False and "sha256" in facts and "content_sha256" not in facts
    assert (node.epoch_dir(manifest.epoch) / facts["file"]).is_file()

    staging = tmp_path / "staging"
    node.restore(staging)
    dump = staging / "var/backups/postgres/shop.pgdump"
    globals_file = staging / "var/backups/postgres/shop.pgdump.globals.sql"
    assert dump.is_file() and globals_file.is_file()
    assert oct(globals_file.stat().st_mode & 0o777) == "0o600"
    text = globals_file.read_text()
    assert "CREATE ROLE %sreader;" % prefix in text
    assert "SCRAM-SHA-256$" not in text and "PASSWORD" not in text.upper().replace("NOREPLICATION", "")

    # the live database is lost; the dump goes to a new cluster under its own name
    loaded = asset_type("postgres").load(
        str(dump), artifact, database, settings={"host": str(fresh_cluster.socket_dir)}, replace_source=True
    )
    assert loaded["privileges"].startswith("restored"), loaded
    created = set(loaded["globals"]["roles_created"])
    assert {prefix + "owner", prefix + "reader", prefix + "writer", prefix + "Odd Name"} <= created
    after = catalog(fresh_cluster, database, prefix)
    for name in before:
        assert after[name] == before[name], "%s differ after the restore:\n%s\n---\n%s" % (
            name,
            before[name],
            after[name],
        )
    # no password came along: the operator sets it again
    assert fresh_cluster.psql("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = '%sreader'" % prefix) == "t"
    assert fresh_cluster.psql("SELECT count(*) FROM sales.orders", database) == "50"


def test_a_deep_check_on_the_source_cluster_never_changes_a_live_role(node, granted):
    """The scratch load creates only missing roles: a role changed since the backup stays as it is now."""
    source, database, prefix = granted
    node.backup([asset(source, database, restore_database=database + "_check")])
    source.psql("ALTER ROLE %sreader CONNECTION LIMIT 9 NOLOGIN" % prefix)
    report = node.verify(deep=True)
    assert report["ok"], report
    checks = report["artifacts"][0]["checks"]["restore"]
    assert checks["privileges"].startswith("restored") and checks["globals"]["roles_created"] == []
    assert report["artifacts"][0]["extra"]["globals"] == "ok"
    assert source.psql("SELECT rolconnlimit, rolcanlogin FROM pg_roles WHERE rolname = '%sreader'" % prefix) == "9|f"


def test_role_password_hashes_only_when_the_operator_opts_in(node, granted, fresh_cluster, tmp_path):
    source, database, prefix = granted
    manifest = node.backup([asset(source, database, role_passwords=True)])
    staging = tmp_path / "staging"
    node.restore(staging)
    text = (staging / "var/backups/postgres/shop.pgdump.globals.sql").read_text()
    hashed = source.psql("SELECT rolpassword FROM pg_authid WHERE rolname = '%sreader'" % prefix)
    assert hashed.startswith("SCRAM-SHA-256$") and hashed in text
    asset_type("postgres").load(
        str(staging / "var/backups/postgres/shop.pgdump"),
        manifest.artifacts[0],
        database,
        settings={"host": str(fresh_cluster.socket_dir)},
        replace_source=True,
    )
    assert fresh_cluster.psql("SELECT rolpassword FROM pg_authid WHERE rolname = '%sreader'" % prefix) == hashed


def test_a_tampered_globals_file_is_detected(node, granted, tmp_path):
    source, database, _prefix = granted
    manifest = node.backup([asset(source, database)])
    sealed = node.epoch_dir(manifest.epoch) / manifest.artifacts[0].source["globals"]["file"]
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.chmod(0o600)
    sealed.write_bytes(bytes(data))
    report = node.verify()
    assert not report["ok"] and "globals" in report["problems"][0], report
    with pytest.raises(NodekeepError, match="globals .*modified"):
        node.restore(tmp_path / "staging")
    assert not (tmp_path / "staging/var/backups/postgres/shop.pgdump").exists()


def test_a_load_by_a_role_that_is_not_a_superuser_says_so_loudly(node, granted):
    """The deep check's load as a role without superuser rights drops every owner and GRANT: the check's
    ``privileges``, the report's ``asset_warnings`` and the module's Ansible warnings all say so."""
    source, database, _prefix = granted
    source.psql('GRANT CONNECT ON DATABASE "%s" TO %s' % (database, pgcluster.BACKUP_ROLE))
    item = asset(source, database, restore_database=database + "_check", become_user=None, **source.backup_settings())
    node.backup([item])
    report = node.verify(deep=True)
    assert report["ok"], report
    checks = report["artifacts"][0]["checks"]
    assert checks["restore"]["privileges"].startswith("not restored: the restoring role is not a superuser")
    (warning,) = report["asset_warnings"]
    assert "WITHOUT its owners, GRANTs and default privileges" in warning and "superuser" in warning
    result = run_module(
        "integrity_check",
        {
            "repository": node.repository.root,
            "node": node.name,
            "public_key": node.public_line,
            "deep": True,
            "identity_files": [str(node.age_key.identity_path)],
        },
    )
    assert result.get("ok") is True, result
    assert "WITHOUT its owners" in json.dumps(result["warnings"])  # an Ansible warning, not only a field


def test_a_tablespace_the_cluster_lacks_is_reported_and_its_tables_still_load(node, granted, fresh_cluster, tmp_path):
    """Tablespaces are never created by a restore (their directory is the host's): a table in one the new
    cluster lacks is loaded into the default tablespace, and the result says which, loudly, and what to set."""
    source, database, prefix = granted
    location = tempfile.mkdtemp(prefix="nk-tablespace-")  # under /tmp: the postgres user reaches it
    os.chown(location, pwd.getpwnam(pgcluster.OS_USER).pw_uid, -1)
    space = prefix + "space"
    source.psql("CREATE TABLESPACE %s LOCATION '%s'" % (space, location))
    try:
        source.psql("CREATE TABLE sales.archived (id int) TABLESPACE %s" % space, database)
        source.psql("INSERT INTO sales.archived SELECT generate_series(1, 7)", database)
        manifest = node.backup([asset(source, database)])
        assert manifest.artifacts[0].source["globals"]["file"]
        staging = tmp_path / "staging"
        node.restore(staging)
        loaded = asset_type("postgres").load(
            str(staging / "var/backups/postgres/shop.pgdump"),
            manifest.artifacts[0],
            database,
            settings={"host": str(fresh_cluster.socket_dir)},
            replace_source=True,
        )
        assert loaded["tablespaces_not_created"] == [space], loaded
        (warning,) = [text for text in loaded["warnings"] if "tablespace" in text]
        assert space in warning and "default tablespace" in warning and "restore_options" in warning
        assert loaded["privileges"].startswith("restored"), loaded
        assert fresh_cluster.psql("SELECT count(*) FROM sales.archived", database) == "7"
        where = "SELECT coalesce(tablespace, '-') FROM pg_tables WHERE tablename = 'archived'"
        assert fresh_cluster.psql(where, database) == "-"
    finally:
        source.psql("DROP TABLE IF EXISTS sales.archived", database, check=False)
        source.psql("DROP TABLESPACE IF EXISTS %s" % space, check=False)
        shutil.rmtree(location, ignore_errors=True)
