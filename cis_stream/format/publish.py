"""Where a build of `<out>` is staged, and who may stage it.

`cis-stream index` and `cis-stream add` both build in `<out>.building` and publish by renaming it
to `<out>`. Two jobs staging the same `<out>` at once would mix their files (and `--restart` would
wipe a live build), so a build holds `lock_staging(out)`: an flock on `<out>.building.lock`, which
the kernel releases when the process dies, even by `kill -9`, so a crashed build never blocks the
next one. Within one torchrun job, rank 0 holds it for all ranks.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil

from cis_stream.format.layout import staging_dir


class BuildLockedError(RuntimeError):
    """Another live job is building the same `<out>`."""


def _lock_path(out: str) -> str:
    return f'{staging_dir(out)}.lock'


@contextlib.contextmanager
def lock_staging(out: str):
    """Hold the exclusive lock on `<out>.building` for the block, or raise BuildLockedError at once."""
    path = _lock_path(out)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode('ascii', 'replace').strip() or 'unknown'
            os.close(fd)
            raise BuildLockedError(f'another build of {out} is running (pid {holder}, lock {path}); wait for it '
                                   f'to finish, or stop it, then run this command again') from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder we waited on removed this file on release: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        yield
    finally:
        os.unlink(path)  # while still locked, so that no one locks a file about to disappear
        os.close(fd)


def _paths(spec: str) -> list[str]:
    """The existing paths an input spec names (a glob's matches), resolved."""
    return [os.path.realpath(p) for p in (glob.glob(spec, recursive=True) if glob.has_magic(spec) else [spec])
            if os.path.exists(p)]


def check_apart(out: str, specs: list[str], what: str = 'input') -> None:
    """Refuse an `out` (or its staging directory) that is, contains or lies inside an input.

    Publishing renames over `out` (and `--overwrite` deletes what was there); an index inside its
    own inputs would be read again as input by the next build.
    """
    for mine in (os.path.realpath(out), os.path.realpath(staging_dir(out))):
        for spec in specs:
            for path in _paths(spec):
                common = os.path.commonpath([mine, path])
                if common in (path, mine):
                    relation = 'is' if mine == path else 'lies inside' if common == path else 'contains'
                    raise ValueError(f'--out {out}: {mine} {relation} the {what} {path}, which building there '
                                     f'could overwrite or delete; choose an --out outside every {what}')


def publish(staging: str, out: str) -> None:
    """Rename the finished build into place; an old index (with --overwrite) goes only after."""
    old = None
    if os.path.exists(out):
        old = f'{out}.replaced-{os.getpid()}'
        os.rename(out, old)
    os.rename(staging, out)
    if old:
        shutil.rmtree(old)


def link_tree(source: str, target: str) -> None:
    """Hard-link every file of the old version into `target` (copy across file systems).

    The folders are made anew, never copied with their modes: a read-only index must give a
    staging directory that can be filled, and removed if the add fails.
    """
    os.makedirs(target)
    for folder, subfolders, names in os.walk(source):
        into = os.path.join(target, os.path.relpath(folder, source))
        for name in subfolders:
            os.mkdir(os.path.join(into, name))
        for name in names:
            try:
                os.link(os.path.join(folder, name), os.path.join(into, name))
            except OSError:
                shutil.copy2(os.path.join(folder, name), os.path.join(into, name))
