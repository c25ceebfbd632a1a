"""benchmarks/kinds_figure.py: one row per synthetic kind, one tile per class."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2

from wsol.data.synthetic import SYNTHETIC_KINDS

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "kinds_figure.py"


def test_the_figure_has_a_row_per_kind_and_a_tile_per_class(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("kinds_figure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "kinds.png"
    assert module.main(["--out", str(out), "--classes", "3"]) == 0
    height, width = cv2.imread(str(out)).shape[:2]
    tile = module.SIZE + 4
    assert (height, width) == (tile * len(SYNTHETIC_KINDS), module.LABEL_WIDTH + 3 * tile)
