"""The incremental SQLite tests' workload (unit and integration): a change of a database made by
``dbtools.make`` (tests/conftest.py), committed by the sqlite3 CLI in another process.

    change_rows(path, rows=20, new_rows=30)   # 20 recent rows rewritten, 30 appended, one transaction
"""

from __future__ import annotations

import subprocess


def change_rows(path, rows: int, new_rows: int) -> None:
    """The append+hot workload: ``new_rows`` appended, ``rows`` recent rows rewritten (another process)."""
    script = (
        "BEGIN; UPDATE t SET payload = randomblob(length(payload)) WHERE id > (SELECT max(id) FROM t) - %d;"
        "INSERT INTO t(txn, payload) SELECT (SELECT max(txn) FROM t) + 1, randomblob(1000) FROM "
        "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) SELECT x FROM c); COMMIT;"
        % (rows, new_rows)
    )
    subprocess.run(["sqlite3", "-bail", str(path)], input=script, text=True, check=True, capture_output=True)
