"""The tar extractor is a jail: every create, chmod, chown, utime and setxattr is relative to a descriptor
of a directory the extraction made, so a link planted at any level, before or while it runs, is never
gone through, and a hostile archive writes nothing outside its destination.

Races are made deterministic, never timed: the attacker's swap runs inside the call the extractor makes
right before it would write (``os.open`` of the file, ``os.mkfifo``, ``os.symlink``, ``os.link``), or at
the start of ``finish`` (where directory modes, mtimes and xattrs are applied). Real files on the real
filesystem; what the planted links point to must stay exactly as it was, and the extraction must refuse.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest
from tree_helpers import tar_bytes

from ansible_collections.nodekeep.backup.plugins.module_utils.core import extract
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError

pytestmark = pytest.mark.timeout(60)

STAMP = 981173106_123456789


def entry(name, kind=tarfile.REGTYPE, linkname="", mode=0o644, xattrs=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = STAMP // 10**9
    if xattrs:
        info.pax_headers = {"SCHILY.xattr." + key: value for key, value in xattrs.items()}
    return info


def state(root) -> dict:
    """Every entry below ``root`` (and ``root``): type, mode, mtime, content, link target, inode."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in [".", *dirs, *files] if directory == str(root) else dirs + files:
            path = os.path.normpath(os.path.join(directory, name))
            info = os.lstat(path)
            item = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_mtime_ns, info.st_ino)
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    item += (handle.read(),)
            elif stat.S_ISLNK(info.st_mode):
                item += (os.readlink(path),)
            found[os.path.relpath(path, root)] = item
    return found


#: a nested tree: the attacker swaps ``a`` (made by the extraction) for a link to ``outside``
TREE = [
    (entry("a", tarfile.DIRTYPE, mode=0o755), None),
    (entry("a/b", tarfile.DIRTYPE, mode=0o777), None),
    (entry("a/b/keep", tarfile.REGTYPE, mode=0o600), b"mine"),
]

VICTIMS = {
    "file": (entry("a/b/victim", tarfile.REGTYPE, mode=0o4755), b"payload"),
    "fifo": (entry("a/b/victim", tarfile.FIFOTYPE, mode=0o666), None),
    "symlink": (entry("a/b/victim", tarfile.SYMTYPE, linkname="/etc/shadow"), None),
    "hardlink": (entry("a/b/victim", tarfile.LNKTYPE, linkname="a/b/keep"), None),
}

#: the call each kind of entry is created with, in the old (path) and the new (descriptor) extractor
CREATE = {"file": "open", "fifo": "mkfifo", "symlink": "symlink", "hardlink": "link"}


@pytest.fixture
def outside(tmp_path):
    """What a planted link points to: a directory with the same shape, holding something to protect."""
    root = tmp_path / "outside"
    (root / "b").mkdir(parents=True)
    (root / "b" / "keep").write_bytes(b"precious")
    os.chmod(root / "b", 0o700)
    os.utime(root / "b", ns=(STAMP, STAMP))
    return root


def swap(dest, outside) -> None:
    """The attacker's move: the directory ``a`` the extraction made becomes a link to ``outside``."""
    os.rename(dest / "a", dest / "a.moved")
    os.symlink(str(outside), dest / "a")


def assert_refused(excinfo, needle: str) -> None:
    assert needle in excinfo.value.message, excinfo.value.message
    assert excinfo.value.remedy


@pytest.mark.parametrize("kind", sorted(VICTIMS))
def test_a_directory_swapped_for_a_link_before_an_entry_is_created(tmp_path, outside, monkeypatch, kind):
    """The swap happens inside the very call that creates the entry: a path lookup would go through it."""
    dest = tmp_path / "dest"
    before = state(outside)
    function = CREATE[kind]
    real = getattr(os, function)
    done = []

    def attacker(*args, **kwargs):
        name = args[1] if function in ("symlink", "link") else args[0]
        if os.path.basename(str(name)) == "victim" and not done:
            done.append(True)
            swap(dest, outside)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, function, attacker)
    with pytest.raises(RestoreError) as excinfo:
        extract.extract_tar(io.BytesIO(tar_bytes([*TREE, VICTIMS[kind]])), str(dest))
    monkeypatch.undo()
    assert done, "the attacker never ran"
    assert_refused(excinfo, "replaced or moved")
    assert state(outside) == before, "the extraction wrote through the swapped link"
    assert not os.path.lexists(outside / "b" / "victim")


def test_a_swap_before_directory_attributes_are_applied(tmp_path, outside, monkeypatch):
    """Directory modes, mtimes and xattrs are set at the end: by descriptor, never through a swapped link."""
    dest = tmp_path / "dest"
    before = state(outside)
    finish = extract.Extractor.finish

    def attacker(self):
        swap(dest, outside)
        return finish(self)

    monkeypatch.setattr(extract.Extractor, "finish", attacker)
    tree = [*TREE[:1], (entry("a/b", tarfile.DIRTYPE, mode=0o777, xattrs={"user.planted": "x"}), None), TREE[2]]
    with pytest.raises(RestoreError) as excinfo:
        extract.extract_tar(io.BytesIO(tar_bytes(tree)), str(dest))
    assert_refused(excinfo, "replaced or moved")
    assert state(outside) == before, "a mode or mtime was applied through the swapped link"
    assert "user.planted" not in os.listxattr(outside / "b")


