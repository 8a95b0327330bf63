# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copies of epochs between repositories (3-2-1): local first, then off-site; and their verification.

``copy_epoch()`` replicates one complete, signature-valid epoch from a source
repository to a target: each artifact is streamed and its SHA-256 compared with
the manifest before the target commits it, then ``manifest.json``, then
``manifest.json.sig`` last, so the copy exists only once everything is there.
The bytes are copied as they are (still sealed): the target never sees plaintext
and the signature keeps verifying.

Runs are idempotent: an epoch already complete at the target is skipped, and an
interrupted copy continues: artifacts already at the target are checked against
the manifest and kept, and an S3 multipart upload cut by the network resumes
part by part.

The content-addressed objects of ``files`` assets (packs, large files) the target
lacks are uploaded by a small pool of threads (the target's ``object_workers``, else
``OBJECT_WORKERS``), all of them before the manifest; the first failure stops the copy
(see ``_ObjectPool``).

``verify_copies()`` verifies one epoch on each copy and reports per copy, and
``rolling_verify()`` checks a deterministic share of every epoch's artifacts
per run, so that N runs cover everything (on any backend: it only reads).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import functools
import hashlib
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    NodekeepError,
    RepositoryError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import stream_digest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import Repository

SHA256_METADATA = "nodekeep-sha256"


# Object uploads (and lock extensions) of one epoch copy running at the same time. Objects an S3
# target stores as multipart uploads (size >= its part_size) are sent one at a time beside them,
# their parts already max_concurrency at a time. An S3 target sets its own (its object_workers option);
# this is the default, and what other targets use.
OBJECT_WORKERS = 4


def select_epochs(source: Repository, node: str, selector: Iterable[str]) -> list[str]:
    """``all`` (every complete epoch), ``latest``, or epoch names; oldest first."""
    complete = source.complete_epochs(node)
    wanted = list(selector or ["all"])
    chosen = set()
    for item in wanted:
        if item == "all":
            chosen.update(complete)
        elif item == "latest":
            if not complete:
                raise RepositoryError(
                    "node %s has no complete epoch in %s" % (node, source.location),
                    "run the backup first; there is nothing to copy",
                )
            chosen.add(complete[-1])
        elif item in complete:
            chosen.add(item)
        else:
            raise RepositoryError(
                "epoch %s of %s is not a complete epoch in %s" % (item, node, source.location),
                "choose one of the latest: %s" % ", ".join(complete[-5:] or ["(none)"]),
            )
    return sorted(chosen)


def _read_signed(source: Repository, node: str, epoch: str, public_key: str):
    data = source.get_bytes(node, epoch, MANIFEST_NAME)
    signature = source.get_bytes(node, epoch, SIGNATURE_NAME, limit=64 << 10)
    signing.verify(data, signature.decode("ascii", "replace"), public_key)
    return Manifest.from_bytes(data, node=node, epoch=epoch), data, signature


def _write_options(target: Repository, artifact: Artifact) -> dict[str, Any]:
    if getattr(target, "kind", "") != "s3":
        return {}
    return {"size_hint": artifact.size, "metadata": {SHA256_METADATA: artifact.sha256}, "resume": True}


def _read_digest(repository: Repository, node: str, epoch: str, name: str):
    with repository.open_read(node, epoch, name) as stream:
        return stream_digest(stream)


def _check_present(target: Repository, node: str, epoch: str, artifact: Artifact) -> str:
    """An artifact left at the target by an interrupted copy must be exactly the manifest's."""
    how = "read back"
    info = target.object_info(node, epoch, artifact.file) if hasattr(target, "object_info") else None
    if info is not None and info.get("metadata", {}).get(SHA256_METADATA):
        size, sha = info["size"], info["metadata"][SHA256_METADATA]
        how = "object metadata"
    else:
        size, sha = _read_digest(target, node, epoch, artifact.file)
    if size != artifact.size or sha != artifact.sha256:
        raise IntegrityError(
            "%s is already at the target but differs from the manifest (%s)"
            % (target.describe(node, epoch, artifact.file), how),
            "the target is write-once: remove the incomplete epoch there with the pruner credentials "
            "(epoch_prune with prune_incomplete) and copy again",
        )
    # Right bytes are not enough: an object left unlocked (or locked weaker or shorter) could be removed later.
    ensure_lock = getattr(target, "ensure_lock", None)
    locked = ensure_lock(node, epoch, artifact.file) if ensure_lock is not None else None
    return how if locked is None else "%s, %s" % (how, locked)


