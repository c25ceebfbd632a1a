"""The tiny single-run config the training tests share (CPU, 32 px, seconds per epoch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsol.config import RunConfig, config_from_dict

#: f's and g's channel multiplier in the tests' tiny configs: a quarter-width ResNet18 has
#: 1/16 of the parameters, so each step and each checkpoint costs a fraction of the
#: paper's width; the architecture at width 1 is tested on its own (tests/test_models.py).
TINY_WIDTH = 0.25


def tiny_run_config(root: Path, name: str = "tiny", **sections: dict[str, Any]) -> RunConfig:
    """Method I on the synthetic data under ``root``: f 2 epochs, g 3 epochs, batch 8.
    ``sections`` update a section's fields, e.g. ``mask={"method": 2}``."""
    raw: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "device": "cpu",
        "data": {
            "root": str(root),
            "resize": 40,
            "crop": 32,
            "val_fraction": 0.25,
            "normalization": "per_image",
        },
        "classifier": {
            "pretrained": False,
            "small_input_stem": True,
            "width": TINY_WIDTH,
            "optimizer": "adam",
            "batch_size": 8,
            "epochs": 2,
        },
        "mask": {
            "pretrained": False,
            "width": TINY_WIDTH,
            "optimizer": "adam",
            "lr": 5e-3,
            "batch_size": 8,
            "epochs": 3,
        },
        "selection": {"num_visualized": 2},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config_from_dict(raw)
