"""Which code a study, a trial run or an evaluation was made with."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path


def code_version() -> str:
    """`git describe --always --dirty` of the repository holding this package.

    Falls back to `wsol-study <installed version>` when the package does not live in a
    git work tree of its own (an installed wheel) or git is unavailable.
    """
    package_root = Path(__file__).resolve().parent.parent
    try:
        toplevel = subprocess.run(
            ["git", "-C", str(package_root), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        # A wheel installed in a virtualenv that sits inside some other repository must
        # not report that repository's version.
        if toplevel and Path(toplevel).resolve() == package_root:
            described = subprocess.run(
                ["git", "-C", str(package_root), "describe", "--always", "--dirty"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            if described:
                return described
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"wsol-study {importlib.metadata.version('wsol-study')}"
    except importlib.metadata.PackageNotFoundError:
        return "wsol-study unknown"
