"""Tiny study specs for the study tests (CPU, 32 px, a few seconds per trial)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from run_configs import TINY_WIDTH

from study.spec import Study, spec_from_dict
from wsol.config import set_nested


def tiny_spec_dict(data_root: Path, storage: Path, **overrides: Any) -> dict[str, Any]:
    """Method I rows full / no-reg on the tiny synthetic data. ``overrides`` replace spec
    fields by dotted path; pass them as ``**{"base.mask.epochs": 3}``."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "base": {
            "device": "cpu",
            "data": {
                "root": str(data_root),
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
                "batch_size": 16,
                "epochs": 1,
            },
            "mask": {
                "pretrained": False,
                "width": TINY_WIDTH,
                "optimizer": "adam",
                "lr": 1e-2,
                "batch_size": 16,
                "epochs": 2,
            },
            "selection": {"num_visualized": 2},
        },
        "rows": {"full": {}, "no-reg": {"mask.reg": False}},
        "search_space": {"seed": {"grid": [0]}},
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 1,
        "storage": str(storage),
    }
    for dotted, value in overrides.items():
        raw = set_nested(raw, dotted, value)
    return raw


def tiny_study(data_root: Path, storage: Path, **overrides: Any) -> Study:
    return spec_from_dict(tiny_spec_dict(data_root, storage, **overrides), source="tiny.yaml")


def copy_without_test_images(data_root: Path, target: Path) -> Path:
    """A copy of a CUB-layout dataset whose test-split image files are deleted."""
    shutil.copytree(data_root, target)
    images = dict(line.split() for line in (target / "images.txt").read_text().splitlines())
    for line in (target / "train_test_split.txt").read_text().splitlines():
        image_id, is_train = line.split()
        if is_train == "0":
            (target / "images" / images[image_id]).unlink()
    return target
