"""Shamir splitting (plugins/module_utils/keys/): SLIP-39 and the ssss format, checked against the real
`ssss-split` / `ssss-combine` (Debian's ssss 0.5) both ways, and the check value that refuses what ssss accepts."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import random
import re
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.keys import _ssss, shamir
from ansible_collections.nodekeep.backup.plugins.module_utils.keys import shares as _shares_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.keys.shares import ShamirError

pytestmark = pytest.mark.timeout(120)

CUSTODIANS = ["alice", "bob", "carol", "dave", "erin"]


def files_to_shares(files: dict) -> list:
    return [_shares_mod.parse_share(text, name) for name, text in files.items()]


def cli_split(secret: bytes, threshold: int, count: int, hexmode: bool = True, token: str = "") -> list[str]:
    args = ["ssss-split", "-t", str(threshold), "-n", str(count), "-q"] + (["-x"] if hexmode else [])
    args += ["-w", token] if token else []
    text = secret.hex() if hexmode else secret.decode("ascii")
    proc = subprocess.run(args, input=text + "\n", capture_output=True, text=True, check=True)
    return proc.stdout.split()


def cli_combine(lines: list[str], threshold: int, hexmode: bool = True) -> tuple[int, str]:
    """ssss-combine prints the secret on stderr (with -q: only the secret, then warnings)."""
    args = ["ssss-combine", "-t", str(threshold), "-q"] + (["-x"] if hexmode else [])
    proc = subprocess.run(args, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False)
    return proc.returncode, proc.stderr.splitlines()[0] if proc.stderr else ""


def combined_check_key(shares: list, threshold: int) -> bytes:
    """The check key from the shares' Check-Key-Share lines (what M custodians together have)."""
    points = [_ssss.parse_ssss_line(share.check_key_share) for share in shares]
    return _ssss.ssss_combine([(p[1], p[2]) for p in points], threshold, points[0][3])


def assert_no_secret(message: str, *secrets: bytes) -> None:
    for secret in secrets:
        for form in (secret.hex(), secret.decode("latin-1")):
            assert form not in message


# --------------------------------------------------------------------------
# the field and the diffusion layer
# --------------------------------------------------------------------------


class TestField:
    def test_the_8_bit_field_is_the_aes_field(self):
        field = _ssss.GF2n(8)
        assert field.poly == 0x11B
        assert field.mul(0x57, 0x83) == 0xC1  # FIPS-197, 4.2

    @pytest.mark.parametrize("degree", [8, 64, 128, 256, 592, 1024])
    def test_every_element_times_its_inverse_is_one(self, degree):
        field = _ssss.GF2n(degree)
        for _attempt in range(10):
            x = random.getrandbits(degree) or 1
            assert field.mul(x, field.inverse(x)) == 1

    @pytest.mark.parametrize("degree", [7, 0, 1032, 12])
    def test_sizes_ssss_does_not_have_are_refused(self, degree):
        with pytest.raises(ValueError):
            _ssss.GF2n(degree)

    @pytest.mark.parametrize("degree", [64, 72, 128, 136, 520, 1024])
    def test_diffusion_is_a_permutation(self, degree):
        for _attempt in range(3):
            value = random.getrandbits(degree)
            encoded = _ssss.diffuse(value, degree)
            assert encoded.bit_length() <= degree and encoded != value
            assert _ssss.diffuse(encoded, degree, decode=True) == value


# --------------------------------------------------------------------------
# SLIP-39
# --------------------------------------------------------------------------


