"""Replication end to end on real processes: a numbered writer, the service, point-in-time restores."""

from __future__ import annotations

from streamhelpers import check_points


def test_ships_and_restores_every_point(stream_lab):
    writer = stream_lab.writer()
    writer.commit(50)
    service = stream_lab.service()
    stream_lab.wait_chain(service)
    for _round in range(5):
        before = len(stream_lab.segments())
        writer.commit(137)
        stream_lab.wait_segments(before + 1, service)
    final = writer.count
    stream_lab.wait_segments(len(stream_lab.segments()), service)
    stream_lab.stop(service)  # a clean stop ships what was read
    report, k = stream_lab.restore("latest")
    assert k == final
    assert report["integrity"] == "ok"
    assert check_points(stream_lab, final) >= 5


def test_restore_refuses_links_and_existing_targets(stream_lab, tmp_path, clear_error):
    from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

    writer = stream_lab.writer()
    writer.commit(5)
    service = stream_lab.service()
    stream_lab.wait_chain(service)
    writer.commit(7)
    stream_lab.wait_caught_up(service)
    stream_lab.stop(service)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "restored").symlink_to(elsewhere)  # a planted link where the restore goes
    import pytest

    with pytest.raises(NodekeepError) as caught:
        stream_lab.restore("latest")
    clear_error(caught.value, "link")
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "restored").unlink()
    report, k = stream_lab.restore("latest")
    assert k == 12 and report["source"] == "chain"
    with pytest.raises(NodekeepError) as caught:
        from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_identities
        from ansible_collections.nodekeep.backup.plugins.module_utils.ops.pitr import restore_point_in_time

        restore_point_in_time(
            stream_lab.repository, "node1", "app-db", stream_lab.signing_key.public_line,
            load_identities(identity_files=[str(stream_lab.age_key.identity_path)]), dest=report["path"],
        )  # fmt: skip
    clear_error(caught.value, "already exists")


def test_retention_keeps_the_live_chain_and_removes_old_chains_whole(stream_lab):
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
    from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy

    writer = stream_lab.writer()
    writer.commit(5)
    service = stream_lab.service()
    first = stream_lab.wait_chain(service)
    writer.commit(10)
    stream_lab.wait_caught_up(service)
    stream_lab.stop(service)
    writer.commit(3)
    assert writer.checkpoint("TRUNCATE").startswith("ok")  # the next start cannot continue: a second chain
    writer.commit(2)
    service = stream_lab.service()
    second = stream_lab.wait_chain(service, previous=first)
    writer.commit(4)
    stream_lab.wait_caught_up(service)
    repo = stream_lab.repository
    policy = RetentionPolicy.from_options({"keep_last": 1})
    # A newer ordinary epoch (as the scheduled backups make) does not push the live chain's base out.
    from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import load_recipients
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch

    recipients = [stream_lab.age_key.recipient]
    backup_epoch(repo, "node1", [{"name": "app-db", "type": "sqlite", "path": str(stream_lab.db)}],
                 load_recipients(recipients), recipients, stream_lab.signing_key.key)  # fmt: skip
    result = apply_retention(repo, "node1", policy, stream_lab.signing_key.public_line)
    kept = {entry["epoch"]: entry["reasons"] for entry in result["kept"]}
    assert second in kept and "replication chain" in kept[second][0]
    assert first in {entry["epoch"] for entry in result["removed"]}
    assert first not in repo.epoch_names("node1")  # the old chain went whole, segments with its base
    writer.commit(6)
    stream_lab.wait_caught_up(service)
    stream_lab.stop(service)
    report, k = stream_lab.restore("latest")
    assert k == writer.count and report["epoch"] == second
