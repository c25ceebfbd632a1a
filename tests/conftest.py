"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.data.synthetic import synthesize_cub


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the CUB layout: 3 classes, 12 train + 4 test each, 64 px.

    Shared by the whole session: tests must not modify it (copy it first).
    """
    return synthesize_cub(
        tmp_path_factory.mktemp("synthetic") / "cub",
        num_classes=3,
        train_per_class=12,
        test_per_class=4,
        image_size=64,
        seed=0,
    )