class TestSlip39:
    @pytest.mark.parametrize("size", [16, 32, 64])
    def test_round_trip(self, size):
        secret = os.urandom(size)
        record, files = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:3])
        shares = files_to_shares(files)
        assert all(len(share.text.split()) >= 20 for share in shares)
        assert shamir.combine_shares(shares[:2]).secret == secret
        key = combined_check_key(shares[1:3], 2)
        assert record["check"]["hmac_sha256"] == hmac.new(key, shamir.CHECK_PREFIX + secret, hashlib.sha256).hexdigest()
        assert "sha256" not in record["check"]

    def test_every_3_of_5_subset_combines_to_the_secret(self):
        secret = shamir.generate_secret("age_identity", 0)
        record, files = shamir.split_secret(secret, "slip39", 3, CUSTODIANS, label="master")
        shares = files_to_shares(files)
        for subset in itertools.combinations(shares, 3):
            combined = shamir.combine_shares(list(subset), record=record)
            assert combined.secret == secret
            assert combined.checks == ["hmac_sha256", "age_public_key"]
        assert combined.report()["age_public_key"] == record["check"]["age_public_key"]

    def test_the_library_recovers_our_shares_without_this_collection(self):
        import shamir_mnemonic

        secret = os.urandom(32)
        _record, files = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:3])
        words = [share.text for share in files_to_shares(files)]
        assert shamir_mnemonic.combine_mnemonics(words[1:]) == secret  # what `shamir recover` does

    def test_too_few_shares_are_refused_naming_how_many_are_missing(self):
        _record, files = shamir.split_secret(os.urandom(32), "slip39", 3, CUSTODIANS)
        with pytest.raises(ShamirError) as caught:
            shamir.combine_shares(files_to_shares(files)[:2])
        assert "2 usable shares" in caught.value.message and "needs 3" in caught.value.message
        assert "bring 1 more" in caught.value.message

    def test_a_mistyped_word_is_refused_naming_the_share(self):
        secret = os.urandom(32)
        _record, files = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:3])
        _name, text = next(iter(files.items()))
        words = _shares_mod.parse_share(text).text.split()
        words[10] = "academic" if words[10] != "academic" else "acid"
        with pytest.raises(ShamirError) as caught:
            _shares_mod.parse_share(" ".join(words), "bob's sheet")
        assert "bob's sheet" in caught.value.message and "checksum" in caught.value.message
        assert " ".join(words[:5]) not in caught.value.message  # the library quotes words; we do not

    def test_a_share_of_another_split_is_refused_naming_it(self):
        secret = os.urandom(32)
        record, files = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:3])
        _other_record, other_files = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:3])
        mixed = files_to_shares(files)[:1] + files_to_shares(other_files)[1:2]
        with pytest.raises(ShamirError) as caught:
            shamir.combine_shares(mixed)
        assert "different splits" in caught.value.message
        with pytest.raises(ShamirError) as caught:
            shamir.combine_shares(mixed, record=record)
        assert "share-2-bob.txt belongs to split" in caught.value.message

    def test_bare_mnemonics_of_two_splits_are_refused(self):
        secret = os.urandom(16)
        _r1, files1 = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:2])
        _r2, files2 = shamir.split_secret(secret, "slip39", 2, CUSTODIANS[:2])
        bare = [files_to_shares(files1)[0].text, files_to_shares(files2)[1].text]
        with pytest.raises(ShamirError, match="different splits"):
            shamir.combine_shares([_shares_mod.parse_share(text, "typed") for text in bare])

    def test_odd_sized_secrets_are_refused_with_a_way_out(self):
        with pytest.raises(ShamirError, match="even number of bytes.*use scheme ssss"):
            shamir.split_secret(os.urandom(33), "slip39", 2, CUSTODIANS[:3])


# --------------------------------------------------------------------------
# ssss format, against the real CLI
# --------------------------------------------------------------------------

THRESHOLDS = [(2, 3), (3, 5), (5, 7)]


