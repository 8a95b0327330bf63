"""Replication end to end on real processes: a numbered writer, the service, point-in-time restores."""

from __future__ import annotations

from conftest import check_points


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
    from ansible_collections.nodekeep.backup.plugins.module_utils.errors import NodekeepError

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
        from ansible_collections.nodekeep.backup.plugins.module_utils.seal import load_identities
        from ansible_collections.nodekeep.backup.plugins.module_utils.stream import restore_point_in_time

        restore_point_in_time(
            stream_lab.repository, "node1", "app-db", stream_lab.signing_key.public_line,
            load_identities(identity_files=[str(stream_lab.age_key.identity_path)]), dest=report["path"],
        )  # fmt: skip
    clear_error(caught.value, "already exists")
