"""The build directory under faults: one writer at a time, atomic replacement, a commit record.

Protocol (docs/build-format.md, "Commit protocol"; docs/reliability.md shows each fault):

- **One writer.** A build holds ``fcntl.flock`` on ``DIR/.ffexport.lock`` (the holder's pid is written
  in it) from before it reads the directory until it is done. A second build into the same
  directory is refused at once with one line naming that pid (:class:`InputError`, exit 2). The lock
  is released by the kernel when the process dies, so a killed build never leaves a stale lock.
  Readers (``ffexport run``) take no lock: a writer never changes what the manifest points at.
- **The manifest is the commit record.** ``manifest.json`` is replaced atomically after each bucket.
  ``weights.bin`` only grows by appending; the manifest records the committed length and the
  SHA-256 of those bytes. Bytes past it are an uncommitted tail (an interrupted or running build):
  readers ignore them and the next build truncates them before it appends. A bucket that is rebuilt
  under the same name is first removed from the manifest (committed), then its files are rewritten.
- **Overwrite replaces atomically.** ``--overwrite`` on a directory holding a build builds into a
  sibling ``.DIR.ffexport-new-<pid>``, then exchanges the two directories in one
  ``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere two renames, with a window where DIR is absent)
  and deletes the old one. Until then DIR is the old, valid build; a failed or interrupted
  replacement deletes the sibling (or, after SIGKILL, the next build into DIR does).

Faults can be injected at the build's progress steps and at the commit points named in
:data:`COMMIT_POINTS` (``ffexport/faults.py``; ``scripts/fault_table.py`` uses it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ffexport.errors import InputError
from ffexport.faults import fault_point

log = logging.getLogger(__name__)

LOCK_FILE = ".ffexport.lock"
#: files a build directory may hold before its first manifest (not the user's)
BUILD_MARKERS = ("manifest.json", "weights.bin", "weights.index.json")
STAGING = ".{name}.ffexport-new-"
#: commit points a fault can be injected at (besides the progress steps)
COMMIT_POINTS = ("locked", "before manifest", "after manifest", "before swap")


# ====================================================================== lock
class DirectoryLock:
    """``with DirectoryLock(dir):`` exclusive ``flock`` on ``dir/.ffexport.lock`` or one-line :class:`InputError`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InputError(f"--out {self.directory} is being written by another ffexport build (pid {holder}); "
                             "wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _locked_by_someone(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def refuse_if_busy(directory: Path) -> None:
    """One line (:class:`InputError`, exit 2) when another build holds ``directory``'s lock, naming its pid.

    The build takes the lock itself later (:class:`BuildDirectory`); this check lets ``ffexport build``
    refuse before it spends minutes loading a model it could not write anyway."""
    lock_path = Path(directory) / LOCK_FILE
    if _locked_by_someone(lock_path):
        holder = lock_path.read_text(errors="replace").strip() or "unknown"
        raise InputError(f"--out {directory} is being written by another ffexport build (pid {holder}); "
                         "wait for it to finish or choose another --out")


# ====================================================================== the directory a build writes
def refuse_packed(directory: Path, *, overwrite: bool) -> None:
    """One line (:class:`InputError`) when ``directory`` is a deployment folder ``ffexport pack`` wrote and
    ``overwrite`` is not set: a build adding buckets there would leave its ``packed`` record stale."""
    import json

    try:
        record = json.loads((Path(directory) / "manifest.json").read_text()).get("packed")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(record, dict) and not overwrite:
        raise InputError(f"--out {directory} is a deployment folder written by `ffexport pack` (from "
                         f"{record.get('from', '?')}); add buckets to that build and pack it again, or pass "
                         "--overwrite to replace the folder")


def holds_build(directory: Path) -> bool:
    return any((directory / name).exists() for name in BUILD_MARKERS)


class BuildDirectory:
    """``with BuildDirectory(out, overwrite=...) as d:`` build in ``d.path``, then ``d.commit()``.

    Checks ``out`` (a file, or a folder of someone else's files, is refused untouched), locks it, and
    with ``overwrite`` on a directory holding a build, stages a sibling that :meth:`commit` swaps in.
    Leaving the block without :meth:`commit` deletes the sibling; ``out`` is as it was."""

    def __init__(self, out: Path, *, overwrite: bool) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        self.path = self.out
        self.replacing = False
        self._locks: list[DirectoryLock] = []

    def __enter__(self) -> "BuildDirectory":
        out = self.out
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} exists and is not a directory")
        if out.is_dir() and not holds_build(out) and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise InputError(f"--out {out} is not empty and holds no ffexport build; choose another folder")
        refuse_packed(out, overwrite=self.overwrite)
        try:
            self._locks.append(DirectoryLock(out).acquire())
            fault_point("locked")
            self._remove_stale_siblings()
            if self.overwrite and holds_build(out):
                self.replacing = True
                self.path = out.parent / (STAGING.format(name=out.name) + str(os.getpid()))
                shutil.rmtree(self.path, ignore_errors=True)
                self._locks.append(DirectoryLock(self.path).acquire())
                log.info("--overwrite: building into %s; %s stays as it is until the new build is complete",
                         self.path.name, out)
        except BaseException:
            self._release()
            raise
        return self

    def commit(self) -> None:
        """Put the staged build in place of the old one (nothing to do when building in place)."""
        if not self.replacing:
            return
        fault_point("before swap")
        exchange(self.path, self.out)  # self.path now holds the old build
        fd = os.open(self.out.parent, os.O_RDONLY)  # the swap itself, on disk before the old build goes
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        shutil.rmtree(self.path, ignore_errors=True)
        self.replacing = False
        log.info("replaced the build in %s", self.out)

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.replacing:  # not committed: the old build stays
                shutil.rmtree(self.path, ignore_errors=True)
                log.warning("the new build was not completed; %s still holds the previous build", self.out)
        finally:
            self._release()

    def _release(self) -> None:
        for lock in reversed(self._locks):
            lock.release()
        self._locks.clear()

    def _remove_stale_siblings(self) -> None:
        remove_stale_siblings(self.out, STAGING.format(name=self.out.name), "an interrupted --overwrite")