class TestSsssInterop:
    @pytest.mark.parametrize(("threshold", "count"), THRESHOLDS, ids=["2of3", "3of5", "5of7"])
    @pytest.mark.parametrize("size", [16, 33, 128])
    def test_our_shares_combine_with_ssss_combine(self, threshold, count, size):
        secret = os.urandom(size)
        record, files = shamir.split_secret(secret, "ssss", threshold, ["c%d" % i for i in range(count)])
        assert record["encoding"] == "hex"
        lines = [share.text for share in files_to_shares(files)]
        assert all(line.startswith(record["ssss"]["token"] + "-") for line in lines)
        for subset in list(itertools.combinations(lines, threshold))[:6]:
            code, printed = cli_combine(list(subset), threshold)
            assert code == 0 and printed == secret.hex()

    @pytest.mark.parametrize(("threshold", "count"), THRESHOLDS, ids=["2of3", "3of5", "5of7"])
    def test_a_printable_secret_uses_ssss_text_mode(self, threshold, count):
        secret = shamir.generate_secret("age_identity", 0)  # 74 printable characters
        record, files = shamir.split_secret(secret, "ssss", threshold, ["c%d" % i for i in range(count)])
        assert record["encoding"] == "ascii"
        lines = random.sample([share.text for share in files_to_shares(files)], threshold)
        assert cli_combine(lines, threshold, hexmode=False) == (0, secret.decode())

    @pytest.mark.parametrize(("threshold", "count"), THRESHOLDS, ids=["2of3", "3of5", "5of7"])
    @pytest.mark.parametrize("size", [16, 32, 127])
    def test_ssss_split_shares_combine_here(self, threshold, count, size):
        secret = os.urandom(size)
        lines = cli_split(secret, threshold, count)
        for subset in list(itertools.combinations(lines, threshold))[:6]:
            shares = [_shares_mod.parse_share(line, "typed") for line in subset]
            check = {"plain_sha256": hashlib.sha256(secret).hexdigest()}
            combined = shamir.combine_shares(shares, threshold=threshold, check=check)
            assert combined.secret == secret and combined.checks == ["plain_sha256"]

    def test_ssss_split_text_mode_with_a_token(self):
        secret = b"correct horse battery staple, and more"
        lines = cli_split(secret, 3, 5, hexmode=False, token="vault")
        shares = [_shares_mod.parse_share(line) for line in lines[1:4]]
        check = {"plain_sha256": hashlib.sha256(secret).hexdigest()}
        assert shamir.combine_shares(shares, threshold=3, check=check).secret == secret

    def test_binary_secrets_use_hex_mode_because_text_mode_loses_them(self):
        # Runbook 000 pipes `head -c 32 /dev/urandom` into ssss-split in text mode: the key is cut at the first
        # newline (a NUL in front makes ssss-split fail), and ssss-combine prints non-printable bytes as '.':
        # exit 0 both times, and the key cannot come back.
        secret = b"ab\x01cdefgh\xffijklmnopq\nrest of the key"
        proc = subprocess.run(["ssss-split", "-t", "2", "-n", "3", "-q"], input=secret, capture_output=True, check=True)
        code, printed = cli_combine(proc.stdout.decode().split()[:2], 2, hexmode=False)
        assert code == 0 and printed == "ab.cdefgh.ijklmnopq"
        record, files = shamir.split_secret(secret, "ssss", 2, CUSTODIANS[:3])
        assert record["encoding"] == "hex"
        lines = [share.text for share in files_to_shares(files)][:2]
        assert cli_combine(lines, 2) == (0, secret.hex())


class TestWhereSsssReturnsGarbage:
    def test_too_few_shares_with_a_low_threshold_is_refused_by_the_check_value(self):
        secret = os.urandom(32)
        lines = cli_split(secret, 3, 5)
        # ssss-combine is happy with 2 shares of a 3-of-5 split when told -t 2: exit 0, a wrong secret.
        code, printed = cli_combine(lines[:2], 2)
        assert code == 0 and printed and printed != secret.hex()
        shares = [_shares_mod.parse_share(line, "typed") for line in lines[:2]]
        with pytest.raises(ShamirError) as caught:
            shamir.combine_shares(shares, threshold=2, check={"plain_sha256": hashlib.sha256(secret).hexdigest()})
        assert "does not match" in caught.value.message and "fewer than the split's threshold" in caught.value.message
        assert_no_secret(caught.value.message, secret, bytes.fromhex(printed))

    def test_with_our_share_files_the_threshold_is_known(self):
        secret = os.urandom(32)
        record, files = shamir.split_secret(secret, "ssss", 3, CUSTODIANS)
        shares = files_to_shares(files)
        with pytest.raises(ShamirError, match="2 usable shares of this split were given; it needs 3"):
            shamir.combine_shares(shares[:2])
        with pytest.raises(ShamirError, match="threshold 2 was given, but the share files say 3"):
            shamir.combine_shares(shares[:2], threshold=2)
        bare = [_shares_mod.parse_share(share.text, "typed") for share in shares[:2]]
        with pytest.raises(ShamirError, match="it needs 3"):
            shamir.combine_shares(bare, record=record)

    def test_without_any_check_value_nothing_is_returned(self):
        lines = cli_split(os.urandom(32), 2, 3)
        with pytest.raises(ShamirError, match="no check value"):
            shamir.combine_shares([_shares_mod.parse_share(line) for line in lines[:2]], threshold=2)

    def test_bare_lines_without_a_threshold_are_refused(self):
        lines = cli_split(os.urandom(32), 2, 3)
        with pytest.raises(ShamirError, match="threshold of this split is unknown"):
            shamir.combine_shares([_shares_mod.parse_share(line) for line in lines[:2]])


