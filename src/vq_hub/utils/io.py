"""Filesystem helpers: nothing half-written is ever left under a final name.

Every rename goes through `_rename` or `_exchange`, so tests can interrupt a save at each one.
"""

import contextlib
import ctypes
import errno
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _rename(source: Path, destination: Path) -> None:
    os.replace(source, destination)


def _exchange(first: Path, second: Path) -> None:
    """Swap two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); OSError where that is unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available on this system")
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def resolved(path: str | os.PathLike) -> Path:
    """`path` with `~` and symlinks resolved (also when it does not exist yet): temporary files made beside it land on
    the filesystem it really lives on, so the final rename never crosses devices."""
    return Path(path).expanduser().resolve()


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, replaces: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty staging folder beside `target` to write into; when the block succeeds, what it holds becomes
    `target`'s content, and on error it is deleted and `target` is untouched.

    `target` holds either its complete old content or the complete new save at every instant, also when interrupted
    (an exception, Ctrl-C): a new `target` appears in one rename; an existing one is swapped with the staging folder
    in one atomic exchange, after the entries the write did not produce (checkpoints, logs, a user's notes) have been
    moved into it. Entries matching a pattern of `replaces` belong to the old save and are not kept: weight shards of
    an older save, the components of an older pipeline, or `"*"` to replace the folder as a whole.
    """
    target = resolved(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            _replace_contents(staging, target, tuple(replaces))
        else:
            _rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the unused staging folder, or the old content after a swap


def _replace_contents(staging: Path, target: Path, replaces: tuple[str, ...]) -> None:
    if not target.is_dir():
        raise NotADirectoryError(f"{str(target)!r} exists and is not a folder: it cannot receive a save")
    written = {entry.name for entry in staging.iterdir()}
    kept = sorted(entry.name for entry in target.iterdir() if entry.name not in written
                  and not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in replaces))  # fmt: skip
    moved = []
    try:
        for name in kept:
            _rename(target / name, staging / name)
            moved.append(name)
        _swap(staging, target)
    except BaseException:
        for name in reversed(moved):  # the old save is whole again
            _rename(staging / name, target / name)
        raise


def _swap(staging: Path, target: Path) -> None:
    """Exchange `staging` and `target` atomically; where the filesystem cannot, move `target` aside and `staging` in,
    moving it back if the second rename fails (the only moment `target` is missing)."""
    try:
        _exchange(staging, target)
        return
    except OSError as error:
        if error.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
            raise
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        _rename(target, aside / "old")
        try:
            _rename(staging, target)
        except BaseException:
            _rename(aside / "old", target)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)  # the old content once the new is in place


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target` (same suffix, so writers that pick a format by suffix work); when the
    block succeeds it is renamed to `target` in one step, on error it is deleted."""
    target = resolved(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        _rename(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(target: str | os.PathLike, text: str) -> Path:
    """Write `text` to `target` through `atomic_file`; returns the path written."""
    with atomic_file(target) as temporary:
        temporary.write_text(text)
    return resolved(target)


def check_safetensors_files(folder: str | os.PathLike) -> None:
    """Read the header of every `*.safetensors` file in `folder`: a truncated or damaged file is an OSError that names
    the file and the cause, before a loader turns it into a vaguer one."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as weights:
                weights.keys()
        except (SafetensorError, OSError) as error:
            raise OSError(
                f"{path}: the weights file is damaged or truncated ({error}); save or download it again"
            ) from error


@contextlib.contextmanager
def quiet_loading(enabled: bool = True) -> Iterator[None]:
    """diffusers' and transformers' loading bars off for the block (one pipeline load printed several nested bars),
    then back as they were; `enabled=False` leaves them alone."""
    import diffusers
    import transformers

    libraries = [(diffusers.utils.logging, diffusers.utils.logging.is_progress_bar_enabled()),
                 (transformers.utils.logging, transformers.utils.logging.is_progress_bar_enabled())]  # fmt: skip
    if enabled:
        for logging, _ in libraries:
            logging.disable_progress_bar()
    try:
        yield
    finally:
        for logging, was_enabled in libraries:
            if was_enabled:
                logging.enable_progress_bar()
