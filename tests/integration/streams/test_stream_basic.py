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