class TestWrongShares:
    def _flip(self, line: str) -> str:
        head, _dash, value = line.rpartition("-")
        digit = "0" if value[5] != "0" else "1"
        return "%s-%s%s%s" % (head, value[:5], digit, value[6:])

    def test_a_wrong_share_among_exactly_m_is_refused(self):
        secret = os.urandom(32)
        record, files = shamir.split_secret(secret, "ssss", 3, CUSTODIANS)
        # Typed from the sheets: each share line with its Check-Key-Share line.
        parsed = files_to_shares(files)
        texts = [self._flip(parsed[0].text)] + [share.text for share in parsed[1:3]]
        lines = ["%s\n%s" % (text, share.check_key_share) for text, share in zip(texts, parsed)]
        typed = [_shares_mod.parse_share(line, "typed %d" % n) for n, line in enumerate(lines)]
        with pytest.raises(ShamirError) as caught:
            shamir.combine_shares(typed, record=record)
        assert "2 usable shares" in caught.value.message and "share 1" in caught.value.message  # by fingerprint
        record_without_fingerprints = dict(record, shares=[])
        with pytest.raises(ShamirError, match="does not match the record's check value"):
            shamir.combine_shares(typed, record=record_without_fingerprints)

    def test_a_wrong_share_among_more_than_m_is_named_and_the_secret_still_verified(self):
        secret = os.urandom(32)
        record, files = shamir.split_secret(secret, "ssss", 3, CUSTODIANS)
        parsed = files_to_shares(files)
        texts = [self._flip(parsed[1].text)] + [share.text for share in parsed[2:5]]
        lines = ["%s\nCheck-Key-Share: %s" % (text, share.check_key_share) for text, share in zip(texts, parsed[1:5])]
        typed = [_shares_mod.parse_share(line, "typed") for line in lines]
        combined = shamir.combine_shares(typed, record=dict(record, shares=[]))
        assert combined.secret == secret
        assert [bad["index"] for bad in combined.bad] == [2]
        assert "wrong or damaged" in combined.bad[0]["problem"]

    def test_the_same_share_twice_counts_once(self):
        secret = os.urandom(32)
        _record, files = shamir.split_secret(secret, "ssss", 3, CUSTODIANS)
        shares = files_to_shares(files)
        with pytest.raises(ShamirError, match="2 usable shares"):
            shamir.combine_shares([shares[0], shares[0], shares[1]])
        combined = shamir.combine_shares([shares[0], shares[0], shares[1], shares[2]])
        assert combined.secret == secret and combined.report()["ignored_shares"] == [1]

    def test_two_different_shares_with_one_index_are_refused(self):
        _record, files = shamir.split_secret(os.urandom(32), "ssss", 2, CUSTODIANS[:3])
        share = files_to_shares(files)[0]
        twin = _shares_mod.parse_share(self._flip(share.text), "typed")
        with pytest.raises(ShamirError, match="share 1 was given twice with different contents"):
            shamir.combine_shares([share, twin])

    def test_a_foreign_ssss_share_is_refused_by_token(self):
        secret = os.urandom(32)
        _r1, files1 = shamir.split_secret(secret, "ssss", 2, CUSTODIANS[:3])
        _r2, files2 = shamir.split_secret(secret, "ssss", 2, CUSTODIANS[:3])
        mixed = [
            _shares_mod.parse_share(files_to_shares(files1)[0].text),
            _shares_mod.parse_share(files_to_shares(files2)[1].text),
        ]
        with pytest.raises(ShamirError, match="different splits"):
            shamir.combine_shares(mixed, threshold=2)

    def test_foreign_cli_shares_without_tokens_fail_the_check(self):
        secret = os.urandom(32)
        mine, theirs = cli_split(secret, 2, 3), cli_split(secret, 2, 3)
        shares = [_shares_mod.parse_share(mine[0]), _shares_mod.parse_share(theirs[1])]
        with pytest.raises(ShamirError, match="does not match"):
            shamir.combine_shares(shares, threshold=2, check={"plain_sha256": hashlib.sha256(secret).hexdigest()})

    def test_schemes_are_not_mixed(self):
        _r1, files1 = shamir.split_secret(os.urandom(32), "ssss", 2, CUSTODIANS[:2])
        _r2, files2 = shamir.split_secret(os.urandom(32), "slip39", 2, CUSTODIANS[:2])
        with pytest.raises(ShamirError, match="mix SLIP-39"):
            shamir.combine_shares(files_to_shares(files1)[:1] + files_to_shares(files2)[:1])

    def test_an_edited_share_file_is_refused(self):
        _record, files = shamir.split_secret(os.urandom(32), "slip39", 2, CUSTODIANS[:2])
        text = next(iter(files.values())).replace("Threshold: 2", "Threshold: 3")
        with pytest.raises(ShamirError, match="do not match its headers"):
            _shares_mod.parse_share(text, "edited")
        truncated = next(iter(files.values())).split(_shares_mod.END)[0]
        with pytest.raises(ShamirError, match="cut off"):
            _shares_mod.parse_share(truncated, "cut")

    def test_garbage_is_not_a_share(self):
        with pytest.raises(ShamirError, match="neither a nodekeep share file"):
            _shares_mod.parse_share("hello world", "note.txt")


