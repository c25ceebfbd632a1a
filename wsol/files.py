"""Small files written whole or not at all.

A full disk or a kill mid-write must not leave a truncated ``selection.json`` or
``metrics.jsonl`` that the next resume or evaluation then trips over: each is written
to a temporary file in the same folder and renamed over the old one (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: readers see the old content or the new, never half."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_json_atomically(path: Path, content: Any) -> None:
    """``content`` as indented JSON, see :func:`write_text_atomically`."""
    write_text_atomically(path, json.dumps(content, indent=2) + "\n")


def write_jsonl_atomically(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, see :func:`write_text_atomically`."""
    write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))