def test_a_directory_replaced_by_another_real_directory_is_refused(tmp_path, monkeypatch):
    """Not only links: the directory the extraction made must be the one it finishes."""
    dest = tmp_path / "dest"
    finish = extract.Extractor.finish

    def attacker(self):
        os.rename(dest / "a", dest / "a.moved")
        os.mkdir(dest / "a")
        return finish(self)

    monkeypatch.setattr(extract.Extractor, "finish", attacker)
    with pytest.raises(RestoreError) as excinfo:
        extract.extract_tar(io.BytesIO(tar_bytes(TREE)), str(dest))
    assert_refused(excinfo, "replaced or moved")


def test_the_final_component_planted_as_a_link_is_never_followed(tmp_path, outside, monkeypatch):
    """A link appears at the very name a file is about to be created with: O_EXCL|O_NOFOLLOW refuses."""
    dest = tmp_path / "dest"
    target = outside / "b" / "keep"
    before = state(outside)
    real = os.open
    done = []

    def attacker(path, flags, *args, **kwargs):
        if os.path.basename(str(path)) == "victim" and flags & os.O_CREAT and not done:
            done.append(True)
            os.symlink(str(target), dest / "a" / "b" / "victim")
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", attacker)
    with pytest.raises(RestoreError) as excinfo:
        extract.extract_tar(io.BytesIO(tar_bytes([*TREE, VICTIMS["file"]])), str(dest))
    monkeypatch.undo()
    assert done
    assert_refused(excinfo, "more than once")
    assert state(outside) == before


def test_the_destination_itself_as_a_link_is_refused(tmp_path, outside):
    dest = tmp_path / "dest"
    os.symlink(str(outside), dest)
    before = state(outside)
    with pytest.raises(RestoreError) as excinfo:
        extract.extract_tar(io.BytesIO(tar_bytes(TREE)), str(dest))
    assert_refused(excinfo, "is a symlink")
    assert state(outside) == before


HOSTILE = {
    "absolute name": ([(entry("/tmp/nodekeep-hostile"), b"x")], "absolute path"),
    "dot-dot at the front": ([(entry("../hostile"), b"x")], "'..'"),
    "dot-dot nested": ([(entry("a", tarfile.DIRTYPE), None), (entry("a/../../hostile"), b"x")], "'..'"),
    "hard link to an absolute path": ([(entry("h", tarfile.LNKTYPE, "/etc/passwd"), None)], "absolute path"),
    "hard link with dot-dot": ([(entry("h", tarfile.LNKTYPE, "../outside/b/keep"), None)], "'..'"),
    "hard link through an archive symlink": (
        [(entry("l", tarfile.SYMTYPE, "OUTSIDE"), None), (entry("h", tarfile.LNKTYPE, "l/b/keep"), None)],
        "not a file extracted before",
    ),
    "hard link to an archive symlink": (
        [(entry("l", tarfile.SYMTYPE, "OUTSIDE/b/keep"), None), (entry("h", tarfile.LNKTYPE, "l"), None)],
        "not a file extracted before",
    ),
    "file below an archive symlink": (
        [(entry("l", tarfile.SYMTYPE, "OUTSIDE"), None), (entry("l/b/keep"), b"x")],
        "written through",
    ),
    "directory over an archive symlink": (
        [(entry("l", tarfile.SYMTYPE, "OUTSIDE"), None), (entry("l", tarfile.DIRTYPE), None)],
        "over another entry",
    ),
    "file over an archive symlink": (
        [(entry("l", tarfile.SYMTYPE, "OUTSIDE/b/keep"), None), (entry("l"), b"x")],
        "more than once",
    ),
    "character device": ([(entry("null", tarfile.CHRTYPE), None)], "device node"),
    "block device": ([(entry("sda", tarfile.BLKTYPE), None)], "device node"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_writes_nothing_outside(tmp_path, outside, case):
    members, needle = HOSTILE[case]
    for info, _data in members:
        info.linkname = info.linkname.replace("OUTSIDE", str(outside))
    dest = tmp_path / "dest"
    before = state(outside)
    with pytest.raises(RestoreError) as excinfo:
        extract.extract_tar(io.BytesIO(tar_bytes(members)), str(dest))
    assert_refused(excinfo, needle)
    assert state(outside) == before
    assert not os.path.lexists("/tmp/nodekeep-hostile")
    assert not os.path.lexists(tmp_path / "hostile")
    assert not [p for p in os.listdir(dest) if stat.S_ISCHR(os.lstat(dest / p).st_mode)]


def test_a_deep_tree_is_kept_with_few_descriptors(tmp_path):
    """More directories than descriptors kept open: reopened from their parent, checked, all attributes kept."""
    members = []
    for top in range(3):
        path = "d%d" % top
        for depth in range(extract.Extractor.DIR_FDS + 10):
            path += "/x%d" % depth
            members.append((entry(path, tarfile.DIRTYPE, mode=0o750), None))
        members.append((entry(path + "/f", mode=0o640), b"deep"))
    dest = tmp_path / "dest"
    stats = extract.extract_tar(io.BytesIO(tar_bytes(members)), str(dest))
    assert (stats["directories"], stats["files"]) == (3 * (extract.Extractor.DIR_FDS + 10), 3)
    found = state(dest)
    assert sum(1 for item in found.values() if stat.S_ISREG(item[0]) and item[4] == b"deep") == 3
    kept = {item[1:3] for rel, item in found.items() if stat.S_ISDIR(item[0]) and "/" in rel}
    assert kept == {(0o750, (STAMP // 10**9) * 10**9)}
