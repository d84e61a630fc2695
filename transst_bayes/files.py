"""Atomic file writes: every file the package writes goes to a temporary file in the target's
folder and is renamed onto the target only once complete, so a failed or interrupted write
(disk full, a file-size limit, Ctrl-C) leaves the previous file as it was.

The rename (`os.replace`) is atomic on POSIX and Windows when both names are in one folder,
which is why the temporary file sits beside the target and not in the system's temp folder.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replacing(path) -> Iterator[Path]:
    """Yield a temporary path beside `path` with the same suffix (writers such as
    `np.savez`, `AnnData.write_h5ad` and `Figure.savefig` read the format from it); when the
    block ends without an exception, the file is flushed to disk and renamed onto `path`;
    otherwise it is removed and `path` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
    try:
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    """`Path(path).write_text(text)`, atomically."""
    with replacing(path) as tmp:
        tmp.write_text(text)


def probe_writable(folder) -> str | None:
    """Create and remove a small file in `folder`: None when that works, else the reason
    (`os.access` answers for permission bits only, not for read-only mounts, quotas or ACLs)."""
    probe = Path(folder) / f".transst-write-test-{uuid.uuid4().hex[:12]}"
    try:
        probe.write_bytes(b"0")
    except OSError as err:
        return err.strerror or type(err).__name__
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return None


def _sync(path: Path) -> None:
    """Flush the file's data to disk before it replaces the old one."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