def remove_stale_siblings(out: Path, prefix: str, left_by: str) -> None:
    """Delete ``out``'s sibling folders named ``prefix...`` whose lock nobody holds: the staging folders of
    writers that were killed (SIGKILL, power loss) before they could swap them in or delete them."""
    parent = Path(out).parent
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if p.name.startswith(prefix) and p.is_dir() and not _locked_by_someone(p / LOCK_FILE):
            log.info("removing %s, left by %s", p, left_by)
            shutil.rmtree(p, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (``renameat2(RENAME_EXCHANGE)``); where the system cannot, move
    ``b`` aside, ``a`` into place and the old ``b`` to ``a``."""
    libc_name = ctypes.util.find_library("c")
    renameat2 = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


# ====================================================================== committed weights
def committed_weights(directory: Path, manifest: dict[str, Any] | None, weights_file: str) -> tuple[int, bool]:
    """(committed length of ``weights.bin``, whether its committed bytes are intact) for ``manifest``.

    No manifest, or one that records no weights: (0, True). The committed bytes are hashed: a build
    must not append to (and reuse tensors from) a file damaged since it was committed."""
    record = (manifest or {}).get("files", {}).get(weights_file)
    if not record:
        return 0, True
    path = directory / weights_file
    length = int(record["bytes"])
    if not path.is_file() or path.stat().st_size < length:
        return length, False
    return length, prefix_sha256(path, length) == record["sha256"]


def prefix_sha256(path: Path, length: int, chunk: int = 1 << 22) -> str:
    """SHA-256 of the first ``length`` bytes of ``path``."""
    h = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left > 0:
            block = f.read(min(chunk, left))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()
