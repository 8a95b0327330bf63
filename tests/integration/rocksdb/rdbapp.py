"""A stand-in for a node's service that owns a live RocksDB (run as a separate process).

    rdbapp.py serve STATE                run the service (arguments from STATE/args.json)
    rdbapp.py start STATE                start it detached (like ``systemctl start``), wait until it is ready
    rdbapp.py stop STATE                 SIGTERM it (like ``systemctl stop``), wait until it has exited
    rdbapp.py checkpoint STATE DEST      its admin hook: ask the running service to checkpoint into DEST
    rdbapp.py fail DEST                  a checkpoint command that breaks half-way (leaves DEST behind, exits 3)

The service writes counter n = 1, 2, 3... each as ONE WriteBatch over four column families: in every
family it puts ``k%08d`` % n (a value derived from the family and n) and ``counter`` = n, and in
``meta`` it also deletes ``k(n-3)`` when n % 5 == 0. So the content of a consistent copy is a function
of its counter alone (``expected``), and a copy torn between families or between batches is detected
key by key. After each commit it writes n to STATE/status; on a checkpoint request it records the n
the checkpoint holds; on SIGTERM it closes the DB and writes STATE/final.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

FAMILIES = ("default", "accounts", "blocks", "meta")


def key(i: int) -> bytes:
    return b"k%08d" % i


def value(family: str, i: int, size: int) -> bytes:
    seed = hashlib.sha256(b"%s:%d" % (family.encode(), i)).digest()
    return (seed * (size // len(seed) + 1))[:size]


def deleted(family: str, i: int, n: int) -> bool:
    return family == "meta" and (i + 3) % 5 == 0 and i + 3 <= n


def expected(family: str, n: int, size: int) -> dict:
    content = {key(i): value(family, i, size) for i in range(1, n + 1) if not deleted(family, i, n)}
    content[b"counter"] = n.to_bytes(8, "big")
    return content


def _write_json(path: str, data) -> None:
    temp = "%s.tmp-%d" % (path, os.getpid())
    with open(temp, "w") as handle:
        json.dump(data, handle)
    os.rename(temp, path)


def _read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _pid(state: str) -> int | None:
    try:
        with open(os.path.join(state, "pid")) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# the service
# --------------------------------------------------------------------------


def serve(state: str) -> int:
    from rocksdict import Checkpoint, Options, Rdict, WriteBatch

    args = _read_json(os.path.join(state, "args.json"))
    size = int(args["value_size"])
    flags = {"stop": False, "checkpoint": False}
    signal.signal(signal.SIGTERM, lambda *a: flags.__setitem__("stop", True))
    signal.signal(signal.SIGUSR1, lambda *a: flags.__setitem__("checkpoint", True))

    def options() -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_write_buffer_size(int(args.get("write_buffer", 256 << 10)))
        return opts

    db = Rdict(args["db"], options(), column_families={f: options() for f in FAMILIES if f != "default"})
    handles = {family: db.get_column_family_handle(family) for family in FAMILIES}
    current = db.get(b"counter")
    n = int.from_bytes(current, "big") if current else 0
    status = os.open(os.path.join(state, "status"), os.O_RDWR | os.O_CREAT, 0o644)

    def commit(first: int, last: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for i in range(first, last + 1):
            for family in FAMILIES:
                batch.put(key(i), value(family, i, size), handles[family])
            if i % 5 == 0 and i >= 5:
                batch.delete(key(i - 3), handles["meta"])
        for family in FAMILIES:
            batch.put(b"counter", last.to_bytes(8, "big"), handles[family])
        db.write(batch)
        os.pwrite(status, b"%20d\n" % last, 0)

    prefill = int(args.get("prefill", 0))
    while n < prefill and not flags["stop"]:
        last = min(prefill, n + 200)
        commit(n + 1, last)
        n = last
    _write_json(os.path.join(state, "pid.tmp"), os.getpid())
    os.rename(os.path.join(state, "pid.tmp"), os.path.join(state, "pid"))
    pause = float(args.get("pause", 0.002))
    while not flags["stop"]:
        if flags["checkpoint"]:
            flags["checkpoint"] = False
            for name in sorted(os.listdir(state)):
                if not (name.startswith("req-") and name.endswith(".json")):
                    continue
                request = _read_json(os.path.join(state, name))
                try:
                    Checkpoint(db).create_checkpoint(request["dest"])
                    answer = {"ok": True, "n": n}
                except Exception as exc:  # noqa: BLE001 - reported to the admin command
                    answer = {"ok": False, "error": str(exc)}
                os.unlink(os.path.join(state, name))
                _write_json(os.path.join(state, "done-%s.json" % request["id"]), answer)
        n += 1
        commit(n, n)
        if pause:
            time.sleep(pause)
    db.close()
    _write_json(os.path.join(state, "final.json"), n)
    os.unlink(os.path.join(state, "pid"))
    return 0


# --------------------------------------------------------------------------
# the admin commands (what systemctl and the application's admin CLI would do)
# --------------------------------------------------------------------------


def start(state: str) -> int:
    log = open(os.path.join(state, "log"), "ab")  # noqa: SIM115 - handed to the child
    before = _pid(state)
    if before and _alive(before):
        print("already running as %d" % before, file=sys.stderr)
        return 0
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", state],
            stdin=devnull,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _pid(state) == proc.pid:
            return 0
        if proc.poll() is not None:
            with open(os.path.join(state, "log"), "rb") as handle:
                sys.stderr.write(handle.read()[-600:].decode("utf-8", "replace"))
            print("the service exited with %s while starting" % proc.returncode, file=sys.stderr)
            return 1
        time.sleep(0.02)
    print("the service did not become ready", file=sys.stderr)
    return 1


def stop(state: str) -> int:
    pid = _pid(state)
    if pid is None or not _alive(pid):
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not _alive(pid):
            return 0
        time.sleep(0.02)
    print("the service %d did not stop" % pid, file=sys.stderr)
    return 1


def checkpoint(state: str, dest: str) -> int:
    pid = _pid(state)
    if pid is None or not _alive(pid):
        print("the service is not running", file=sys.stderr)
        return 1
    ident = uuid.uuid4().hex
    _write_json(os.path.join(state, "req-%s.json" % ident), {"id": ident, "dest": dest})
    os.kill(pid, signal.SIGUSR1)
    done = os.path.join(state, "done-%s.json" % ident)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(done):
            answer = _read_json(done)
            if not answer["ok"]:
                print("checkpoint failed: %s" % answer["error"], file=sys.stderr)
                return 1
            _write_json(os.path.join(state, "last-checkpoint.json"), answer["n"])
            print(json.dumps(answer))
            return 0
        time.sleep(0.01)
    print("no answer from the service", file=sys.stderr)
    return 1


def fail(dest: str) -> int:
    os.mkdir(dest)
    with open(os.path.join(dest, "000001.sst"), "wb") as handle:
        handle.write(b"half a checkpoint")
    print("disk on fire while writing the checkpoint", file=sys.stderr)
    return 3


def main(argv: list[str]) -> int:
    command = argv[1]
    if command == "serve":
        return serve(argv[2])
    if command == "start":
        return start(argv[2])
    if command == "stop":
        return stop(argv[2])
    if command == "checkpoint":
        return checkpoint(argv[2], argv[3])
    if command == "fail":
        return fail(argv[2])
    print("unknown command %s" % command, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
