"""``wsol report``: the evaluated tables again, and one self-contained HTML page.

The page (``<out>/report.html``, rendered from ``study/templates/report.html.j2`` with
autoescape on, every image inlined as base64 PNG) sets the methods side by side:

    tables        results_rows and results_trials, as ``wsol evaluate`` wrote them
    comparison    a line per example test image: the image with its ground-truth box,
                  CAM, then each row's first trial (paper Fig. 5-7); ``wsol evaluate``
                  keeps the same images for every method
    PR curves     every method's pixel precision-recall curve on one plot
    S curves      every trial's validation S-score per epoch (the manifest's history),
                  excluded epochs and the selected one marked, in words as well
    weight maps   each trial's ``weight_maps.png`` (Fig. 4), from its latest kept
                  checkpoint, side by side across rows

The combined figures are written to ``<out>/figures/report/``; the page, the tables and
those figures are logged to the study's parent MLflow run under ``evaluation/``.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study import storage
from study.errors import StudyError
from study.evaluation import (
    DIAGNOSTIC,
    RESULT_TABLES,
    EvaluationSource,
    Log,
    Scored,
    log_to_mlflow,
    markdown,
    read_manifest,
    resolve_source,
)
from study.manifest import STUDY_MANIFEST
from study.names import WEIGHT_MAPS_FILE, trial_name

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
# What study/trainable.py and wsol/local_run.py name Fig. 4 (not imported: trainable
# imports Ray, and the report needs none).
COMBINED = {"comparison": "comparison.png", "pr": "pr_curves.png", "s": "val_s_curves.png"}


@dataclass
class ReportTrial:
    """One trial as the report shows it: its history and where its Fig. 4 may be."""

    trial_id: str
    row: str
    params: dict[str, Any]
    history: list[dict[str, Any]]
    weight_maps: list[str] = field(default_factory=list)  # candidates, latest epoch first

    @property
    def name(self) -> str:
        return trial_name(self.row, self.trial_id)


def _read_csv(path: Path) -> list[list[str]]:
    with path.open() as handle:
        return list(csv.reader(handle))


def _read_bytes(location: str) -> bytes | None:
    """The bytes at a local path or URI; None when there is no such file."""
    try:
        filesystem, path = storage.open_storage(location)
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except (FileNotFoundError, OSError):
        return None


def _inline(data: bytes, caption: str, css: str = "") -> dict[str, str]:
    return {"data": base64.b64encode(data).decode(), "caption": caption, "css": css}


def _inline_file(path: Path | str, caption: str, css: str = "") -> dict[str, str] | None:
    data = _read_bytes(str(path))
    return _inline(data, caption, css) if data is not None else None


def report_trials(source: EvaluationSource) -> list[ReportTrial]:
    """Every trial of the study's manifest (scored or not), in manifest order; a single
    run's one trial. The weight-map candidates are the trial's kept checkpoints' (latest
    epoch first: only the last epoch's checkpoint holds the figure), or the run folder's."""
    if source.kind != "study":
        trial = source.trials[0]
        return [
            ReportTrial(
                trial.trial_id,
                trial.row,
                trial.params,
                trial.history,
                [str(Path(source.root) / WEIGHT_MAPS_FILE)],
            )
        ]
    manifest = read_manifest(storage.join(source.root, STUDY_MANIFEST))
    trials = []
    for raw in manifest["trials"]:
        folders = sorted(raw.get("checkpoints", {}).items(), key=lambda item: -int(item[0]))
        trials.append(
            ReportTrial(
                raw["trial_id"],
                raw["row"],
                raw.get("params", {}),
                raw.get("history", []),
                [storage.join(folder, WEIGHT_MAPS_FILE) for _, folder in folders],
            )
        )
    return trials


def load_scored(out_dir: Path, source: EvaluationSource) -> list[Scored]:
    """The cached scores ``wsol evaluate`` wrote: CAM first, then the trials in the
    source's order (those it did not score left out)."""
    by_key = {}
    for cache in sorted((out_dir / "trials").glob("*.json")):
        item = Scored.from_json(json.loads(cache.read_text()))
        by_key[item.key] = item
    cams = [item for item in by_key.values() if item.method == "CAM"]
    trials = [by_key[t.trial_id] for t in source.trials if t.trial_id in by_key]
    return cams + trials


def _label(item: Scored, cams: int) -> str:
    if item.method == "CAM":
        return "CAM" if cams == 1 else f"CAM ({item.key})"
    return trial_name(item.method, item.key)


