"""The synthetic kinds side by side: one row per kind, one image per class (seed 0).

    python benchmarks/kinds_figure.py [--out docs/synthetic_kinds.png] [--classes 10]

Each image is drawn exactly as ``wsol synth --kind K`` draws it (96 px, before JPEG),
with its ground-truth box in green.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsol.data.synthetic import SYNTHETIC_KINDS, render_kind_sample
from wsol.data.transforms import mask_bounding_box

SIZE = 96
LABEL_WIDTH = 90


def kind_row(kind: str, classes: int) -> np.ndarray:
    """One image per class of ``kind``, its box drawn, with the kind's name on the left."""
    tiles = []
    for class_index in range(classes):
        image, mask = render_kind_sample(
            np.random.default_rng([0, class_index, 0]), class_index, classes, SIZE, kind
        )
        image = np.ascontiguousarray(image)
        x0, y0, x1, y1 = mask_bounding_box(mask)
        cv2.rectangle(image, (x0, y0), (x1, y1), (0, 200, 0), 1)
        tiles.append(np.pad(image, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    label = np.full((SIZE + 4, LABEL_WIDTH, 3), 255, np.uint8)
    cv2.putText(label, kind, (4, SIZE // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    return np.concatenate([label, *tiles], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_kinds.png"))
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args(argv)
    figure = np.concatenate([kind_row(kind, args.classes) for kind in SYNTHETIC_KINDS], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({figure.shape[1]} x {figure.shape[0]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
