"""Replication end to end on real processes: a numbered writer, the service, point-in-time restores."""

from __future__ import annotations

from conftest import chain_batches  # noqa: I001 - the directory's own helpers


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
    batches = chain_batches(stream_lab.repository, stream_lab.signing_key.public_line)
    total_after = sum(count for _t, count in batches)
    assert total_after > 0
    # Every batch boundary: exactly the commits observed at or before it, none after.
    for moment, _count in batches:
        later = sum(count for t, count in batches if t > moment)
        report, k = stream_lab.restore("%.6f" % moment)
        assert k == final - later, (moment, report)
        assert report["restored_commit_time"] <= report["chain"]["end"]