def _copy_artifact(source: Repository, target: Repository, node: str, epoch: str, artifact: Artifact) -> dict[str, Any]:
    began = time.monotonic()
    with (
        source.open_read(node, epoch, artifact.file) as stream,
        target.open_write(node, epoch, artifact.file, **_write_options(target, artifact)) as sink,
    ):
        size, sha256 = stream_digest(progress.counted(stream), sink)
        # Checked before the block ends: a mismatch aborts the write, nothing is committed.
        if size != artifact.size or sha256 != artifact.sha256:
            raise IntegrityError(
                "%s does not match its manifest (size %d, manifest %d; SHA-256 %s)"
                % (
                    source.describe(node, epoch, artifact.file),
                    size,
                    artifact.size,
                    "differs" if sha256 != artifact.sha256 else "matches",
                ),
                "the source copy is damaged; it was not copied. Verify the source epoch",
            )
    entry: dict[str, Any] = {"file": artifact.file, "size": size, "seconds": round(time.monotonic() - began, 3)}
    info = getattr(sink, "info", None)
    if info:
        entry.update(
            {
                k: info[k]
                for k in ("version_id", "lock_mode", "retain_until", "legal_hold", "resumed_parts")
                if k in info
            }
        )
    return entry


def copy_epoch(
    source: Repository,
    target: Repository,
    node: str,
    epoch: str,
    public_key: str,
    object_workers: int | None = None,
) -> dict[str, Any]:
    """Replicate one epoch; returns what was done (``status``: copied or skipped).

    ``object_workers`` bounds the object transfers of ``files`` assets that run at once (1: one after
    the other); by default the target's own ``object_workers`` (an S3 target's option), else
    ``OBJECT_WORKERS``.
    """
    object_workers = _workers_for(target, object_workers)
    began = time.monotonic()
    if target.is_complete(node, epoch):
        return {"epoch": epoch, "status": "skipped", "reason": "already complete at the target"}
    manifest, manifest_bytes, signature = _read_signed(source, node, epoch, public_key)
    present = target.files(node, epoch)
    objects: list[dict[str, Any]] = []
    total = 0
    for artifact in manifest.artifacts:
        if artifact.file in present:
            how = _check_present(target, node, epoch, artifact)
            objects.append({"file": artifact.file, "size": artifact.size, "kept": "already there (%s)" % how})
            continue
        with progress.current().step(artifact.name, "copy", artifact.size):
            entry = _copy_artifact(source, target, node, epoch, artifact)
        total += entry["size"]
        objects.append(entry)
    # Files assets: their list of objects, then the objects the target lacks, all before the manifest.
    contents = _copy_contents(source, target, node, epoch, manifest, present, object_workers)
    total += contents["bytes"]
    if MANIFEST_NAME in present:
        if target.get_bytes(node, epoch, MANIFEST_NAME) != manifest_bytes:
            raise IntegrityError(
                "%s differs from the source manifest" % target.describe(node, epoch, MANIFEST_NAME),
                "remove the incomplete epoch at the target with the pruner credentials and copy again",
            )
    else:
        with target.open_write(node, epoch, MANIFEST_NAME) as sink:
            sink.write(manifest_bytes)
    # The signature is the commit point at the target too: written last.
    with target.open_write(node, epoch, SIGNATURE_NAME) as sink:
        sink.write(signature)
    seconds = time.monotonic() - began
    return {
        "epoch": epoch,
        "status": "copied",
        "bytes": total,
        "seconds": round(seconds, 3),
        "rate_mib_s": round(total / (1 << 20) / seconds, 1) if seconds > 0 and total else None,
        "objects": objects,
        "resumed_parts": sum(int(o.get("resumed_parts") or 0) for o in objects),
        "contents": contents,
    }


