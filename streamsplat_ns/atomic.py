"""Atomic file outputs: write to a temporary name beside the target, then rename.

Every output (checkpoints, mp4, PLY, JSON, depth maps) goes through here, so a run that is killed or
hits a full disk never leaves a half-written file under the final name, and the error names the file.

>>> with atomic_path("out/video.mp4") as tmp:     # tmp: "out/.video.mp4.<pid>.<rand>.tmp.mp4"
...     write_video(tmp)                          # renamed to out/video.mp4 only if this returns
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]
TMP_TAG = ".tmp"
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp makes 0600 files, outputs should get the usual 0644-style mode


class OutOfSpaceError(OSError):
    """The disk filled while writing ``path``; the message names the file and the fix."""

    def __init__(self, path: PathLike, detail: str = "") -> None:
        super().__init__(
            errno.ENOSPC,
            f"{path}: no space left on the device while writing it{detail}; free space "
            f"or choose another output folder (the partial file was removed)",
        )
        self.path = Path(path)


def is_disk_full(exc: BaseException) -> bool:
    # EFBIG: a size limit (RLIMIT_FSIZE, as the fault tests use to simulate a full disk)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    # torch.save / C++ writers report a full disk as RuntimeError("... unexpected pos ..." / "file write failed")
    msg = str(exc)
    return isinstance(exc, RuntimeError) and (
        "unexpected pos" in msg or "write failed" in msg or "No space left" in msg
    )


def temp_name(path: PathLike, tmp_dir: Optional[PathLike] = None) -> Path:
    """A unique hidden name in the target's folder (or ``tmp_dir``, on the same file system) that keeps the
    suffix (encoders pick formats by it)."""
    path = Path(path)
    folder = path.parent if tmp_dir is None else Path(tmp_dir)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_TAG + path.suffix)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: PathLike, tmp_dir: Optional[PathLike] = None) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it and rename it to ``path``; on failure remove it.
    A full disk is re-raised as :class:`OutOfSpaceError` naming ``path``. ``tmp_dir`` (same file system)
    keeps the temporary file out of a folder that other tools list, e.g. nerfstudio's checkpoint folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is not None:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path, tmp_dir)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(e) and not isinstance(e, OutOfSpaceError):
            raise OutOfSpaceError(path) from e
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def clean_stale_temps(folder: PathLike, min_age_s: float = 0.0) -> int:
    """Remove temporary files this module (or an older writer) left behind when a process was killed
    mid-write. Returns how many were removed. ``min_age_s`` spares files another live writer may own."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n, now = 0, time.time()
    for p in folder.iterdir():
        if p.is_file() and p.name.startswith(".") and TMP_TAG in p.name:
            try:
                if now - p.stat().st_mtime >= min_age_s:
                    p.unlink()
                    n += 1
            except OSError:
                pass
    return n
