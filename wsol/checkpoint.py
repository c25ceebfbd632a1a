"""Saving and loading f (``classifier.pt``) and g (``mask.pt``, ``selected.pt``,
``last.pt``).

A g checkpoint holds what a resume needs, as torchvision's reference scripts do: the
model, the optimizer, the epoch, the config, and the loop's history and tracked maps so
far. f's checkpoint holds the model, the config it was trained with, the class names and
its per-epoch metrics.

Checkpoints are data: every load is ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers only and runs no code from the file, so a planted
``classifier.pt`` in a shared store cannot execute anything. Tracked maps are stored as
uint8 tensors for that reason.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from wsol.config import RunConfig, upgrade_stored_config
from wsol.methods import build_mask_generator, method_of
from wsol.models import MaskGenerator, freeze

CHECKPOINT_FORMAT = 2  # 2: loadable with weights_only (tracked maps as tensors)
#: The g checkpoint inside a study trial's checkpoint folder.
MASK_CHECKPOINT = "mask.pt"
#: Beside it, in the latest checkpoint folder only: what a resume needs besides g's weights.
RESUME_STATE = "resume.pt"
#: f's checkpoint file, in a run folder or the study's content-addressed store.
CLASSIFIER_CHECKPOINT = "classifier.pt"
#: How kept g weights are stored (loaded back in fp32 either way).
WeightsPrecision = Literal["fp32", "fp16"]


class CheckpointError(ValueError):
    """A file is not a checkpoint of the expected kind, or cannot be loaded safely."""


def _load(path: Path, kind: str, what: str) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded without running code from it; its ``kind`` must
    be ``kind``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a {what} checkpoint that can be loaded safely (it holds more "
            f"than tensors and plain data, is truncated, or was not written by wsol-study): "
            f"{first}"
        ) from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a {what} checkpoint (kind={found!r})")
    return state


def stored_config(state: dict[str, Any]) -> RunConfig:
    """The config a checkpoint (of f or g) was trained with, in today's schema."""
    return RunConfig.model_validate(upgrade_stored_config(state["config"]))