def _workers_for(target: Repository, object_workers: int | None = None) -> int:
    """How many object transfers one epoch copy to ``target`` runs at once.

    ``object_workers`` when given, else the target's own setting (an S3 target's option), else
    ``OBJECT_WORKERS`` (local targets).
    """
    if object_workers is not None:
        return object_workers
    return int(getattr(target, "object_workers", OBJECT_WORKERS))


def _copy_stream(read, write, name: str, size: int, sha256: str, where: str) -> None:
    """Copy a stream checking its size and SHA-256 before the writer commits (a mismatch aborts it)."""
    with read() as stream, write() as sink:
        copied, digest = stream_digest(stream, sink)
        if copied != size or digest != sha256:
            raise IntegrityError(
                "%s does not match its signed checksum (size %d, expected %d)" % (where, copied, size),
                "the source copy is damaged; it was not copied. Verify the source epoch",
            )


class _ObjectPool:
    """The object transfers of one epoch copy, at most ``workers`` at a time; the first failure stops them.

    A job that fails records its exception; jobs queued behind it do not start (they return
    without touching the target) and ``check()`` / ``finish()`` raise that exception in the
    copying thread, so the copy fails with the job's own message and writes no manifest. Jobs
    already running when it failed finish: an object they commit is complete (write-once,
    checked) and the next run reuses it. ``close()`` (always called) cancels what has not
    started and waits for what has. With ``workers`` <= 1 every job runs at once in the
    caller's thread (one after the other, as before the pool). At most ``2 * workers`` jobs are
    queued or running: ``submit`` waits for a slot, so a store of a million objects never holds a
    million pending jobs.
    """

    def __init__(self, workers: int) -> None:
        self._executor: ThreadPoolExecutor | None = None
        if workers > 1:
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nodekeep-object")
        self._slots = threading.BoundedSemaphore(max(1, workers) * 2)
        self._pending: set[Future] = set()
        self._failure: BaseException | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Cancel the jobs that have not started and wait for those running."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Callable[[], Any]) -> Any:
        if self._failure is not None:
            return None
        try:
            return job()
        except BaseException as exc:
            with self._lock:
                if self._failure is None:
                    self._failure = exc
            raise

    def submit(self, job: Callable[[], Any]) -> Future:
        """Queue ``job``; its future holds the job's result once ``finish()`` returned."""
        self.check()
        if self._executor is None:
            future: Future = Future()
            future.set_result(job())
            return future
        self._slots.acquire()
        try:
            future = self._executor.submit(self._run, job)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)
        self._slots.release()

    def check(self) -> None:
        """Raise the first failure of a job, if one failed."""
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        """Wait for every queued job; raise the first failure."""
        with self._lock:
            pending = list(self._pending)
        wait(pending)
        self.check()


def _copy_object(source: Repository, target: Repository, node: str, epoch: str, name: str, size: int, sha256: str):
    options: dict[str, Any] = {"epoch": epoch, "size_hint": size}
    if getattr(target, "kind", "") == "s3":
        options["metadata"] = {SHA256_METADATA: sha256}
    _copy_stream(
        lambda: source.open_object(node, name),
        lambda: target.put_object(node, name, **options),
        name,
        size,
        sha256,
        source.describe_object(node, name),
    )