def _comparison(
    scored: Sequence[Scored], source: EvaluationSource, path: Path
) -> tuple[Path | None, str]:
    """The comparison grid: CAM and each row's first scored trial. (figure, or None and
    why not)."""
    from wsol.evaluate import load_examples
    from wsol.viz import comparison_grid

    cams = sum(item.method == "CAM" for item in scored)
    chosen = [item for item in scored if item.method == "CAM"]
    for row in source.rows:
        chosen.extend([item for item in scored if item.method == row][:1])
    columns = []
    missing = []
    for item in chosen:
        if item.examples and Path(item.examples).is_file():
            examples, _ = load_examples(Path(item.examples))
            if examples:
                columns.append((_label(item, cams), examples))
                continue
        missing.append(_label(item, cams))
    if missing:
        return None, (
            f"no example maps stored for {', '.join(missing)} (scored by an older `wsol "
            "evaluate`); `wsol evaluate --force` scores them again with examples"
        )
    if not columns:
        return None, "nothing was scored"
    try:
        return comparison_grid(path, columns, f"{source.name}: test images"), ""
    except ValueError as error:
        return None, f"cannot set the methods side by side: {error}"


def _pr_curves(
    scored: Sequence[Scored], source: EvaluationSource, path: Path
) -> tuple[Path | None, str]:
    from wsol.evaluate import load_examples
    from wsol.viz import TRIAL_LINESTYLES, method_color, pr_curves_figure

    cams = sum(item.method == "CAM" for item in scored)
    curves = []
    seen: dict[str, int] = {}
    for item in scored:
        if not item.examples or not Path(item.examples).is_file() or "pxap" not in item.metrics:
            continue
        _, curve = load_examples(Path(item.examples))
        if curve is None:
            continue
        index = seen[item.method] = seen.get(item.method, -1) + 1
        style = TRIAL_LINESTYLES[index % len(TRIAL_LINESTYLES)]
        color = method_color(item.method, source.rows)
        curves.append((_label(item, cams), curve, item.metrics["pxap"], color, style))
    if not curves:
        return None, (
            "no pixel precision-recall curve: the test split has no segmentation masks "
            "(no PxAP), or the scores predate stored curves (`wsol evaluate --force`)"
        )
    return pr_curves_figure(path, curves, f"{source.name}: pixel precision-recall (test)"), ""


def selections(trials: Sequence[ReportTrial]) -> list[dict[str, Any]]:
    """Per trial, in words: its selected epoch and S-score, the epochs the guard excluded,
    and whether every epoch was degenerate (then the selection is a fallback)."""
    from wsol.selection import select_epoch

    lines = []
    for trial in trials:
        line: dict[str, Any] = {
            "name": trial.name,
            "epochs": len(trial.history),
            "selected": None,
            "s_score": None,
            "excluded": [],
            "all_degenerate": False,
            "reason": "",
        }
        if trial.history:
            selection = select_epoch(trial.history)
            line.update(
                selected=selection.epoch,
                s_score=f"{selection.s_score:.3f}",
                excluded=sorted(selection.excluded),
                all_degenerate=selection.fallback,
                reason=selection.excluded.get(selection.epoch, "").removeprefix("degenerate: "),
            )
        lines.append(line)
    return lines


def _s_curves(
    trials: Sequence[ReportTrial], source: EvaluationSource, path: Path
) -> tuple[Path | None, str]:
    from wsol.viz import TRIAL_LINESTYLES, method_color, val_s_curves_figure

    curves = []
    seen: dict[str, int] = {}
    for trial, line in zip(trials, selections(trials), strict=True):
        if not trial.history:
            continue
        index = seen[trial.row] = seen.get(trial.row, -1) + 1
        label = trial.name + (" (every epoch degenerate)" if line["all_degenerate"] else "")
        curves.append(
            {
                "label": label,
                "color": method_color(trial.row, source.rows),
                "style": TRIAL_LINESTYLES[index % len(TRIAL_LINESTYLES)],
                "epochs": [row["epoch"] for row in trial.history],
                "s_scores": [row["val_s_score"] for row in trial.history],
                "excluded": line["excluded"],
                "selected": line["selected"],
            }
        )
    if not curves:
        return None, "no trial has a validation history"
    return val_s_curves_figure(path, curves, f"{source.name}: validation S-score"), ""


