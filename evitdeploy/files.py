"""Every file a verb reads from outside and every output it writes passes here.

Reading: regular files only (a symlink to one is fine). A device, a FIFO or a socket would be
read without end (`/dev/zero`) or block for ever (a FIFO nobody writes), so it is refused by its
kind, before any byte is read; and each kind of input has a size bound, checked against the
size the filesystem reports and again while reading (a /proc file reports 0 bytes).

Writing: an output that exists and is a character device (`/dev/null`, a terminal) is written
into directly, never replaced; one that is a folder, a FIFO, a socket or a block device is
refused. Everything else is written to a temporary sibling and renamed into place, so no reader
sees half a file. Every output path is checked before the work starts, and what a failed run
made (its files, the folders it created for them) is removed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from evitdeploy.errors import UserError

JSON_MAX_BYTES = 256 << 20  # a results file or manifest larger than this is not one evitdeploy wrote
TEXT_MAX_BYTES = 1 << 20  # a profile (TOML), a key, a signature: a few KiB each
IMAGE_MAX_BYTES = 1 << 30  # a photo for predict (its pixel count is bounded separately)

_KERNEL_TREES = ("/proc", "/sys")  # kernel interfaces: writing there changes the machine, not a file


def kind_of(mode: int) -> str:
    """What a stat mode is, in words for an error line."""
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def is_character_device(path: Path) -> bool:
    """Whether `path` is (or links to) a character device such as /dev/null: written into, never replaced."""
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


# ---- reading ----


def input_file(path: Path, what: str, hint: str, *, limit: Optional[int] = None) -> int:
    """The size of the regular file `path`, or one UserError saying what it is instead (missing,
    a folder, a device, a FIFO, a socket, larger than `limit`). For files a library opens by
    path (numpy, torch, PIL, a runtime): the check that keeps it from blocking or reading forever."""
    path = Path(path)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}", hint) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc})", hint) from None
    if stat.S_ISDIR(found.st_mode):
        raise UserError(f"{what} {path} is a folder, not a file", hint)
    if not stat.S_ISREG(found.st_mode):
        raise UserError(f"{what} {path} is {kind_of(found.st_mode)}, not a regular file", f"{hint}; evitdeploy reads regular files only")
    _within(path, found.st_size, what=what, hint=hint, limit=limit)
    return found.st_size


def read_input(path: Path, what: str, hint: str, *, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or one UserError. Opened without
    blocking (a FIFO put in its place after the check does not hang us) and read only up to the
    limit, whatever size the filesystem claims."""
    input_file(path, what, hint, limit=limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc})", hint) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # swapped after the check
            raise UserError(f"{what} {path} is {kind_of(mode)}, not a regular file", f"{hint}; evitdeploy reads regular files only")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc})", hint) from None
    finally:
        os.close(fd)
    _within(path, size, what=what, hint=hint, limit=limit)
    return b"".join(chunks)


def read_input_text(path: Path, what: str, hint: str, *, limit: int = JSON_MAX_BYTES) -> str:
    """A UTF-8 text file from the user (JSON, TOML), or one UserError saying why it cannot be read."""
    try:
        return read_input(path, what, hint, limit=limit).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text", hint) from None


def _within(path: Path, size: int, *, what: str, hint: str, limit: Optional[int]) -> None:
    if limit is not None and size > limit:
        raise UserError(f"{what} {path} is over {_amount(limit)}; evitdeploy reads {what}s up to that size", hint)


def _amount(size: int) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"


# ---- checking an output before the work ----


