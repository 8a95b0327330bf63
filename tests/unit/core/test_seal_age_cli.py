"""seal() with the age CLI (when installed, X25519 recipients) and with pyrage: same format, both fail closed."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SealError

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed"),
]

MIB = 1 << 20


def _payload() -> bytes:
    return os.urandom(3 * MIB + 17) + b"nodekeep " * 200_000


def test_cli_is_chosen_for_x25519_recipients_only(recipients, monkeypatch):
    monkeypatch.delenv("NODEKEEP_AGE_CLI", raising=False)
    argv = seal._age_cli_argv(recipients, armored=False)
    assert argv is not None and argv[1:] == ["-r", str(recipients[0])]
    assert seal._age_cli_argv(recipients, armored=True) is None
    monkeypatch.setenv("NODEKEEP_AGE_CLI", "off")
    assert seal._age_cli_argv(recipients, armored=False) is None


def test_cli_not_used_for_ssh_recipients(tmp_path, monkeypatch):
    monkeypatch.delenv("NODEKEEP_AGE_CLI", raising=False)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    parsed = seal.load_recipients([(tmp_path / "id_ed25519.pub").read_text()])
    assert seal._age_cli_argv(parsed, armored=False) is None


@pytest.mark.parametrize("engine", ["cli", "pyrage"])
def test_both_engines_give_standard_age_files(engine, recipients, identities, age_key, tmp_path, monkeypatch):
    monkeypatch.setenv("NODEKEEP_AGE_CLI", "" if engine == "cli" else "off")
    data = _payload()
    sink = io.BytesIO()
    result = seal.seal(io.BytesIO(data), sink, recipients)
    sealed = sink.getvalue()
    assert sealed.startswith(seal.AGE_MAGIC)
    assert result.sealed.size == len(sealed) and result.content.size == len(data)
    # pyrage opens it, and so does the age CLI followed by zstd
    assert seal.unseal_bytes(sealed, identities) == data
    path = tmp_path / "artifact.zst.age"
    path.write_bytes(sealed)
    opened = subprocess.run(
        "age -d -i %s %s | zstd -q -d" % (age_key.identity_path, path), shell=True, check=True, capture_output=True
    ).stdout
    assert opened == data


def _seal_with_broken_cli(script: str, recipients, tmp_path, monkeypatch) -> SealError:
    """The SealError of seal() when NODEKEEP_AGE_CLI is an ``age`` that runs the shell ``script``."""
    broken = tmp_path / "age"
    broken.write_text("#!/bin/sh\n" + script)
    broken.chmod(0o755)
    monkeypatch.setenv("NODEKEEP_AGE_CLI", str(broken))
    with pytest.raises(SealError) as caught:
        seal.seal(io.BytesIO(_payload()), io.BytesIO(), recipients)
    return caught.value


def test_failing_cli_fails_closed(recipients, tmp_path, monkeypatch):
    error = _seal_with_broken_cli(
        "cat > /dev/null\necho 'age: something broke' >&2\nexit 3\n", recipients, tmp_path, monkeypatch
    )
    assert "exited with status 3" in error.message and "something broke" in error.message


def test_cli_that_dies_early_fails_closed(recipients, tmp_path, monkeypatch):
    error = _seal_with_broken_cli("exit 1\n", recipients, tmp_path, monkeypatch)
    assert "exited with status 1" in error.message


def test_sink_error_with_cli_is_reported_as_the_sink_error(recipients, monkeypatch):
    monkeypatch.delenv("NODEKEEP_AGE_CLI", raising=False)

    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(28, "No space left on device")

    with pytest.raises(Exception) as caught:
        seal.seal(io.BytesIO(_payload()), Full(), recipients, sink_name="the repository")
    assert "space" in str(caught.value).lower()
