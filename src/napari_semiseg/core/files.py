"""Writing files without ever destroying the user's: input guards, writability checks, atomic writes.

Every output of a command is checked before any work starts (so a full budget is never spent
only to fail at the end) and written to a temporary name in its folder, then renamed into place,
with the permissions an ordinary file gets. An output may never replace an input of the same
command, however the path is spelled (``..``, symbolic links, hard links).
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

from .errors import InputError

_umask_lock = threading.Lock()


def _umask() -> int:
    with _umask_lock:  # os.umask can only be read by setting it
        old = os.umask(0o022)
        os.umask(old)
    return old


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """The resolved path and, for an existing file, its (device, inode): what hard links share."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def is_same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    ra, ia = _identity(Path(a))
    rb, ib = _identity(Path(b))
    return ra == rb or (ia is not None and ia == ib)


def expand_inputs(paths) -> list[Path]:
    """Input paths, with every file inside an input folder (a model folder, an image folder)."""
    out = []
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        out.append(p)
        if p.is_dir():
            out.extend(q for q in p.rglob("*") if q.is_file())
    return out


def refuse_input_overwrite(output: str | os.PathLike, inputs, what: str = "output") -> None:
    """Raise when writing ``output`` would replace one of ``inputs`` (any spelling of the path)."""
    for inp in inputs:
        if is_same_file(output, inp):
            raise InputError(f"Refusing to overwrite {Path(inp).name} with the {what} ({output}): it is one of "
                             "this command's inputs. Choose another file or folder.")


def refuse_inputs_inside(folder: str | os.PathLike, inputs, what: str) -> None:
    """Raise when an input lies inside ``folder``, which is about to be replaced as a whole."""
    real = os.path.realpath(folder)
    for inp in inputs:
        r = os.path.realpath(inp)
        if r == real or r.startswith(real + os.sep):
            raise InputError(f"Refusing to overwrite {folder} with the {what}: it holds {Path(inp).name}, one of "
                             "this command's inputs, and would be replaced whole. Choose another folder.")


def check_output_file(path: str | os.PathLike, inputs=(), what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written and is none of ``inputs``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"The {what} {path} is a folder: give a file name.")
    refuse_input_overwrite(path, inputs, what)
    check_writable_folder(path.parent, what=what, create=False)
    return path


def check_output_folder(folder: str | os.PathLike, inputs=(), what: str = "output folder") -> Path:
    """Check, before any work, that ``folder`` is (or can become) a writable folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"The {what} {folder} is an existing file, not a folder: give a folder name.")
    for inp in inputs:
        if is_same_file(folder, inp):
            raise InputError(f"The {what} {folder} is one of this command's inputs.")
    check_writable_folder(folder, what=what, create=True)
    return folder


def check_writable_folder(folder: Path, what: str = "output", create: bool = False) -> None:
    """A real write probe: permission bits say nothing about read-only mounts, quotas or root."""
    folder = Path(folder) if str(folder) else Path(".")
    if not folder.exists():
        if not create:
            raise InputError(f"The folder {folder} for the {what} does not exist: create it first.")
        parent = folder.parent
        while not parent.exists():
            parent = parent.parent
        check_writable_folder(parent, what=what, create=False)
        return
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder: the {what} cannot go there.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".semiseg-probe-", dir=str(folder))
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise write_error(folder, err, what) from None


def write_error(where: str | os.PathLike, err: OSError, what: str = "output") -> InputError:
    """One sentence for an operating-system error while writing."""
    where = Path(where)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"The disk holding {where} is full (or over its quota): free some space or choose "
                          f"another folder for the {what}.")
    if err.errno == errno.EROFS:
        return InputError(f"{where} is on a read-only disk: choose another folder for the {what}.")
    if err.errno in (errno.EACCES, errno.EPERM):
        return InputError(f"You may not write into {where}: choose another folder for the {what}.")
    return InputError(f"Could not write the {what} into {where}: {err.strerror or err}.")


def atomic_write(path: str | os.PathLike, writer, what: str = "output", suffix: str = "") -> Path:
    """``writer(tmp_path)`` writes a temporary file beside ``path``, which is then renamed over it.

    A crash leaves either the old file or the new one, never half of one. The result gets the
    permissions an ordinary new file gets (or the replaced file's), not ``mkstemp``'s 0600.
    ``suffix`` ends the temporary name too, for writers that choose the format by extension.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + suffix, dir=str(path.parent))
        os.close(fd)
    except OSError as err:
        raise write_error(path.parent, err, what) from None
    try:
        writer(tmp)
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise write_error(path.parent, err, what) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