class TestLimitsAndChecks:
    @pytest.mark.parametrize(
        ("size", "scheme", "threshold", "count", "needle"),
        [
            (15, "ssss", 2, 3, "16 to 128 bytes"),
            (129, "ssss", 2, 3, "16 to 128 bytes"),
            (32, "ssss", 1, 3, "at least 2"),
            (32, "ssss", 4, 3, "at most the number of shares"),
            (32, "slip39", 2, 17, "at most 16 shares"),
        ],
    )
    def test_impossible_splits_are_refused(self, size, scheme, threshold, count, needle):
        with pytest.raises(ShamirError, match=needle):
            shamir.split_secret(os.urandom(size), scheme, threshold, ["c%d" % i for i in range(count)])

    @pytest.mark.parametrize("name", ["../x", "", "a b", "x" * 65])
    def test_custodian_names_must_be_file_names(self, name):
        with pytest.raises(ShamirError, match="not usable as a file name"):
            shamir.split_secret(os.urandom(32), "ssss", 2, ["ok", name])

    def test_an_ssh_key_is_checked_by_its_fingerprint(self, tmp_path):
        path = tmp_path / "node_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        data = path.read_bytes()
        key = os.urandom(32)
        check = shamir.check_values(data, key)
        listed = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True)
        assert check["public_key_fingerprint"] == listed.stdout.split()[1]
        assert shamir.verify_check(data, check, key) == ["hmac_sha256", "public_key_fingerprint"]
        assert shamir.verify_check(data, check) == ["public_key_fingerprint"]  # typed without the key shares

    def test_the_check_value_is_reproducible_by_hand_with_ssss_combine_and_openssl(self, tmp_path):
        """The sheet's route: ssss-combine -x of M Check-Key-Share lines, then openssl's HMAC of prefix and secret."""
        secret = os.urandom(32)
        record, files = shamir.split_secret(secret, "ssss", 2, CUSTODIANS[:3])
        (tmp_path / "s").write_bytes(secret)
        key_lines = [share.check_key_share for share in files_to_shares(files)][1:3]
        code, key_hex = cli_combine(key_lines, 2, hexmode=True)
        assert code == 0 and len(key_hex) == 64
        out = subprocess.run(
            "{ printf 'nodekeep-shamir-check-v1:'; cat s; } | openssl dgst -sha256 -mac HMAC -macopt hexkey:%s" % key_hex,
            shell=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.split()[-1] == record["check"]["hmac_sha256"]
        sheet = next(iter(files.values()))
        assert record["check"]["hmac_sha256"] in sheet and "openssl dgst -sha256 -mac HMAC" in sheet

    def test_a_short_secret_cannot_be_found_from_the_record_or_the_sheets(self):
        """Brute force recovers nothing: a 6-digit PIN padded to the minimum size, every candidate tried.

        Before, the record and every sheet held SHA-256(prefix + secret): all 10^6 candidates took a second.
        """
        pin = b"493817"
        secret = b"pin-of-the-vault:" + pin  # 23 bytes, a low-entropy secret
        record, files = shamir.split_secret(secret, "ssss", 2, CUSTODIANS[:3])
        published = json.dumps(record) + "".join(files.values())
        stored = set(re.findall(r"[0-9a-f]{64}", published))
        assert record["check"]["algorithm"] == "hmac-sha256" and "hmac_sha256" in record["check"]
        for candidate in range(10**6):
            guess = b"pin-of-the-vault:%06d" % candidate
            assert hashlib.sha256(shamir.CHECK_PREFIX + guess).hexdigest() not in stored
            if candidate % 1000 == 0:
                assert hashlib.sha256(guess).hexdigest() not in stored
        # One custodian's sheet (fewer than M) cannot compute the keyed value either: its key share is one point.
        one = files_to_shares(files)[0]
        with pytest.raises(ShamirError):
            shamir.combine_shares([one], record=record)

    def test_records_and_sheets_hold_no_secret(self):
        secret = os.urandom(32)
        record, files = shamir.split_secret(secret, "ssss", 2, CUSTODIANS[:3])
        import json

        text = json.dumps(record)
        assert_no_secret(text, secret)
        shares = files_to_shares(files)
        for share in shares:
            assert share.text.split("-")[-1] not in text
        for sheet in files.values():
            assert_no_secret(sheet, secret)
