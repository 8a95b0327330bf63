"""restore-node1 after side_effect: a staged restore of the older epoch (refused a second
time), and a cutover of the latest epoch under the running service. Checked with sqlite3,
age, zstd, sha256sum and stat."""

import json
import time

from nodekeep_molecule import (
    REPOSITORY,
    assert_consistent_copy,
    chain_rows,
    ephemeral,
    epochs,
    integrity,
    manifest,
    open_artifact,
    run,
    sqlite,
)

NODE = "restore-node1"
LIVE = "/var/lib/testnode/chain.db"
STAGED = "/srv/nodekeep-staging" + LIVE


def live_head(host) -> int:
    return int(sqlite(host, LIVE, "SELECT max(seq) FROM chain", user="testnode"))


def test_the_staged_copy_is_the_older_epoch_untouched_by_the_refused_restore(host):
    older = epochs(host, NODE)[0]
    (artifact,) = manifest(host, NODE, older)["artifacts"]
    assert artifact["content_sha256"] is None  # no unkeyed hash of the data (docs/safety.md)
    assert host.file(STAGED).size == artifact["content_size"]
    assert integrity(host, STAGED) == "ok"
    # a consistent snapshot: every row is the live row with the same seq (the cutover
    # restored a later epoch of the same append-only chain, so these rows are still there)
    copy = chain_rows(host, STAGED)
    assert_consistent_copy(copy, chain_rows(host, LIVE, user="testnode", where="seq <= %d" % max(copy)))
    assert run(host, "ls -A /srv/nodekeep-staging/var/lib/testnode").split() == ["chain.db"]


def test_the_cutover_swapped_the_latest_epoch_in_and_kept_the_old_data(host):
    before = json.loads(host.file("/root/before-cutover.json").content_string)
    latest = epochs(host, NODE)[-1]
    result = json.loads((ephemeral() / "results" / NODE / ("restore-%s.json" % latest)).read_text())
    (done,) = result["cutover"]
    assert done["ok"] and done["path"] == LIVE

    live = host.file(LIVE)
    assert live.inode != before["inode"]
    assert (live.user, live.group) == ("testnode", "testnode")
    assert not host.file("/srv/nodekeep-cutover" + LIVE).exists  # moved into place, not copied

    safety = host.file(done["safety_copy"])
    assert (safety.user, safety.mode) == ("testnode", live.mode)
    assert integrity(host, done["safety_copy"]) == "ok"
    assert int(sqlite(host, done["safety_copy"], "SELECT max(seq) FROM chain")) >= before["max_seq"]

    (artifact,) = manifest(host, NODE, latest)["artifacts"]
    opened = "/tmp/latest.db"
    open_artifact(host, "%s/%s/%s/%s" % (REPOSITORY, NODE, latest, artifact["file"]), opened)
    restored = chain_rows(host, opened)
    live_rows = chain_rows(host, LIVE, user="testnode", where="seq <= %d" % max(restored))
    assert live_rows == restored, "the live database does not start with the restored epoch"


def test_the_service_runs_on_the_restored_database(host):
    assert host.service("nodekeep-testnode").is_running
    before = live_head(host)
    time.sleep(1.2)
    assert live_head(host) > before
