"""benchmarks/speed.py end to end at toy sizes: every section is measured and written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "speed.py"


def test_smoke_run_measures_every_section_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    toy = ["--smoke", "--skip-study", "--sizes", "32", "--out", str(out)]
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *toy],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())

    assert set(results["limits"]) >= {"cpu/fp32", "cpu/bf16"}
    assert all(row["flops_per_s"] > 0 for row in results["limits"].values())
    # FLOPs of one step are counted, and g's step (g fwd+bwd, f twice, f bwd) costs more
    # than f's (f fwd+bwd).
    assert results["flops"]["32"]["g"] > results["flops"]["32"]["f"] > 0
    settings = {(r["step"], r["precision"], r["channels_last"]) for r in results["steps"]}
    assert settings == {
        (step, precision, channels_last)
        for step in ("g", "f")
        for precision in ("fp32", "bf16")
        for channels_last in (False, True)
    }
    assert all(row["fraction_of_limit"] > 0 for row in results["steps"])
    levers = {row["lever"] for row in results["levers"]}
    assert any("channels_last" in lever for lever in levers)
    assert any("frozen" in lever for lever in levers)
    assert any("workers" in lever for lever in levers)
    assert any("cast once" in lever for lever in levers)
    kinds = {row["kind"].split(":")[0] for row in results["checkpoints"]}
    assert kinds == {"before", "after"}
    before = next(r for r in results["checkpoints"] if r["kind"].startswith("before"))
    lean = [r for r in results["checkpoints"] if r["kind"].startswith("after")]
    assert all(row["bytes"] < before["bytes"] / 2 for row in lean)
    assert [row["size"] for row in results["pipeline"]] == [32]
    assert results["study"] is None  # --skip-study
    assert results["profile"] and results["targets"]
    # A smoke run checks plumbing: it judges no target.
    assert all(target["met"] is None for target in results["targets"])
    assert "not judged" in completed.stdout
    # The Markdown report names the targets, met or not.
    assert "| target | value | goal | met | note |" in completed.stdout


def test_an_impossible_overhead_is_a_measurement_error_never_a_met_target() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    import speed

    for impossible in (-0.65, 1.2, float("nan")):
        verdict = speed.overhead_verdict(impossible)
        assert verdict is not None and verdict.startswith("measurement error")
        study = {"trial_overhead": impossible, "trial_overhead_vs_loop": 0.0, "study_overhead": 0}
        (target,) = speed.evaluate_targets([], [], study)
        assert target["met"] is None
    assert speed.overhead_verdict(0.03) is None
