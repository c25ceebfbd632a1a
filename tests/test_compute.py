"""The compute switches: precision, channels_last, compile, loader workers (not timings)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wsol import compute
from wsol.compute import Runtime, check_precision, cpu_share, pins_memory, resolve_num_workers


def test_num_workers_auto_is_sized_to_the_cpu_share() -> None:
    assert resolve_num_workers(3, "cpu") == 3
    assert resolve_num_workers(0, "cuda", share=8) == 0
    assert resolve_num_workers("auto", "cpu", share=16) == 0  # the step needs every core
    assert resolve_num_workers("auto", None, share=16) == 0
    assert resolve_num_workers("auto", "cuda", share=4) == 3
    assert resolve_num_workers("auto", "cuda", share=1) == 0
    assert resolve_num_workers("auto", "cuda", share=64) == compute.MAX_AUTO_WORKERS
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers("many", "cpu")


def test_cpu_share_follows_omp_num_threads(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_share() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert cpu_share() == compute.available_cpus()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_share() == compute.available_cpus()


def test_autocast_is_bf16_only_when_asked() -> None:
    conv = nn.Conv2d(3, 4, 3)
    images = torch.rand(2, 3, 8, 8)
    with Runtime(torch.device("cpu"), "fp32").autocast():
        assert conv(images).dtype == torch.float32
    with Runtime(torch.device("cpu"), "bf16").autocast():
        assert conv(images).dtype == torch.bfloat16


def test_channels_last_places_modules_and_batches() -> None:
    runtime = Runtime(torch.device("cpu"), channels_last=True)
    module = runtime.module(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    assert module[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = runtime.images(torch.rand(2, 3, 8, 8))
    assert images.is_contiguous(memory_format=torch.channels_last)
    plain = Runtime(torch.device("cpu")).images(torch.rand(2, 3, 8, 8))
    assert plain.is_contiguous()
    assert not Runtime(torch.device("cpu")).pin_memory


def test_only_batches_bound_for_a_gpu_are_pinned() -> None:
    assert pins_memory("cuda") and pins_memory(torch.device("cuda", 1))
    assert not pins_memory("cpu") and not pins_memory(None)
    assert Runtime(torch.device("cuda")).pin_memory  # no GPU needed to build a Runtime


def test_compile_keeps_the_state_dict_keys() -> None:
    module = nn.Sequential(nn.Conv2d(3, 4, 3))
    keys = list(module.state_dict())
    compiled = Runtime(torch.device("cpu"), compile=True).module(module)
    assert compiled is module
    assert list(compiled.state_dict()) == keys


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch) -> None:
    monkeypatch.setattr(compute, "cpu_supports_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="compute.precision=bf16"):
        check_precision("bf16", torch.device("cpu"))
    check_precision("fp32", torch.device("cpu"))  # nothing to say
