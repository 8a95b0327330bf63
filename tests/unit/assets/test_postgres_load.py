"""assets/postgres, loading a dump (``load_into_database``) on one real cluster for this module (about 3 s):
a role that is not a superuser loads WITHOUT owners and GRANTs and is told so loudly, a superuser with the
epoch's globals keeps them, a tablespace the cluster lacks is never created (its objects go to the default
one, said loudly), every table's rows are counted against the dump (odd identifiers too), and a database
nodekeep did not make is never dropped.

The cluster is the integration tests' (tests/integration/postgres/pgcluster.py: Debian's server as the
postgres OS user on a unix socket; skipped without root or the server); the dump is the asset type's own
capture (pg_dump through ``_Dump``), the globals its own ``pg_dumpall --globals-only``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _postgres_globals as pg_globals
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import postgres
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError

_INTEGRATION = Path(__file__).resolve().parents[2] / "integration"
sys.path[:0] = [str(_INTEGRATION / "postgres"), str(_INTEGRATION)]
try:
    import pgcluster
finally:
    del sys.path[:2]

SHOP = '''
CREATE ROLE shop_owner NOLOGIN;
CREATE ROLE shop_reader NOLOGIN;
CREATE SCHEMA "Odd Schema" AUTHORIZATION shop_owner;
CREATE TABLE public.orders (id int PRIMARY KEY, item text NOT NULL);
CREATE TABLE "Odd Schema"."notes; with ""quotes""" (id int, body text);
ALTER TABLE public.orders OWNER TO shop_owner;
ALTER TABLE "Odd Schema"."notes; with ""quotes""" OWNER TO shop_owner;
GRANT SELECT ON public.orders TO shop_reader;
INSERT INTO public.orders SELECT g, 'item ' || g FROM generate_series(1, 120) g;
INSERT INTO "Odd Schema"."notes; with ""quotes""" SELECT g, E'line\\none ' || g FROM generate_series(1, 7) g;
'''
EXPECTED = {"public.orders": 120, '"Odd Schema"."notes; with ""quotes"""': 7, "public.hot": 5}


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The cluster, a database ``shop`` owned by roles of its own, its dump and its globals (files), taken while
    a table of it lived in tablespace ``fast``, which the cluster has lost since (as on another host)."""
    for cluster in pgcluster.session_cluster():
        cluster.create_database("shop")
        cluster.psql(SHOP, "shop")
        pgcluster.as_postgres(["mkdir", "-m", "0700", str(cluster.base / "fast")], check=True)
        cluster.psql("CREATE TABLESPACE fast LOCATION '%s'" % (cluster.base / "fast"))
        cluster.psql("CREATE TABLE public.hot (id int) TABLESPACE fast; INSERT INTO public.hot SELECT generate_series(1, 5);"
                     " ALTER TABLE public.hot OWNER TO shop_owner;", "shop")  # fmt: skip
        scratch = tmp_path_factory.mktemp("pg")
        settings = postgres.PostgresAssetType().normalize(
            {"name": "shop-db", "type": "postgres", "path": "/srv/shop.pgdump", **cluster.settings(database="shop")}
        )
        dump = postgres._Dump(settings, str(scratch))
        try:
            (scratch / "shop.pgdump").write_bytes(dump.stream.read())
            dump.finish()
        finally:
            dump.close()
        (scratch / "shop.globals.sql").write_bytes(pg_globals.dump_globals(settings))
        cluster.psql("DROP TABLE public.hot", "shop")
        cluster.psql("DROP TABLESPACE fast")
        yield cluster, scratch / "shop.pgdump", scratch / "shop.globals.sql"


def owner_of(cluster, database: str) -> str:
    return cluster.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", database)


def test_every_tables_rows_are_counted_from_the_dump_odd_names_too(shop):
    cluster, dump, _globals = shop
    assert postgres.dump_row_counts(cluster.settings(), str(dump)) == EXPECTED


def test_a_role_that_is_not_a_superuser_loads_without_owners_and_says_so(shop):
    cluster, dump, globals_sql = shop
    assert "CREATE TABLESPACE fast" in globals_sql.read_text()
    result = postgres.load_into_database(
        cluster.backup_settings(database="shop"), str(dump), "shop_check_a", globals_path=str(globals_sql)
    )
    assert result["rows"] == 132 and result["tables"] == 3 and result["row_counts"] == EXPECTED
    assert result["privileges"].startswith("not restored: the restoring role is not a superuser")
    assert result["tablespaces_not_created"] == ["fast"]
    owners, tablespace = result["warnings"]
    assert "WITHOUT its owners, GRANTs and default privileges" in owners and "shop_check_a" in owners
    assert "fast" in tablespace and "--no-tablespaces" in tablespace and "CREATE TABLESPACE" in tablespace
    assert owner_of(cluster, "shop_check_a") == pgcluster.BACKUP_ROLE  # everything belongs to the restorer
    assert cluster.psql("SELECT count(*) FROM pg_tablespace WHERE spcname = 'fast'") == "0"  # never created
    assert cluster.psql("SELECT count(*) FROM hot", "shop_check_a") == "5"  # in the default tablespace


def test_without_globals_a_tablespace_the_dump_uses_and_the_cluster_lacks_is_left_out_loudly(shop):
    cluster, dump, _globals = shop
    assert postgres.dump_tablespaces(cluster.settings(), str(dump)) == ["fast"]
    result = postgres.load_into_database(cluster.backup_settings(), str(dump), "shop_check_c")
    assert result["privileges"] == "not restored: the epoch holds no globals (roles) for them"
    assert result["tablespaces_not_created"] == ["fast"] and result["rows"] == 132
    assert any("--no-tablespaces" in warning for warning in result["warnings"])


def test_a_superuser_with_the_globals_keeps_owners_and_grants(shop):
    cluster, dump, globals_sql = shop
    result = postgres.load_into_database(
        cluster.settings(database="shop"), str(dump), "shop_check_b", globals_path=str(globals_sql)
    )
    assert result["privileges"].startswith("restored: owners, GRANTs")
    assert result["rows"] == 132 and result["tablespaces_not_created"] == ["fast"]
    assert len(result["warnings"]) == 1 and "--no-tablespaces" in result["warnings"][0]  # owners: no warning
    assert owner_of(cluster, "shop_check_b") == "shop_owner"
    grants = cluster.psql(
        "SELECT grantee FROM information_schema.role_table_grants WHERE table_name = 'orders' AND privilege_type = "
        "'SELECT' ORDER BY grantee",
        "shop_check_b",
    )
    assert "shop_reader" in grants.split()


def test_a_database_nodekeep_did_not_make_is_never_dropped(shop):
    cluster, dump, _globals = shop
    cluster.create_database("shop_precious")
    cluster.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (42);", "shop_precious")
    with pytest.raises(RestoreError, match="exists and was not made by nodekeep"):
        postgres.load_into_database(cluster.settings(), str(dump), "shop_precious")
    assert cluster.psql("SELECT x FROM keep", "shop_precious") == "42"
