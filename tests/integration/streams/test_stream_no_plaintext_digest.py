"""No unkeyed digest of a streamed database's plaintext is stored in the repository or printed by a restore.

A real replication service ships WAL segments of a real writer's database; a point-in-time restore rebuilds it.
The test then computes what an attacker would guess (tests/integration/safety/test_no_plaintext_digest.py does
the same for epochs): the unkeyed digests of each segment's decrypted frames, of each frame and each page in
it, of the live database and WAL, and of the restored database (whole and per page). None may appear in any
byte of the repository (segment payloads, records, signatures, the base epoch) nor in the restore's report.
Segment integrity is the signed sealed SHA-256 (age authenticates the bytes); records of older versions, with
the plain SHA-256 of their frames, are still compared (tests/unit/storage/test_segments.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from integration_helpers import needles, scan, units

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.segments import (
    committed_segments,
    read_record,
    segment_frames,
)

WAL_HEADER = 32
FRAME_HEADER = 24


def frame_units(frames: bytes, page_size: int) -> list[bytes]:
    """Each frame (header and page) and each page of a run of WAL frames."""
    found = []
    step = FRAME_HEADER + page_size
    for at in range(0, len(frames) - step + 1, step):
        found += [frames[at : at + step], frames[at + FRAME_HEADER : at + step]]
    return found


def test_stream_segments_and_restore_keep_no_unkeyed_digest_of_the_database(stream_lab):
    writer = stream_lab.writer()
    writer.commit(40)
    service = stream_lab.service()
    stream_lab.wait_chain(service)
    for _round in range(3):
        before = len(stream_lab.segments())
        writer.commit(60)
        stream_lab.wait_segments(before + 1, service)
    stream_lab.stop(service)
    report, k = stream_lab.restore("latest")
    assert k == writer.count and report["integrity"] == "ok"

    repository, lab = stream_lab.repository, stream_lab
    identities = seal.load_identities([], [str(lab.age_key.identity_path)])
    plaintexts = []
    shipped = 0
    for epoch in repository.complete_epochs("node1"):
        for seq, attempt in committed_segments(repository.files("node1", epoch), "app-db"):
            record, _data = read_record(repository, "node1", epoch, "app-db", seq, attempt, lab.signing_key.public_line)
            # the signed record keeps no plaintext digest; the sealed bytes still prove every byte of the frames
            assert record.artifacts[0].content_sha256 is None
            frames = segment_frames(repository, "node1", epoch, record, identities)
            plaintexts += [frames] + frame_units(frames, int(record.artifacts[0].source["page_size"]))
            shipped += 1
    assert shipped >= 3
    restored = lab.tmp / "restored" / "r1.db"
    live_wal = Path(str(lab.db) + "-wal")
    for path in (restored, lab.db):
        plaintexts += units(path.read_bytes(), pages=True)
    if live_wal.exists() and live_wal.stat().st_size > WAL_HEADER:
        plaintexts += frame_units(live_wal.read_bytes()[WAL_HEADER:], 4096)
    found = needles(plaintexts)
    # the scan can fail: the plain SHA-256 of the first segment's frames is one of the needles
    assert scan(json.dumps({"x": hashlib.sha256(plaintexts[0]).hexdigest()}).encode(), found)

    leaks = {}
    root = Path(repository.root)
    for folder, _dirs, names in os.walk(root):
        for name in names:
            hits = scan((Path(folder) / name).read_bytes(), found)
            if hits:
                leaks[str((Path(folder) / name).relative_to(root))] = hits
    for line in json.dumps(report, indent=1, sort_keys=True, default=str).splitlines():
        hits = scan(line.encode(), found)
        if hits:
            leaks["restore report: %s" % line.strip()] = hits
    assert leaks == {}, leaks
