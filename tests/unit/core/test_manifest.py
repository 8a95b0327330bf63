"""The manifest: one canonical format (docs/manifest.md), strict validation on read."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE, epoch_name, epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import ManifestError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Manifest,
)

pytestmark = pytest.mark.timeout(30)

NODE = "node1"
EPOCH = "20260101T000000Z"

GOLDEN = """{
  "artifacts": [
    {
      "asset_type": "sqlite",
      "compressed": true,
      "content_sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
      "content_size": 20,
      "file": "app-db.sqlite.zst.age",
      "format": "sqlite3+zstd+age",
      "name": "app-db",
      "sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "size": 10,
      "source": {
        "page_count": 5,
        "path": "/var/lib/app.db"
      }
    }
  ],
  "epoch": "20260101T000000Z",
  "finished": "2026-01-01T00:00:01.500000Z",
  "format": "nodekeep.manifest/v1",
  "labels": {
    "site": "zürich"
  },
  "node": "node1",
  "recipients": [
    "age1abc"
  ],
  "started": "2026-01-01T00:00:00.000000Z",
  "tool": {
    "name": "nodekeep.backup",
    "version": "9.9.9"
  }
}
"""


def _artifact(name: str = "app-db", **overrides) -> Artifact:
    fields = {
        "name": name,
        "asset_type": "sqlite",
        "file": "%s.sqlite.zst.age" % name,
        "format": "sqlite3+zstd+age",
        "size": 10,
        "sha256": "a" * 64,
        "content_size": 20,
        "content_sha256": "b" * 64,
        "source": {"path": "/var/lib/app.db", "page_count": 5},
    }
    fields.update(overrides)
    return Artifact(**fields)


def _manifest(**overrides) -> Manifest:
    fields = {
        "node": NODE,
        "epoch": EPOCH,
        "started": "2026-01-01T00:00:00.000000Z",
        "finished": "2026-01-01T00:00:01.500000Z",
        "recipients": ["age1abc"],
        "artifacts": [_artifact()],
        "tool": {"name": "nodekeep.backup", "version": "9.9.9"},
        "labels": {"site": "zürich"},
    }
    fields.update(overrides)
    return Manifest(**fields)


def _doc() -> dict:
    return json.loads(_manifest().to_bytes())


def _bytes(doc) -> bytes:
    return json.dumps(doc).encode("utf-8")


class TestCanonicalBytes:
    def test_the_bytes_are_the_documented_canonical_form(self):
        assert _manifest().to_bytes() == GOLDEN.encode("utf-8")

    def test_the_bytes_are_stable_across_calls_parse_and_insertion_order(self):
        first = _manifest()
        data = first.to_bytes()
        assert first.to_bytes() == data
        assert Manifest.from_bytes(data, node=NODE, epoch=EPOCH).to_bytes() == data
        reordered = _manifest(
            labels=dict(reversed(list({"a": 1, "site": "zürich", "z": [1, 2]}.items()))),
            artifacts=[_artifact(source={"page_count": 5, "path": "/var/lib/app.db"})],
        )
        again = _manifest(
            labels={"a": 1, "site": "zürich", "z": [1, 2]},
            artifacts=[_artifact(source={"path": "/var/lib/app.db", "page_count": 5})],
        )
        assert reordered.to_bytes() == again.to_bytes()

    def test_utf8_not_escaped_and_one_trailing_newline(self):
        data = _manifest().to_bytes()
        assert "zürich".encode() in data
        assert data.endswith(b"}\n") and not data.endswith(b"\n\n")

    def test_round_trip_keeps_every_field(self):
        original = _manifest(artifacts=[_artifact("one"), _artifact("two", compressed=False)])
        parsed = Manifest.from_bytes(original.to_bytes(), node=NODE, epoch=EPOCH)
        assert parsed == original
        assert parsed.artifact("two").compressed is False
        assert parsed.total_size == 20

    def test_asking_for_an_unknown_artifact_names_the_choices(self):
        with pytest.raises(ManifestError, match="app-db"):
            _manifest().artifact("nope")


class TestFromBytesRefuses:
    def test_a_manifest_of_another_node(self):
        with pytest.raises(ManifestError, match="node2"):
            Manifest.from_bytes(_manifest().to_bytes(), node="node2", epoch=EPOCH)

    def test_a_manifest_of_another_epoch(self):
        with pytest.raises(ManifestError, match="20260101T000001Z"):
            Manifest.from_bytes(_manifest().to_bytes(), node=NODE, epoch="20260101T000001Z")

    @pytest.mark.parametrize("field", ["sha256", "content_sha256"])
    @pytest.mark.parametrize(
        "value",
        [
            "a" * 63,
            "a" * 65,
            "A" * 64,
            "g" * 64,
            "",
            " " + "a" * 63,
            "a" * 64 + "\n",
        ],
        ids=["short", "long", "upper", "not-hex", "empty", "space", "newline"],
    )
    def test_a_malformed_sha256(self, field, value):
        doc = _doc()
        doc["artifacts"][0][field] = value
        with pytest.raises(ManifestError, match="SHA-256"):
            Manifest.from_bytes(_bytes(doc), node=NODE, epoch=EPOCH)

    def test_duplicate_artifact_names(self):
        doc = _doc()
        twin = dict(doc["artifacts"][0], file="other.sqlite.zst.age")
        doc["artifacts"].append(twin)
        with pytest.raises(ManifestError, match="twice"):
            Manifest.from_bytes(_bytes(doc), node=NODE, epoch=EPOCH)

    def test_duplicate_artifact_files(self):
        doc = _doc()
        twin = dict(doc["artifacts"][0], name="other")
        doc["artifacts"].append(twin)
        with pytest.raises(ManifestError, match="twice"):
            Manifest.from_bytes(_bytes(doc), node=NODE, epoch=EPOCH)

    @pytest.mark.parametrize("reserved", [MANIFEST_NAME, SIGNATURE_NAME])
    def test_an_artifact_claiming_a_reserved_file_name(self, reserved):
        doc = _doc()
        doc["artifacts"][0]["file"] = reserved
        with pytest.raises(ManifestError, match="reserved"):
            Manifest.from_bytes(_bytes(doc), node=NODE, epoch=EPOCH)

    @pytest.mark.parametrize(
        "bad",
        [
            "../../etc/passwd",
            "a/b",
            ".hidden",
            "",
            "x" * 129,
            "name with space",
            "manifest.json\n",
        ],
    )
    def test_an_artifact_file_name_that_is_a_path(self, bad):
        doc = _doc()
        doc["artifacts"][0]["file"] = bad
        with pytest.raises(ManifestError):
            Manifest.from_bytes(_bytes(doc), node=NODE, epoch=EPOCH)

    @pytest.mark.parametrize("bad", ["../node2", "", "a/b", "..", "node1\n"])
    def test_a_node_name_that_is_a_path(self, bad):
        doc = _doc()
        doc["node"] = bad
        with pytest.raises(ManifestError):
            Manifest.from_bytes(_bytes(doc))

    @pytest.mark.parametrize(
        "bad",
        [
            "2026-01-01",
            "20260101T000000",
            "20260101T000000Z/..",
            "",
            "20261301T000000Z",
        ],
    )
    def test_a_bad_epoch_name(self, bad):
        doc = _doc()
        doc["epoch"] = bad
        with pytest.raises(ManifestError):
            Manifest.from_bytes(_bytes(doc))

    @pytest.mark.parametrize(
        "data",
        [
            _bytes(dict(_doc(), format="nodekeep.manifest/v3")),
            _bytes({k: v for k, v in _doc().items() if k != "format"}),
            _bytes([_doc()]),
            _bytes("nodekeep.manifest/v1"),
            b"",
            b"{not json",
            b"\xff\xfe" + GOLDEN.encode("utf-16-le"),
        ],
        ids=["v3", "no-format", "a-list", "a-string", "empty", "not-json", "utf-16"],
    )
    def test_wrong_format(self, data):
        with pytest.raises(ManifestError):
            Manifest.from_bytes(data, node=NODE, epoch=EPOCH)

    @pytest.mark.parametrize("field", ["node", "epoch", "started", "finished", "artifacts"])
    def test_a_missing_required_field(self, field):
        doc = _doc()
        del doc[field]
        with pytest.raises(ManifestError):
            Manifest.from_bytes(_bytes(doc))

    @pytest.mark.parametrize("field", ["name", "file", "size", "sha256", "content_size", "content_sha256"])
    def test_an_artifact_missing_a_field(self, field):
        doc = _doc()
        del doc["artifacts"][0][field]
        with pytest.raises(ManifestError):
            Manifest.from_bytes(_bytes(doc))

    @pytest.mark.parametrize("field, value", [("size", "ten"), ("content_size", None), ("artifacts", None)])
    def test_wrong_types(self, field, value):
        doc = _doc()
        if field == "artifacts":
            doc[field] = value
        else:
            doc["artifacts"][0][field] = value
        with pytest.raises(ManifestError):
            Manifest.from_bytes(_bytes(doc))


class TestEpochNames:
    def test_epoch_name_is_the_utc_second(self):
        moment = datetime(2026, 11, 22, 2, 30, 5, 999999, tzinfo=timezone.utc)
        assert epoch_name(moment) == "20261122T023005Z"
        assert epoch_time("20261122T023005Z") == moment.replace(microsecond=0)

    def test_a_local_time_is_converted_to_utc(self):
        from datetime import timedelta

        local = datetime(2026, 11, 22, 4, 30, 5, tzinfo=timezone(timedelta(hours=2)))
        assert epoch_name(local) == "20261122T023005Z"

    def test_now_matches_the_pattern_and_sorts_by_time(self):
        name = epoch_name()
        assert EPOCH_RE.match(name)
        assert sorted(["20261122T023005Z", "20251231T235959Z", "20261122T023004Z"]) == [
            "20251231T235959Z",
            "20261122T023004Z",
            "20261122T023005Z",
        ]

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "latest",
            "20261122T023005",
            "2026-11-22T02:30:05Z",
            "20261122T023005Z\n",
            "20260230T000000Z",
        ],
    )
    def test_epoch_time_refuses_non_epoch_names(self, bad):
        with pytest.raises(ManifestError):
            epoch_time(bad)


def test_format_constant_is_the_documented_one():
    assert FORMAT == "nodekeep.manifest/v1"


def test_pieces_epochs_are_written_as_v2_and_both_versions_are_read():
    """An epoch stored as pieces says so by its format: an older reader refuses it instead of
    restoring a page map as if it were the database; v1 epochs keep reading."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import FORMAT_V2

    pieces = _manifest(artifacts=[_artifact(source={"layout": "pieces", "path": "/var/lib/app.db"})])
    doc = json.loads(pieces.to_bytes())
    assert doc["format"] == FORMAT_V2 == "nodekeep.manifest/v2"
    assert Manifest.from_bytes(pieces.to_bytes(), node=NODE, epoch=EPOCH).to_bytes() == pieces.to_bytes()
    plain = _manifest()
    assert json.loads(plain.to_bytes())["format"] == FORMAT
    assert Manifest.from_bytes(plain.to_bytes(), node=NODE, epoch=EPOCH) == plain
