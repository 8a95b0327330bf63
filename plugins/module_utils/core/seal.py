# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seal pipeline: one streaming pass of zstd, age and SHA-256.

``seal()`` reads a plaintext stream, hashes it, compresses it with zstd
(optional), encrypts it with age to one or more recipients and writes the
result to a sink while hashing the sealed bytes. ``unseal()`` does the reverse.
Memory stays bounded (a few MiB of buffers plus zstd's window) whatever the
size of the stream, and the stages run in overlapping threads: pyrage and
zstandard release the GIL while they work.

The output is a standard age file whose payload is a standard zstd frame, so
``age -d -i KEY ARTIFACT | zstd -d`` restores it without this collection.

Encryption uses the ``age`` CLI when it is installed and every recipient is an
X25519 key (``age1...``): Go's ChaCha20-Poly1305 is 2-4x faster than pyrage's,
and the output is the same standard age format. Otherwise (SSH recipients,
armor, no CLI, ``NODEKEEP_AGE_CLI=off``) pyrage encrypts. Decryption always uses
pyrage: identities are secrets and stay in this process.

Encryption fails closed: with no recipient, or with one that does not parse,
nothing is written.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import hashlib
import io
import os
import shutil
import stat
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    SealError,
    UnsealError,
    describe_os_error,
)

try:
    import pyrage
    from pyrage import ssh as _age_ssh
    from pyrage import x25519 as _age_x25519

    HAS_PYRAGE = True
    PYRAGE_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised by the sanity import test
    HAS_PYRAGE = False
    PYRAGE_IMPORT_ERROR = _exc
try:
    import zstandard

    HAS_ZSTANDARD = True
    ZSTANDARD_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover
    HAS_ZSTANDARD = False
    ZSTANDARD_IMPORT_ERROR = _exc
from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError, looks_secret
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import CHUNK_SIZE, PIPE_SIZE, grow_pipe, pipe
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE, Process

SMALL_CHUNK = 64 << 10  # the first read's buffer; it grows to CHUNK_SIZE once filled


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


AGE_MAGIC = b"age-encryption.org/v1\n"


AGE_ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"


DEFAULT_LEVEL = 3


@dataclass
class Digest:
    """Size and SHA-256 of one stream."""

    size: int
    sha256: str


@dataclass
class SealResult:
    """What one pass of the pipeline saw: the plaintext and the sealed bytes."""

    content: Digest
    sealed: Digest
    compressed: bool

    def as_dict(self) -> dict:
        return asdict(self)


def require_libraries() -> None:
    """Raise a clear error when the node lacks pyrage or zstandard."""
    missing = []
    if not HAS_PYRAGE:
        missing.append("pyrage")
    if not HAS_ZSTANDARD:
        missing.append("zstandard")
    if missing:
        raise SealError(
            "the Python libraries %s are missing on this host" % ", ".join(missing),
            "run the nodekeep.backup.agent role (it installs them into the node "
            "virtualenv) and run modules with that interpreter",
        )


# --------------------------------------------------------------------------
# recipients and identities
# --------------------------------------------------------------------------


def _key_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _shown(value: str) -> str:
    """A recipient as it may appear in a message: never a secret key."""
    if looks_secret(value):
        return "(a secret key, not shown)"
    return repr(value[:24])


def _refuse_identity(value: str, where: str) -> None:
    if looks_secret(value):
        raise SealError(
            "%s is a secret key (an identity), not a recipient" % where,
            "give its public key (age-keygen -y KEYFILE prints it) and keep the secret off this host",
        )


def parse_recipient(text: str, where: str = "recipient"):
    """Parse one public age recipient (``age1...``, ``ssh-ed25519 ...``, ``ssh-rsa ...``)."""
    require_libraries()
    value = text.strip()
    _refuse_identity(value, where)
    try:
        if value.startswith("age1"):
            return _age_x25519.Recipient.from_str(value)
        if value.startswith("ssh-"):
            return _age_ssh.Recipient.from_str(value)
    except (pyrage.RecipientError, ValueError) as exc:
        raise SealError(
            "%s %s is not a valid age recipient (%s)" % (where, _shown(value), exc),
            "give age public keys (age1...) or SSH public keys (ssh-ed25519/ssh-rsa); "
            "encryption fails closed, nothing was written",
        )
    raise SealError(
        "%s %s is not an age recipient" % (where, _shown(value)),
        "give age public keys (age1...) or SSH public keys (ssh-ed25519/ssh-rsa), never "
        "an identity (AGE-SECRET-KEY-...); encryption fails closed, nothing was written",
    )


