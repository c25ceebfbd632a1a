"""How a run uses its hardware: device, seeds, precision, memory format, compilation,
loader workers, the optimiser's fused kernels.

The ``compute`` section of the config (:class:`wsol.config.ComputeConfig`) chooses;
:func:`runtime_for` turns it into a :class:`Runtime` that the training loops ask to place
networks and batches and to open the autocast region of a step. Placement choices
(``channels_last``, ``cudnn_benchmark``, loader workers) change speed, not what is
computed, up to the order of floating-point sums; at CPU scale that order alone moves a
selected g by many points (README, Performance), so compare runs within one setting.
``precision: bf16`` changes the arithmetic: checked against fp32 in the same place.
``torch.compile`` is a :class:`Runtime` option for the benchmark only: it measured 1.03x
on the g step, not worth a config switch and minutes of compilation per trial.

``data.num_workers: auto`` sizes DataLoader workers to the CPUs this process may use
(:func:`cpu_share`: ``OMP_NUM_THREADS``, which Ray sets to a trial's CPU share, else the
CPU affinity): on CUDA every CPU but the one feeding the GPU loads data; on CPU none,
because the step itself uses every core and a worker process would take cores from it
(with the decoded-image cache a batch costs milliseconds in the main process).
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from wsol.models import freeze

if TYPE_CHECKING:
    from wsol.config import RunConfig

Precision = Literal["fp32", "bf16"]
MAX_AUTO_WORKERS = 8


def resolve_device(name: str) -> torch.device:
    """``config.device`` -> a torch device: 'auto' is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but torch sees no CUDA device")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def make_optimizer(
    parameters: Iterable[nn.Parameter], name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam or SGD over the trainable ``parameters``, with torch's fused kernel where every
    parameter allows it (one kernel over every parameter and its state instead of a dozen
    passes: the same update, faster; benchmarks/speed.py)."""
    params = [p for p in parameters if p.requires_grad]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)


LrScheduleName = Literal["step", "cosine", "onecycle"]
#: Schedules stepped after every optimizer step (the others after every epoch).
PER_STEP_SCHEDULES = ("cosine", "onecycle")


@dataclass
class LrSchedule:
    """A learning-rate schedule of :mod:`torch.optim.lr_scheduler` and when it steps.

    The loop calls :meth:`after_step` after every optimizer step and :meth:`after_epoch`
    after every epoch; the scheduler advances on one of the two (``per_step``).
    ``state_dict`` / ``load_state_dict`` are the scheduler's, for checkpoints."""

    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_step: bool

    def after_step(self) -> None:
        if self.per_step:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if not self.per_step:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def make_lr_schedule(
    optimizer: torch.optim.Optimizer,
    name: LrScheduleName,
    *,
    epochs: int,
    steps_per_epoch: int,
    lr_step: int,
    lr_gamma: float,
) -> LrSchedule:
    """The schedule ``name`` (``classifier.schedule``) over ``epochs`` epochs of
    ``steps_per_epoch`` optimizer steps, starting from the optimizer's lr.

    'step': ``StepLR(lr_step, lr_gamma)`` per epoch (the paper's). 'cosine':
    ``CosineAnnealingLR`` from lr to 0 over all ``epochs * steps_per_epoch`` steps.
    'onecycle': ``OneCycleLR`` with max_lr = lr over all steps (torch's defaults: 30 %
    warm-up from lr/25, cosine annealing to lr/2.5e5), its momentum cycling off so the
    optimizer's momentum (or Adam's beta1) stays as configured.
    """
    total_steps = epochs * steps_per_epoch
    if name == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, lr_step, lr_gamma)
        return LrSchedule(scheduler, per_step=False)
    if total_steps < 1:
        raise ValueError(f"schedule {name!r} needs at least one step, got {total_steps}")
    if name == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return LrSchedule(scheduler, per_step=True)
    if name == "onecycle":
        max_lr = optimizer.param_groups[0]["lr"]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total_steps, cycle_momentum=False
        )
        return LrSchedule(scheduler, per_step=True)
    raise ValueError(f"unknown schedule {name!r}; expected step, cosine or onecycle")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def cpu_share() -> int:
    """The CPUs this run should use: ``OMP_NUM_THREADS`` when set (Ray sets it to a
    trial's ``resources.cpu``), else :func:`available_cpus`."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    try:
        threads = int(configured)
    except ValueError:
        threads = 0
    return threads if threads > 0 else available_cpus()


def pins_memory(device: torch.device | str | None) -> bool:
    """Page-locked loader batches: only worth it when they are copied to a GPU."""
    return device is not None and torch.device(device).type == "cuda"


def resolve_num_workers(
    requested: int | str, device: torch.device | str | None = None, share: int | None = None
) -> int:
    """DataLoader workers for ``data.num_workers``: an int is used as is; ``"auto"`` gives
    ``min(share - 1, 8)`` on CUDA and 0 on CPU (see the module docstring)."""
    if isinstance(requested, int):
        return requested
    if requested != "auto":
        raise ValueError(f"data.num_workers must be a count or 'auto', got {requested!r}")
    device_type = torch.device(device).type if device is not None else "cpu"
    if device_type != "cuda":
        return 0
    share = share if share is not None else cpu_share()
    return max(0, min(share - 1, MAX_AUTO_WORKERS))


def cpu_supports_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without it torch
    emulates bf16, slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def check_precision(precision: Precision, device: torch.device) -> None:
    """Refuse bf16 on a CUDA device without bf16 (naming the field); warn on a CPU that
    would only emulate it."""
    if precision != "bf16":
        return
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"compute.precision=bf16, but CUDA device {torch.cuda.get_device_name(device)} "
                "does not support bf16; set compute.precision=fp32"
            )
    elif device.type == "cpu" and not cpu_supports_bf16():
        warnings.warn(
            "compute.precision=bf16 on a CPU without AVX512-BF16 or AMX: torch emulates bf16, "
            "which is slower than fp32; consider compute.precision=fp32",
            RuntimeWarning,
            stacklevel=2,
        )


@dataclass(frozen=True)
class Runtime:
    """Where and how a loop computes: the device, autocast precision, memory format and
    (benchmarks only) compilation of its networks. Build it with :func:`runtime_for`
    (from a config) or directly (benchmarks)."""

    device: torch.device
    precision: Precision = "fp32"
    channels_last: bool = False
    compile: bool = False
    # bf16: keep frozen networks' weights in bf16 (False: fp32, autocast re-casting them on
    # every forward; the benchmark's "before").
    cast_frozen: bool = True

    @property
    def pin_memory(self) -> bool:
        """Whether loader batches for this device are page-locked (:func:`pins_memory`)."""
        return pins_memory(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast region of a step (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images (B,3,H,W) on the device, in the memory format of the nets."""
        images = images.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def module(self, module: nn.Module) -> nn.Module:
        """``module`` on the device, in channels-last layout and compiled (in place, so its
        state dict keeps its keys) as configured; returns it."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        if self.compile:
            module.compile()
        return module

    def frozen(self, module: nn.Module) -> nn.Module:
        """A network that is not trained (f while g trains), placed as :meth:`module` (in
        place) and :func:`wsol.models.freeze`-d: eval mode, no parameter gradients, so the
        backward pass computes gradients for its input only, never for its weights.

        Under bf16 it returns a bf16 copy (the caller's network stays fp32): autocast
        caches casts only of weights that require gradients, so a frozen fp32 f would be
        re-cast on each of its forwards in every step."""
        module = freeze(self.module(module))
        if self.precision == "bf16" and self.cast_frozen:
            module = freeze(copy.deepcopy(module).to(torch.bfloat16))
        return module


def runtime_for(config: RunConfig, device: torch.device) -> Runtime:
    """The :class:`Runtime` of ``config.compute`` on ``device``; on CUDA also sets cuDNN's
    autotuner (``compute.cudnn_benchmark``, off when ``deterministic``)."""
    compute = config.compute
    check_precision(compute.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = compute.cudnn_benchmark and not config.deterministic
    return Runtime(
        device=device,
        precision=compute.precision,
        channels_last=compute.channels_last,
    )