def _copy_contents(
    source: Repository,
    target: Repository,
    node: str,
    epoch: str,
    manifest: Manifest,
    present: dict[str, int],
    object_workers: int = OBJECT_WORKERS,
) -> dict[str, Any]:
    """Copy what an asset type stores besides its artifact: extra files of the epoch and the objects it needs.

    Objects the target already has are kept (checked by size; write-once) and, when the
    target locks objects, their lock is extended to cover this epoch. The objects the target
    lacks are copied and the locks extended by up to ``object_workers`` threads; everything
    has completed when this returns, and the first failure is raised (nothing else starts).
    """

    report: dict[str, Any] = {"files": 0, "objects": 0, "present": 0, "locks_extended": 0, "bytes": 0}
    target_objects: dict[str, tuple[int, float]] | None = None
    # Objects that big become multipart uploads at an S3 target, their parts already sent in parallel:
    # they go one at a time in this thread, so memory stays about what one artifact copy uses.
    multipart_from = getattr(target, "part_size", None) if getattr(target, "kind", "") == "s3" else None
    extend = getattr(target, "extend_object_lock", None)
    handled: set[str] = set()  # copied or lock-extended by this copy: a second reference needs nothing
    extended = [0]  # locks extended (counted by the jobs)
    counting = threading.Lock()

    def extend_lock(name: str) -> None:
        if extend(node, name, epoch):
            with counting:
                extended[0] += 1

    pool = _ObjectPool(object_workers)
    try:
        for artifact in manifest.artifacts:
            kind = asset_type(artifact.asset_type)
            for extra in kind.extra_files(artifact):
                name = extra["file"]
                if name in present:
                    if present[name] != extra["size"]:
                        raise IntegrityError(
                            "%s is already at the target but differs from the manifest"
                            % target.describe(node, epoch, name),
                            "remove the incomplete epoch at the target with the pruner credentials and copy again",
                        )
                    continue
                pool.check()
                _copy_stream(
                    lambda name=name: source.open_read(node, epoch, name),
                    lambda name=name: target.open_write(node, epoch, name),
                    name,
                    extra["size"],
                    extra["sha256"],
                    source.describe(node, epoch, name),
                )
                report["files"] += 1
                report["bytes"] += extra["size"]
            refs = kind.object_references(source, node, epoch, artifact)
            if not refs:
                continue
            if target_objects is None:
                target_objects = target.object_names(node)
            for name in sorted(refs):
                size, sha256 = refs[name]
                if name in target_objects:
                    if target_objects[name][0] != size:
                        raise IntegrityError(
                            "%s is at the target with size %d, the epoch's list says %d"
                            % (target.describe_object(node, name), target_objects[name][0], size),
                            "the object at the target is damaged; remove it with the pruner credentials and copy again",
                        )
                    report["present"] += 1
                    if extend is not None and name not in handled:
                        # Extending once is enough: a second call for the same epoch finds the lock long enough.
                        handled.add(name)
                        pool.submit(functools.partial(extend_lock, name))
                    continue
                handled.add(name)
                target_objects[name] = (size, time.time())
                report["objects"] += 1
                report["bytes"] += size
                job = functools.partial(_copy_object, source, target, node, epoch, name, size, sha256)
                if multipart_from and size >= multipart_from:
                    pool.check()
                    job()
                else:
                    pool.submit(job)
        pool.finish()
    finally:
        pool.close()
    report["locks_extended"] = extended[0]
    return report


def replicate(
    source: Repository,
    target: Repository,
    node: str,
    epochs: list[str],
    public_key: str,
    name: str = "",
    object_workers: int | None = None,
) -> dict[str, Any]:
    """Copy the given epochs (oldest first) to one target; stops at the first failure and reports it.

    ``object_workers``: as in ``copy_epoch`` (default: the target's own, else ``OBJECT_WORKERS``).
    """
    report: dict[str, Any] = {"name": name or target.location, "location": target.location, "copied": [], "skipped": []}
    for epoch in sorted(epochs):
        try:
            result = copy_epoch(source, target, node, epoch, public_key, object_workers=object_workers)
        except NodekeepError as exc:
            report["failed"] = {"epoch": epoch, "error": exc.message}
            break
        if result["status"] == "skipped":
            report["skipped"].append(epoch)
        else:
            report["copied"].append(result)
    report["ok"] = "failed" not in report
    return report


def verify_copies(copies: list[Repository], node: str, epoch: str, public_key: str, **options: Any) -> dict[str, Any]:
    """``verify_epoch`` on each copy (local and off-site); one report per copy."""

    reports = []
    for repository in copies:
        try:
            report = verify_epoch(repository, node, epoch, public_key, **options)
        except NodekeepError as exc:
            report = {
                "node": node,
                "epoch": epoch,
                "ok": False,
                "signature": "unchecked",
                "artifacts": [],
                "problems": [exc.message],
            }
        report["location"] = repository.location
        reports.append(report)
    return {"copies": reports, "ok": all(r["ok"] for r in reports)}


