"""The plan that gives a cluster the roles of a ``pg_dumpall --globals-only`` file: only missing roles are created
(with their attributes, settings, memberships), an existing role is never changed, tablespaces are listed, and a
file holding a psql meta-command is refused. Real pg_dumpall output shapes (PostgreSQL 15 with ``\\restrict``)."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _postgres_globals as pg_globals
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError

GLOBALS = r'''--
-- PostgreSQL database cluster dump
--

\restrict Dwod50VeghSpFdx2RNP91C466oluVEq9ewjSVjvctrvbg8BT8KxoRRJJ49X4f72

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';

--
-- Roles
--

CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE reader;
ALTER ROLE reader WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5;
CREATE ROLE "Odd ""Name""";
ALTER ROLE "Odd ""Name""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE reader IS 'reads
two lines';
ALTER ROLE reader SET statement_timeout TO '5s';
ALTER ROLE reader IN DATABASE shop SET work_mem TO '8MB';
ALTER ROLE reader IN DATABASE gone SET work_mem TO '8MB';
GRANT reader TO "Odd ""Name""" WITH ADMIN OPTION GRANTED BY postgres;
GRANT pg_read_all_data TO reader GRANTED BY dropped_admin;
GRANT pg_monitor TO postgres GRANTED BY postgres;
GRANT SET ON PARAMETER work_mem TO reader;
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';

\unrestrict Dwod50VeghSpFdx2RNP91C466oluVEq9ewjSVjvctrvbg8BT8KxoRRJJ49X4f72
'''


def test_only_missing_roles_are_created_with_their_settings_and_memberships():
    plan = pg_globals.plan_globals(GLOBALS, {"postgres", "pg_read_all_data", "pg_monitor"}, {"postgres", "shop"})
    assert plan["created"] == ["app_owner", "reader", 'Odd "Name"']
    sql = plan["sql"]
    assert "ALTER ROLE postgres" not in sql and "GRANT pg_monitor TO postgres" not in sql  # existing: untouched
    assert plan["kept"] == 1
    assert "CONNECTION LIMIT 5" in sql and "COMMENT ON ROLE reader IS 'reads\ntwo lines';" in sql
    assert "IN DATABASE shop" in sql and "IN DATABASE gone" not in sql
    assert 'GRANT reader TO "Odd ""Name""" WITH ADMIN OPTION GRANTED BY postgres;' in sql
    assert "GRANT pg_read_all_data TO reader;" in sql  # granted by a role the cluster lacks: by the restorer
    assert "GRANT SET ON PARAMETER work_mem TO reader;" in sql
    assert "TABLESPACE" not in sql and plan["tablespaces"] == ["fast"]
    assert "\\restrict" not in sql and sql.startswith("SET default_transaction_read_only = off;")


def test_a_cluster_that_has_every_role_gets_nothing_but_settings():
    roles = {"postgres", "app_owner", "reader", 'Odd "Name"', "pg_read_all_data", "pg_monitor"}
    plan = pg_globals.plan_globals(GLOBALS, roles, {"shop"})
    assert plan["created"] == [] and plan["kept"] == 4
    assert [line for line in plan["sql"].splitlines() if not line.startswith("SET ")] == []


@pytest.mark.parametrize("line", ["\\! rm -rf /tmp/x", "\\connect other", "\\i /etc/passwd"])
def test_a_psql_meta_command_is_refused(line):
    with pytest.raises(RestoreError, match="meta-command"):
        pg_globals.plan_globals(GLOBALS.replace("CREATE ROLE reader;", line + "\nCREATE ROLE reader;"), set(), set())
