"""The seal pipeline (zstd + age + SHA-256 in one pass) with real pyrage, zstandard and age CLI keys."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SealError, UnsealError

pytestmark = pytest.mark.timeout(120)

MIB = 1 << 20


def _sealed(data: bytes, recipients, compress: bool = True):
    sink = io.BytesIO()
    result = seal.seal(io.BytesIO(data), sink, recipients, compress=compress)
    return sink.getvalue(), result


def _header_end(sealed: bytes) -> int:
    """Offset of the first payload byte (after the ``--- MAC`` line of the age header)."""
    mac_line = sealed.index(b"\n--- ") + 1
    return sealed.index(b"\n", mac_line) + 1


def _compressible(size: int) -> bytes:
    line = b"block 0123456789 the quick brown fox jumps over the lazy dog\n"
    return (line * (size // len(line) + 1))[:size]


PAYLOADS = {
    "empty": lambda: b"",
    "one-byte": lambda: b"x",
    "small": lambda: b"hello nodekeep\n" * 10,
    # more than two pipeline chunks (CHUNK_SIZE is 4 MiB) and not a multiple of any buffer size
    "multi-chunk-compressible": lambda: _compressible(9 * MIB + 12345),
    "multi-chunk-incompressible": lambda: os.urandom(9 * MIB + 777),
    "incompressible": lambda: os.urandom(300_001),
}


class TestRoundTrip:
    @pytest.mark.parametrize("kind", sorted(PAYLOADS))
    @pytest.mark.parametrize("compress", [True, False], ids=["zstd", "plain"])
    def test_round_trip_gives_back_the_same_bytes_and_digests(self, kind, compress, recipients, identities):
        data = PAYLOADS[kind]()
        sealed, result = _sealed(data, recipients, compress=compress)

        assert seal.is_age_file(sealed[:64])
        assert result.compressed is compress
        assert result.content.size == len(data)
        assert result.content.sha256 == hashlib.sha256(data).hexdigest()
        assert result.sealed.size == len(sealed)
        assert result.sealed.sha256 == hashlib.sha256(sealed).hexdigest()
        if len(data) >= 16:
            assert data[:4096] not in sealed  # encrypted, not plaintext

        out = io.BytesIO()
        back = seal.unseal(io.BytesIO(sealed), out, identities)
        assert out.getvalue() == data
        assert back.content == result.content
        assert back.sealed == result.sealed
        assert back.compressed is compress

    def test_compressible_data_is_compressed_in_a_standard_zstd_frame(self, recipients, identities):
        import pyrage

        data = _compressible(5 * MIB)
        sealed, result = _sealed(data, recipients)
        assert result.sealed.size < len(data) // 10
        payload = pyrage.decrypt(sealed, identities)
        assert payload[:4] == seal.ZSTD_MAGIC
        import zstandard

        assert zstandard.ZstdDecompressor().decompressobj().decompress(payload) == data

    def test_incompressible_data_grows_only_by_the_age_overhead(self, recipients):
        data = os.urandom(2 * MIB)
        _sealed_bytes, result = _sealed(data, recipients)
        # age: header + 16 bytes nonce per file + 16 bytes tag per 64 KiB chunk; zstd raw blocks add little
        assert result.sealed.size < len(data) + 4096

    def test_seal_bytes_and_unseal_bytes(self, recipients, identities):
        assert seal.unseal_bytes(seal.seal_bytes(b"secret\n", recipients), identities) == b"secret\n"

    def test_a_known_digest_is_not_computed_again_and_unseal_can_skip_it(self, recipients, identities):
        """Pieces: the caller hashed the bytes already (seal), or proves the sealed bytes instead (unseal)."""
        data = _compressible(1 << 20)
        sink = io.BytesIO()
        given = hashlib.sha256(b"the caller's digest").hexdigest()  # not data's: proves it was not recomputed
        result = seal.seal(io.BytesIO(data), sink, recipients, content_sha256=given)
        assert result.content.sha256 == given and result.content.size == len(data)
        out = io.BytesIO()
        back = seal.unseal(io.BytesIO(sink.getvalue()), out, identities, hash_content=False)
        assert out.getvalue() == data and back.content.size == len(data) and back.content.sha256 == ""
        assert back.sealed.sha256 == hashlib.sha256(sink.getvalue()).hexdigest() == result.sealed.sha256

    def test_two_seals_of_the_same_data_differ(self, recipients):
        # a fresh file key each time: equal plaintexts are not linkable through the artifacts
        first = _sealed(b"same", recipients)[0]
        second = _sealed(b"same", recipients)[0]
        assert first != second

    def test_several_recipients_each_can_open(self, age_key, other_age_key):
        recipients = seal.load_recipients([age_key.recipient, other_age_key.recipient])
        sealed = _sealed(b"for two custodians", recipients)[0]
        for key in (age_key, other_age_key):
            assert seal.unseal_bytes(sealed, seal.load_identities([key.identity])) == b"for two custodians"

    def test_a_file_sealed_by_the_age_and_zstd_clis_unseals(self, tmp_path, age_key, identities):
        data = os.urandom(200_000) + _compressible(3 * MIB)
        (tmp_path / "plain").write_bytes(data)
        subprocess.run(
            "zstd -q -c plain | age -r %s -o sealed.age" % age_key.recipient,
            shell=True,
            check=True,
            cwd=tmp_path,
        )
        out = io.BytesIO()
        result = seal.unseal(io.BytesIO((tmp_path / "sealed.age").read_bytes()), out, identities)
        assert out.getvalue() == data
        assert result.compressed is True
        assert result.content.sha256 == hashlib.sha256(data).hexdigest()


_MEMORY_PROBE = textwrap.dedent(
    """
    import io, json, os, resource, sys
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal

    class Generated(io.RawIOBase):
        # produced on the fly, never held: "incompressible" (random, like hashes and keys
        # in a chain DB) or "mixed" (every other 4 MiB read is a repeated block)
        def __init__(self, total, kind):
            self.left, self.kind, self.reads = total, kind, 0
            self.block = os.urandom(1 << 20)
        def readable(self):
            return True
        def readinto(self, buf):
            size = min(len(buf), self.left)
            if size <= 0:
                return 0
            self.reads += 1
            if self.kind == "mixed" and self.reads % 2:
                chunk = (self.block * (size // len(self.block) + 1))[:size]
            else:
                chunk = os.urandom(size)
            buf[:size] = chunk
            self.left -= size
            return size

    class Discard:
        size = 0
        def write(self, data):
            self.size += len(data)
            return len(data)
        def flush(self):
            pass

    recipient, total, kind = sys.argv[1], int(sys.argv[2]) << 20, sys.argv[3]
    recipients = seal.load_recipients([recipient])
    seal.seal(io.BytesIO(os.urandom(1 << 20)), Discard(), recipients)  # warm up: libraries, threads
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sink = Discard()
    result = seal.seal(Generated(total, kind), sink, recipients)  # the engine's defaults
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kib": after - before, "content": result.content.size, "sealed": sink.size}))
    """
)


def _peak_rss_growth_mib(child_env, recipient: str, size_mib: int, kind: str) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, recipient, str(size_mib), kind],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["content"] == size_mib * MIB
    if kind == "incompressible":
        assert report["sealed"] > size_mib * MIB  # it all went through zstd and age
    return report["growth_kib"] / 1024


@pytest.mark.slow
class TestBoundedMemory:
    def test_sealing_256_mib_of_incompressible_data_grows_peak_rss_by_less_than_100_mib(self, child_env, age_key):
        growth = _peak_rss_growth_mib(child_env, age_key.recipient, 256, "incompressible")
        assert growth < 100, "peak RSS grew by %.0f MiB while sealing 256 MiB" % growth

    def test_peak_rss_does_not_grow_with_the_stream_size(self, child_env, age_key):
        small = _peak_rss_growth_mib(child_env, age_key.recipient, 64, "mixed")
        large = _peak_rss_growth_mib(child_env, age_key.recipient, 256, "mixed")
        assert large - small < 16, "sealing 256 MiB took %.0f MiB more than 64 MiB" % (large - small)


class _CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.received = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.received += len(data)
        return len(data)


class TestFailClosed:
    @pytest.mark.parametrize(
        "given, needle",
        [
            ([], "no age recipient"),
            ([""], "empty"),
            (["   "], "empty"),
            (["age1notavalidrecipient"], "not a valid age recipient"),
            (["ssh-ed25519 AAAAnotbase64"], "not a valid age recipient"),
            (["hello"], "not an age recipient"),
        ],
        ids=["none", "empty", "blank", "bad-age1", "bad-ssh", "garbage"],
    )
    def test_bad_recipients_raise_and_nothing_reaches_the_sink(self, given, needle):
        sink = _CountingSink()
        with pytest.raises(SealError) as excinfo:
            seal.seal(io.BytesIO(b"plaintext"), sink, seal.load_recipients(given))
        assert needle in str(excinfo.value)
        assert excinfo.value.remedy
        assert sink.received == 0

    def test_a_secret_key_given_as_recipient_is_refused(self, age_key):
        sink = _CountingSink()
        with pytest.raises(SealError) as excinfo:
            seal.seal(io.BytesIO(b"plaintext"), sink, seal.load_recipients([age_key.identity]))
        assert "secret key" in str(excinfo.value)
        assert age_key.identity not in str(excinfo.value)
        assert sink.received == 0

    def test_an_empty_parsed_list_given_to_seal_directly_is_refused(self):
        sink = _CountingSink()
        with pytest.raises(SealError):
            seal.seal(io.BytesIO(b"plaintext"), sink, [])
        assert sink.received == 0

    @pytest.mark.parametrize("kind", ["identity-object", "secret-string", "public-string"])
    def test_unparsed_or_secret_values_given_to_seal_directly_fail_closed(self, kind, age_key, identities):
        given = {
            "identity-object": identities,
            "secret-string": [age_key.identity],
            "public-string": [age_key.recipient],
        }[kind]
        sink = _CountingSink()
        with pytest.raises(SealError):
            seal.seal(io.BytesIO(b"plaintext " * 1000), sink, given)
        assert sink.received == 0

    def test_recipients_file_problems(self, tmp_path, age_key):
        empty = tmp_path / "empty.txt"
        empty.write_text("# only a comment\n\n")
        with pytest.raises(SealError, match="holds no recipient"):
            seal.load_recipients([], [str(empty)])
        with pytest.raises(SealError, match="cannot read recipients file"):
            seal.load_recipients([], [str(tmp_path / "missing.txt")])
        bad = tmp_path / "bad.txt"
        bad.write_text("%s\nage1broken\n" % age_key.recipient)
        with pytest.raises(SealError, match="line 2 of"):
            seal.load_recipients([], [str(bad)])

    def test_a_secret_key_in_a_recipients_file_is_refused_without_echoing_it(self, tmp_path, age_key):
        path = tmp_path / "recipients.txt"
        path.write_text(age_key.identity + "\n")
        with pytest.raises(SealError) as excinfo:
            seal.load_recipients([], [str(path)])
        secret_body = age_key.identity[len("AGE-SECRET-KEY-1") :]
        message = str(excinfo.value) + json.dumps(excinfo.value.to_result())
        assert secret_body[:6] not in message, "the error echoes key material: %s" % message

    def test_recipients_from_strings_and_files_combine(self, tmp_path, age_key, other_age_key):
        path = tmp_path / "recipients.txt"
        path.write_text("# custodians\n%s\n" % other_age_key.recipient)
        recipients = seal.load_recipients([age_key.recipient], [str(path)])
        assert len(recipients) == 2


@pytest.fixture(scope="module")
def sealed(recipients):
    # more than 3 age chunks of 64 KiB: incompressible, so the payload stays large
    sealed = _sealed(os.urandom(200_000), recipients)[0]
    return sealed


class TestUnsealFailures:
    def test_wrong_identity_is_named(self, sealed, other_age_key):
        with pytest.raises(UnsealError) as excinfo:
            seal.unseal(io.BytesIO(sealed), io.BytesIO(), seal.load_identities([other_age_key.identity]))
        assert "identit" in excinfo.value.problem
        assert "recipient" in excinfo.value.remedy

    def test_no_identity_is_refused(self, sealed):
        with pytest.raises(UnsealError, match="no age identity"):
            seal.load_identities([], [])
        with pytest.raises(UnsealError, match="no age identity"):
            seal.unseal(io.BytesIO(sealed), io.BytesIO(), [])

    @pytest.mark.parametrize(
        "where",
        ["magic", "stanza", "mac", "nonce", "first-chunk", "middle", "chunk-tag", "last-byte"],
    )
    def test_a_flipped_byte_anywhere_is_an_unseal_error(self, sealed, identities, where):
        header = _header_end(sealed)
        offset = {
            "magic": 3,
            "stanza": sealed.index(b"-> X25519 ") + 14,
            "mac": header - 10,
            "nonce": header + 5,
            "first-chunk": header + 16 + 100,
            "middle": len(sealed) // 2,
            "chunk-tag": header + 16 + 65536 + 3,
            "last-byte": len(sealed) - 1,
        }[where]
        damaged = bytearray(sealed)
        damaged[offset] ^= 0x01
        with pytest.raises(UnsealError) as excinfo:
            seal.unseal(io.BytesIO(bytes(damaged)), io.BytesIO(), identities)
        assert excinfo.value.remedy

    def test_every_header_byte_is_authenticated(self, sealed, identities):
        header = _header_end(sealed)
        survived = []
        for offset in range(header):
            damaged = bytearray(sealed)
            damaged[offset] ^= 0x01
            try:
                seal.unseal_bytes(bytes(damaged), identities)
            except UnsealError:
                continue
            survived.append(offset)
        assert survived == []

    @pytest.mark.parametrize("where", ["one-byte-short", "chunk-boundary", "after-nonce", "header-only", "mid-header"])
    def test_a_truncated_file_is_an_unseal_error(self, sealed, identities, where):
        header = _header_end(sealed)
        length = {
            "one-byte-short": len(sealed) - 1,
            "chunk-boundary": header + 16 + (65536 + 16) * 2,
            "after-nonce": header + 16,
            "header-only": header,
            "mid-header": header // 2,
        }[where]
        with pytest.raises(UnsealError):
            seal.unseal(io.BytesIO(sealed[:length]), io.BytesIO(), identities)

    def test_not_an_age_file(self, identities):
        with pytest.raises(UnsealError):
            seal.unseal(io.BytesIO(b"SQLite format 3\x00" + b"\x00" * 4096), io.BytesIO(), identities)

    def test_an_age_file_whose_payload_is_damaged_zstd_is_refused(self, recipients, identities):
        # a valid age file (authentic) whose plaintext claims to be zstd but is not
        bogus = seal.ZSTD_MAGIC + os.urandom(5000)
        sealed = _sealed(bogus, recipients, compress=False)[0]
        with pytest.raises(UnsealError, match="zstd"):
            seal.unseal(io.BytesIO(sealed), io.BytesIO(), identities)


class TestIdentities:
    def test_openssh_ed25519_keys_work_as_recipient_and_identity(self, tmp_path):
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        recipients = seal.load_recipients([(tmp_path / "id_ed25519.pub").read_text()])
        identities = seal.load_identities([], [str(key)])
        assert seal.unseal_bytes(seal.seal_bytes(b"via ssh", recipients), identities) == b"via ssh"

    def test_a_file_that_is_not_an_identity_is_refused_without_echoing_it(self, tmp_path):
        path = tmp_path / "not-a-key"
        path.write_text("password=hunter2-very-secret\n")
        with pytest.raises(UnsealError) as excinfo:
            seal.load_identities([], [str(path)])
        assert "hunter2" not in str(excinfo.value)
        assert str(path) in str(excinfo.value)

    def test_a_missing_identity_file_is_named(self, tmp_path):
        with pytest.raises(UnsealError, match="cannot read identity file"):
            seal.load_identities([], [str(tmp_path / "nope")])
