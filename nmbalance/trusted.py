"""Whether a file the administrator put in place may run as root or become part
of our firewall: hook programs and nft snippets.

Trusted means: owned by root (or by us), writable by nobody else, and so is
every directory from it up to the configured folder; and it stays inside that
folder (a symlink may point elsewhere within it, never out of it). Otherwise
any user who can write there could run code as root or open the firewall.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _owned_and_locked(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022


def untrusted_folder(folder: Path) -> str | None:
    """Why `folder` may not be trusted, or None."""
    try:
        st = os.lstat(folder)
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if not _owned_and_locked(st):
        return "it must be owned by root and writable only by it"
    return None


def untrusted_file(path: Path, folder: Path) -> str | None:
    """Why `path` (inside `folder`) may not be trusted, or None."""
    try:
        real = path.resolve(strict=True)
        base = folder.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a dangling or looping symlink
        return f"cannot resolve it ({exc})"
    if real != base and base not in real.parents:
        return f"it leads out of {folder} (to {real})"
    try:
        st = os.stat(real)
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if not _owned_and_locked(st):
        return "it must be owned by root and writable only by it"
    # Every directory between the folder and the file is as locked as the folder.
    for parent in real.parents:
        if parent == base:
            break
        if (why := untrusted_folder(parent)) is not None:
            return f"{parent}: {why}"
    return None
