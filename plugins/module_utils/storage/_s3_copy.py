# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: streaming objects to and from S3 (multipart upload with checksums, ranged reads)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import contextlib
import hashlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_client import describe_s3_error, is_transient
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import MAX_PART_SIZE, MAX_PARTS, MIB


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_checksum(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' SHA-256 digests, then ``-N``."""
    return "%s-%d" % (_b64(hashlib.sha256(b"".join(part_digests)).digest()), len(part_digests))


# --------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------


class S3ObjectWriter:
    """A write-once object, streamed as parts; committed only by ``commit()``.

    ``info`` holds what the server confirmed after the commit (version, size,
    checksum, lock, encryption); ``resumed_parts`` counts parts a resumed upload
    did not have to send again.
    """

    def __init__(
        self,
        repository,  # the S3Repository writing (its client, settings and limiter)
        key: str,
        extra: dict[str, Any],
        lock: dict[str, Any] | None,
        size_hint: int | None = None,
        resume: bool = False,
    ) -> None:
        self._repo = repository
        self.key = key
        self._extra = extra
        self._lock = lock
        self._resume = resume
        self._base_part = repository.part_size
        if size_hint:
            needed = -(-int(size_hint) // (MAX_PARTS - 1000))
            self._base_part = max(self._base_part, -(-needed // MIB) * MIB)
        self._buffer = bytearray()
        self._number = 0
        self._upload_id: str | None = None
        self._existing: dict[int, dict[str, Any]] = {}
        self._parts: dict[int, dict[str, Any]] = {}
        self._digests: dict[int, bytes] = {}
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(repository.max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._failure: BaseException | None = None
        self.size = 0
        self.resumed_parts = 0
        self.info: dict[str, Any] | None = None
        self.closed = False

    # -- file-like surface used by the seal pipeline and copies --

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._raise_failure()

    def write(self, data) -> int:
        self._raise_failure()
        self._buffer += data
        count = len(data)
        self.size += count
        while len(self._buffer) >= self._part_size(self._number + 1):
            size = self._part_size(self._number + 1)
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._submit(chunk)
        return count

    # -- parts --

    def _part_size(self, number: int) -> int:
        # Sizes grow with the part number so that a stream of unknown length fits in 10,000 parts;
        # they depend only on the settings, so a resumed upload cuts the same parts again.
        growth = 1 << ((number - 1) // 1000)
        return min(self._base_part * growth, MAX_PART_SIZE)

    def _raise_failure(self) -> None:
        # Checked on every write, so it must stay O(1): finished parts leave _pending in _finished().
        if self._failure is not None:
            raise self._failure

    def _finished(self, future: Future) -> None:
        self._slots.release()
        with self._pending_lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    def _start(self) -> None:
        repo = self._repo
        if self._resume:
            self._upload_id, self._existing = repo._resumable_upload(self.key)
        if self._upload_id is None:
            args = dict(self._extra)
            args.update(repo._lock_args(self._lock))
            response = repo._call(
                "start the upload of %s" % repo._uri(self.key),
                repo.client.create_multipart_upload,
                Bucket=repo.bucket,
                Key=self.key,
                ChecksumAlgorithm="SHA256",
                **args,
            )
            self._upload_id = response["UploadId"]
        self._executor = ThreadPoolExecutor(max_workers=repo.max_concurrency, thread_name_prefix="nodekeep-s3-part")

    def _submit(self, chunk: bytes) -> None:
        if self._upload_id is None:
            self._start()
        self._number += 1
        number = self._number
        digest = hashlib.sha256(chunk).digest()
        self._digests[number] = digest
        existing = self._existing.pop(number, None)
        if existing is not None and self._matches(existing, chunk, digest):
            self._parts[number] = {"PartNumber": number, "ETag": existing["ETag"], "ChecksumSHA256": _b64(digest)}
            self.resumed_parts += 1
            return
        self._slots.acquire()
        try:
            future = self._executor.submit(self._upload_part, number, chunk, digest)
        except BaseException:
            self._slots.release()
            raise
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._finished)

    @staticmethod
    def _matches(existing: dict[str, Any], chunk: bytes, digest: bytes) -> bool:
        if existing.get("Size") != len(chunk):
            return False
        if existing.get("ChecksumSHA256"):
            return existing["ChecksumSHA256"] == _b64(digest)
        etag = str(existing.get("ETag") or "").strip('"')
        return bool(etag) and etag == hashlib.md5(chunk, usedforsecurity=False).hexdigest()

    def _upload_part(self, number: int, chunk: bytes, digest: bytes) -> None:
        repo = self._repo
        repo.limiter.consume(len(chunk))
        checksum = _b64(digest)
        response = repo._call(
            "upload part %d of %s" % (number, repo._uri(self.key)),
            repo.client.upload_part,
            Bucket=repo.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=chunk,
            ChecksumSHA256=checksum,
            **repo._sse_customer_args(),
        )
        returned = response.get("ChecksumSHA256")
        if returned is not None and returned != checksum:
            raise RepositoryError(
                "Failed to upload part %d of %s: the server acknowledged SHA-256 %s, we sent %s"
                % (number, repo._uri(self.key), returned, checksum),
                "the bytes were changed on the way; nothing was committed, run again",
            )
        self._parts[number] = {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _drain(self) -> None:
        with self._pending_lock:
            pending = list(self._pending)
        wait(pending)
        for future in pending:  # callbacks may run after wait() returns: look at the futures themselves
            if not future.cancelled() and future.exception() is not None and self._failure is None:
                self._failure = future.exception()
        self._raise_failure()

    # -- commit / abort --

    def commit(self) -> dict[str, Any]:
        """Make the object visible (write-once) and confirm it with a HEAD of the stored version."""
        repo = self._repo
        self._raise_failure()
        uri = repo._uri(self.key)
        if self._upload_id is None:
            data = bytes(self._buffer)
            self._buffer = bytearray()
            expected = _b64(hashlib.sha256(data).digest())
            args = dict(self._extra)
            args.update(repo._lock_args(self._lock))
            repo.limiter.consume(len(data))
            response = repo._call(
                "upload %s" % uri,
                repo.client.put_object,
                Bucket=repo.bucket,
                Key=self.key,
                Body=data,
                ChecksumSHA256=expected,
                IfNoneMatch="*",
                **args,
            )
        else:
            if self._buffer or self._number == 0:
                chunk = bytes(self._buffer)
                self._buffer = bytearray()
                self._submit(chunk)
            self._drain()
            parts = [self._parts[n] for n in sorted(self._parts)]
            expected = composite_checksum([self._digests[n] for n in sorted(self._parts)])
            response = self._complete(parts, expected)
        returned = response.get("ChecksumSHA256")
        if returned is not None and returned != expected:
            raise RepositoryError(
                "Failed to upload %s: the server reports SHA-256 %s, we computed %s" % (uri, returned, expected),
                "the stored object differs from what was sent; do not use it (the epoch stays incomplete)",
            )
        self.info = repo._confirm(self.key, response.get("VersionId"), self.size, expected, self._lock)
        self.info["resumed_parts"] = self.resumed_parts
        self.closed = True
        self._shutdown()
        return self.info

    def _complete(self, parts: list[dict[str, Any]], expected: str) -> dict[str, Any]:
        repo = self._repo
        try:
            return repo._call(
                "complete the upload of %s" % repo._uri(self.key),
                repo.client.complete_multipart_upload,
                Bucket=repo.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
                **repo._sse_customer_args(),
            )
        except RepositoryError as exc:
            # A retried CompleteMultipartUpload whose first attempt succeeded answers
            # NoSuchUpload or PreconditionFailed: it is ours when the checksum is ours.
            if exc.details.get("code") not in ("NoSuchUpload", "PreconditionFailed"):
                raise
            head = repo._head(self.key)
            if head is None or head.get("ChecksumSHA256") != expected:
                raise
            return {"VersionId": head.get("VersionId"), "ChecksumSHA256": head.get("ChecksumSHA256")}

    def abort(self, error: BaseException | None = None) -> None:
        """Abort the upload so nothing partial stays behind (kept for a resume after a network failure)."""
        self.closed = True
        self._shutdown(cancel=True)
        if self._upload_id is None:
            return
        failure = self._failure or error
        if self._resume and failure is not None and is_transient(failure):
            return
        with contextlib.suppress(NodekeepError):
            self._repo._call(
                "abort the upload of %s" % self._repo._uri(self.key),
                self._repo.client.abort_multipart_upload,
                Bucket=self._repo.bucket,
                Key=self.key,
                UploadId=self._upload_id,
            )

    def _shutdown(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None


class S3ObjectReader:
    """A readable stream of one stored object version, resumed with a Range request if the connection drops."""

    def __init__(self, repository, key: str) -> None:  # repository: the S3Repository reading
        self._repo = repository
        self.key = key
        self.version_id: str | None = None
        self.etag: str | None = None
        self.position = 0
        self.length: int | None = None
        self._body = None
        self._open()

    def _open(self) -> None:
        repo = self._repo
        args: dict[str, Any] = dict(Bucket=repo.bucket, Key=self.key, **repo._sse_customer_args())
        # A resumed read must continue the same object: the version (versioned bucket) or the ETag.
        if self.version_id:
            args["VersionId"] = self.version_id
        elif self.etag:
            args["IfMatch"] = self.etag
        if self.position:
            args["Range"] = "bytes=%d-" % self.position
        response = repo._call("download %s" % repo._uri(self.key), repo.client.get_object, **args)
        if self.length is None:
            self.version_id = response.get("VersionId")
            self.etag = response.get("ETag")
            self.length = int(response.get("ContentLength") or 0)
        self._body = response["Body"]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        attempt = 0
        while True:
            try:
                data = self._body.read(size if size and size > 0 else None)
                if not data and size != 0 and self.length is not None and self.position < self.length:
                    raise ConnectionError("the connection ended at byte %d of %d" % (self.position, self.length))
            except Exception as exc:  # noqa: BLE001 - botocore, urllib3 and socket errors alike; sorted below
                if not is_transient(exc) or attempt >= self._repo.retries:
                    raise describe_s3_error("download %s" % self._repo._uri(self.key), exc)
                attempt += 1
                time.sleep(self._repo.backoff(attempt))
                with contextlib.suppress(Exception):
                    self._body.close()
                self._open()
                continue
            break
        self.position += len(data)
        self._repo.limiter.consume(len(data))
        return data

    def close(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
