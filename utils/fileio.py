"""Safe file writing: atomic, durable writes; output folders checked and locked.

- ``atomic_write``: write a temporary file beside the target (``.<name>.<8 chars>.tmp``),
  fsync it, rename it over the target, fsync the folder. A crash, Ctrl-C or power cut
  leaves the previous file or the new one, never a truncated one. Files get the mode
  ``0666 & ~umask`` like any other tool's.
- ``clean_stale_temps``: remove temporaries of that naming pattern left by killed writers.
- ``prepare_output_dir``: create an output folder and check it is writable before work starts.
- ``lock_run_dir``: an exclusive ``flock`` on ``<folder>/.lock`` (holding the PID) so that
  two runs never write into one folder; the kernel releases it when the process dies.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable

from utils.errors import UserError

try:  # POSIX only; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
_TEMP_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
# ".<target name>.<8 random chars>.tmp": this module's temporaries (and tempfile.mkstemp's
# names that earlier versions used with the same prefix/suffix).
TEMP_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_FSYNC_DIR_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM}
_ERRNO_WORDS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def temp_name(dest: str | os.PathLike[str]) -> Path:
    """A fresh temporary path beside ``dest`` (``.<name>.<8 random chars>.tmp``); nothing is created."""
    dest = Path(dest)
    token = "".join(secrets.choice(_TEMP_ALPHABET) for _ in range(8))
    return dest.parent / f".{dest.name}.{token}{TEMP_SUFFIX}"


def create_temp(dest: str | os.PathLike[str]) -> Path:
    """Create an empty temporary file beside ``dest`` and return its path.

    The file is created exclusively with mode ``0666 & ~umask`` (not ``tempfile``'s 0600),
    so the renamed result has the permissions any other tool would give it.
    """
    for _ in range(100):
        tmp = temp_name(dest)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", str(dest))


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to the disk (``os.fsync``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files) to the disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def remove_quietly(path: str | os.PathLike[str]) -> None:
    """Delete a file if it exists, ignoring every error (cleanup on an error path)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then durably and atomically rename ``tmp_path`` to ``path``.

    The temporary file is fsynced before the rename and the folder after it; on any error
    the temporary file is removed and the previous ``path`` (if any) is left untouched.

    Args:
        path: destination; its folder is created if needed.
        write: function writing the complete file at the temporary path it is given.
    Returns:
        the destination path.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(dest)
    try:
        write(str(tmp))
        fsync_file(tmp)
        os.replace(tmp, dest)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(dest.parent)
    return dest


def atomic_paddle_save(obj: Any, path: str | os.PathLike) -> Path:
    """``paddle.save(obj, path)`` done atomically and durably; returns ``path``."""
    import paddle

    return atomic_write(path, lambda tmp: paddle.save(obj, tmp))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably; returns ``path``."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Serialise ``obj`` as JSON to ``path`` atomically and durably; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def copy_atomic(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Make ``dest`` hold ``src``'s content, atomically: a hard link where the file system
    allows one (no data copied), else a fsynced copy. ``src`` is not changed. Returns ``dest``."""
    src, dest = Path(src), Path(dest)
    for _ in range(100):
        tmp = temp_name(dest)
        try:
            os.link(src, tmp)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.EACCES):
                raise
            tmp = create_temp(dest)
            try:
                shutil.copyfile(src, tmp)
                fsync_file(tmp)
            except BaseException:
                remove_quietly(tmp)
                raise
            break
    else:
        raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", str(dest))
    try:
        os.replace(tmp, dest)
    except BaseException:
        remove_quietly(tmp)
        raise
    return dest


def clean_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporaries named like this module's (``.<name>.<8 chars>.tmp``) in ``folder``.

    Call it only while holding the folder's run lock (``lock_run_dir``): then no live writer
    owns them, they are leftovers of killed saves. Returns the removed paths.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if TEMP_PATTERN.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


def describe_os_error(exc: OSError) -> str:
    """A short cause for an ``OSError``, e.g. ``No space left on device (ENOSPC, disk full)``."""
    code = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    tags = ", ".join(t for t in (code, _ERRNO_WORDS.get(exc.errno or 0)) if t)
    return f"{text} ({tags})" if tags else text


def prepare_output_dir(path: str | os.PathLike[str], flag: str = "--save_dir") -> Path:
    """Create output folder ``path`` if needed and check that files can be written in it.

    Args:
        path: the folder.
        flag: the option that named it, for messages.
    Returns:
        the folder as a ``Path``.
    Raises:
        UserError: ``path`` is an existing file, lies under a file, cannot be created, or is
            not writable (read-only file system, permissions, disk full).
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is an existing file, not a folder: pass a folder path (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        where = f"{blocker} is a file, not a folder" if blocker else "a part of the path is not a folder"
        raise UserError(f"{flag} {folder} cannot be created: {where}; choose another {flag}") from None
    except OSError as exc:
        raise UserError(f"{flag} {folder} cannot be created: {describe_os_error(exc)}; choose a writable location for {flag}") from None
    probe: Path | None = None
    try:
        probe = create_temp(folder / "write-test")
        with open(probe, "wb") as fh:
            fh.write(b"ok")
    except OSError as exc:
        raise UserError(f"{flag} {folder} is not writable: {describe_os_error(exc)}; "
                        f"fix its permissions or free space, or choose another {flag}") from None
    finally:
        if probe is not None:
            remove_quietly(probe)
    return folder


class RunLock:
    """An exclusive lock on a run folder: ``flock`` on ``<folder>/.lock``, which holds the PID.

    Held until ``release()`` (or garbage collection, or the process's death: the kernel drops
    ``flock`` locks with the last open descriptor, so a killed run never blocks the next).
    """

    def __init__(self, folder: str | os.PathLike[str], flag: str = "--save_dir") -> None:
        """Take the lock on ``folder`` (which must exist); UserError naming the holder's PID if taken."""
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover - no flock on this platform
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UserError(f"{flag} {folder}: cannot create the run lock {self.path}: {describe_os_error(exc)}; "
                            f"choose a writable {flag}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{flag} {folder}: cannot lock {self.path}: {describe_os_error(exc)}") from None
            who = f"PID {holder}" if holder else "another process"
            raise UserError(
                f"{flag} {folder} is in use by another training run ({who} holds {self.path}); "
                f"wait for it to finish or stop it, or choose another {flag}"
            ) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the PID note

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (the ``.lock`` file stays, emptied: deleting it would race with a new locker)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_run_dir(folder: str | os.PathLike[str], flag: str = "--save_dir") -> RunLock:
    """Take the exclusive run lock of ``folder`` (see ``RunLock``) and return it.

    Raises:
        UserError: another live process holds it (the message names its PID).
    """
    return RunLock(folder, flag)


def read_json(path: str | os.PathLike, what: str = "file", fix: str = "fix the file or write it again") -> Any:
    """Decode a JSON file; every failure is one UserError naming the file, the cause and ``fix``.

    Args:
        path: the file.
        what: what the file is, for messages (e.g. ``"annotation file"``).
        fix: what the user should do, appended to every message.
    Returns:
        the decoded object (no type check: callers check the shape they need).
    Raises:
        UserError: missing, a folder, unreadable, not UTF-8, or not valid JSON (with line and column).
    """
    p = Path(path)
    try:
        with open(p, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{what} {p} does not exist; {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {p} is a folder, not a JSON file; {fix}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {p} is not UTF-8 text; is it really a JSON file? {fix}") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {p}: {exc.strerror or exc}; {fix}") from None


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of the file at ``path`` (read in chunks, never whole)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
