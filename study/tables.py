"""Markdown and CSV tables: the one format of the study summary, the evaluation results
and the benchmarks."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (cells as ``str``), ending in a newline."""
    lines = ["| " + " | ".join(str(cell) for cell in header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def csv_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The same table as CSV."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([list(header), *(list(row) for row in rows)])
    return buffer.getvalue()
