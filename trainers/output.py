"""Where a training run writes: `--out` checked, locked for the whole run, published atomically.

`check_out`: a new folder, or with --overwrite a checkpoint the project wrote (its manifest.json) or
an empty folder; never the working directory, a folder above it, the project root or a folder of
anything else (harness.core.outputs). `output_lock`: a second run on the same `--out` is refused at
once instead of racing. `staged_output`: the treatment writes into a hidden staging folder beside
`out`, renamed into place only when everything succeeded.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

from harness.core.text import visible
from harness.errors import HarnessError

# The folders this process holds (path -> depth): the CLI takes the lock for the whole run and the
# treatment's staged_output takes it again inside, so it is re-entrant within a process.
_HELD: dict[str, int] = {}


def _main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only rank 0 owns `out`


def check_out(out: Path, overwrite: bool) -> None:
    """`--out` may be written: new, or (--overwrite) a checkpoint the project wrote, or empty; never
    the working directory, a folder above it, the project root or a folder of anything else."""
    from harness.core.outputs import check_output_folder, refuse_protected

    out = Path(out)
    refuse_protected(out, verb="replace")
    if os.path.lexists(out) and not overwrite:
        raise HarnessError(f"{visible(out, keep_lines=False)} already exists; pass --overwrite or choose another --out")
    check_output_folder(out, "checkpoint", replace=True)


def lock_path(out: Path) -> Path:
    """The lock file of `out` (a name no user file has: it is removed when the run ends)."""
    return out.parent / f".{out.name}.harness-lock"


@contextlib.contextmanager
def output_lock(out: Path, wait: bool = False) -> Iterator[None]:
    """Hold `out` for this run: a second `harness train` on the same folder is refused at once, in
    one line, instead of both training and both reporting success (`wait`: a leaderboard's recipe
    build waits instead, then finds the row built).

    The lock is an flock on `.<name>.harness-lock` beside `out` (the OS releases it even on kill -9), removed
    when the run ends; a folder above `out` made only for the lock is removed again on failure."""
    import fcntl

    from harness.core.files import write_error

    out = Path(out)
    key = os.path.abspath(out)
    if _HELD.get(key) or not _main_rank():
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    lock = lock_path(out)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                if not wait:
                    os.close(fd)
                    raise HarnessError(f"{visible(out, keep_lines=False)} is being written by another harness process "
                                       f"(pid {holder}); wait for it to finish or choose another --out") from None
                print(f"waiting for another harness process (pid {holder}) building {visible(out, keep_lines=False)}",
                      file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # the holder before us may have removed the file after we opened it: lock the current one
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    except OSError as e:
        _remove_empty(made)
        raise write_error(lock, e) from None
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still holding it; a waiter that opened it re-checks the inode
        os.close(fd)
        if not out.exists():
            _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def staged_output(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder next to `out`; on success it is renamed into place, on failure removed,
    so `out` is either the previous content or a complete checkpoint, never half of one.

    `out` is locked for the block (output_lock). Publishing never replaces a finished folder unless
    `overwrite` was given to this run, and then only one that check_out allows (a checkpoint the
    project wrote, or an empty folder): the old folder is renamed aside, the new one renamed in,
    and only then the old one deleted."""
    from harness.core.files import write_error

    out = Path(out)
    with output_lock(out):
        check_out(out, overwrite)
        out.parent.mkdir(parents=True, exist_ok=True)
        for old in [*out.parent.glob(f".{out.name}.staging-*"), *out.parent.glob(f".{out.name}.replaced-*")]:
            pid = old.name.rsplit("-", 1)[-1]  # left by a killed run (SIGKILL skips cleanup)
            dead = not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid))
            if dead and (".staging-" in old.name or out.exists()):  # a replaced folder only once its successor is in place
                shutil.rmtree(old, ignore_errors=True)
        stage = out.parent / f".{out.name}.staging-{os.getpid()}"
        stage.mkdir()
        try:
            try:
                yield stage
            except Exception as e:  # a full disk while saving: one line naming `out`, nothing published
                error = _disk_full(out, e)
                if error is None:
                    raise
                raise error from None
            if _main_rank():
                try:
                    _publish(stage, out, overwrite)
                except OSError as e:
                    raise write_error(out, e) from None
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


def _publish(stage: Path, out: Path, overwrite: bool) -> None:
    if not overwrite or not os.path.lexists(out):
        try:
            os.rename(stage, out)  # onto nothing or an empty folder; fails on a folder with content
            return
        except OSError as e:
            if not os.path.lexists(out):
                raise
            if not overwrite:
                raise HarnessError(f"{visible(out, keep_lines=False)} appeared while training; the result is not "
                                   "published; pass --overwrite or choose another --out") from e
    check_out(out, overwrite)  # what is there now must still be replaceable
    aside = out.parent / f".{out.name}.replaced-{os.getpid()}"
    os.rename(out, aside)
    try:
        os.rename(stage, out)
    except OSError:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _disk_full(out: Path, e: Exception) -> HarnessError | None:
    """A full disk (or quota) while the treatment writes its checkpoint, as one line naming `out`:
    an OSError from Python, or safetensors' own SafetensorError (os error 28) from save_pretrained."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = e.strerror or str(e)
    elif type(e).__name__ == "SafetensorError" and any(m in str(e) for m in ("os error 28", "code: 28", "StorageFull")):
        reason = "No space left on device"
    else:
        return None
    return HarnessError(f"cannot write {visible(out, keep_lines=False)}: {reason}; free disk space and re-run "
                        "(nothing was published)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
