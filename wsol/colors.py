"""One colour per ablation row, the same in every figure, study and MLflow view."""

from __future__ import annotations

import hashlib

#: Distinct colours (matplotlib's tab10 less its grey, which marks a study's parent run
#: and CAM's dark grey): a row's colour is picked by a hash of its label, so ``full``
#: looks the same in every study, report and MLflow chart (two labels may share one).
ROW_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
)
PARENT_COLOR = "#7f7f7f"


def row_color(label: str) -> str:
    """The colour of the row (or search point) ``label``: stable across studies and
    sessions (SHA-256 of the label, not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"wsol{label}".encode()).hexdigest()
    return ROW_COLORS[int(digest, 16) % len(ROW_COLORS)]
