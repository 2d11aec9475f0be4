r"""Checkpoint files that are written atomically, carry a checksum, and never continue the wrong run.

* :func:`save_checkpoint` writes a state dict through a temporary file that is ``fsync``-ed and renamed over
  the destination (a crash mid-write keeps the previous checkpoint). The file starts with a one-line header
  holding the SHA-256 of the :func:`torch.save` payload that follows it.
* :func:`load_checkpoint` verifies that checksum before unpickling anything and raises a
  :class:`CheckpointError` naming the file and the problem (empty, truncated, modified, not a checkpoint)
  without touching the file.
* :func:`check_run_settings` refuses to resume a run whose defining settings (process hyper-parameters,
  model configuration, batch size, seed, ...) differ from the checkpoint's, listing every difference, unless
  the caller passes an explicit override (:class:`SettingsMismatchError`).
* :func:`remove_stale_temporaries` deletes the temporary files a kill during a write leaves behind.
* :func:`run_folder_lock` keeps a second run out of a run folder while one is writing there.
* A write that fails (a full disk, an object that cannot be pickled, a destination whose folder is a file)
  raises :class:`CheckpointWriteError` (or a ``TypeError`` for the object) saying which checkpoint is intact.

Files written before checksums existed (plain :func:`torch.save` files) are still read, without the check.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "SettingsMismatchError",
    "CheckpointWriteError",
    "RunFolderInUseError",
    "check_run_settings",
    "checkpoint_checksum",
    "load_checkpoint",
    "remove_stale_temporaries",
    "run_folder_lock",
    "LOCK_NAME",
    "save_checkpoint",
    "settings_differences",
]

#: First bytes of every checkpoint written by :func:`save_checkpoint`; the 64 hexadecimal digits of the
#: payload's SHA-256 and a newline follow.
MAGIC = b"SPLITDYN-CHECKPOINT/1 sha256="
_HEADER_LENGTH = len(MAGIC) + 64 + 1
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, modified, not a checkpoint, or of another run.

    The message names the file and the problem; the file itself is never modified."""


class SettingsMismatchError(CheckpointError):
    """Resuming with settings that define the run different from the checkpoint's (see
    :func:`check_run_settings`)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a failed write, a destination that cannot exist).

    The message says why and which checkpoint is intact; the previous file at the destination is never
    modified and the partial temporary file is removed. ``errno`` is the operating system's error number when
    there is one (``errno.ENOSPC`` for a full disk)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class RunFolderInUseError(OSError):
    """Another process holds the lock of a run folder (see :func:`run_folder_lock`); ``errno`` is ``EBUSY``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.EBUSY


class _HashingWriter:
    """A write-only file object that hashes what passes through it."""

    def __init__(self, file, digest) -> None:
        self.file = file
        self.digest = digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