def save_classifier(
    path: Path,
    classifier: nn.Module,
    config: RunConfig,
    class_names: list[str],
    history: list[dict[str, Any]],
    training_state: dict[str, Any] | None = None,
) -> None:
    """classifier.pt: the model, the config it was trained with, class names, metrics.

    ``training_state`` (``optimizer`` and ``lr_scheduler`` state dicts, ``epoch``), which
    the f loop's per-epoch save passes, makes it a checkpoint f's training can resume from
    (:func:`load_classifier_state`); the final classifier.pt of a run leaves it out.

    For Method II's embedding network the model's state holds its training-split class
    means (buffers ``class_means``, ``class_counts``), which classify by nearest mean.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": "classifier",
        "model": classifier.state_dict(),
        "config": config.model_dump(mode="json"),
        "class_names": class_names,
        "history": history,
    }
    if training_state is not None:
        payload.update(
            optimizer=training_state["optimizer"],
            lr_scheduler=training_state["lr_scheduler"],
            epoch=training_state["epoch"],
        )
    torch.save(payload, path)


def load_classifier_state(path: Path) -> dict[str, Any]:
    """A per-epoch classifier.pt as the f loop's ``resume_state``: ``model``,
    ``optimizer``, ``lr_scheduler``, ``epoch``, ``history`` (and the rest of the file).
    CheckpointError when it holds no training state (a run's final classifier.pt)."""
    state = _load(path, "classifier", "classifier")
    if state.get("optimizer") is None or state.get("lr_scheduler") is None:
        raise CheckpointError(
            f"{path} holds f's weights only (a run's final classifier.pt), not the optimizer "
            "and schedule state a resume needs; resume from a per-epoch checkpoint"
        )
    return state


def load_classifier(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load classifier.pt -> (frozen f on ``device``, the checkpoint's metadata).

    f is a :class:`~wsol.models.Classifier` or an :class:`~wsol.models.EmbeddingNet`, as
    the stored config's ``mask.method`` says.
    """
    state = _load(path, "classifier", "classifier")
    config = stored_config(state)
    classifier = method_of(config).build_f(
        config.classifier.model_copy(update={"pretrained": False, "weights_path": None}),
        len(state["class_names"]),
    )
    classifier.load_state_dict(state["model"])
    return freeze(classifier.to(device)), state


def _write(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def _weights(mask_generator: MaskGenerator, precision: WeightsPrecision) -> dict[str, Any]:
    state = mask_generator.state_dict()
    if precision == "fp32":
        return state
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def _g_payload(
    model: dict[str, Any],
    precision: WeightsPrecision,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    config: RunConfig,
    history: list[dict[str, Any]],
    visuals: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "mask_generator",
        "model": model,
        "weights_precision": precision,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": None,
        "epoch": epoch,
        "config": config.model_dump(mode="json"),
        "history": history,
        "visuals": [_visual_to_tensors(visual) for visual in visuals],
    }


def save_mask_state(
    path: Path,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    config: RunConfig,
    history: list[dict[str, Any]],
    visuals: list[dict[str, Any]],
) -> None:
    """A g checkpoint holding everything a resume needs (model, optimizer, epoch, config,
    the history and tracked maps so far), written atomically."""
    model = mask_generator.state_dict()
    _write(path, _g_payload(model, "fp32", optimizer, epoch, config, history, visuals))


def save_mask_weights(
    path: Path,
    mask_generator: MaskGenerator,
    epoch: int,
    config: RunConfig,
    history: list[dict[str, Any]],
    precision: WeightsPrecision = "fp32",
) -> None:
    """A lean g checkpoint: g's weights (in ``precision``; loaded back in fp32), its epoch,
    config and history, and no optimizer state, so it can be scored but not resumed
    (about a third of :func:`save_mask_state`'s bytes in fp32, a sixth in fp16)."""
    model = _weights(mask_generator, precision)
    _write(path, _g_payload(model, precision, None, epoch, config, history, []))


def save_checkpoint_folder(
    folder: Path,
    mask_generator: MaskGenerator,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    config: RunConfig,
    history: list[dict[str, Any]],
    visuals: list[dict[str, Any]],
    precision: WeightsPrecision = "fp32",
) -> None:
    """A study trial's checkpoint folder: ``mask.pt``, g's weights (what evaluation
    scores, kept for selectable epochs), and ``resume.pt``, what only the latest folder
    needs (optimizer state, tracked maps; g's fp32 weights too when ``mask.pt`` holds
    them in fp16). Retention deletes ``resume.pt`` from superseded folders."""
    folder = Path(folder)
    save_mask_weights(folder / MASK_CHECKPOINT, mask_generator, epoch, config, history, precision)
    _write(
        folder / RESUME_STATE,
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "mask_generator_resume",
            "model": mask_generator.state_dict() if precision != "fp32" else None,
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": history,
            "visuals": [_visual_to_tensors(visual) for visual in visuals],
        },
    )


def load_checkpoint_folder(folder: Path) -> dict[str, Any]:
    """What :func:`save_checkpoint_folder` wrote, as the full state a resume needs
    (:func:`load_mask_state`'s shape)."""
    folder = Path(folder)
    weights = load_mask_state(folder / MASK_CHECKPOINT)
    resume = _load(folder / RESUME_STATE, "mask_generator_resume", "resume")
    if resume["epoch"] != weights["epoch"]:
        raise CheckpointError(
            f"{folder}: {RESUME_STATE} holds epoch {resume['epoch']} but {MASK_CHECKPOINT} "
            f"epoch {weights['epoch']}; the folder is not one checkpoint"
        )
    return {
        **weights,
        "model": resume["model"] if resume["model"] is not None else weights["model"],
        "weights_precision": "fp32",
        "optimizer": resume["optimizer"],
        "visuals": [_visual_from_tensors(visual) for visual in resume["visuals"]],
    }


def _visual_to_tensors(visual: dict[str, Any]) -> dict[str, Any]:
    return {**visual, "maps": torch.from_numpy(np.ascontiguousarray(visual["maps"]))}


def _visual_from_tensors(visual: dict[str, Any]) -> dict[str, Any]:
    maps = visual["maps"]
    return {**visual, "maps": maps.numpy() if isinstance(maps, torch.Tensor) else maps}


def load_mask_state(path: Path) -> dict[str, Any]:
    """Read a g checkpoint (on CPU; tracked maps as NumPy arrays again). A lean one
    (:func:`save_mask_weights`) has ``optimizer`` None and cannot be resumed."""
    state = _load(path, "mask_generator", "mask-generator")
    state["visuals"] = [_visual_from_tensors(visual) for visual in state.get("visuals", [])]
    return state


def load_mask_generator(
    path: Path, device: torch.device | str = "cpu", *, state: dict[str, Any] | None = None
) -> MaskGenerator:
    """g from a checkpoint, in eval mode on ``device`` (``state``: already loaded)."""
    state = state if state is not None else load_mask_state(path)
    mask_config = stored_config(state).mask
    mask_generator = build_mask_generator(
        mask_config.model_copy(update={"pretrained": False, "weights_path": None})
    )
    # fp16-stored weights are copied into g's fp32 parameters (load_state_dict casts).
    mask_generator.load_state_dict(state["model"])
    return mask_generator.to(device).eval()


def load_mask_generator_state(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[MaskGenerator, dict[str, Any]]:
    """(g in eval mode on ``device``, the checkpoint's full state: epoch, config, history)."""
    state = load_mask_state(path)
    return load_mask_generator(path, device, state=state), state