def _weight_maps(
    trials: Sequence[ReportTrial], rows: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Fig. 4 of every trial, grouped by search point (the trial's params), each group in
    row order; and a note per trial without one."""
    groups: dict[str, dict[str, Any]] = {}
    notes = []
    order = {row: index for index, row in enumerate(rows)}
    for trial in sorted(trials, key=lambda t: order.get(t.row, len(order))):
        figure = next(
            (
                inlined
                for location in trial.weight_maps
                if (inlined := _inline_file(location, f"{trial.name}: weight maps")) is not None
            ),
            None,
        )
        if figure is None:
            notes.append(f"{trial.name}: no {WEIGHT_MAPS_FILE} in its kept checkpoints")
            continue
        key = json.dumps(trial.params, sort_keys=True, default=str)
        label = ", ".join(f"{name} = {value}" for name, value in sorted(trial.params.items()))
        groups.setdefault(key, {"label": label, "figures": []})["figures"].append(figure)
    return list(groups.values()), notes


def _diagnostics(out_dir: Path) -> list[dict[str, Any]]:
    results = []
    for cache in sorted((out_dir / "diagnostics").glob("*.json")):
        result = json.loads(cache.read_text())
        results.append(
            {
                "text": (
                    f"{result['trial_id']}: selected epoch {result['selected_epoch']} scores "
                    f"{result['test_gt_known_loc_at_selected']:.1f}%; best epoch on test "
                    f"{result['best_epoch_on_test']} scores "
                    f"{result['best_test_gt_known_loc']:.1f}% (gap {result['gap']:.1f} points)."
                ),
                "figure": _inline_file(result["figure"], result["trial_id"]),
            }
        )
    return results


def render(context: dict[str, Any]) -> str:
    """``report.html.j2`` rendered with ``context``; autoescape on, undefined names are
    errors (a template and its caller cannot drift apart silently)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(TEMPLATE).render(**context)


def report(
    target: str, *, storage_root: str = "studies", out: Path | None = None, log: Log = print
) -> Path:
    """Print the evaluation tables of ``target``, write ``<out>/report.html`` (see the
    module docstring) and log it to the study's parent MLflow run (a warning when that
    fails; the page is written either way)."""
    # Unfinished trials are only read here (their scores say so), never scored.
    source = resolve_source(target, storage_root, out, allow_incomplete=True)
    out_dir = source.out_dir
    rows_csv, trials_csv = out_dir / "results_rows.csv", out_dir / "results_trials.csv"
    if not rows_csv.is_file():
        raise StudyError(
            f"no evaluation of {source.name} in {out_dir}: run `wsol evaluate {target}` first"
        )
    rows, trial_rows = _read_csv(rows_csv), _read_csv(trials_csv)
    log(markdown(rows))
    log(markdown(trial_rows))
    scored = load_scored(out_dir, source)
    trials = report_trials(source)
    folder = out_dir / "figures" / "report"
    comparison, comparison_note = _comparison(scored, source, folder / COMBINED["comparison"])
    pr_curves, pr_note = _pr_curves(scored, source, folder / COMBINED["pr"])
    s_curves, s_note = _s_curves(trials, source, folder / COMBINED["s"])
    weight_maps, weight_map_notes = _weight_maps(trials, source.rows)
    cams = sum(item.method == "CAM" for item in scored)
    per_method = [
        figure
        for item in scored
        for kind, path in item.figures.items()
        if (figure := _inline_file(path, f"{_label(item, cams)}: {kind}")) is not None
    ]
    page = render(
        {
            "name": source.name,
            "rows_table": rows,
            "trials_table": trial_rows,
            "comparison": comparison and _inline_file(comparison, "CAM and each row"),
            "comparison_note": comparison_note,
            "pr_curves": pr_curves and _inline_file(pr_curves, "pixel precision-recall"),
            "pr_note": pr_note,
            "s_curves": s_curves
            and _inline_file(
                s_curves,
                "validation S-score per epoch; grey crosses: excluded (degenerate or warm-up) "
                "epochs, "
                "stars: the selected epoch",
            ),
            "s_note": s_note,
            "selections": selections(trials),
            "weight_maps": weight_maps,
            "weight_map_notes": weight_map_notes,
            "diagnostics": _diagnostics(out_dir),
            "diagnostic_label": DIAGNOSTIC,
            "per_method": per_method,
        }
    )
    path = out_dir / "report.html"
    path.write_text(page)
    log(f"report: {path}")
    combined = [p for p in (comparison, pr_curves, s_curves) if p is not None]
    tables = [out_dir / name for name in RESULT_TABLES]
    if log_to_mlflow(source, [], [path, *tables, *combined], log):
        log(f"MLflow: report.html, the tables and figures on the parent run of {source.name}")
    return path