def check_output(path: Path, what: str = "output", folder: bool = False) -> None:
    """Refuse, before any work starts, an output the end of the work could not write or must not
    touch: no name of its own ('', '.', '..'), a path in /proc or /sys, an existing folder (for a
    file) or file (for a folder), a FIFO, socket or block device, a name too long, a parent that
    is a file or cannot be written. A character device (/dev/null) is a valid file output."""
    path = Path(path)
    if str(path) in ("", ".") or path.name in ("", ".", ".."):
        raise UserError(f"{what} {str(path)!r} names no {'folder' if folder else 'file'} of its own", f"name a new {'folder' if folder else 'file'}, e.g. out")
    existing = next((p for p in (path.parent, *path.parent.parents) if _exists(p)), Path("."))
    for place in (os.path.abspath(path), os.path.realpath(existing)):
        tree = next((tree for tree in _KERNEL_TREES if place == tree or place.startswith(tree + "/")), None)
        if tree is not None:
            raise UserError(f"{what} {path} is under {tree}, the kernel's interface, not a folder for files", f"choose a {what} path outside {tree}")
    if not existing.is_dir():
        raise UserError(f"{existing} is not a folder, so the {what} {path} cannot be made there", f"choose another {what}")
    _name_fits(path, existing, what)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    except OSError as exc:  # a symlink loop, a component that is a file
        raise UserError(f"cannot use {what} {path} ({exc.strerror or exc})", f"choose another {what}") from None
    device = found is not None and not folder and stat.S_ISCHR(found.st_mode)  # written into: its folder (/dev) need not be writable
    if not os.access(path if device else existing, os.W_OK):
        raise UserError(f"cannot write {'to' if device else 'into'} {path if device else existing}", f"choose an {what} in a folder you can write to")
    if found is None:
        return
    if folder and os.path.islink(path):
        raise UserError(f"{what} {path} is a symbolic link", f"name the folder itself, or choose another {what}")
    if folder and not stat.S_ISDIR(found.st_mode):
        raise UserError(f"{what} {path} exists and is {kind_of(found.st_mode)}, not a folder", f"remove it, or choose another {what}")
    if not folder and stat.S_ISDIR(found.st_mode):
        raise UserError(f"{what} {path} is a folder", f"name a file to write, e.g. {path / 'out.json'}")
    if not folder and not (stat.S_ISREG(found.st_mode) or stat.S_ISCHR(found.st_mode)):
        raise UserError(f"{what} {path} is {kind_of(found.st_mode)}; evitdeploy writes regular files and character devices only", f"choose another {what}")


def _name_fits(path: Path, existing: Path, what: str) -> None:
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    too_long = next((part for part in path.parts if len(os.fsencode(part)) > name_max), None)
    if too_long is not None:
        raise UserError(
            f"{what} {path}: the name {too_long[:24]}… is {len(os.fsencode(too_long))} bytes; this filesystem allows {name_max}",
            f"choose a shorter {what} name",
        )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a component too long or a loop: not a folder we can use
        return False


def prepare_output(output: Path, force: bool, what: str = "output") -> None:
    """An output folder: checked (see check_output), and refused when it exists unless forced."""
    output = Path(output)
    check_output(output, what, folder=True)
    if output.exists() and not force:
        raise UserError(f"{what} {output} already exists", "pass --force (force=True in Python) to replace it, or choose another output")


# ---- writing ----


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader never sees half a file."""
    write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary sibling, then rename: no half-written file is ever left behind. A
    character device is written into (renaming over /dev/null would replace the device); any other
    existing non-regular file is refused."""
    path = Path(path)
    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    if found is not None and stat.S_ISCHR(found.st_mode):
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise UserError(f"{path} is {kind_of(found.st_mode)}; it is not replaced", "choose a file name to write")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        _usual_mode(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_output(path: Path, payload: bytes, what: str = "output") -> None:
    """An output file the user named: its missing folders made (and removed again if the write
    fails), written as write_bytes does; an unwritable path is one UserError."""
    path = Path(path)
    try:
        with folder_kept_on_success(path.parent):
            write_bytes(path, payload)
    except OSError as exc:
        raise UserError(f"cannot write {what} {path} ({exc.strerror or exc})", "choose a path you can write to") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path, directory: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; published files get the umask's mode."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def folder_kept_on_success(folder: Path) -> Iterator[Path]:
    """Create `folder` and its missing parents; if the block fails, remove again the ones it
    created (when still empty): a refused command leaves nothing new behind."""
    folder = Path(folder)
    created = []
    probe = folder
    while not _exists(probe) and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder} ({exc.strerror})", "choose an output in a folder you can write to") from exc
    try:
        yield folder
    except BaseException:
        for made in created:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
        raise


@contextlib.contextmanager
def file_kept_on_success(path: Path) -> Iterator[Path]:
    """For an output written piece by piece (a results file): if the block fails and the file did
    not exist before, remove it again when it holds nothing (an empty file is no result)."""
    path = Path(path)
    existed = _exists(path)
    try:
        yield path
    except BaseException:
        with contextlib.suppress(OSError):
            if not existed and path.is_file() and path.stat().st_size == 0:
                path.unlink()
        raise


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """A temporary sibling folder that becomes `output` only if the block succeeds."""
    output = Path(output)
    with folder_kept_on_success(output.parent), _staging(output) as staging:
        yield staging


@contextlib.contextmanager
def _staging(output: Path) -> Iterator[Path]:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        _usual_mode(staging, directory=True)
    except OSError as exc:
        raise UserError(f"cannot create {output} ({exc.strerror})", "choose an --output you can write to") from exc
    try:
        yield staging
        if output.is_dir() and not output.is_symlink():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
            os.replace(staging, output)
            shutil.rmtree(old, ignore_errors=True)
        elif _exists(output) or output.is_symlink():
            raise UserError(f"{output} exists and is not a folder; it is not replaced", "remove it, or choose another output")
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
