"""assets/_sqlite_rebuild: a page map is trusted only when it covers every page once, inside its packs;
the rebuilt file's digest is taken in file order whatever order the packs arrive in."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _sqlite_rebuild as rebuild
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

PAGE = 4096
OBJECT = "ab" * 32


def write_map(path, runs, page_count=4, page_size=PAGE, packs=None, header=None):
    head = {
        "format": rebuild.MAP_FORMAT,
        "page_size": page_size,
        "page_count": page_count,
        "size": page_size * page_count,
    }
    head.update(header or {})
    lines = [json.dumps(head)]
    for pack in (
        packs
        if packs is not None
        else [{"object": OBJECT, "sealed_size": 100, "sealed_sha256": "0" * 64, "size": 4 * PAGE}]
    ):
        lines.append(json.dumps(pack))
    for first, count, pack, offset in runs:
        lines.append(json.dumps({"first": first, "count": count, "pack": pack, "offset": offset}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_map_covering_every_page_once_is_read(tmp_path):
    header, packs, runs = rebuild.read_map(write_map(tmp_path / "map", [(3, 2, 0, 0), (1, 2, 0, 2 * PAGE)]))
    assert header["page_count"] == 4 and packs[0]["object"] == OBJECT
    assert sorted(runs) == [(1, 2, 0, 2 * PAGE), (3, 2, 0, 0)]


@pytest.mark.parametrize(
    "runs, message",
    [
        ([(1, 2, 0, 0)], "covers 2 of 4 pages"),  # pages 3-4 missing
        ([(1, 3, 0, 0), (3, 2, 0, 0)], "exactly once"),  # page 3 twice
        ([(1, 4, 1, 0)], "exactly once"),  # a pack that does not exist
        ([(1, 2, 0, 0), (3, 2, 0, 3 * PAGE)], "past the end of pack 0"),  # expands past the pack
        ([(1, 4, 0, 7)], "exactly once"),  # an offset that is not page aligned
        ([(2, 3, 0, 0)], "exactly once"),  # starts after page 1
    ],
)
def test_a_map_that_misses_repeats_or_overreaches_a_page_is_refused(tmp_path, runs, message):
    with pytest.raises(NodekeepError, match=message):
        rebuild.read_map(write_map(tmp_path / "map", runs))


@pytest.mark.parametrize(
    "header, message",
    [
        ({"format": "something/v9"}, "is not a"),
        ({"page_size": 1000}, "impossible"),  # not a power of two
        ({"size": 5 * PAGE}, "impossible"),  # size and page count disagree
    ],
)
def test_a_header_the_engine_does_not_know_is_refused(tmp_path, header, message):
    with pytest.raises(NodekeepError, match=message):
        rebuild.read_map(write_map(tmp_path / "map", [(1, 4, 0, 0)], header=header))


def test_a_pack_name_that_is_not_an_object_name_is_refused_before_any_read(tmp_path):
    pack = {"object": "../../etc/passwd", "sealed_size": 1, "sealed_sha256": "0" * 64, "size": 4 * PAGE}
    with pytest.raises(NodekeepError, match="not an object name"):
        rebuild.read_map(write_map(tmp_path / "map", [(1, 4, 0, 0)], packs=[pack]))


def test_a_malformed_line_is_named(tmp_path):
    path = tmp_path / "map"
    write_map(path, [(1, 4, 0, 0)])
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(NodekeepError, match="malformed"):
        rebuild.read_map(str(path))


@pytest.mark.parametrize("hold", [0, 1 << 20])
def test_the_digest_is_the_files_whatever_order_the_packs_arrive_in(tmp_path, hold):
    pages = [os.urandom(PAGE) for _page in range(6)]
    target = tmp_path / "db"
    target.write_bytes(b"".join(pages))
    fd = os.open(target, os.O_RDONLY)
    try:
        digest = rebuild._FileOrderDigest(fd, PAGE, hold)
        # pack B holds pages 4-6 and arrives first, pack A pages 1-3
        digest.pack(bytearray(b"".join(pages[3:])), [(4, 3, 0)])
        assert digest.hexdigest(6) is None  # pages 1-3 are not hashed yet
        digest.pack(bytearray(b"".join(pages[:3])), [(1, 3, 0)])
        assert digest.hexdigest(6) == hashlib.sha256(target.read_bytes()).hexdigest()
        assert digest.read_back == (0 if hold else 3 * PAGE)  # held in memory, or read back from the file
    finally:
        os.close(fd)


def test_a_gap_leaves_no_digest(tmp_path):
    target = tmp_path / "db"
    target.write_bytes(os.urandom(3 * PAGE))
    fd = os.open(target, os.O_RDONLY)
    try:
        digest = rebuild._FileOrderDigest(fd, PAGE, 1 << 20)
        digest.pack(bytearray(target.read_bytes()[:PAGE]), [(1, 1, 0)])
        digest.pack(bytearray(target.read_bytes()[2 * PAGE :]), [(3, 1, 0)])
        assert digest.hexdigest(3) is None  # page 2 never came: no digest, so no restore is proven
    finally:
        os.close(fd)


def test_the_digest_thread_hashes_beside_the_writer_and_raises_a_read_back_error_in_its_thread(tmp_path):
    pages = [os.urandom(PAGE) for _page in range(4)]
    target = tmp_path / "db"
    target.write_bytes(b"".join(pages))
    fd = os.open(target, os.O_RDONLY)
    try:
        hasher = rebuild._DigestThread(rebuild._FileOrderDigest(fd, PAGE, 0))
        hasher.start()
        hasher.feed(bytearray(b"".join(pages[2:])), [(3, 2, 0)])  # ahead: read back from the file later
        hasher.feed(bytearray(b"".join(pages[:2])), [(1, 2, 0)])
        hasher.finish()
        assert hasher.digest.hexdigest(4) == hashlib.sha256(target.read_bytes()).hexdigest()
        assert not hasher.is_alive() and hasher.digest.read_back == 2 * PAGE
        # the file is shorter than the pages written ahead say: the digest's error reaches the writer, and the
        # writer's further packs never block on a thread that stopped hashing
        os.truncate(target, 2 * PAGE)
        broken = rebuild._DigestThread(rebuild._FileOrderDigest(fd, PAGE, 0))
        broken.start()
        broken.feed(bytearray(b"".join(pages[2:])), [(3, 2, 0)])
        broken.feed(bytearray(b"".join(pages[:2])), [(1, 2, 0)])
        with pytest.raises(NodekeepError) as raised:
            for _more in range(4):
                broken.feed(bytearray(PAGE), [(9, 1, 0)])
            broken.finish()
        assert "shorter than its page map" in raised.value.message
        with pytest.raises(NodekeepError):
            broken.finish()  # once stopped: the same error again, no hang
        assert not broken.is_alive()
    finally:
        os.close(fd)