def recipient_lines(recipients: Iterable[str] = (), recipient_files: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Every recipient given as a string or in a file, with where it came from (for messages)."""
    lines = []
    for index, value in enumerate(recipients or ()):
        where = "recipient #%d" % (index + 1)
        if value is None or not str(value).strip():
            raise SealError(
                "%s is empty" % where, "remove the empty entry or give an age public key; encryption fails closed"
            )
        _refuse_identity(str(value).strip(), where)
        lines.append((str(value).strip(), where))
    for path in recipient_files or ():
        try:
            with open(path, "r", encoding="utf-8") as handle:
                found = _key_lines(handle.read())
        except OSError as exc:
            raise SealError(
                "cannot read recipients file %s (%s)" % (path, exc.strerror),
                "check the path and its permissions",
            )
        if not found:
            raise SealError("recipients file %s holds no recipient" % path, "add at least one age public key")
        for number, line in enumerate(found, 1):
            where = "recipient on line %d of %s" % (number, path)
            _refuse_identity(line, where)
            lines.append((line, where))
    if not lines:
        raise SealError(
            "no age recipient was given",
            "set nodekeep_age_recipients (age public keys of whoever may restore); "
            "encryption fails closed, nothing was written",
        )
    return lines


def load_recipients(recipients: Iterable[str] = (), recipient_files: Iterable[str] = ()) -> list:
    """Parse recipients from strings and files; refuse an empty set or any invalid entry."""
    return [parse_recipient(line, where) for line, where in recipient_lines(recipients, recipient_files)]


def _parse_identity_text(text: str, where: str) -> list:
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        try:
            return [_age_ssh.Identity.from_buffer(text.encode("utf-8"))]
        except (pyrage.IdentityError, ValueError):
            raise UnsealError(
                "%s holds an SSH private key that age cannot use" % where,
                "give an unencrypted ssh-ed25519 or ssh-rsa key, or an age identity file",
            )
    identities = []
    for line in _key_lines(text):
        if not line.startswith("AGE-SECRET-KEY-"):
            raise UnsealError(
                "%s holds a line that is not an age identity" % where,
                "give a file made by age-keygen (lines AGE-SECRET-KEY-...)",
            )
        try:
            identities.append(_age_x25519.Identity.from_str(line))
        except (pyrage.IdentityError, ValueError):
            raise UnsealError("%s holds a malformed age identity" % where, "regenerate or re-copy the key file")
    return identities


def _refuse_exposed_identity(path: str, info: os.stat_result) -> None:
    """An identity file that group or others can access is refused (as the signing key is), before reading it."""
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UnsealError(
            "the age identity file %s is accessible to group or others (mode %o)" % (path, stat.S_IMODE(info.st_mode)),
            "chmod 0600 it (nodekeep_age_identity_file); whoever can read it can decrypt every epoch",
        )


def load_identities(identities: Iterable[str] = (), identity_files: Iterable[str] = ()) -> list:
    """Collect age identities from strings and files. Never echoes key material."""
    require_libraries()
    parsed = []
    for index, value in enumerate(identities or ()):
        parsed.extend(_parse_identity_text(str(value), "identity #%d" % (index + 1)))
    for path in identity_files or ():
        try:
            with open(path, "r", encoding="utf-8") as handle:
                _refuse_exposed_identity(path, os.fstat(handle.fileno()))
                text = handle.read()
        except OSError as exc:
            raise UnsealError(
                "cannot read identity file %s (%s)" % (path, exc.strerror),
                "check nodekeep_age_identity_file and its permissions",
            )
        parsed.extend(_parse_identity_text(text, "identity file %s" % path))
    if not parsed:
        raise UnsealError(
            "no age identity was given",
            "set nodekeep_age_identity_file to a key that matches one of the recipients",
        )
    return parsed


# --------------------------------------------------------------------------
# stream helpers
# --------------------------------------------------------------------------


class _HashingWriter:
    """A sink wrapper that counts and hashes what passes through it."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            self._sink.write(data)
        except BaseException as exc:
            self.error = exc
            raise
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()

    def digest(self) -> Digest:
        return Digest(self.size, self._hash.hexdigest())


class _HashingReader:
    """A source wrapper that counts and hashes what is read from it."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._source.read(size)
        except BaseException as exc:
            self.error = exc
            raise
        if data:
            self._hash.update(data)
            self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass

    def digest(self) -> Digest:
        return Digest(self.size, self._hash.hexdigest())


def _pipe():
    read_fd, write_fd = pipe(PIPE_SIZE)
    return open(read_fd, "rb", buffering=PIPE_SIZE), open(write_fd, "wb", buffering=PIPE_SIZE)


def _read_chunks(source: BinaryIO, size: int = CHUNK_SIZE):
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        # Start small (a sealed secret or a small file object is a few KiB; allocating the
        # full chunk for it costs more than sealing it) and grow once a read fills the buffer.
        buf = bytearray(min(size, SMALL_CHUNK))
        view = memoryview(buf)
        while True:
            count = readinto(buf)
            if not count:
                return
            yield view[:count]
            if count == len(buf) and len(buf) < size:
                buf = bytearray(size)
                view = memoryview(buf)
    else:
        while True:
            data = source.read(size)
            if not data:
                return
            yield data


class _Worker(threading.Thread):
    """A daemon thread that keeps the exception it died of."""

    def __init__(self, target, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by the caller after join()
            self.error = exc


def _raise_sink_error(error: BaseException, sink_name: str) -> None:
    if isinstance(error, OSError):
        raise describe_os_error(error, "writing the sealed artifact", sink_name)
    raise error


# --------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------

MAX_THREADS = 4


JOB_SIZE = 1 << 20


def _compression_params(level: int, threads: int):
    """zstd parameters with memory bounded whatever the core count.

    Multithreaded zstd buffers a job per worker; with the default job size that
    grows to hundreds of MiB on many cores. Small jobs and at most MAX_THREADS
    workers keep it near 20 MiB at the same speed.
    """
    if threads is None or threads < 0:
        threads = min(os.cpu_count() or 1, MAX_THREADS)
    return zstandard.ZstdCompressionParameters.from_level(
        level, threads=threads, job_size=JOB_SIZE if threads > 0 else 0, write_checksum=True
    )


def _age_cli_argv(recipients: list, armored: bool) -> list[str] | None:
    """``age`` CLI arguments that encrypt to exactly these recipients, or None to use pyrage.

    ``NODEKEEP_AGE_CLI`` may name the binary, or be ``off``.
    """
    choice = os.environ.get("NODEKEEP_AGE_CLI", "")
    if armored or choice.lower() in ("off", "no", "false", "0"):
        return None
    argv = [choice or shutil.which("age") or ""]
    if not argv[0] or not os.access(argv[0], os.X_OK):
        return None
    for recipient in recipients:
        text = str(recipient) if isinstance(recipient, _age_x25519.Recipient) else ""
        if not text.startswith("age1"):
            return None
        argv.extend(("-r", text))
    return argv


def _start_age_cli(argv: list[str]) -> Process | None:
    """The age CLI with pipes on stdin/stdout, or None when it cannot start (pyrage is used then)."""
    try:
        process = Process(argv, "the age CLI", stdin=PIPE, stdout=PIPE, error=SealError, bufsize=PIPE_SIZE)
    except (OSError, SealError):
        return None
    for stream in (process.stdin, process.stdout):
        grow_pipe(stream.fileno(), PIPE_SIZE)
    return process


def seal(
    source: BinaryIO,
    sink: BinaryIO,
    recipients: list,
    compress: bool = True,
    level: int = DEFAULT_LEVEL,
    threads: int = -1,
    sink_name: str = "the repository",
    armored: bool = False,
    content_sha256: str | None = None,
) -> SealResult:
    """Compress, encrypt and hash ``source`` into ``sink`` in one streaming pass.

    ``armored`` writes age's ASCII armor (as ``age -a``); ``unseal`` reads both forms (pyrage dearmors).
    ``content_sha256``: the plaintext's SHA-256, already computed by the caller over an immutable source
    (bytes in memory): it is returned as the content digest and not computed a second time.
    """
    require_libraries()
    if not recipients:
        raise SealError(
            "no age recipient was given",
            "set nodekeep_age_recipients; encryption fails closed, nothing was written",
        )
    content_hash = hashlib.sha256()
    content_size = 0
    sealed = _HashingWriter(sink)
    argv = _age_cli_argv(recipients, armored)
    process = _start_age_cli(argv) if argv else None
    if process is not None:
        pipe_writer = process.stdin

        def encrypt() -> None:
            fd = process.stdout.fileno()
            try:
                while True:
                    data = os.read(fd, PIPE_SIZE)
                    if not data:
                        break
                    sealed.write(data)
            except BaseException:
                process.proc.kill()  # the feeding thread then stops on a broken pipe
                raise
            finally:
                process.stdout.close()

    else:
        pipe_reader, pipe_writer = _pipe()

        def encrypt() -> None:
            try:
                pyrage.encrypt_io(pipe_reader, sealed, recipients, armored=armored)
            finally:
                pipe_reader.close()

    worker = _Worker(encrypt, "nodekeep-age-encrypt")
    worker.start()
    feed_error: BaseException | None = None
    try:
        if compress:
            compressor = zstandard.ZstdCompressor(compression_params=_compression_params(level, threads))
            stage = compressor.stream_writer(pipe_writer, closefd=False)
        else:
            stage = pipe_writer
        for chunk in _read_chunks(source):
            if content_sha256 is None:
                content_hash.update(chunk)
            content_size += len(chunk)
            stage.write(chunk)
            progress.advance(len(chunk))
        if compress:
            stage.flush(zstandard.FLUSH_FRAME)
        pipe_writer.flush()
    except BaseException as exc:  # noqa: BLE001 - re-raised below once the worker's error is known
        feed_error = exc
    finally:
        try:
            pipe_writer.close()
        except OSError:
            pass
    worker.join()
    cli_failure = _reap_age_cli(process, feed_error is not None or worker.error is not None)
    # The sink's own error (full disk, permission) is the root cause; report it first.
    if sealed.error is not None:
        _raise_sink_error(sealed.error, sink_name)
    if worker.error is not None:
        if isinstance(worker.error, OSError):
            _raise_sink_error(worker.error, sink_name)
        raise SealError("age encryption failed: %s" % worker.error, "nothing usable was written")
    if cli_failure:
        raise SealError("age encryption failed: %s" % cli_failure, "nothing usable was written")
    if feed_error is not None:
        if isinstance(feed_error, OSError) and not isinstance(feed_error, BrokenPipeError):
            raise SealError(
                "reading the source failed: %s" % (feed_error.strerror or feed_error),
                "check that the source is readable and retry",
            )
        raise feed_error
    return SealResult(Digest(content_size, content_sha256 or content_hash.hexdigest()), sealed.digest(), compress)


def _reap_age_cli(process: Process | None, failed: bool) -> str:
    """Wait for the age CLI; what went wrong with it ('' when it sealed the whole stream)."""
    if process is None:
        return ""
    exited = process.proc.poll()
    if failed and exited is None:
        process.proc.kill()  # stopped because of another error, which is the one reported
    returncode = process.proc.wait()
    message = process.stderr()
    process.close()
    if returncode == 0 or (failed and exited is None):
        return ""
    return "the age CLI (%s) exited with status %d%s" % (
        process.argv[0],
        returncode,
        ": %s" % message[-500:] if message else "",
    )


def unseal(
    source: BinaryIO,
    sink: BinaryIO,
    identities: list,
    sink_name: str = "the restore target",
    limit: int | None = None,
    hash_content: bool = True,
) -> SealResult:
    """Decrypt, decompress (when the payload is zstd) and hash ``source`` into ``sink``.

    ``limit`` is the plaintext size the signed manifest (or index) records: not one
    byte past it is written, whatever the artifact holds. A hostile artifact (anyone
    can encrypt to the public recipients) stops there with an ``IntegrityError``
    instead of filling the disk; only files opened without a manifest go unbounded.

    ``hash_content=False`` skips the plaintext's SHA-256 (the result's content digest is then ``""``):
    for a caller that proves the sealed bytes against a signed record instead (pieces: age
    authenticates every plaintext chunk of the sealed bytes whose SHA-256 was checked).
    """
    require_libraries()
    if not identities:
        raise UnsealError("no age identity was given", "set nodekeep_age_identity_file")
    sealed = _HashingReader(source)
    pipe_reader, pipe_writer = _pipe()

    def decrypt() -> None:
        try:
            pyrage.decrypt_io(sealed, pipe_writer, identities)
            pipe_writer.flush()
        finally:
            try:
                pipe_writer.close()
            except OSError:
                pass

    worker = _Worker(decrypt, "nodekeep-age-decrypt")
    worker.start()
    content_hash = hashlib.sha256()
    content_size = 0
    compressed = False
    drain_error: BaseException | None = None
    sink_error: BaseException | None = None
    over_limit: IntegrityError | None = None
    try:
        compressed = pipe_reader.peek(len(ZSTD_MAGIC))[: len(ZSTD_MAGIC)] == ZSTD_MAGIC
        if compressed:
            stage = zstandard.ZstdDecompressor().stream_reader(pipe_reader, read_across_frames=True)
        else:
            stage = pipe_reader
        for chunk in _read_chunks(stage):
            if limit is not None and content_size + len(chunk) > limit:
                over_limit = IntegrityError(
                    "%s: the artifact decrypts to more than the %d bytes its signed manifest records; "
                    "stopped there" % (sink_name, limit),
                    "do not trust this copy (it was replaced or damaged); restore another epoch or copy",
                )
                raise over_limit
            if hash_content:
                content_hash.update(chunk)
            content_size += len(chunk)
            progress.advance(len(chunk))
            try:
                sink.write(chunk)
            except BaseException as exc:  # the sink's own refusal, re-raised and reported as it is
                sink_error = exc
                raise
    except BaseException as exc:  # noqa: BLE001 - re-raised below once the worker's error is known
        drain_error = exc
    finally:
        pipe_reader.close()
    worker.join()
    if over_limit is not None:
        raise over_limit  # the decryption was cut short on purpose: its error (a broken pipe) says nothing
    if worker.error is not None and not isinstance(worker.error, BrokenPipeError):
        _raise_decrypt_error(worker.error, sealed)
    if drain_error is not None:
        if isinstance(sink_error, NodekeepError):
            raise sink_error
        if isinstance(drain_error, OSError):
            raise describe_os_error(drain_error, "writing restored data", sink_name)
        raise UnsealError(
            "the decrypted payload is not valid zstd data (%s)" % drain_error,
            "the artifact is corrupt: restore from another epoch or copy",
        )
    return SealResult(
        Digest(content_size, content_hash.hexdigest() if hash_content else ""), sealed.digest(), compressed
    )


def _raise_decrypt_error(error: BaseException, sealed: _HashingReader) -> None:
    if sealed.error is not None and isinstance(sealed.error, OSError):
        raise UnsealError("reading the artifact failed: %s" % (sealed.error.strerror or sealed.error))
    text = str(error)
    if "No matching keys" in text or "no identity matched" in text.lower():
        raise UnsealError(
            "none of the given age identities can open this artifact",
            "it was sealed to other recipients: use the identity that matches one of the "
            "recipients listed in the manifest",
        )
    if "header" in text.lower():
        raise UnsealError(
            "the artifact is not an age file or its header is damaged (%s)" % text,
            "restore from another epoch or copy",
        )
    raise UnsealError(
        "the artifact failed age authentication (%s): it was modified or truncated after sealing" % text,
        "do not trust this copy; restore from another epoch or copy",
    )


def seal_bytes(data: bytes, recipients: list, compress: bool = True) -> bytes:
    """Seal a small in-memory payload (keys, configs) through the same pipeline."""
    out = io.BytesIO()
    seal(io.BytesIO(data), out, recipients, compress=compress)
    return out.getvalue()


def unseal_bytes(data: bytes, identities: list) -> bytes:
    out = io.BytesIO()
    unseal(io.BytesIO(data), out, identities)
    return out.getvalue()


def is_age_file(head: bytes) -> bool:
    return head.startswith((AGE_MAGIC, AGE_ARMOR_MAGIC))
