"""Publish folders atomically: build in a hidden sibling, fsync, then rename into place.

A reader never sees a half-written folder: either the old one, the new one, or none.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO


class OutputExistsError(FileExistsError):
    pass


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _usual_modes(root: Path) -> None:
    """Give every file the mode a plain open() gives (0666 less the umask): some writers create
    theirs private (safetensors' save_file: 0600), which other users of a shared run folder
    could then not read."""
    umask = os.umask(0o022)
    os.umask(umask)
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666 & ~umask)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or below it, compared both as written and with links followed:
    a corpus of symlinks inside an output folder resolves elsewhere, yet replacing the folder
    would delete it."""

    def forms(p) -> set[Path]:
        return {Path(p).resolve(), Path(os.path.abspath(p))}

    return any(f == q or f in q.parents for f in forms(folder) for q in forms(path))


def refuse_overlap(target: str | os.PathLike, inputs) -> None:
    """Refuse an output folder that is, or holds, one of `inputs` (None entries are skipped)."""
    for item in inputs:
        if item is not None and within(item, target):
            raise OutputExistsError(
                f"the output {target} is or holds the input {item}; writing it would replace that input, "
                "so choose another output folder"
            )


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run", name: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold `folder` (created if missing) for one writer: a second process asking for it while
    the first holds it is refused at once. The kernel releases the lock when the holder ends,
    however it ends (an advisory flock on the folder itself: no lock file is left behind). A
    folder this created is removed again if it is still empty at the end (a refused run).
    `name`: the output to name in the refusal, when `folder` is its hidden work folder."""
    folder = Path(folder)
    created = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        created.append(p)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} exists and is not a folder; choose another output path")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputExistsError(
                f"{name or folder} is in use by another {what} that is still running; wait for it to end, or choose "
                "another output folder"
            ) from None
        yield folder
    finally:
        os.close(fd)
        for p in created:  # innermost first
            with contextlib.suppress(OSError):  # not empty: it holds what the run wrote
                p.rmdir()


def check_writable(target: str | os.PathLike) -> None:
    """Refuse, before any work, an output path below a file, or where this process cannot create
    files: found after the work, it would leave one output of several written."""
    target = Path(os.path.abspath(target))
    folder = target.parent  # where a new `target` is created (published folders are renamed in there)
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputExistsError(f"{target}: {folder} is a file, not a folder; choose another output path")
    try:  # a file without a name (O_TMPFILE where the file system has it): a kill leaves nothing behind
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise PermissionError(f"cannot create {target}: {folder} is not writable here ({e.strerror})") from None


def check_output(target: str | os.PathLike, overwrite: bool = False, inputs=()) -> None:
    """Refuse, before any work is done, an output folder that `publish_dir` would refuse, one
    whose replacement would delete an input (`--out` equal to, or holding, a corpus or model),
    or one that cannot be created."""
    _refuse_output(target, overwrite, inputs)
    check_writable(target)


def _refuse_output(target: str | os.PathLike, overwrite: bool = False, inputs=()) -> None:
    target = Path(target)
    where = target.resolve()
    here = Path.cwd().resolve()
    if where == here or where in here.parents:
        raise OutputExistsError(f"{target} is the current folder or holds it; choose a new folder for the output")
    refuse_overlap(target, inputs)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a folder; choose another output path")
    _undo_unfinished(target)
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{target} already holds files; choose an empty or new folder, or pass --force to replace it"
        )


UNFINISHED = ".unfinished"  # in a folder published with others (`Together`) until all are in place


class Together(contextlib.ExitStack):
    """An ExitStack for `publish_dir(..., together=)` folders, renamed into place as it closes,
    one after another. Each holds a mark (`UNFINISHED`, flocked) from before its rename until all
    are in place, naming every folder of the write with the inode its work folder has (which the
    rename keeps). After a kill the next write of one still marked (`_undo_unfinished`) removes
    it if any of the others is not in place, else only the mark: all of them, or none."""

    def __init__(self):
        super().__init__()
        self.parts: dict[str, int] = {}  # each folder's absolute path: its work folder's inode
        self.marks: list[tuple[Path, int]] = []
        self.push(self._unmark)  # the first pushed runs last: once every folder is renamed

    def _unmark(self, kind, value, traceback) -> None:
        try:
            for folder, _ in self.marks if kind is None else []:  # an error leaves them marked
                (folder / UNFINISHED).unlink(missing_ok=True)
                _fsync_dir(folder)
        finally:
            for _, fd in self.marks:
                os.close(fd)
            self.marks = []


def _undo_unfinished(target: Path) -> None:
    """Finish what a write of `target` with other folders (`Together`) left when it was killed
    between their renames, or while it removed their marks: `target` is removed unless all of them
    are in place; the mark goes either way."""
    mark = target / UNFINISHED
    if not _unheld(mark):
        return
    try:
        text = mark.read_text(encoding="utf-8")
        parts = json.loads(text)
        done = all(os.path.isdir(p) and os.stat(p).st_ino == inode for p, inode in parts.items())
    except (OSError, ValueError, AttributeError):  # cut short before it was written
        done = False
    if done:  # every folder's mark of this write goes, not only this one's
        for other in [Path(p) / UNFINISHED for p in parts if Path(p) != target.absolute()] + [mark]:
            with contextlib.suppress(OSError):
                if _unheld(other) and other.read_text(encoding="utf-8") == text:
                    other.unlink()
        return
    shutil.rmtree(target)
    print(
        f"note: removed {target}, published by an interrupted write before the folders written with it",
        file=sys.stderr,
    )


def _unheld(folder: Path) -> bool:
    """Whether no live writer holds `folder` (see `publish_dir`)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # gone meanwhile, or not ours to open
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _maker_gone(path: Path) -> bool:
    """Whether the process that made `path` (a `.new-PID-*` work folder or file, which its writer
    renames to `.tmp-*` and holds a moment later) has ended: a kill in that moment leaves one
    that nobody holds or renames. Not yet held, it cannot be told from a live one by its lock."""
    m = re.search(r"\.new-(\d+)-[0-9a-f]+$", path.name)
    if m is None:
        return False
    try:
        os.kill(int(m[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return False


def remove_leftovers(target: Path, what: str | None = None) -> None:
    """Remove the hidden work folders or files of earlier writes of `target` that ended without
    cleaning up (kill -9, a power cut): a writer holds its own while it lives, so an unheld one
    is left over; one killed before it took hold of its work leaves a `.new-*` (`_maker_gone`), one
    killed while deleting `target` a `.pruned-*` (`delete_out_of_sight`). A replaced folder
    (`.old-*`) goes only once `target` exists again. `what` names the interrupted work in the note."""
    name = glob.escape(target.name)
    leftovers = [p for p in target.parent.glob(f".{name}.tmp-*") if _unheld(p)]
    leftovers += [p for p in target.parent.glob(f".{name}.new-*") if _maker_gone(p)]
    leftovers += list(target.parent.glob(f".{name}.pruned-*"))
    if target.exists():
        leftovers += [p for p in target.parent.glob(f".{name}.old-*") if p.is_dir()]
    _remove(leftovers, what or f"write of {target}")


def delete_out_of_sight(folder: Path, ignore_errors: bool = False) -> None:
    """Delete `folder` at once for any reader: renamed to a hidden `.NAME.pruned-*` first, then
    removed file by file. A kill part way leaves that hidden folder, which the next write of
    `folder` (`remove_leftovers`) or the sweep of its parent (`remove_leftovers_in`) removes."""
    hidden = folder.with_name(f".{folder.name}.pruned-{uuid.uuid4().hex[:8]}")
    os.rename(folder, hidden)
    shutil.rmtree(hidden, ignore_errors=ignore_errors)


def remove_leftovers_in(folder: Path) -> None:
    """`remove_leftovers` for every output in `folder`: the work folders of writes a kill cut short
    whose output is never written again (a checkpoint of a step a resume does not reach)."""
    if folder.is_dir():
        pruned = list(folder.glob(".*.pruned-*"))  # checkpoints being deleted when a kill came
        new = [p for p in folder.glob(".*.new-*") if _maker_gone(p)]
        _remove([p for p in folder.glob(".*.tmp-*") if _unheld(p)] + new + pruned, f"write in {folder}")


def _remove(leftovers: list[Path], what: str) -> None:
    for p in leftovers:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        print(f"note: removed {p}, left behind by an interrupted {what}", file=sys.stderr)


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room to write


class WriteFailed(OSError):
    """A write that found no room (or failed in the file system): what was written before stays."""


def write_error(e: BaseException, target: Path) -> WriteFailed | None:
    """A write of `target` that failed for want of room, as an OSError naming it and what to do;
    None for any other failure. Libraries report it their own way: safetensors and tokenizers
    with "(os error 28)" in the message, torch.save with a failed C++ stream and numpy with the
    bytes it wrote (no cause given: a full disk if it is nearly full, else a file-size limit if
    one is set, else the file system's own failure)."""
    text = str(e)
    if isinstance(e, OSError) and e.errno is not None:
        code = e.errno if e.errno in _FULL else None
    elif m := re.search(r"os error (\d+)", text):
        code = int(m[1]) if int(m[1]) in _FULL else None
    elif re.search(r"iostream error|inline_container|requested and \d+ written", text):  # torch.save, numpy cut short
        if shutil.disk_usage(target.parent).free < 1 << 26:
            code = errno.ENOSPC
        elif resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            code = errno.EFBIG
        else:
            first = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
            return WriteFailed(
                errno.EIO, f"writing {target} failed ({first}): a quota or the file system? Then run the command again"
            )
    else:
        code = None
    if code is None:
        return None
    cause = "a file-size limit (ulimit -f): raise it" if code == errno.EFBIG else "a full disk or quota: make room"
    return WriteFailed(code, f"{os.strerror(code)} while writing {target}; {cause}, then run the command again")


def _work_names(target: Path) -> tuple[Path, Path]:
    """Where a write of `target` is made (named with this process, see `_maker_gone`) and then,
    once held, written."""
    token = uuid.uuid4().hex[:8]
    return (
        target.parent / f".{target.name}.new-{os.getpid()}-{token}",
        target.parent / f".{target.name}.tmp-{token}",
    )


@contextlib.contextmanager
def publish_dir(target: str | os.PathLike, overwrite: bool = False, together: Together | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `target` in one rename.

    What `check_output` refuses is refused (call it earlier, with the inputs, to fail before
    the work). On any exception the temporary folder is removed and `target` is left as it was.
    The temporary folder is held (flock) while it is written, so that a later write of `target`
    can tell a left-over one (a killed writer's) from a live one and remove it.
    """
    _refuse_output(target, overwrite)  # no probe: the work folder made next is the real test
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    new, tmp = _work_names(target)
    new.mkdir()
    held = os.open(new, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    os.rename(new, tmp)  # held before a sweep could see it
    if together is not None:
        together.parts[os.path.abspath(target)] = tmp.stat().st_ino
    old = None
    try:
        yield tmp
        if together is not None:  # marked until `together` has every folder in place
            mark = os.open(tmp / UNFINISHED, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            together.marks.append((target, mark))
            fcntl.flock(mark, fcntl.LOCK_EX)
            os.write(mark, json.dumps(together.parts).encode())
        _usual_modes(tmp)
        _fsync_tree(tmp)
        if not overwrite and target.is_dir() and any(target.iterdir()):
            raise OutputExistsError(  # checked at the start: another command wrote it meanwhile
                f"{target} was written by another command while this one ran; it is kept, and this "
                "output is not written: run again into another folder, or pass --force to replace it"
            )
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException as e:
        if old is not None and old.exists() and not target.exists():  # stopped between the two renames
            os.rename(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        if (full := write_error(e, target)) is not None:
            raise full from e
        raise
    finally:
        os.close(held)


@contextlib.contextmanager
def publishing_file(target: str | os.PathLike, binary: bool = False) -> Iterator[TextIO | BinaryIO]:
    """A file to write (UTF-8 text, or bytes); on success it replaces `target` in one rename, on
    error it is removed. Held (flock) while written, as `publish_dir`'s folders are, so that a
    later write of `target` removes one a killed writer left."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    new, tmp = _work_names(target)
    try:
        opened = open(new, "wb") if binary else open(new, "w", encoding="utf-8")  # noqa: SIM115 (entered below)
    except OSError as e:  # named as the file asked for, not as the temporary one beside it
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(
                f"cannot write {target}: {target.parent} is not writable here ({e.strerror})"
            ) from None
        if (full := write_error(e, target)) is not None:
            raise full from e
        raise
    try:
        with opened as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            os.rename(new, tmp)  # held before a sweep could see it
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)  # the rename too survives a power cut
    except BaseException as e:
        new.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        if (full := write_error(e, target)) is not None:
            raise full from e
        raise


def publish_file(target: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary sibling and a rename: never half-written."""
    with publishing_file(target) as f:
        f.write(text)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 4 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
