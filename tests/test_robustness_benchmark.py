"""benchmarks/robustness.py: the verdict logic on hand-made numbers, and a smoke run end
to end (tiny data, 1 f epoch, 2 g epochs) whose tables and records have every column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.scripts import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def robustness():
    return load_benchmark("robustness")


def _row(seed: int, f: float, full: float, no_reg: float, gap: float) -> dict:
    return {
        "kind": "shapes",
        "seed": seed,
        "method": 1,
        "f_test_top1": f,
        "variants": {
            "full": {"gt_known_loc": full, "maxboxacc_v2": 80.0, "gap": gap},
            "no-reg": {"gt_known_loc": no_reg, "maxboxacc_v2": 70.0, "gap": 0.0},
            "CAM": {"gt_known_loc": 30.0, "maxboxacc_v2": 60.0},
        },
    }


def test_verdicts_pass_only_when_every_target_holds_over_the_seeds(robustness) -> None:
    good = [_row(0, 95, 90, 2, 1), _row(1, 92, 86, 5, 4), _row(2, 91, 80, 10, 2)]
    summary = robustness.kind_summary(good)
    assert summary["full_gt_known"]["mean"] == pytest.approx(85.333, abs=1e-3)
    assert summary["full_gt_known"]["min"] == 80 and summary["no_reg_gt_known"]["max"] == 10
    assert all(robustness.verdicts(summary, method=1).values())

    def failed(rows: list[dict], method: int = 1) -> list[str]:
        verdicts = robustness.verdicts(robustness.kind_summary(rows), method)
        return [target for target, met in verdicts.items() if not met]

    # One seed of f below 90; one seed of full below 75 (mean still >= 85); a mean
    # below 85; no-reg above 10 on one seed; the gap's mean above 3.
    assert failed([_row(0, 89, 90, 2, 1), *good[1:]]) == ["f >= 90"]
    assert failed([_row(0, 95, 100, 0, 0), _row(1, 95, 100, 0, 0), _row(2, 95, 74, 0, 0)]) == [
        "full >= 85 (min >= 75)"
    ]
    assert failed([_row(0, 95, 84, 0, 0)]) == ["full >= 85 (min >= 75)"]
    assert failed([*good[:2], _row(2, 91, 80, 10.5, 2)]) == ["no-reg <= 10"]
    assert failed([_row(0, 95, 90, 0, 3.5), _row(1, 95, 90, 0, 3.0)]) == ["gap <= 3"]
    # Method II adds the seed spread: 90, 86, 80 have std 5.03.
    assert failed(good, method=2) == ["seed std <= 5"]
    assert "seed std <= 5" not in robustness.verdicts(summary, method=1)


def test_one_seed_has_no_seed_spread_so_the_std_target_is_named_not_judged(robustness) -> None:
    full = {"gt_known_loc": 90.0, "maxboxacc_v2": 80.0, "gap": 1.0, "selected_epoch": 3}
    full.update(oracle_epoch=4, oracle_gt_known=91.0)
    rows = [
        {"kind": "shapes", "seed": 0, "method": 2, "f_test_top1": 95.0, "variants": {"full": full}}
    ]
    summary = robustness.kind_summary(rows)
    assert summary["full_gt_known"]["std"] is None
    verdicts = robustness.verdicts(summary, method=2)
    assert "seed std <= 5" not in verdicts and all(verdicts.values())
    kind_summaries = robustness.summaries(rows)
    text = robustness.report_text(rows, kind_summaries, smoke=False)
    assert "One seed has no spread, so Method II's seed std is not judged on: shapes." in text
    table_row = next(line for line in text.splitlines() if line.startswith("| shapes | II | 1 "))
    assert table_row.split(" | ")[5] == "-"  # the full std column


def test_the_oracle_is_the_best_epoch_on_test_and_the_gap_is_measured_from_the_selected(
    robustness,
) -> None:
    assert robustness.oracle({1: 10.0, 2: 40.0, 3: 40.0, 4: 20.0}, 4) == {
        "oracle_epoch": 2,
        "oracle_gt_known": 40.0,
        "gap": 20.0,
    }
    assert robustness.oracle({1: 10.0, 2: 5.0}, 1)["gap"] == 0.0


def test_f_is_shared_by_configs_that_differ_only_in_g_and_retrained_when_f_changes(
    robustness, tmp_path: Path
) -> None:
    args = robustness.parse_args(["--out", str(tmp_path / "one")])
    recipe = robustness.load_recipe(robustness.DEFAULT_CONFIG, [])
    unit = robustness._with(recipe, ["data.root=runs/x/data/shapes-seed0-10x200+50-96px"])

    def path(config, out: str = "one", cache: Path | None = None) -> Path:
        args.out, args.classifier_cache = tmp_path / out, cache
        return robustness.classifier_cache_path(args, "shapes", 0, config)

    kept = path(unit)
    assert kept.parent == tmp_path / "one" / "classifiers"
    for g_only in (["mask.lam=2"], ["mask.reg=false"], ["selection.min_epoch=1"], ["seed=5"]):
        assert path(robustness._with(unit, g_only)) == kept, g_only
    # Another --out's copy of the same generated set, through a shared cache: the same f.
    other_copy = robustness._with(unit, ["data.root=/elsewhere/shapes-seed0-10x200+50-96px"])
    assert path(other_copy, "two", tmp_path / "cache").name == kept.name
    for f_change in (
        ["classifier.lr=1e-3"],
        ["classifier.seed=1"],
        ["data.resize=80"],
        ["data.root=runs/x/data/shapes-seed1-10x200+50-96px"],
        ["mask.method=2"],
    ):
        assert path(robustness._with(unit, f_change)).name != kept.name, f_change


def test_smoke_run_writes_every_column_and_a_verdict_and_a_rerun_reuses_it(
    robustness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    argv = ["--smoke", "--kinds", "shapes", "--seeds", "0", "--out", str(out), "--no-progress"]
    argv += ["--config", str(BENCHMARKS.parent / "ablations" / "smoke.yaml")]
    assert robustness.main(robustness.parse_args(argv)) == 0
    results = json.loads((out / "results.json").read_text())
    (row,) = results["rows"]
    assert (row["kind"], row["seed"], row["method"]) == ("shapes", 0, 1)
    assert set(row["variants"]) == {"full", "no-reg", "CAM"}
    for variant in ("full", "no-reg"):
        record = row["variants"][variant]
        assert sorted(record["curve"]) == ["1", "2"]  # every epoch scored on test
        assert record["oracle_gt_known"] == max(record["curve"].values())
        assert record["max_s_gt_known"] == record["curve"][str(record["max_s_epoch"])]
        assert record["s_rank_correlation"] is None  # 2 selectable epochs: too few
        validation = record["validation"]  # every epoch's, for selection rules without test
        assert sorted(validation) == sorted(robustness.VALIDATION_KEYS)
        assert all(sorted(curve) == ["1", "2"] for curve in validation.values())
        assert record["gap"] == record["oracle_gt_known"] - record["gt_known_loc"] >= 0
        assert record["diagnostics"]["num_classes"] == 3
        kept = sorted(p.name for p in (out / "runs/shapes/seed0/method1" / variant).iterdir())
        assert kept == ["selected.pt"]  # the other epochs' weights deleted once scored
    assert 0 <= row["f_test_top1"] <= 100
    (summary,) = results["summaries"]
    assert list(summary["verdicts"]) == [
        "f >= 90",
        "full >= 85 (min >= 75)",
        "no-reg <= 10",
        "gap <= 3",
    ]
    text = (out / "results.md").read_text()
    assert "SMOKE RUN" in text and "| " + " | ".join(robustness.SEED_HEADER) + " |" in text
    assert "| shapes | I | 1 |" in text  # the per-kind summary row
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert robustness.main(robustness.parse_args(argv)) == 0
    assert "reusing" in capsys.readouterr().out
    # A g-only change in another --out trains g again on the kept f, not f; with
    # --variants full, full only, and the tables say no-reg was not run instead of judging it.
    other = tmp_path / "lam2"
    argv_g = [a if a != str(out) else str(other) for a in argv]
    argv_g += ["--classifier-cache", str(out / "classifiers"), "--set", "mask.lam=2"]
    argv_g += ["--variants", "full"]
    assert robustness.main(robustness.parse_args(argv_g)) == 0
    printed = capsys.readouterr().out
    assert "reusing f from" in printed and "training f" not in printed
    assert "training g, full" in printed and "training g, no-reg" not in printed
    results_g = json.loads((other / "results.json").read_text())
    (again,) = results_g["rows"]
    assert again["f_test_top1"] == row["f_test_top1"]
    assert set(again["variants"]) == {"full", "CAM"}
    assert "no-reg <= 10" not in results_g["summaries"][0]["verdicts"]
    report_g = (other / "results.md").read_text()
    assert "Not run on every seed, so not judged: no-reg (shapes, Method I)" in report_g
    assert not (other / "classifiers").exists()
    # A run that asks for no-reg of a record without it trains no-reg only, on the kept f,
    # and adds it: full's entry stays as measured. One with both is reused for full only.
    full_only = json.loads((other / "runs/shapes/seed0/method1/result.json").read_text())
    assert robustness.main(robustness.parse_args(argv_g[:-2])) == 0
    printed = capsys.readouterr().out
    assert "adding no-reg" in printed and "training g, no-reg" in printed
    assert "training g, full" not in printed and "training f" not in printed
    (both,) = json.loads((other / "results.json").read_text())["rows"]
    assert list(both["variants"]) == ["full", "no-reg", "CAM"]
    assert both["variants"]["full"] == full_only["variants"]["full"]
    assert both["variants"]["CAM"] == full_only["variants"]["CAM"]
    assert both["f_test_top1"] == full_only["f_test_top1"]
    assert both["train_s"] > full_only["train_s"]
    kept = sorted(p.name for p in (other / "runs/shapes/seed0/method1").iterdir())
    assert kept == ["full", "no-reg", "result.json"]
    assert robustness.main(robustness.parse_args([*argv, "--variants", "full"])) == 0
    assert "reusing" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        robustness.parse_args([*argv, "--variants", "no-reg"])
    # The tables over what has finished: seed 1 was never run, so it is named, not invented.
    # Reporting reads the records only: no dataset is written (the finished unit's is gone).
    shutil.rmtree(other / "data")
    report = [*argv_g, "--report-only", "--seeds", "0", "1"]
    assert robustness.main(robustness.parse_args(report)) == 0
    printed = capsys.readouterr().out
    assert "not in" in printed and "kind=shapes seed=1" in printed
    assert "training" not in printed and "writing the" not in printed
    assert not (other / "data").exists()
    (reported,) = json.loads((other / "results.json").read_text())["rows"]
    assert reported == both
    # A variant is never added against another f: without the kept f, nothing is trained.
    record_path = other / "runs/shapes/seed0/method1/result.json"
    record_path.write_text(json.dumps(full_only))
    shutil.move(out / "classifiers", tmp_path / "moved")
    with pytest.raises(robustness.ConfigError, match="its f is no longer in"):
        robustness.main(robustness.parse_args(argv_g[:-2]))
    assert (other / "runs/shapes/seed0/method1/no-reg/selected.pt").is_file()


def test_methods_2_runs_method_ii_alone_and_method2_adds_it_to_method_i(
    robustness, tmp_path: Path
) -> None:
    base = ["--smoke", "--kinds", "shapes", "--seeds", "0", "--out", str(tmp_path / "m2")]
    assert robustness.parse_args(base).methods == [1]
    assert robustness.parse_args([*base, "--method2"]).methods == [1, 2]
    assert robustness.parse_args([*base, "--methods", "2"]).methods == [2]
    with pytest.raises(SystemExit):
        robustness.parse_args([*base, "--methods", "3"])
    argv = [*base, "--methods", "2", "--variants", "full", "--no-progress"]
    for override in (
        "classifier.embedding_loss=triplet",  # the recipe's is normalized_softmax
        "classifier.triplet_sampling=batch_hard",
        "classifier.batch_size=8",
        "classifier.embedding_batchnorm=true",
    ):
        argv += ["--method2-set", override]
    assert robustness.main(robustness.parse_args(argv)) == 0
    (row,) = json.loads((tmp_path / "m2" / "results.json").read_text())["rows"]
    assert row["method"] == 2 and set(row["variants"]) == {"full"}  # no CAM for Method II
    assert not (tmp_path / "m2" / "runs/shapes/seed0/method1").exists()
