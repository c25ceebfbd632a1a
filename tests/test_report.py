"""``wsol report`` on a hand-made evaluated study (no training: a manifest, cached scores
with their example maps, a weight-map figure): every section renders, values are escaped,
and a bare study name is found through its spec."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from studies import tiny_spec_dict

from study.errors import StudyError
from study.evaluation import resolve_source
from study.report import report
from wsol.evaluate import MapExample, PixelPRCurve, save_examples
from wsol.viz import weight_map_evolution

CROP = 16
IMAGE_IDS = ["a/0.png", "b/0.png", "c/0.png", "a/1.png"]


def _examples(seed: int, ids: list[str] = IMAGE_IDS) -> list[MapExample]:
    rng = np.random.default_rng(seed)
    return [
        MapExample(
            image_id=image_id,
            image=rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8),
            score_map=rng.random((CROP, CROP)).astype(np.float32),
            box=(2, 2, 9, 9),
            gt_boxes=[(3, 3, 12, 12)],
            gt_mask=None,
            label=index % 3,
        )
        for index, image_id in enumerate(ids)
    ]


def _history(excluded: set[int], s_scores: list[float]) -> list[dict]:
    return [
        {
            "epoch": epoch,
            "val_s_score": score,
            "excluded_reason": (
                "degenerate: mean predicted box covers 100.0% of the image"
                if epoch in excluded
                else None
            ),
        }
        for epoch, score in enumerate(s_scores, start=1)
    ]


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def make_evaluated_study(root: Path, name: str = "fake", ids_of_no_reg=IMAGE_IDS) -> Path:
    """A study folder as `wsol study` + `wsol evaluate` leave it: trial ``t_full`` (epoch
    1 excluded, epoch 2 selected, a weight-map figure in its last checkpoint) and
    ``t_noreg`` (every epoch degenerate), their cached scores and CAM's."""
    folder = root / name
    evaluation = folder / "evaluation"
    (evaluation / "trials").mkdir(parents=True)
    histories = {
        "t_full": _history({1}, [1.0, 0.9, 0.8]),
        "t_noreg": _history({1, 2, 3}, [1.0, 1.0, 1.0]),
    }
    selected = {"t_full": 2, "t_noreg": 1}
    rows = {"t_full": "full", "t_noreg": "no-reg"}
    trials = []
    for trial_id, history in histories.items():
        checkpoint = folder / trial_id / "checkpoint_000002"
        checkpoint.mkdir(parents=True)
        trials.append(
            {
                "trial_id": trial_id,
                "row": rows[trial_id],
                "params": {"seed": 0},
                "status": "COMPLETE",
                "epochs": 3,
                "selected_epoch": selected[trial_id],
                "selected_checkpoint": str(checkpoint),
                "classifier": str(folder / "classifier.pt"),
                "history": history,
                "checkpoints": {"3": str(checkpoint)},
            }
        )
    image = np.zeros((CROP, CROP, 3), np.uint8)
    visuals = [
        {"epoch": e, "maps": np.zeros((1, CROP, CROP), np.uint8), "boxes": [(1, 1, 5, 5)]}
        for e in (1, 2, 3)
    ]
    weight_map_evolution(
        folder / "t_full" / "checkpoint_000002" / "weight_maps.png",
        [image],
        [[(2, 2, 8, 8)]],
        visuals,
        2,
        title="full",
    )
    manifest = {
        "study": name,
        "trials": trials,
        "rows": ["full", "no-reg"],
        "search_keys": ["seed"],
        "tracking_uri": None,
    }
    (folder / "study.json").write_text(json.dumps(manifest))
    curve = PixelPRCurve(np.array([1.0, 0.5]), np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    scored = [("cam-x", "CAM", None, _examples(0)), ("t_full", "full", 2, _examples(1))]
    scored.append(("t_noreg", "no-reg", 1, _examples(2, ids_of_no_reg)))
    for key, method, epoch, examples in scored:
        npz = save_examples(evaluation / "figures" / key / "examples.npz", examples, curve)
        cache = {
            "key": key,
            "method": method,
            "params": {"seed": 0},
            "selected_epoch": epoch,
            "metrics": {"gt_known_loc": 50.0, "pxap": 40.0},
            "evaluated_at": "2026-01-01T00:00:00+00:00",
            "figures": {},
            "status": "COMPLETE",
            "scored_from": {},
            "examples": str(npz),
        }
        (evaluation / "trials" / f"{key}.json").write_text(json.dumps(cache))
    header = ["method", "trials", "GT-known loc"]
    _write_csv(evaluation / "results_rows.csv", [header, ["CAM", "1", "50.00"]])
    _write_csv(
        evaluation / "results_trials.csv",
        [["trial", "method"], ["<script>alert(1)</script>", "full"]],
    )
    return folder


def _images(text: str) -> int:
    return len(re.findall(r'src="data:image/png;base64,', text))


def test_the_page_renders_every_section_with_figures_inlined(tmp_path: Path) -> None:
    folder = make_evaluated_study(tmp_path)

    page = report(str(folder), log=lambda _: None)

    text = page.read_text()
    for section in ("rows", "trials", "comparison", "pr", "val-s", "weight-maps"):
        assert f'id="{section}"' in text, section
    assert _images(text) == 4  # comparison grid, PR curves, S curves, one weight-map figure
    assert "full_t_full: weight maps" in text
    # the one thing missing is said: t_noreg's checkpoint holds no Fig. 4
    (note,) = re.findall(r'<p class="note">(.*?)</p>', text)
    assert note == "no-reg_t_noreg: no weight_maps.png in its kept checkpoints"
    figures = folder / "evaluation" / "figures" / "report"
    assert {p.name for p in figures.iterdir()} == {
        "comparison.png",
        "pr_curves.png",
        "val_s_curves.png",
    }


def test_each_trials_excluded_epochs_and_an_all_degenerate_trial_are_said_in_words(
    tmp_path: Path,
) -> None:
    text = report(str(make_evaluated_study(tmp_path)), log=lambda _: None).read_text()
    flat = " ".join(text.split())
    assert "selected epoch 2 (S = 0.900) of 3; excluded as degenerate: epoch 1." in flat
    degenerate = re.search(
        r'<li class="degenerate"><strong>no-reg_t_noreg</strong>:(.*?)</li>', flat
    )
    assert degenerate is not None
    assert "every epoch was degenerate" in degenerate.group(1)
    assert "plain max-S fallback" in degenerate.group(1)


def test_table_cells_are_escaped(tmp_path: Path) -> None:
    text = report(str(make_evaluated_study(tmp_path)), log=lambda _: None).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>" not in text


def test_methods_on_other_images_get_a_note_not_a_misleading_grid(tmp_path: Path) -> None:
    folder = make_evaluated_study(tmp_path, ids_of_no_reg=[*IMAGE_IDS[:3], "z/9.png"])

    text = report(str(folder), log=lambda _: None).read_text()

    assert "cannot set the methods side by side" in text and "no-reg_t_noreg" in text
    assert _images(text) == 3  # PR curves, S curves, weight maps still drawn


def _spec_file(directory: Path, synthetic_root: Path, storage: Path, name: str) -> Path:
    raw = tiny_spec_dict(synthetic_root, storage, name=name)
    path = directory / "ablations" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_bare_name_is_found_where_its_spec_stores_the_study(
    tmp_path: Path, synthetic_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_evaluated_study(tmp_path / "runs" / "fake", "fake")
    _spec_file(tmp_path, synthetic_root, tmp_path / "runs" / "fake", "fake")
    monkeypatch.chdir(tmp_path)

    source = resolve_source("fake")  # not under the default --storage (studies/)

    assert source.root == str(tmp_path / "runs" / "fake" / "fake")
    assert [t.trial_id for t in source.trials] == ["t_full", "t_noreg"]


def test_a_bare_name_found_nowhere_says_where_it_looked_and_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(StudyError) as raised:
        report("smoke", log=lambda _: None)

    message = str(raised.value)
    assert str(tmp_path / "studies" / "smoke") in message
    assert "ablations/smoke.yaml" in message and "--storage" in message