# --------------------------------------------------------------------------
# rolling verification: everything is read once every N runs
# --------------------------------------------------------------------------


def rolling_slot(epoch: str, file_name: str, runs: int) -> int:
    """The run (0..runs-1) that checks this artifact: a stable hash, so shares stay balanced."""
    digest = hashlib.sha256(("%s/%s" % (epoch, file_name)).encode("utf-8")).hexdigest()
    return int(digest[:12], 16) % runs


#: the longest cycle of a rolling verification: past it a run checks (almost) nothing and still says ok
MAX_SUBSET_RUNS = 10000


def parse_subset(text: str, now: float | None = None) -> tuple[int, int]:
    """``"3/7"`` -> (3, 7): run 3 of a cycle of 7 (runs count from 1, as restic's --read-data-subset n/t);
    ``"daily/7"`` -> (today's run, 7). Errors quote ``subset`` as the operator wrote it."""
    value = str(text or "").strip()
    match = re.match(r"^(daily|\d+)\s*/\s*(\d+)$", value)
    if not match:
        raise NodekeepError(
            "subset %r is not N/T (or daily/T)" % (text,),
            "write it as 3/7 (the third of seven runs) or daily/7 (every artifact once a week, the run from the date)",
        )
    runs = int(match.group(2))
    if not 1 <= runs <= MAX_SUBSET_RUNS:
        raise NodekeepError(
            "subset %r: T (%s) is out of range" % (text, match.group(2)),
            "give a cycle of 1 to %d runs; every artifact is checked once in T runs" % MAX_SUBSET_RUNS,
        )
    if match.group(1) == "daily":
        return daily_run(runs, now), runs
    run = int(match.group(1))
    if not 1 <= run <= runs:
        raise NodekeepError(
            "subset %r is not N/T with 1 <= N <= T" % (text,),
            "write it as 3/7 (the third of seven runs); every artifact is checked once in T runs",
        )
    return run, runs


def daily_run(runs: int, now: float | None = None) -> int:
    """Today's run of a cycle of ``runs`` days (1-based), from the UTC date: no state to keep."""
    day = int((time.time() if now is None else now) // 86400)
    return day % runs + 1


def rolling_verify(
    repository: Repository, node: str, public_key: str, run: int, runs: int, **options: Any
) -> dict[str, Any]:
    """Verify run ``run`` of ``runs`` (1-based): every signature, and the artifacts whose slot is this run.

    Over ``runs`` consecutive runs every artifact of every complete epoch is read and
    checked exactly once (deep with ``deep=True``). It only reads, so it works on any
    repository (local or S3), and it needs no state.
    """

    if not 1 <= run <= runs:
        raise NodekeepError("run %d is not within 1..%d" % (run, runs), "give a run between 1 and the cycle length")
    slot = run - 1
    report: dict[str, Any] = {
        "location": repository.location,
        "node": node,
        "run": run,
        "runs": runs,
        "epochs": [],
        "checked": [],
        "problems": [],
    }
    for epoch in repository.complete_epochs(node):
        try:
            manifest = load_manifest(repository, node, epoch, public_key)
        except NodekeepError as exc:
            report["problems"].append("%s: %s" % (epoch, exc.message))
            report["epochs"].append({"epoch": epoch, "ok": False, "signature": "invalid"})
            continue
        chosen = [a.name for a in manifest.artifacts if rolling_slot(epoch, a.file, runs) == slot]
        entry: dict[str, Any] = {"epoch": epoch, "ok": True, "signature": "valid", "artifacts": chosen}
        if chosen:
            result = verify_epoch(repository, node, epoch, public_key, artifacts=chosen, **options)
            entry["ok"] = result["ok"]
            entry["results"] = result["artifacts"]
            report["problems"].extend("%s: %s" % (epoch, p) for p in result["problems"])
            report["checked"].extend({"epoch": epoch, "artifact": name} for name in chosen)
        report["epochs"].append(entry)
    report["ok"] = not report["problems"]
    return report