class _OffsetReader(io.RawIOBase):
    """A read-only view of ``file`` from byte ``offset`` on (so :func:`torch.load` sees only the payload)."""

    def __init__(self, file, offset: int) -> None:
        super().__init__()
        self.file = file
        self.offset = offset
        file.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.file.readinto(buffer)

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position += self.offset
        return self.file.seek(position, whence) - self.offset

    def tell(self) -> int:
        return self.file.tell() - self.offset


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` with :func:`torch.save` atomically, behind a SHA-256 checksum header.

    The data goes to a temporary file ``.<name>.<random>.tmp`` in the destination folder, is flushed and
    ``fsync``-ed, and then ``os.replace``-d over ``path`` (atomic on POSIX and Windows); the folder is
    ``fsync``-ed too where the platform allows. A crash or an exception mid-write leaves the previous
    checkpoint at ``path`` intact and removes the temporary file (a hard kill can leave it behind:
    :func:`remove_stale_temporaries` cleans up).

    Parameters
    ----------
    path:
        Destination file (its folder is created if needed).
    state:
        A dict of tensors, ``state_dict()``-s, RNG states, numbers, ...

    Raises
    ------
    TypeError
        If ``state`` is not a dict or holds an object that cannot be pickled (the message names its key).
    CheckpointWriteError
        If the file cannot be written: the disk is full, the write fails, or a folder on ``path`` is a file.
        The message says which checkpoint is intact; the file at ``path`` is left as it was.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    _check_destination(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + b"0" * 64 + b"\n")
            digest = hashlib.sha256()
            try:
                torch.save(state, _HashingWriter(f, digest))
            except (TypeError, AttributeError, pickle.PicklingError) as exc:
                if _os_error_in(exc) is None:  # not a failed write: an object pickle cannot save
                    raise TypeError(_unpicklable_message(path, state, exc)) from None
                raise
            f.seek(len(MAGIC))
            f.write(digest.hexdigest().encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, CheckpointWriteError) and (
                _os_error_in(exc) is not None or "inline_container" in str(exc)):
            raise _write_error(path, exc) from exc
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        try:
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def _check_destination(path: Path) -> None:
    """Refuse a destination that is a folder or lies under a file, before anything is written."""
    if path.is_dir():
        raise CheckpointWriteError(f"cannot write checkpoint {path}: it is a folder; pass a file path such as "
                                   f"{path / 'checkpoint.pt'}", errno.EISDIR)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CheckpointWriteError(f"cannot write checkpoint {path}: {parent} is a file, not a folder; "
                                           "choose another path", errno.ENOTDIR)
            break


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first :class:`OSError` in ``exc`` and the exceptions it was raised from or during (torch.save wraps
    a failed write of its file object in a ``RuntimeError`` from ``inline_container``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _write_error(path: Path, exc: BaseException) -> CheckpointWriteError:
    """A one-line :class:`CheckpointWriteError` for a failed write of ``path``, saying what is intact."""
    cause = _os_error_in(exc)
    code = cause.errno if cause is not None else None
    if code is None and _nearly_full(path.parent):  # torch.save's own write error says nothing of the cause
        code = errno.ENOSPC
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why = f"the disk is full ({(cause.strerror if cause is not None else None) or 'no space left on device'})"
    elif cause is not None:
        detail = cause.strerror or str(cause) or type(cause).__name__
        why = f"the write failed ({detail}{f': {cause.filename}' if cause.filename else ''})"
    else:
        why = f"the write failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if path.is_file():
        intact = f"the previous checkpoint {path} is intact (unchanged)"
    else:
        intact = f"no checkpoint was at {path} before; the other files in {path.parent} are untouched"
    return CheckpointWriteError(f"cannot write checkpoint {path}: {why}; {intact} and the partial file was removed. "
                                "Free some space (or fix the folder), then resume", code)


def _nearly_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has less than 1 MiB free (``False`` if it cannot be read)."""
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


class _TensorFreePickler(pickle.Pickler):
    """Pickles everything but tensors and storages (stood in by an id), to find what cannot be pickled."""

    def persistent_id(self, obj):
        if isinstance(obj, (torch.Tensor, torch.UntypedStorage, torch.TypedStorage)):
            return id(obj)
        return None


def _unpicklable_message(path: Path, state: dict, exc: BaseException) -> str:
    culprit = None
    for key, value in state.items():
        try:
            _TensorFreePickler(io.BytesIO()).dump(value)
        except Exception:  # noqa: BLE001 - pickling fails in many ways; all mean "cannot be saved"
            culprit = key
            break
    where = f"state[{culprit!r}]" if culprit is not None else "state"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (f"{where} cannot be saved in checkpoint {path}: it holds an object that cannot be pickled ({first}); "
            f"store plain data (tensors, numbers, strings, state_dict()-s) instead. {path} was left untouched")


def checkpoint_checksum(path) -> tuple[str | None, str]:
    """``(recorded, actual)`` SHA-256 hex digests of the payload of the checkpoint at ``path``.

    ``recorded`` is ``None`` for a file without a checksum header (written by plain :func:`torch.save`);
    ``actual`` is then the digest of the whole file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(_HEADER_LENGTH)
        recorded = None
        if head.startswith(MAGIC) and len(head) == _HEADER_LENGTH and head.endswith(b"\n"):
            recorded = head[len(MAGIC):-1].decode("ascii", errors="replace")
        else:
            f.seek(0)
        digest = hashlib.sha256()
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return recorded, digest.hexdigest()


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, after verifying its checksum.

    Checkpoints hold RNG states (NumPy arrays, Python tuples), so they are unpickled with
    ``weights_only=False``: load only files you wrote yourself. Keep ``map_location="cpu"`` when the state
    contains RNG states (they must be CPU byte tensors).

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    CheckpointError
        If the file is empty, truncated, modified after it was written (checksum mismatch), not a checkpoint,
        or does not hold a dict; the message names the file and the problem, and the file is left untouched.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): its write was interrupted; "
                              "use an earlier snapshot or start again")
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        recorded, actual = checkpoint_checksum(path)
        if recorded is None:
            raise CheckpointError(f"checkpoint {path} is truncated ({size} bytes, shorter than its header)")
        if recorded != actual:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: the SHA-256 of its contents ({actual[:16]}...) differs from the "
                f"one recorded when it was written ({recorded[:16]}...), so it was truncated or modified since; "
                "the file was left untouched. Use an earlier snapshot (checkpoint_<step>.pt) or start again")
        offset = _HEADER_LENGTH
    else:
        offset = 0  # a plain torch.save file, from before checksums
    try:
        with open(path, "rb") as f:
            state = torch.load(_OffsetReader(f, offset) if offset else f, map_location=map_location,
                               weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unpickling can fail in many ways; all mean "not a checkpoint"
        what = "could not be read" if offset else "is not a checkpoint (no checksum header, and torch.load fails)"
        raise CheckpointError(f"checkpoint {path} {what}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict of training state")
    return state


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def settings_differences(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """``"name: checkpoint <saved>, now <current>"`` for each of ``keys`` whose values differ (a key missing on
    one side counts as a difference; tuples and lists with equal items are equal)."""
    missing = object()
    out = []
    for key in keys:
        a, b = saved.get(key, missing), current.get(key, missing)
        if not _same(a, b):
            shown = ["(not saved)" if v is missing else repr(v) for v in (a, b)]
            out.append(f"{key}: checkpoint {shown[0]}, now {shown[1]}")
    return out


def check_run_settings(path, saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str], *,
                       override: bool = False, flag: str = "--override-settings") -> list[str]:
    """Refuse to resume from the checkpoint ``path`` when settings that define the run differ.

    Parameters
    ----------
    path:
        The checkpoint (named in the message).
    saved, current:
        The checkpoint's settings and this run's.
    keys:
        The names that define the run (e.g. process hyper-parameters, model configuration, batch size, seed);
        other settings (the number of steps, logging, ...) may change between runs.
    override:
        Accept the differences (they are returned, for a note in the log).
    flag:
        How the user passes ``override`` (shown in the message).

    Returns
    -------
    list of str
        The differences (empty when the settings agree).

    Raises
    ------
    SettingsMismatchError
        If there are differences and not ``override``; the message lists them all.
    """
    differences = settings_differences(saved, current, keys)
    if differences and not override:
        raise SettingsMismatchError(
            f"refusing to resume from {path}: settings that define the run differ from the checkpoint's "
            f"({'; '.join(differences)}). Use the checkpoint's settings, another output folder, or {flag} "
            "to continue with the new settings anyway")
    return differences


#: Name of the lock file :func:`run_folder_lock` keeps in a run folder.
LOCK_NAME = ".run.lock"


@contextmanager
def run_folder_lock(folder, what: str = "training run") -> Iterator[Path]:
    """Hold an exclusive lock on the run folder ``folder`` (created if needed) for the duration of the block.

    The lock is an ``fcntl.flock`` on ``folder/.run.lock``: a second process (or a second lock in this one)
    asking for it gets a :class:`RunFolderInUseError` saying which process holds it, instead of writing into
    the same files. The operating system releases the lock when its holder exits, crashes or is killed, so a
    lock left behind never blocks the next run (the file itself stays; it is harmless). Where ``fcntl`` does not
    exist (Windows) the block runs without a lock.

    Yields the lock file's path.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield Path(folder) / LOCK_NAME
        return
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise CheckpointWriteError(f"output folder {folder} cannot be created: {candidate} is a file, not a "
                                           "folder; pass another output folder", errno.ENOTDIR)
            break
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_NAME
    handle = open(lock_path, "a+")  # noqa: SIM115 - held open (locked) while the caller's block runs
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise RunFolderInUseError(
            f"output folder {folder} is in use by another {what} ({holder}; lock file {lock_path}): "
            "wait for it to finish, or pass another output folder") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        handle.flush()
        yield lock_path
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def remove_stale_temporaries(folder, names: Iterable[str] = ("*",)) -> list[Path]:
    """Delete the temporary files ``.<name>.<random>.tmp`` that :func:`save_checkpoint` leaves in ``folder``
    when the process is killed mid-write; ``names`` are the checkpoint names (glob patterns allowed) whose
    temporaries are removed. Call it when a run starts (no write of this run is in progress then).

    Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for name in names:
        for candidate in sorted(folder.glob(f".{name}.*.tmp")):
            if candidate.is_file() and candidate not in removed:
                candidate.unlink()
                removed.append(candidate)
    return removed
