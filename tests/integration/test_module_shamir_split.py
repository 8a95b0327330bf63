"""Module shamir_split, driven through main(): split into 0600 share files and a public record, combine with
verification, check mode, idempotence, and no secret in any result or message."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from module_driver import failed, run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shares as shamir

pytestmark = pytest.mark.timeout(120)

CUSTODIANS = ["alice", "bob", "carol", "dave", "erin"]


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def split(args: dict, check_mode: bool = False) -> dict:
    return run_module("shamir_split", dict(args, state="split"), check_mode=check_mode)


def combine(args: dict, check_mode: bool = False) -> dict:
    return run_module("shamir_split", dict(args, state="combine"), check_mode=check_mode)


def share_texts(paths) -> list[str]:
    return [shamir.parse_share(Path(p).read_text()).text for p in paths]


def assert_secret_absent(result: dict, secret: bytes, shares=()) -> None:
    out = result["_stdout"]
    assert secret.hex() not in out
    if all(32 <= b < 127 for b in secret):
        assert secret.decode() not in out
    for text in shares:
        assert text not in out
        assert text.split("-")[-1] not in out


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "master.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


class TestSplit:
    def test_generated_age_identity_split_into_files_and_a_public_record(self, tmp_path):
        dest = tmp_path / "shares"
        args = {
            "generate": True,
            "generate_type": "age_identity",
            "threshold": 3,
            "custodians": CUSTODIANS,
            "label": "fleet master key",
            "dest": str(dest),
        }
        planned = succeeded(split(args, check_mode=True))
        assert planned["changed"] and not dest.exists()
        result = succeeded(split(args))
        assert result["changed"] and result["count"] == 5 and result["threshold"] == 3
        assert result["age_public_key"].startswith("age1")
        assert mode_of(dest) == 0o700
        files = result["share_files"]
        assert [Path(f).name for f in files] == ["share-%d-%s.txt" % (i, n) for i, n in enumerate(CUSTODIANS, 1)]
        assert all(mode_of(f) == 0o600 for f in files)
        record = json.loads((dest / "record.json").read_text())
        assert mode_of(dest / "record.json") == 0o644
        assert record["check"]["age_public_key"] == result["age_public_key"]
        assert [s["custodian"] for s in record["shares"]] == CUSTODIANS
        texts = share_texts(files)
        for text in texts:
            assert text not in json.dumps(record) and text not in result["_stdout"]
        recovered = tmp_path / "recovered.key"
        again = succeeded(combine({"share_files": files[2:], "dest": str(recovered)}))
        assert again["age_public_key"] == result["age_public_key"] and mode_of(recovered) == 0o600
        assert again["verified"] == ["hmac_sha256", "age_public_key"]
        assert_secret_absent(again, recovered.read_bytes(), texts)

    def test_a_second_run_changes_nothing_and_force_makes_a_new_split(self, secret_file, tmp_path):
        args = {"src": str(secret_file), "threshold": 2, "custodians": CUSTODIANS[:3], "dest": str(tmp_path / "s")}
        first = succeeded(split(args))
        second = succeeded(split(args))
        assert second["changed"] is False and second["skipped"] is True
        assert second["split_id"] == first["split_id"]
        forced = succeeded(split(dict(args, force=True, custodians=["x", "y"])))
        assert forced["changed"] and forced["split_id"] != first["split_id"]
        assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["record.json", "share-1-x.txt", "share-2-y.txt"]

    def test_ssss_share_files_hold_a_line_that_ssss_combine_reads(self, secret_file, tmp_path):
        result = succeeded(
            split(
                {
                    "scheme": "ssss",
                    "src": str(secret_file),
                    "threshold": 3,
                    "custodians": CUSTODIANS,
                    "dest": str(tmp_path / "s"),
                }
            )
        )
        lines = share_texts(result["share_files"])[1:4]
        proc = subprocess.run(
            ["ssss-combine", "-t", "3", "-x", "-q"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and proc.stderr.split()[0] == secret_file.read_bytes().hex()

    @pytest.mark.parametrize(
        ("args", "needle"),
        [
            ({"threshold": 2, "custodians": ["a", "b"]}, "either src"),
            ({"generate": True, "custodians": ["a", "b"]}, "threshold is required"),
            ({"generate": True, "threshold": 2}, "custodians is empty"),
            ({"generate": True, "threshold": 3, "custodians": ["a", "b"]}, "3-of-2"),
            ({"generate": True, "threshold": 2, "custodians": ["a", "a"]}, "listed twice"),
            ({"generate": True, "size": 8, "threshold": 2, "custodians": ["a", "b"]}, "16 to 128 bytes"),
        ],
    )
    def test_bad_input_is_refused_and_nothing_is_written(self, tmp_path, args, needle):
        failed(split(dict(args, dest=str(tmp_path / "s"))), needle)
        assert not (tmp_path / "s").exists()

    def test_an_oversized_secret_file_is_refused_with_the_way_out(self, tmp_path):
        big = tmp_path / "wallet.json"
        big.write_bytes(os.urandom(4096))
        failed(
            split({"src": str(big), "threshold": 2, "custodians": ["a", "b"], "dest": str(tmp_path / "s")}),
            "larger than 128 bytes",
            "nodekeep.backup.keys_split",
        )


class TestCombine:
    @pytest.fixture
    def made(self, secret_file, tmp_path):
        result = succeeded(
            split(
                {
                    "scheme": "ssss",
                    "src": str(secret_file),
                    "threshold": 3,
                    "custodians": CUSTODIANS,
                    "dest": str(tmp_path / "shares"),
                }
            )
        )
        return result

    def test_check_mode_verifies_without_writing_then_apply_then_idempotent(self, made, secret_file, tmp_path):
        dest = tmp_path / "out.key"
        args = {"share_files": made["share_files"][:3], "dest": str(dest)}
        dry = succeeded(combine(args, check_mode=True))
        assert dry["changed"] and dry["verified"] == ["hmac_sha256"] and not dest.exists()
        applied = succeeded(combine(args))
        assert applied["changed"] and dest.read_bytes() == secret_file.read_bytes() and mode_of(dest) == 0o600
        assert applied["used_shares"] == [1, 2, 3]
        again = succeeded(combine(args))
        assert again["changed"] is False
        assert_secret_absent(applied, secret_file.read_bytes(), share_texts(made["share_files"]))

    def test_typed_shares_with_the_record_are_never_logged(self, made, secret_file, tmp_path):
        texts = share_texts(made["share_files"])
        keys = [shamir.parse_share(Path(p).read_text()).check_key_share for p in made["share_files"]]
        # As ssss-split prints them without a token, each typed with its sheet's Check-Key-Share line.
        bare = ["%s\n%s" % (text.split("-", 1)[1], key) for text, key in zip(texts[2:5], keys[2:5])]
        result = succeeded(
            combine({"shares": bare, "record": made["record_path"], "dest": str(tmp_path / "k")}),
        )
        assert (tmp_path / "k").read_bytes() == secret_file.read_bytes()
        assert result["verified"] == ["hmac_sha256"]
        assert_secret_absent(result, secret_file.read_bytes(), texts + keys)
        # Without the key lines the record's keyed value cannot be computed: refused, nothing written.
        unkeyed = combine({"shares": [b.split("\n")[0] for b in bare], "record": made["record_path"], "dest": str(tmp_path / "u")})
        failed(unkeyed, "no check value could be checked", "Check-Key-Share")
        assert not (tmp_path / "u").exists()

    def test_too_few_shares_write_nothing(self, made, tmp_path):
        result = combine({"share_files": made["share_files"][:2], "dest": str(tmp_path / "k")})
        failed(result, "2 usable shares", "needs 3")
        assert not (tmp_path / "k").exists()

    def test_a_damaged_share_among_four_is_named_in_a_warning(self, made, secret_file, tmp_path):
        texts = share_texts(made["share_files"])
        head, _dash, value = texts[1].rpartition("-")
        damaged = "%s-%s%s" % (head, "f" if value[0] != "f" else "e", value[1:])
        result = succeeded(
            combine(
                {
                    "shares": [damaged],
                    "share_files": [made["share_files"][i] for i in (0, 2, 3)],
                    "record": made["record_path"],
                    "dest": str(tmp_path / "k"),
                }
            )
        )
        assert (tmp_path / "k").read_bytes() == secret_file.read_bytes()
        assert [bad["index"] for bad in result["bad_shares"]] == [2]
        warnings = json.dumps(result["warnings"])  # ansible-core 2.19 reports structured warnings
        assert "share 2 (bob" in warnings and "tell its custodian" in warnings

    def test_an_existing_different_dest_is_kept_unless_force(self, made, secret_file, tmp_path):
        dest = tmp_path / "k"
        dest.write_bytes(b"something else")
        failed(combine({"share_files": made["share_files"][:3], "dest": str(dest)}), "holds something else")
        assert dest.read_bytes() == b"something else"
        succeeded(combine({"share_files": made["share_files"][:3], "dest": str(dest), "force": True}))
        assert dest.read_bytes() == secret_file.read_bytes() and mode_of(dest) == 0o600

    def test_a_wrong_expected_checksum_is_refused(self, made, tmp_path):
        result = combine(
            {
                "share_files": made["share_files"][:3],
                "check_sha256": hashlib.sha256(b"x").hexdigest(),
                "dest": str(tmp_path / "k"),
            }
        )
        failed(result, "does not match the given checksum")
        assert not (tmp_path / "k").exists()

    def test_a_share_of_another_split_is_named(self, made, secret_file, tmp_path):
        other = succeeded(
            split(
                {
                    "scheme": "ssss",
                    "src": str(secret_file),
                    "threshold": 3,
                    "custodians": CUSTODIANS,
                    "dest": str(tmp_path / "other"),
                }
            )
        )
        result = combine(
            {
                "share_files": made["share_files"][:2] + other["share_files"][2:3],
                "record": made["record_path"],
                "dest": str(tmp_path / "k"),
            }
        )
        failed(result, "share-3-carol.txt belongs to split %s" % other["split_id"])
