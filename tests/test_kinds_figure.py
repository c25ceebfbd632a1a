"""benchmarks/kinds_figure.py: one row per synthetic kind, one tile per class."""

from __future__ import annotations

from pathlib import Path

import cv2

from tests.scripts import load_benchmark
from wsol.data.synthetic import SYNTHETIC_KINDS


def test_the_figure_has_a_row_per_kind_and_a_tile_per_class(tmp_path: Path) -> None:
    module = load_benchmark("kinds_figure")
    out = tmp_path / "kinds.png"
    assert module.main(["--out", str(out), "--classes", "3"]) == 0
    height, width = cv2.imread(str(out)).shape[:2]
    tile = module.SIZE + 4
    assert (height, width) == (tile * len(SYNTHETIC_KINDS), module.LABEL_WIDTH + 3 * tile)
