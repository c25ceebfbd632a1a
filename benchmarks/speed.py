"""Speed: each training step against this machine's limit, and the levers that close the gap.

    python benchmarks/speed.py [--out runs/bench-speed/speed.json] [--smoke]
                               [--sizes 64 96 224] [--skip-study] [--compile]

Everything is measured in one process run, so ratios hold on a noisy machine (the load
average is recorded with every section; on a shared machine, run it when it is quiet):

1. limit      dense matrix-multiply throughput (FLOP/s) in fp32 and bf16, on the CPU and,
              when present, on CUDA: the best this machine does;
2. flops      FLOPs of one g step (g forward + backward, f on I without gradients, f on
              I*M with gradients to its input only) and of one f step, counted with
              torch.utils.flop_counter.FlopCounterMode;
3. steps      images/s and FLOP/s of both steps at each size in fp32 and bf16 autocast,
              and their ratio to the limit (``wsol.methods.method1_train_step`` and
              ``classifier_train_step``: the code the training loops run);
4. levers     each lever on and off: channels_last, f frozen (no parameter gradients),
              f(I) under no_grad, normalisation statistics reused for I*M, DataLoader
              workers on CPU, torch.compile (``--compile``), bf16 (the steps table);
5. data       the data pipeline alone at each size, decoding every epoch and from the
              decoded-image cache, against what the g step consumes;
6. study      a smoke-scale trial (ablations/smoke.yaml's settings, one row) under Ray
              Tune with MLflow logging (``study.runner.run_study``) against the same
              ``wsol.loop.train_mask`` loop called directly;
7. profile    torch.profiler's top operators of the g step (what bounds it);
8. targets    the issue's targets, met or missed and by how much.

The tables are printed as Markdown and everything goes to ``--out`` (JSON). ``--smoke``
runs every section at toy sizes in well under a minute, to check the plumbing only.
CUDA sections run only where torch sees a GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run this checkout's code, whatever `wsol` the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.utils.flop_counter import FlopCounterMode

from study.tables import markdown_table
from wsol.checkpoint import CLASSIFIER_CHECKPOINT, save_classifier
from wsol.compute import Runtime, available_cpus, cpu_supports_bf16
from wsol.config import RunConfig, load_config
from wsol.data import make_dataset, read_training_splits
from wsol.data.synthetic import synthesize_cub
from wsol.data.transforms import normalize
from wsol.loaders import make_loader
from wsol.loop import train_classifier, train_mask
from wsol.losses import method1_loss
from wsol.methods import classifier_train_step, method1_train_step, method_of
from wsol.models import Classifier, MaskGenerator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("runs/bench-speed/speed.json")
DEFAULT_CONFIG = REPO_ROOT / "configs" / "synthetic_cpu.yaml"
SMOKE_SPEC = REPO_ROOT / "ablations" / "smoke.yaml"
PRECISIONS = ("fp32", "bf16")
TARGET_STEP_FRACTION = 0.40
TARGET_PIPELINE_RATIO = 2.0
TARGET_OVERHEAD = 0.05
TARGET_BF16_STEP_FRACTION = 0.35

Log = Callable[[str], None]


@dataclass(frozen=True)
class Scale:
    """How long each measurement runs."""

    sizes: tuple[int, ...]
    batch_size: int
    matmul_sizes: tuple[int, ...]
    matmul_seconds: float
    step_seconds: float
    min_steps: int
    warmup_steps: int
    pipeline_images: int
    pipeline_source_px: int
    study_epochs: int
    study_data: dict[str, int]
    study_crop: int
    profile_steps: int
    lever_rounds: int


FULL = Scale(
    sizes=(64, 96, 224),
    batch_size=16,
    matmul_sizes=(1024, 2048, 4096),
    matmul_seconds=2.0,
    step_seconds=4.0,
    min_steps=3,
    warmup_steps=2,
    pipeline_images=256,
    pipeline_source_px=448,
    study_epochs=8,
    study_data={},  # data/synthetic: the smoke spec's dataset
    study_crop=64,
    profile_steps=3,
    lever_rounds=5,
)
SMOKE = Scale(
    sizes=(32, 64),
    batch_size=4,
    matmul_sizes=(256,),
    matmul_seconds=0.2,
    step_seconds=0.0,
    min_steps=1,
    warmup_steps=1,
    pipeline_images=16,
    pipeline_source_px=64,
    study_epochs=1,
    study_data={"num_classes": 3, "train_per_class": 8, "test_per_class": 2, "image_size": 48},
    study_crop=32,
    profile_steps=1,
    lever_rounds=1,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the g and f training steps against this machine's matrix-multiply "
        "limit, the data pipeline, and Ray Tune + MLflow overhead; print tables, write JSON."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the plumbing")
    parser.add_argument("--sizes", type=int, nargs="+", help="crop sizes (multiples of 32)")
    parser.add_argument("--batch-size", type=int, help="images per step (default 16)")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="smoke data")
    parser.add_argument("--skip-study", action="store_true", help="skip the Ray Tune section")
    parser.add_argument(
        "--compile", action="store_true", help="also measure torch.compile (minutes to compile)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--direct-trial", nargs=2, type=Path, metavar=("CONFIG", "RESULT"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- helpers


def load1() -> float:
    return os.getloadavg()[0]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    function: Callable[[], Any],
    device: torch.device,
    *,
    warmup: int,
    min_runs: int,
    min_seconds: float,
) -> list[float]:
    """Seconds of each run of ``function`` after ``warmup`` runs: at least ``min_runs``
    runs and ``min_seconds`` in all."""
    for _ in range(warmup):
        function()
    synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - started < min_seconds:
        begin = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - begin)
    return times


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus_available": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_supports_bf16(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": list(os.getloadavg()),
    }


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    return markdown_table(header, [[cell(v) for v in row] for row in rows]).rstrip("\n")


# --------------------------------------------------------------------------- 1. limit


def matmul_limit(
    device: torch.device, dtype: torch.dtype, sizes: Sequence[int], seconds: float
) -> dict[str, Any]:
    """Best FLOP/s of an n x n @ n x n matmul over ``sizes`` (2 n^3 FLOPs each)."""
    best: dict[str, Any] = {"flops_per_s": 0.0}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        times = timed(lambda a=a, b=b: a @ b, device, warmup=2, min_runs=3, min_seconds=seconds)
        rate = 2 * n**3 / min(times)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "n": n, "seconds": min(times)}
    return best


def measure_limits(scale: Scale, log: Log) -> dict[str, dict[str, Any]]:
    limits: dict[str, dict[str, Any]] = {}
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            sizes = scale.matmul_sizes if device.type == "cpu" else (4096, 8192)
            result = matmul_limit(device, dtype, sizes, scale.matmul_seconds)
            result["load1"] = load1()
            limits[f"{device.type}/{precision}"] = result
            log(f"limit {device.type} {precision}: {result['flops_per_s'] / 1e9:.0f} GFLOP/s")
    return limits


# --------------------------------------------------------------------------- 2-3. steps


def step_config(base: RunConfig, size: int) -> RunConfig:
    """The CPU-scale config at crop ``size`` (resize 9/8 of it): f with the small-input
    stem below 128 px, as configs/synthetic_cpu.yaml; the paper's stem at 224 px."""
    data = base.data.model_copy(update={"crop": size, "resize": size * 9 // 8})
    classifier = base.classifier.model_copy(update={"small_input_stem": size < 128})
    return base.model_copy(update={"data": data, "classifier": classifier})


@dataclass
class Nets:
    classifier: Classifier
    mask_generator: MaskGenerator
    mask_optimizer: torch.optim.Optimizer
    trainable_classifier: Classifier
    classifier_optimizer: torch.optim.Optimizer


def build_nets(
    config: RunConfig,
    runtime: Runtime,
    num_classes: int = 4,
    *,
    frozen_f: bool = True,
    fused: bool | None = None,
) -> Nets:
    """f, g and their optimizers as the training loops build them (``Runtime.frozen`` f,
    fused Adam where torch has it). ``frozen_f=False``: f in eval mode but not frozen, so
    the backward pass also computes its weights' gradients (the lever's "before")."""
    torch.manual_seed(0)
    fused = fused_optimizer_supported(runtime.device) if fused is None else fused
    classifier = method_of(config).build_f(config.classifier, num_classes)
    classifier = runtime.frozen(classifier) if frozen_f else runtime.module(classifier).eval()
    mask_generator = runtime.module(MaskGenerator(config.mask.encoder))
    trainable = runtime.module(method_of(config).build_f(config.classifier, num_classes))
    return Nets(
        classifier=classifier,
        mask_generator=mask_generator,
        mask_optimizer=torch.optim.Adam(
            mask_generator.parameters(), lr=config.mask.lr, fused=fused
        ),
        trainable_classifier=trainable,
        classifier_optimizer=torch.optim.Adam(
            trainable.parameters(), lr=config.classifier.lr, fused=fused
        ),
    )


def batch_for(config: RunConfig, batch_size: int, num_classes: int = 4):
    generator = torch.Generator().manual_seed(0)
    size = config.data.crop
    images = torch.rand(batch_size, 3, size, size, generator=generator)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
    return images, labels


def g_step_function(config: RunConfig, nets: Nets, runtime: Runtime, images: torch.Tensor):
    return lambda: method1_train_step(
        nets.classifier, nets.mask_generator, nets.mask_optimizer, images, config, runtime
    )


def f_step_function(
    config: RunConfig, nets: Nets, runtime: Runtime, images: torch.Tensor, labels: torch.Tensor
):
    return lambda: classifier_train_step(
        nets.trainable_classifier,
        nets.classifier_optimizer,
        images,
        labels,
        config.data.normalization,
        runtime,
    )


def count_flops(function: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


def measure_steps(
    base: RunConfig,
    scale: Scale,
    device: torch.device,
    limits: dict[str, dict[str, Any]],
    log: Log,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """FLOPs per step, and the achieved rate of both steps at every size, precision and
    memory format (NCHW, channels_last)."""
    flops: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    best_limit = max(v["flops_per_s"] for k, v in limits.items() if k.startswith(device.type))
    for size in scale.sizes:
        config = step_config(base, size)
        images, labels = batch_for(config, scale.batch_size)
        for precision in PRECISIONS:
            for channels_last in (False, True):
                runtime = Runtime(device=device, precision=precision, channels_last=channels_last)
                nets = build_nets(config, runtime)
                steps = {
                    "g": g_step_function(config, nets, runtime, images),
                    "f": f_step_function(config, nets, runtime, images, labels),
                }
                if str(size) not in flops:
                    flops[str(size)] = {name: count_flops(fn) for name, fn in steps.items()}
                for name, function in steps.items():
                    times = timed(
                        function,
                        device,
                        warmup=scale.warmup_steps,
                        min_runs=scale.min_steps,
                        min_seconds=scale.step_seconds,
                    )
                    seconds = statistics.median(times)
                    step_flops = flops[str(size)][name]
                    limit = limits[f"{device.type}/{precision}"]["flops_per_s"]
                    row = {
                        "step": name,
                        "size": size,
                        "precision": precision,
                        "channels_last": channels_last,
                        "batch_size": scale.batch_size,
                        "seconds_per_step": seconds,
                        "min_seconds_per_step": min(times),
                        "images_per_s": scale.batch_size / seconds,
                        "flops_per_step": step_flops,
                        "flops_per_s": step_flops / seconds,
                        "fraction_of_limit": step_flops / seconds / limit,
                        "fraction_of_best_limit": step_flops / seconds / best_limit,
                        "runs": len(times),
                        "load1": load1(),
                    }
                    rows.append(row)
                    log(
                        f"{name} step {size}px {precision} {fmt(channels_last)}: "
                        f"{seconds * 1000:.0f} ms, {row['images_per_s']:.1f} img/s, "
                        f"{row['flops_per_s'] / 1e9:.0f} GFLOP/s "
                        f"({row['fraction_of_limit']:.0%} of the {precision} limit), "
                        f"load {row['load1']:.2f}"
                    )
    return flops, rows


def fmt(channels_last: bool) -> str:
    return "channels_last" if channels_last else "NCHW"


def best_row(rows: list[dict[str, Any]], step: str, size: int, **fixed: Any) -> dict[str, Any]:
    """The fastest measured configuration of ``step`` at ``size`` (optionally with some
    fields fixed, e.g. precision='fp32')."""
    candidates = [
        r
        for r in rows
        if r["step"] == step
        and r["size"] == size
        and all(r[key] == value for key, value in fixed.items())
    ]
    return max(candidates, key=lambda r: r["images_per_s"])


def best_runtime(rows: list[dict[str, Any]], size: int, device: torch.device) -> Runtime:
    row = best_row(rows, "g", size)
    return Runtime(device=device, precision=row["precision"], channels_last=row["channels_last"])


# --------------------------------------------------------------------------- 4. levers


def naive_g_step(
    nets: Nets,
    images: torch.Tensor,
    config: RunConfig,
    runtime: Runtime,
    *,
    target_under_no_grad: bool,
    reuse_normalized: bool,
):
    """The g step with one lever released, to measure what that lever saves."""

    def step() -> None:
        batch = runtime.images(images)
        normalization = config.data.normalization
        with runtime.autocast():
            normalized = normalize(batch, normalization)
            if target_under_no_grad:
                with torch.no_grad():
                    target = nets.classifier(normalized)
            else:
                target = nets.classifier(normalized)
            masks = nets.mask_generator(normalized).float()
            terms = method1_loss(
                nets.classifier,
                batch,
                masks,
                target,
                lam=config.mask.lam,
                use_ce=config.mask.ce,
                use_reg=config.mask.reg,
                normalization=normalization,
                apply_to=config.mask.apply_to,
                normalized=normalized if reuse_normalized else None,
            )
        nets.mask_optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        nets.mask_optimizer.step()

    return step


def alternate(
    before: Callable[[], Any],
    after: Callable[[], Any],
    device: torch.device,
    *,
    warmup: int,
    rounds: int,
) -> tuple[float, float]:
    """Median seconds of ``before`` and ``after``, run alternately (A B A B ...), so that a
    change of the machine's load hits both alike."""
    for _ in range(warmup):
        before()
        after()
    synchronize(device)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for index, function in enumerate((before, after)):
            begin = time.perf_counter()
            function()
            synchronize(device)
            times[index].append(time.perf_counter() - begin)
    return statistics.median(times[0]), statistics.median(times[1])


def lever_row(name: str, size: int, setting: str, before: float, after: float, **extra) -> dict:
    return {
        "lever": name,
        "size": size,
        "setting": setting,
        "before_s": before,
        "after_s": after,
        "speedup": before / after,
        "load1": load1(),
        **extra,
    }


def fused_optimizer_supported(device: torch.device) -> bool:
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def measure_levers(
    base: RunConfig,
    scale: Scale,
    device: torch.device,
    step_rows: list[dict[str, Any]],
    compile_too: bool,
    log: Log,
) -> list[dict[str, Any]]:
    """Each lever off (before) and on (after), g step seconds, run alternately."""
    rows: list[dict[str, Any]] = []
    sizes = sorted({scale.sizes[0], scale.sizes[-1]})
    for size in sizes:
        config = step_config(base, size)
        images, _ = batch_for(config, scale.batch_size)
        best = best_runtime(step_rows, size, device)
        setting = f"{best.precision} {fmt(best.channels_last)}"
        first = len(rows)

        def compare(before, after, *, rounds: int = scale.lever_rounds) -> tuple[float, float]:
            return alternate(before, after, device, warmup=scale.warmup_steps, rounds=rounds)

        # bf16 autocast: fp32 (its best memory format) against bf16 (its best)
        fp32_row = best_row(step_rows, "g", size, precision="fp32")
        bf16_row = best_row(step_rows, "g", size, precision="bf16")
        runtimes = [
            Runtime(device, row["precision"], row["channels_last"]) for row in (fp32_row, bf16_row)
        ]
        nets_pair = [build_nets(config, runtime) for runtime in runtimes]
        before, after = compare(
            *(
                g_step_function(config, nets, runtime, images)
                for nets, runtime in zip(nets_pair, runtimes, strict=True)
            )
        )
        rows.append(
            lever_row(
                "bf16 autocast (fp32 -> bf16, each in its best memory format)",
                size,
                f"{fmt(fp32_row['channels_last'])} -> {fmt(bf16_row['channels_last'])}",
                before,
                after,
            )
        )
        del nets_pair

        # bf16: frozen f's weights cast once (a bf16 copy) against autocast re-casting
        # fp32 weights on each of f's forwards
        bf16 = Runtime(device, "bf16", bf16_row["channels_last"])
        recast = Runtime(device, "bf16", bf16_row["channels_last"], cast_frozen=False)
        nets_pair = [build_nets(config, runtime) for runtime in (recast, bf16)]
        before, after = compare(
            g_step_function(config, nets_pair[0], recast, images),
            g_step_function(config, nets_pair[1], bf16, images),
        )
        rows.append(
            lever_row(
                "bf16: f's weights cast once (vs autocast re-casting them every forward)",
                size,
                f"bf16 {fmt(bf16_row['channels_last'])}",
                before,
                after,
            )
        )
        del nets_pair

        # channels_last, in the best precision
        runtimes = [Runtime(device, best.precision, flag) for flag in (False, True)]
        nets_pair = [build_nets(config, runtime) for runtime in runtimes]
        before, after = compare(
            *(
                g_step_function(config, nets, runtime, images)
                for nets, runtime in zip(nets_pair, runtimes, strict=True)
            )
        )
        rows.append(lever_row("channels_last (NCHW -> NHWC)", size, best.precision, before, after))
        del nets_pair

        nets = build_nets(config, best)
        step = g_step_function(config, nets, best, images)
        # f(I) under no_grad; the normalised batch reused for I*M
        before, after = compare(
            naive_g_step(
                nets, images, config, best, target_under_no_grad=False, reuse_normalized=True
            ),
            step,
        )
        rows.append(lever_row("f(I) once per batch under no_grad", size, setting, before, after))
        before, after = compare(
            naive_g_step(
                nets, images, config, best, target_under_no_grad=True, reuse_normalized=False
            ),
            step,
        )
        rows.append(lever_row("I*M reuses the normalised batch", size, setting, before, after))

        # f frozen: without it, the backward also computes f's weight gradients
        unfrozen = build_nets(config, best, frozen_f=False)
        before, after = compare(g_step_function(config, unfrozen, best, images), step)
        rows.append(lever_row("f frozen (no parameter gradients)", size, setting, before, after))
        del unfrozen

        # fused Adam: one pass over g's parameters and both moments instead of ~10
        if fused_optimizer_supported(device):
            unfused = build_nets(config, best, fused=False)
            before, after = compare(g_step_function(config, unfused, best, images), step)
            rows.append(lever_row("fused Adam (g's optimizer)", size, setting, before, after))
            del unfused

        if compile_too:
            compiled_runtime = Runtime(device, best.precision, best.channels_last, compile=True)
            compiled = build_nets(config, compiled_runtime)
            function = g_step_function(config, compiled, compiled_runtime, images)
            started = time.perf_counter()
            function()
            compile_seconds = time.perf_counter() - started
            before, after = compare(step, function)
            rows.append(
                lever_row(
                    "torch.compile (f and g)",
                    size,
                    setting,
                    before,
                    after,
                    compile_s=compile_seconds,
                )
            )
        for row in rows[first:]:
            log(
                f"lever {row['lever']} at {size}px ({row['setting']}): "
                f"{row['before_s'] * 1000:.0f} -> {row['after_s'] * 1000:.0f} ms "
                f"(x{row['speedup']:.2f}), load {row['load1']:.2f}"
            )
    return rows


# --------------------------------------------------------------------------- 5. data


def pipeline_dataset(out: Path, scale: Scale, log: Log) -> Path:
    """A synthetic CUB-layout dataset whose JPEGs are about CUB's size (448 px), so that
    decoding costs what it does on real data (written once, kept under ``out``)."""
    root = out / f"pipeline-data-{scale.pipeline_source_px}px-{scale.pipeline_images}"
    if not (root / "images.txt").is_file():
        shutil.rmtree(root, ignore_errors=True)
        per_class = max(2, scale.pipeline_images // 4)
        log(f"writing {4 * per_class} {scale.pipeline_source_px}px images to {root}")
        synthesize_cub(
            root,
            num_classes=4,
            train_per_class=per_class,
            test_per_class=0,
            image_size=scale.pipeline_source_px,
            seed=0,
        )
    return root


def pipeline_rate(dataset, batch_size: int, num_workers: int, epochs: int = 2) -> float:
    """Images/s a DataLoader delivers (batches collated, training transform)."""
    count = 0
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loader = make_loader(
            dataset, batch_size, train=True, seed=0, epoch=epoch, num_workers=num_workers
        )
        for batch in loader:
            count += len(batch["image"])
    return count / (time.perf_counter() - started)


def measure_pipeline(
    base: RunConfig,
    scale: Scale,
    out: Path,
    step_rows: list[dict[str, Any]],
    log: Log,
) -> list[dict[str, Any]]:
    root = pipeline_dataset(out.parent, scale, log)
    cache_dir = out.parent / "decoded-image-cache"
    rows = []
    for size in scale.sizes:
        config = step_config(base, size)
        data = config.data.model_copy(
            update={"root": root, "cache_dir": cache_dir, "val_fraction": 0.1}
        )
        splits = read_training_splits(data)
        uncached = make_dataset(
            splits.train, data.model_copy(update={"cache": False}), train=True, seed=0
        )
        started = time.perf_counter()
        shutil.rmtree(cache_dir, ignore_errors=True)
        cached = make_dataset(
            splits.train, data.model_copy(update={"cache": True}), train=True, seed=0
        )
        build_seconds = time.perf_counter() - started
        rate_uncached = pipeline_rate(uncached, scale.batch_size, 0)
        rate_cached = pipeline_rate(cached, scale.batch_size, 0)
        best = best_row(step_rows, "g", size)
        consumed = best["images_per_s"]
        row = {
            "size": size,
            "source_px": scale.pipeline_source_px,
            "images": len(splits.train),
            "uncached_images_per_s": rate_uncached,
            "cached_images_per_s": rate_cached,
            "cache_build_s": build_seconds,
            "cache_mb": cached.cache.nbytes / 1e6 if cached.cache else 0.0,
            "g_step_images_per_s": consumed,
            "g_step_setting": f"{best['precision']} {fmt(best['channels_last'])}",
            "uncached_ratio": rate_uncached / consumed,
            "cached_ratio": rate_cached / consumed,
            "load1": load1(),
        }
        rows.append(row)
        log(
            f"data {size}px: decoding {rate_uncached:.0f} img/s, cached {rate_cached:.0f} img/s "
            f"(built in {build_seconds:.1f}s); g step consumes {consumed:.1f} img/s"
        )
    shutil.rmtree(cache_dir, ignore_errors=True)
    return rows


def measure_workers(
    base: RunConfig, scale: Scale, device: torch.device, step_rows, data_root: Path, log: Log
) -> list[dict[str, Any]]:
    """Loader + g step over a few batches with 1 DataLoader worker and with 0 (what
    ``num_workers: auto`` picks on CPU), decoding every epoch and from the cache."""
    size = scale.sizes[0]
    config = step_config(base, size)
    runtime = best_runtime(step_rows, size, device)
    cache_dir = data_root.parent / "speed-cache"
    rows = []
    for cached in (False, True):
        data = config.data.model_copy(
            update={"root": data_root, "cache": cached, "cache_dir": cache_dir}
        )
        run_config = config.model_copy(update={"data": data})
        splits = read_training_splits(data)
        dataset = make_dataset(splits.train, data, train=True, seed=0)
        batches = max(2, min(12, len(dataset) // scale.batch_size - 1))
        results = {}
        for workers in (1, 0):
            nets = build_nets(run_config, runtime)
            loader = make_loader(
                dataset, scale.batch_size, train=True, seed=0, epoch=1, num_workers=workers
            )
            iterator = iter(loader)

            def train_on(
                batch: dict[str, Any], nets: Nets = nets, run_config: RunConfig = run_config
            ) -> None:
                method1_train_step(
                    nets.classifier,
                    nets.mask_generator,
                    nets.mask_optimizer,
                    batch["image"],
                    run_config,
                    runtime,
                )

            train_on(next(iterator))  # warm-up
            started = time.perf_counter()
            done = 0
            for batch in itertools.islice(iterator, batches):
                train_on(batch)
                done += 1
            results[workers] = (time.perf_counter() - started) / max(done, 1)
            del iterator, loader
        source = "cached" if cached else "decoding"
        rows.append(
            lever_row(
                f"DataLoader workers 1 -> 0 (auto on CPU), loader + g step, {source}",
                size,
                f"{runtime.precision} {fmt(runtime.channels_last)}",
                results[1],
                results[0],
            )
        )
        log(
            f"lever workers at {size}px, {source}: 1 worker {results[1] * 1000:.0f} ms/batch, "
            f"0 workers {results[0] * 1000:.0f} ms/batch"
        )
    shutil.rmtree(cache_dir, ignore_errors=True)
    return rows


# --------------------------------------------------------------------------- 6. study


def smoke_base(args: argparse.Namespace, scale: Scale, work: Path, log: Log) -> dict[str, Any]:
    """ablations/smoke.yaml's base config, on its data (or, with --smoke, a toy set)."""
    import yaml

    base = yaml.safe_load(SMOKE_SPEC.read_text())["base"]
    if scale.study_data:
        root = synthesize_cub(work / "data", seed=0, **scale.study_data)
        base["data"].update(resize=scale.study_crop * 5 // 4, crop=scale.study_crop)
        base["mask"].update(batch_size=4)
        base["classifier"].update(batch_size=8)
    else:
        root = args.data
        if not (root / "images.txt").is_file():
            log(f"{root} is missing: writing it as `wsol synth {root} --seed 0` does")
            synthesize_cub(root, seed=0)
    base["data"]["root"] = str(Path(root).resolve())
    base["data"]["cache_dir"] = str((work / "decoded-image-cache").resolve())
    base["mask"]["epochs"] = scale.study_epochs
    base["device"] = "cpu" if not torch.cuda.is_available() else "auto"
    return base


def direct_trial(config_path: Path, result_path: Path) -> int:
    """The trial's work without Ray Tune or MLflow, in a fresh process (``--direct-trial``):
    load f, read the splits, ``train_mask``; writes the loop's seconds and S-scores."""
    from wsol.checkpoint import load_classifier
    from wsol.compute import resolve_device

    started = time.perf_counter()
    config = RunConfig.model_validate_json(config_path.read_text())
    classifier, _ = load_classifier(config.classifier.checkpoint, resolve_device(config.device))
    splits = read_training_splits(config.data)
    loop_started = time.perf_counter()
    result = train_mask(config, classifier, splits)
    finished = time.perf_counter()
    payload = {
        "setup_s": loop_started - started,
        "loop_s": finished - loop_started,
        "s_scores": [row["val_s_score"] for row in result.history],
    }
    result_path.write_text(json.dumps(payload))
    return 0


def measure_study(args: argparse.Namespace, scale: Scale, out_dir: Path, log: Log) -> dict:
    """A smoke-scale trial's wall time under Ray Tune + MLflow (from Tune starting the
    trial to its completion) against a fresh Python process that runs the same
    ``train_mask`` loop directly (from process start to exit), with the same f."""
    import ray
    from ray import tune

    from study.runner import run_study
    from study.spec import spec_from_dict
    from wsol.config import config_from_dict

    work = out_dir / "study"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = smoke_base(args, scale, work, log)
    config = config_from_dict(base)
    splits = read_training_splits(config.data)
    f_config = config.model_copy(
        update={"classifier": config.classifier.model_copy(update={"epochs": 1})}
    )
    log("study: training f for 1 epoch (shared by both runs)")
    classifier, history = train_classifier(f_config, splits)
    classifier_path = (work / CLASSIFIER_CHECKPOINT).resolve()
    save_classifier(classifier_path, classifier, f_config, splits.class_names, history)
    base["classifier"]["checkpoint"] = str(classifier_path)
    config = config_from_dict(base)

    config_path, result_path = work / "direct-config.json", work / "direct-result.json"
    config_path.write_text(config.model_dump_json())
    load_direct = load1()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--direct-trial", str(config_path), str(result_path)],
        check=True,
    )
    direct_s = time.perf_counter() - started
    direct = json.loads(result_path.read_text())
    log(
        f"study: train_mask called directly in a fresh process: {direct_s:.1f}s "
        f"(loop {direct['loop_s']:.1f}s) for {len(direct['s_scores'])} epochs"
    )

    class TrialClock(tune.Callback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.finished: float | None = None
            self.trainable_s: float | None = None

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self.started = time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.finished = time.perf_counter()
            self.trainable_s = (trial.last_result or {}).get("time_total_s")

    spec = {
        "name": "speed",
        "base": base,
        "rows": {"full": {}},
        "search_space": {"seed": {"grid": [config.seed]}},
        "search": {"algorithm": "grid", "num_samples": 1},
        "trial_selection": {"metric": "val_s_score", "mode": "max"},
        "resources": {"cpu": available_cpus(), "gpu": 1 if torch.cuda.is_available() else 0},
        "max_failures": 0,
        "keep_checkpoints": 2,
        "storage": str((work / "studies").resolve()),
    }
    study = spec_from_dict(spec, source="benchmarks/speed.py (smoke.yaml's base, one row)")
    clock = TrialClock()
    load_study = load1()
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - started
    messages: list[str] = []
    try:
        begun = time.perf_counter()
        outcome = run_study(study, callbacks=[clock], log=messages.append)
        study_s = time.perf_counter() - begun
    finally:
        ray.shutdown()
    if clock.started is None or clock.finished is None:
        raise RuntimeError("the study's trial never started or finished:\n" + "\n".join(messages))
    trial_s = clock.finished - clock.started
    same = [round(v, 6) for v in direct["s_scores"]] == [
        round(r["val_s_score"], 6) for r in outcome.summaries[0].history
    ]
    result = {
        "epochs": len(direct["s_scores"]),
        "direct_s": direct_s,
        "direct_loop_s": direct["loop_s"],
        "direct_setup_s": direct["setup_s"],
        "trial_s": trial_s,
        "trainable_s": clock.trainable_s,
        "study_s": study_s,
        "ray_init_s": ray_init_s,
        "trial_overhead": (trial_s - direct_s) / trial_s,
        "trial_overhead_vs_loop": (trial_s - direct["loop_s"]) / trial_s,
        "study_overhead": (study_s + ray_init_s - direct_s) / (study_s + ray_init_s),
        "same_s_scores": same,
        "load1_direct": load_direct,
        "load1_study": load_study,
        "load1_end": load1(),
    }
    log(
        f"study: trial {trial_s:.1f}s under Tune (trainable {clock.trainable_s or 0:.1f}s), "
        f"study {study_s:.1f}s + ray.init {ray_init_s:.1f}s; direct {direct_s:.1f}s; "
        f"per-trial overhead {result['trial_overhead']:.1%}"
    )
    return result


# --------------------------------------------------------------------------- 7. profile


def profile_g_step(
    base: RunConfig, scale: Scale, device: torch.device, step_rows, log: Log
) -> dict[str, Any]:
    """torch.profiler's top operators (self time) of the g step at the smallest and
    largest size, in the step's best precision."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    profiles: dict[str, Any] = {}
    for size in sorted({scale.sizes[0], scale.sizes[-1]}):
        config = step_config(base, size)
        runtime = best_runtime(step_rows, size, device)
        precision = f"{runtime.precision} {fmt(runtime.channels_last)}"
        nets = build_nets(config, runtime)
        images, _ = batch_for(config, scale.batch_size)
        step = g_step_function(config, nets, runtime, images)
        step()
        with profile(activities=activities) as profiler:
            for _ in range(scale.profile_steps):
                step()
            synchronize(device)
        averages = profiler.key_averages()
        attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        total = sum(getattr(event, attribute) for event in averages) or 1.0
        top = sorted(averages, key=lambda event: getattr(event, attribute), reverse=True)[:10]
        profiles[str(size)] = {
            "precision": precision,
            "top_operators": [
                {
                    "name": event.key,
                    "self_ms_per_step": getattr(event, attribute) / 1000 / scale.profile_steps,
                    "share": getattr(event, attribute) / total,
                    "calls_per_step": event.count / scale.profile_steps,
                }
                for event in top
            ],
        }
        names = ", ".join(
            f"{op['name']} {op['share']:.0%}" for op in profiles[str(size)]["top_operators"][:4]
        )
        log(f"profile g step {size}px {precision}: {names}")
    return profiles


# --------------------------------------------------------------------------- 8. targets


def overhead_verdict(overhead: float) -> str | None:
    """Why an overhead figure cannot be a measurement of overhead, or None: a trial under
    Tune cannot take less time than the same loop run directly, and not all of its time."""
    if not math.isfinite(overhead) or overhead < 0:
        return (
            f"measurement error: {overhead:.1%} is impossible (the trial under Tune took less "
            "than the same loop alone; the machine was not quiet or the runs differ)"
        )
    if overhead >= 1:
        return f"measurement error: {overhead:.1%} of a trial cannot be overhead"
    return None


def evaluate_targets(
    steps: list[dict[str, Any]],
    pipeline: list[dict[str, Any]],
    study: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    targets = []
    for size in sorted({row["size"] for row in steps}):
        row = best_row(steps, "g", size)
        fp32 = best_row(steps, "g", size, precision="fp32")
        setting = f"{row['precision']} {fmt(row['channels_last'])}"
        targets.append(
            {
                "target": f"g step at {size}px >= 40% of the matmul limit, fastest setting "
                f"({setting}) against the limit of its precision",
                "value": row["fraction_of_limit"],
                "goal": TARGET_STEP_FRACTION,
                "met": row["fraction_of_limit"] >= TARGET_STEP_FRACTION,
                "note": f"{row['fraction_of_best_limit']:.0%} of the machine's best (bf16) "
                f"limit; fastest fp32 setting: {fp32['fraction_of_limit']:.0%} of the fp32 limit",
            }
        )
    if steps:
        size = max(row["size"] for row in steps)
        bf16 = best_row(steps, "g", size, precision="bf16")
        targets.append(
            {
                "target": f"bf16 g step at {size}px >= 35% of the bf16 matmul limit",
                "value": bf16["fraction_of_limit"],
                "goal": TARGET_BF16_STEP_FRACTION,
                "met": bf16["fraction_of_limit"] >= TARGET_BF16_STEP_FRACTION,
                "note": f"{fmt(bf16['channels_last'])}; f's weights cast to bf16 once",
            }
        )
    for row in pipeline:
        targets.append(
            {
                "target": f"data pipeline at {row['size']}px >= 2x the g step (cached)",
                "value": row["cached_ratio"],
                "goal": TARGET_PIPELINE_RATIO,
                "met": row["cached_ratio"] >= TARGET_PIPELINE_RATIO,
                "note": f"decoding every epoch: {row['uncached_ratio']:.1f}x",
            }
        )
    if study is not None:
        error = overhead_verdict(study["trial_overhead"])
        targets.append(
            {
                "target": "Ray Tune + MLflow overhead <= 5% of a trial's wall time",
                "value": study["trial_overhead"],
                "goal": TARGET_OVERHEAD,
                "met": None if error else study["trial_overhead"] <= TARGET_OVERHEAD,
                "note": error
                or f"against train_mask alone: {study['trial_overhead_vs_loop']:.1%}; whole "
                f"study incl. ray.init and pre-flight: {study['study_overhead']:.1%}",
            }
        )
    return targets


# --------------------------------------------------------------------------- checkpoints


def measure_checkpoints(base: RunConfig, scale: Scale, out: Path, log: Log) -> list[dict]:
    """Bytes of one kept g checkpoint before (everything a resume needs, in every kept
    folder) and after (g's weights only, fp32 or fp16; the resume state in the latest
    folder only), and per trial at the paper's 100 epochs with keep_all_checkpoints."""
    from wsol.checkpoint import RESUME_STATE, save_checkpoint_folder, save_mask_state

    epochs = 100
    rows = []
    folder = out / "checkpoint-bytes"
    for size in sorted({scale.sizes[0], scale.sizes[-1]}):
        config = step_config(base, size)
        runtime = Runtime(torch.device("cpu"))
        nets = build_nets(config, runtime)
        images, _ = batch_for(config, scale.batch_size)
        g_step_function(config, nets, runtime, images)()  # Adam's moments exist after a step
        args = (nets.mask_generator, nets.mask_optimizer, 1, config, [], [])
        save_mask_state(folder / "full.pt", *args)
        full = (folder / "full.pt").stat().st_size
        rows.append(
            {
                "kind": "before: full state in every kept folder",
                "size": size,
                "bytes": full,
                "per_trial_bytes": epochs * full,
            }
        )
        for precision in ("fp32", "fp16"):
            save_checkpoint_folder(folder / precision, *args, precision=precision)
            weights = (folder / precision / "mask.pt").stat().st_size
            resume = (folder / precision / RESUME_STATE).stat().st_size
            rows.append(
                {
                    "kind": f"after: kept = g weights in {precision} (latest adds resume.pt)",
                    "size": size,
                    "bytes": weights,
                    "resume_bytes": resume,
                    "per_trial_bytes": epochs * weights + resume,
                }
            )
        shutil.rmtree(folder, ignore_errors=True)
        for row in rows[-3:]:
            log(f"checkpoint {row['kind']} at {size}px: {row['bytes'] / 1e6:.1f} MB")
    return rows


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    parts = []
    info = results["machine"]
    parts.append(
        f"machine: {info['cpu']}, {info['cpus_available']} CPUs, torch {info['torch']} with "
        f"{info['torch_threads']} threads, native bf16: {info['cpu_native_bf16']}, "
        f"CUDA: {info['cuda'] or 'none'}; load average at start "
        + "/".join(f"{v:.2f}" for v in info["load_average_at_start"])
    )
    parts.append(
        markdown(
            ["limit", "GFLOP/s", "n", "load"],
            [
                [name, v["flops_per_s"] / 1e9, v.get("n", "-"), v["load1"]]
                for name, v in results["limits"].items()
            ],
        )
    )
    parts.append(
        markdown(
            [
                "step",
                "px",
                "precision",
                "format",
                "ms/step",
                "img/s",
                "GFLOP/step",
                "GFLOP/s",
                "of limit",
                "of best limit",
                "load",
            ],
            [
                [
                    r["step"],
                    r["size"],
                    r["precision"],
                    fmt(r["channels_last"]),
                    r["seconds_per_step"] * 1000,
                    r["images_per_s"],
                    r["flops_per_step"] / 1e9,
                    r["flops_per_s"] / 1e9,
                    f"{r['fraction_of_limit']:.0%}",
                    f"{r['fraction_of_best_limit']:.0%}",
                    r["load1"],
                ]
                for r in results["steps"]
            ],
        )
    )
    if results.get("levers"):
        parts.append(
            markdown(
                ["lever (g step)", "px", "setting", "before ms", "after ms", "speedup", "load"],
                [
                    [
                        r["lever"],
                        r["size"],
                        r["setting"],
                        r["before_s"] * 1000,
                        r["after_s"] * 1000,
                        f"x{r['speedup']:.2f}",
                        r["load1"],
                    ]
                    for r in results["levers"]
                ],
            )
        )
    if results.get("pipeline"):
        parts.append(
            markdown(
                [
                    "data px",
                    "decode img/s",
                    "cached img/s",
                    "g step img/s",
                    "decode / step",
                    "cached / step",
                    "cache build s",
                    "load",
                ],
                [
                    [
                        r["size"],
                        r["uncached_images_per_s"],
                        r["cached_images_per_s"],
                        r["g_step_images_per_s"],
                        f"{r['uncached_ratio']:.1f}x",
                        f"{r['cached_ratio']:.1f}x",
                        r["cache_build_s"],
                        r["load1"],
                    ]
                    for r in results["pipeline"]
                ],
            )
        )
    if results.get("checkpoints"):
        parts.append(
            markdown(
                ["checkpoint", "px", "MB", "per trial, 100 epochs, keep all (GB)"],
                [
                    [r["kind"], r["size"], r["bytes"] / 1e6, r["per_trial_bytes"] / 1e9]
                    for r in results["checkpoints"]
                ],
            )
        )
    study = results.get("study")
    if study:
        parts.append(
            markdown(
                [
                    "epochs",
                    "direct process s",
                    "direct loop s",
                    "trial s (Tune)",
                    "trainable s",
                    "study s",
                    "ray.init s",
                    "trial overhead",
                    "vs loop alone",
                    "study overhead",
                    "same S",
                    "load",
                ],
                [
                    [
                        study["epochs"],
                        study["direct_s"],
                        study["direct_loop_s"],
                        study["trial_s"],
                        study["trainable_s"] or float("nan"),
                        study["study_s"],
                        study["ray_init_s"],
                        f"{study['trial_overhead']:.1%}",
                        f"{study['trial_overhead_vs_loop']:.1%}",
                        f"{study['study_overhead']:.1%}",
                        study["same_s_scores"],
                        study["load1_study"],
                    ]
                ],
            )
        )
    for size, profile in results.get("profile", {}).items():
        parts.append(
            f"g step {size}px ({profile['precision']}), top operators by self time:\n"
            + markdown(
                ["operator", "ms/step", "share", "calls/step"],
                [
                    [op["name"], op["self_ms_per_step"], f"{op['share']:.0%}", op["calls_per_step"]]
                    for op in profile["top_operators"]
                ],
            )
        )
    parts.append(
        markdown(
            ["target", "value", "goal", "met", "note"],
            [
                [
                    t["target"],
                    f"{t['value']:.1%}" if t["goal"] < 1 else f"{t['value']:.1f}x",
                    f"{t['goal']:.0%}" if t["goal"] < 1 else f"{t['goal']:.0f}x",
                    {True: "yes", False: "NO", None: "not judged"}[t["met"]],
                    t["note"],
                ]
                for t in results["targets"]
            ],
        )
    )
    return "\n\n".join(parts)


def main(args: argparse.Namespace) -> int:
    if args.direct_trial:
        return direct_trial(*args.direct_trial)
    scale = SMOKE if args.smoke else FULL
    if args.sizes:
        bad = [size for size in args.sizes if size % 32]
        if bad:
            print(f"error: --sizes must be multiples of 32, got {bad}", file=sys.stderr)
            return 2
        scale = Scale(**{**scale.__dict__, "sizes": tuple(args.sizes)})
    if args.batch_size:
        scale = Scale(**{**scale.__dict__, "batch_size": args.batch_size})
    if args.threads:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_config(DEFAULT_CONFIG, [f"device={device.type}"])
    results: dict[str, Any] = {"smoke": args.smoke, "scale": scale.__dict__, "machine": machine()}
    log(f"speed benchmark on {device}; load average {results['machine']['load_average_at_start']}")
    results["limits"] = measure_limits(scale, log)
    results["flops"], results["steps"] = measure_steps(base, scale, device, results["limits"], log)
    results["levers"] = measure_levers(base, scale, device, results["steps"], args.compile, log)
    results["pipeline"] = measure_pipeline(base, scale, out, results["steps"], log)
    workers_root = pipeline_dataset(out.parent, scale, log)
    results["levers"] += measure_workers(base, scale, device, results["steps"], workers_root, log)
    results["study"] = None if args.skip_study else measure_study(args, scale, out.parent, log)
    results["profile"] = profile_g_step(base, scale, device, results["steps"], log)
    results["checkpoints"] = measure_checkpoints(base, scale, out.parent, log)
    targets = evaluate_targets(results["steps"], results["pipeline"], results["study"])
    if args.smoke:  # toy sizes check the plumbing; they measure nothing a target is about
        targets = [{**t, "met": None, "note": "--smoke: not judged"} for t in targets]
    results["targets"] = targets
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["wall_s"] = time.perf_counter() - started
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log("")
    log(report(results))
    log(f"\nwall time {results['wall_s']:.0f}s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
