"""The final test evaluation, its own step: ``wsol evaluate`` and ``wsol report``.

This is the only code that reads a test split, and it reads it only for checkpoints a
study (or a single run) already selected by validation S-score:

    source       a study folder (its ``study.json`` manifest), a study spec, a study name
                 under ``--storage``, or a single-run folder of ``wsol train``
    per trial    check that the checkpoint is the selection (re-derived from the trial's
                 validation history), load it and its f, score it on the test split
    CAM          once per distinct f, the CAM baseline with the same box rule
    outputs      <out>/trials/<trial>.json (cached: not re-scored without --force),
                 results_trials.{md,csv}, results_rows.{md,csv} (mean and std over
                 seeds), figures/<trial>/ (and the examples ``wsol report`` draws
                 side by side), test.* metrics and test/ figures on each trial's MLflow
                 run, the tables on the study's parent run

``--epoch-curve`` adds the early-stopping diagnostic: every kept epoch scored on the test
split against the validation S-score. It is labelled a diagnostic everywhere and nothing
reads it back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study import storage
from study.errors import StudyError
from study.manifest import EVALUABLE, STUDY_MANIFEST
from study.names import trial_name
from study.spec import NAME_PATTERN
from study.tables import csv_table, markdown_table
from wsol.checkpoint import CLASSIFIER_CHECKPOINT, MASK_CHECKPOINT
from wsol.files import write_json_atomically, write_text_atomically

Log = Callable[[str], None]
METRIC_COLUMNS = (
    ("gt_known_loc", "GT-known loc"),
    ("top1_loc", "Top-1 loc"),
    ("top1_cls", "Top-1 cls"),
    ("pxap", "PxAP"),
    ("maxboxacc_v2", "MaxBoxAccV2"),
)
DIAGNOSTIC = "DIAGNOSTIC (test data, never used for selection)"


@dataclass
class TrialTarget:
    """One selected checkpoint to score."""

    trial_id: str
    row: str
    params: dict[str, Any]
    selected_epoch: int
    mask_file: str  # the selected g checkpoint (a mask.pt / selected.pt location)
    classifier: str  # f's classifier.pt location
    history: list[dict[str, Any]]  # the g loop's rows (wsol.selection's schema)
    checkpoints: dict[int, str] = field(default_factory=dict)  # epoch -> mask.pt location
    status: str = "COMPLETE"  # the manifest's; anything else is scored only when allowed

    run_folder: bool = False  # a `wsol train` run (its folder name is its name)

    @property
    def name(self) -> str:
        """Its display name: study.names.trial_name, or a single run's folder name."""
        return self.trial_id if self.run_folder else trial_name(self.row, self.trial_id)


@dataclass
class EvaluationSource:
    """What ``evaluate`` was pointed at, resolved."""

    kind: str  # "study" or "run"
    name: str
    root: str
    out_dir: Path
    trials: list[TrialTarget]
    rows: list[str]
    search_keys: list[str]
    keep_all_checkpoints: bool
    tracking_uri: str | None = None
    experiment: str | None = None
    skipped: list[str] = field(default_factory=list)  # trials not scored, and why


# --------------------------------------------------------------------------- sources


def resolve_source(
    target: str,
    storage_root: str = "studies",
    out: Path | None = None,
    allow_incomplete: bool = False,
) -> EvaluationSource:
    """A study folder or URI, a spec YAML, a study name, or a single-run folder ->
    :class:`EvaluationSource`.

    A bare study name is looked up under ``storage_root``, then where the spec
    ``ablations/<name>.yaml`` or ``<name>.yaml`` (when one exists) puts the study; a
    StudyError lists every place looked in and what to pass instead."""
    candidates: list[tuple[str, str]] = []
    for root, why in _candidate_roots(target, storage_root):
        candidates.append((root, why))
        if storage.exists(storage.join(root, STUDY_MANIFEST)):
            return _study_source(root, out, allow_incomplete)
        if "://" not in root and (Path(root) / "selection.json").is_file():
            return _run_source(Path(root), out)
    looked = "; ".join(f"{root} ({why})" for root, why in candidates)
    hint = ""
    if _is_bare_name(target):
        specs = " or ".join(str(path) for path in _spec_files(target))
        hint = (
            f". For a study, pass its spec file (no {specs} exists here) or the --storage "
            f"folder it was run with (now {storage_root!r})"
        )
    raise StudyError(
        f"nothing to evaluate at {target!r}: looked for a study manifest (study.json, written "
        f"when `wsol study` ends) or a run folder (selection.json, from `wsol train`) in "
        f"{looked}{hint}"
    )


def _is_bare_name(target: str) -> bool:
    return "/" not in target and re.match(NAME_PATTERN, target) is not None


def _spec_files(name: str) -> list[Path]:
    """Where a spec named ``name`` may be, relative to the working directory."""
    return [Path("ablations") / f"{name}.yaml", Path(f"{name}.yaml")]


def _candidate_roots(target: str, storage_root: str) -> Iterator[tuple[str, str]]:
    """(study or run location, why it is a candidate) for ``target``, in lookup order;
    lazily, so a spec file is read only when the places before it hold nothing."""
    if target.endswith((".yaml", ".yml")) and Path(target).is_file():
        yield _spec_study_root(target), f"the storage of spec {target}"
        return
    yield (target if "://" in target else str(Path(target).resolve())), "as given"
    if _is_bare_name(target):
        yield storage.join(_absolute(storage_root), target), "under --storage"
        for path in _spec_files(target):
            if path.is_file():
                yield _spec_study_root(str(path)), f"the storage of {path}"


def _spec_study_root(spec_file: str) -> str:
    """Where the study of ``spec_file`` keeps its folder (``<storage>/<name>``)."""
    from study.runner import experiment_path
    from study.spec import load_spec

    spec = load_spec(spec_file)
    return experiment_path(spec, spec.name)


def _absolute(location: str) -> str:
    return location if "://" in location else str(Path(location).resolve())


def _default_out(root: str, name: str) -> Path:
    if "://" in root:
        return Path("evaluation") / name
    return Path(root) / "evaluation"


def read_manifest(location: str) -> dict[str, Any]:
    """The study manifest at ``location``; StudyError naming it when it is unreadable,
    truncated or not a manifest (rerun ``wsol study SPEC --resume`` to write it again)."""
    fix = "rerun `wsol study SPEC --resume` to write it again"
    try:
        manifest = json.loads(storage.read_text(location))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise StudyError(f"study manifest {location} cannot be read ({error}); {fix}") from None
    required = ("study", "trials", "rows", "search_keys")
    if not isinstance(manifest, dict) or any(key not in manifest for key in required):
        raise StudyError(
            f"study manifest {location} is not a study manifest (needs {', '.join(required)}); "
            f"{fix}"
        )
    return manifest


def _study_source(root: str, out: Path | None, allow_incomplete: bool) -> EvaluationSource:
    manifest = read_manifest(storage.join(root, STUDY_MANIFEST))
    trials = []
    refused = []
    for trial in manifest["trials"]:
        status = trial["status"]
        if status == "TERMINATED":  # written before statuses said whether epochs are missing
            raise StudyError(
                f"study {manifest['study']}: its manifest predates trial completeness "
                "(status TERMINATED); rewrite it with `wsol study SPEC --resume`"
            )
        if not trial.get("selected_checkpoint"):
            refused.append(f"{trial['trial_id']} ({status}, no selected checkpoint)")
            continue
        if status not in EVALUABLE and not allow_incomplete:
            refused.append(f"{trial['trial_id']} ({status}, {trial['epochs']} epochs ran)")
            continue
        trials.append(
            TrialTarget(
                trial_id=trial["trial_id"],
                row=trial["row"],
                params=trial["params"],
                selected_epoch=int(trial["selected_epoch"]),
                mask_file=storage.join(trial["selected_checkpoint"], MASK_CHECKPOINT),
                classifier=trial["classifier"],
                history=trial["history"],
                checkpoints={
                    int(epoch): storage.join(path, MASK_CHECKPOINT)
                    for epoch, path in trial.get("checkpoints", {}).items()
                },
                status=status,
            )
        )
    if refused and not (allow_incomplete and trials):
        raise StudyError(
            f"study {manifest['study']} has trials that did not finish: {', '.join(refused)}; "
            "finish it with `wsol study SPEC --resume`, or pass --allow-incomplete to score "
            "what they selected so far (labelled incomplete in every output)"
        )
    return EvaluationSource(
        kind="study",
        name=manifest["study"],
        root=root,
        out_dir=out or _default_out(root, manifest["study"]),
        trials=trials,
        rows=manifest["rows"],
        search_keys=manifest["search_keys"],
        keep_all_checkpoints=manifest.get("keep_all_checkpoints", False),
        tracking_uri=manifest.get("tracking_uri"),
        experiment=manifest.get("experiment"),
        skipped=refused,
    )


def _run_source(root: Path, out: Path | None) -> EvaluationSource:
    import yaml

    selection = json.loads((root / "selection.json").read_text())
    config = yaml.safe_load((root / "config.yaml").read_text())
    history = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    classifier = config["classifier"].get("checkpoint") or str(
        root / "classifier" / CLASSIFIER_CHECKPOINT
    )
    trial = TrialTarget(
        trial_id=root.name,
        row=config.get("name", root.name),
        params={},
        selected_epoch=int(selection["epoch"]),
        mask_file=str(root / "selected.pt"),
        classifier=classifier,
        history=history,
        run_folder=True,
    )
    return EvaluationSource(
        kind="run",
        name=root.name,
        root=str(root),
        out_dir=out or root / "evaluation",
        trials=[trial],
        rows=[trial.row],
        search_keys=[],
        keep_all_checkpoints=False,
    )


def verify_selection(trial: TrialTarget, checkpoint_epoch: int) -> None:
    """Refuse a checkpoint that is not the selection: the epoch must be what
    :func:`wsol.selection.select_epoch` picks from the trial's validation history, and the
    checkpoint must hold that epoch."""
    from wsol.selection import select_epoch

    history = trial.history
    if not history:
        raise StudyError(f"trial {trial.name}: no validation history; cannot check selection")
    selected = select_epoch(history).epoch
    if not selected == trial.selected_epoch == checkpoint_epoch:
        raise StudyError(
            f"refusing to score {trial.mask_file}: it holds epoch {checkpoint_epoch}, the "
            f"manifest names epoch {trial.selected_epoch}, and the validation S-score selects "
            f"epoch {selected}; only the study's selection is scored on the test split"
        )


# --------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """One scored row of the results: a trial, or a CAM baseline."""

    key: str  # trial id, or "cam-<hash>"
    method: str  # row label, or "CAM"
    params: dict[str, Any]
    selected_epoch: int | None
    metrics: dict[str, float]
    evaluated_at: str
    figures: dict[str, str] = field(default_factory=dict)
    status: str = "COMPLETE"  # the trial's; CAM: its f's
    scored_from: dict[str, Any] = field(default_factory=dict)  # what was scored (cache key)
    examples: str | None = None  # the .npz of its example maps and PR curve (for reports)
    cached: bool = False

    @property
    def label(self) -> str:
        """The method, marked when the trial did not finish."""
        return self.method if self.status in EVALUABLE else f"{self.method} ({self.status})"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "method": self.method,
            "params": self.params,
            "selected_epoch": self.selected_epoch,
            "metrics": self.metrics,
            "evaluated_at": self.evaluated_at,
            "figures": self.figures,
            "status": self.status,
            "scored_from": self.scored_from,
            "examples": self.examples,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Scored:
        return cls(**raw, cached=True)


def file_identity(location: str) -> dict[str, Any]:
    """What identifies a checkpoint file without reading it: location, size, mtime."""
    filesystem, path = storage.open_storage(location)
    info = filesystem.get_file_info(path)
    return {"location": location, "size": info.size, "mtime_ns": info.mtime_ns}


def scoring_key(trial: TrialTarget) -> dict[str, Any]:
    """What a trial's test score depends on: the selected epoch, its checkpoint, its f
    and the code that scored it. A cached score with another key is scored again."""
    from study.version import code_version

    return {
        "trial_id": trial.trial_id,
        "selected_epoch": trial.selected_epoch,
        "checkpoint": file_identity(trial.mask_file),
        "classifier": file_identity(trial.classifier),
        "code_version": code_version(),
    }


def _read_cache(path: Path) -> dict[str, Any] | None:
    """A cached score, None when there is none or it cannot be read (it is then redone)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


#: The file names of a scored item's figures under ``figures/<key>/``: the same in every
#: trial, so each trial's MLflow run holds them under the same artifact path.
FIGURE_FILES = {"boxes": "boxes.png", "masks": "masks.png", "pr_curve": "pr_curve.png"}
EXAMPLES_FILE = "examples.npz"


def _figures(out_dir: Path, key: str, title: str, evaluation: Any) -> tuple[dict[str, str], str]:
    """Write ``figures/<key>/{boxes,masks,pr_curve}.png`` and ``examples.npz`` (the
    example maps and the PR curve, for ``wsol report``); (kind -> PNG path, npz path)."""
    from wsol.evaluate import save_examples
    from wsol.viz import boxes_figure, masks_figure, pr_curve_figure

    figures: dict[str, str] = {}
    folder = out_dir / "figures" / key
    if evaluation.examples:
        figures["boxes"] = str(
            boxes_figure(folder / FIGURE_FILES["boxes"], evaluation.examples, title)
        )
        if any(example.gt_mask is not None for example in evaluation.examples):
            figures["masks"] = str(
                masks_figure(folder / FIGURE_FILES["masks"], evaluation.examples, title)
            )
    if evaluation.pr_curve is not None:
        figures["pr_curve"] = str(
            pr_curve_figure(
                folder / FIGURE_FILES["pr_curve"],
                {title: (evaluation.pr_curve, evaluation.metrics["pxap"])},
                f"{title}: pixel precision-recall",
            )
        )
    examples = save_examples(folder / EXAMPLES_FILE, evaluation.examples, evaluation.pr_curve)
    return figures, str(examples)


def _score_trial(
    trial: TrialTarget, key: dict[str, Any], device: Any, out_dir: Path, progress: bool
) -> Scored:
    from wsol.checkpoint import load_classifier, load_mask_generator_state
    from wsol.data import read_test_split
    from wsol.evaluate import evaluate_maps, mask_generator_maps

    with storage.local_copy(trial.mask_file) as local:
        mask_generator, state = load_mask_generator_state(local, device)
    verify_selection(trial, int(state["epoch"]))
    config = _config_of(state)
    with storage.local_copy(trial.classifier) as local:
        classifier, _ = load_classifier(local, device)
    samples = read_test_split(config.data)
    evaluation = evaluate_maps(
        mask_generator_maps(mask_generator), classifier, samples, config, device, progress=progress
    )
    title = f"{trial.name} (epoch {trial.selected_epoch})"
    figures, examples = _figures(out_dir, trial.trial_id, title, evaluation)
    return Scored(
        key=trial.trial_id,
        method=trial.row,
        params=trial.params,
        selected_epoch=trial.selected_epoch,
        metrics=evaluation.metrics,
        evaluated_at=_now(),
        figures=figures,
        status=trial.status,
        scored_from=key,
        examples=examples,
    )


def _config_of(state: dict[str, Any]):
    from wsol.checkpoint import stored_config

    return stored_config(state)


def _score_cam(
    classifier_location: str,
    config: Any,
    key: dict[str, Any],
    device: Any,
    out_dir: Path,
    progress: bool,
) -> Scored:
    from wsol.checkpoint import load_classifier
    from wsol.data import read_test_split
    from wsol.evaluate import cam_maps, evaluate_maps

    with storage.local_copy(classifier_location) as local:
        classifier, _ = load_classifier(local, device)
    evaluation = evaluate_maps(
        cam_maps(classifier),
        classifier,
        read_test_split(config.data),
        config,
        device,
        progress=progress,
    )
    cam = cam_key(classifier_location)
    figures, examples = _figures(out_dir, cam, "CAM", evaluation)
    return Scored(
        key=cam,
        method="CAM",
        params={"classifier": classifier_location},
        selected_epoch=None,
        metrics=evaluation.metrics,
        evaluated_at=_now(),
        figures=figures,
        scored_from=key,
        examples=examples,
    )


def cam_key(classifier_location: str) -> str:
    return "cam-" + hashlib.sha256(classifier_location.encode()).hexdigest()[:10]


def _epoch_curve(trial: TrialTarget, device: Any, out_dir: Path, progress: bool) -> dict:
    """Every kept epoch of ``trial`` scored on the test split: a diagnostic only."""
    from wsol.checkpoint import load_classifier, load_mask_generator_state
    from wsol.data import read_test_split
    from wsol.evaluate import evaluate_maps, mask_generator_maps
    from wsol.viz import epoch_curve_figure

    with storage.local_copy(trial.classifier) as local:
        classifier, _ = load_classifier(local, device)
    samples = None
    test_loc: dict[int, float] = {}
    for epoch, location in sorted(trial.checkpoints.items()):
        with storage.local_copy(location) as local:
            mask_generator, state = load_mask_generator_state(local, device)
        config = _config_of(state)
        samples = samples or read_test_split(config.data)
        metrics = evaluate_maps(
            mask_generator_maps(mask_generator),
            classifier,
            samples,
            config,
            device,
            progress=progress,
            num_examples=0,
        ).metrics
        test_loc[epoch] = metrics["gt_known_loc"]
    epochs = sorted(test_loc)
    val_s = {row["epoch"]: row["val_s_score"] for row in trial.history}
    best_epoch = max(epochs, key=lambda e: (test_loc[e], -e))
    selected = trial.selected_epoch
    result = {
        "label": DIAGNOSTIC,
        "trial_id": trial.trial_id,
        "row": trial.row,
        "selected_epoch": selected,
        "test_gt_known_loc_at_selected": test_loc.get(selected),
        "best_epoch_on_test": best_epoch,
        "best_test_gt_known_loc": test_loc[best_epoch],
        "gap": test_loc[best_epoch] - test_loc.get(selected, math.nan),
        "epochs": {
            str(e): {"test_gt_known_loc": test_loc[e], "val_s_score": val_s.get(e)} for e in epochs
        },
    }
    figure = epoch_curve_figure(
        out_dir / "diagnostics" / f"epoch_curve_{trial.trial_id}.png",
        epochs,
        [test_loc[e] for e in epochs],
        [val_s.get(e, math.nan) for e in epochs],
        selected,
        [row["epoch"] for row in trial.history if row["excluded_reason"]],
        title=f"{trial.name}: gap to the best epoch on test {result['gap']:.1f} points",
    )
    result["figure"] = str(figure)
    return result


# --------------------------------------------------------------------------- MLflow


#: Where the results tables and report.html go on the study's parent run.
PARENT_ARTIFACT_PATH = "evaluation"
#: Where each trial's test figures go on its run: the same path in every trial.
TRIAL_ARTIFACT_PATH = "test"  # CAM's figures on the parent run: test/cam/
#: A trial run's test figures: test_boxes.png, test_masks.png, test_pr_curve.png.
TRIAL_ARTIFACT_PREFIX = "test_"
RESULT_TABLES = ("results_rows.md", "results_rows.csv", "results_trials.md", "results_trials.csv")


@dataclass
class StudyRuns:
    """A study's MLflow runs: the parent (None when not found) and each trial's run."""

    client: Any
    tracking_uri: str
    parent: Any | None
    by_trial: dict[str, Any]


def study_runs(source: EvaluationSource, log: Log) -> StudyRuns | None:
    """The MLflow runs of ``source``'s study: the parent is the run without
    ``mlflow.parentRunId`` whose ``study`` tag is the study's name (the latest started,
    if several). None, with a line in ``log``, for a single run, a study without a
    tracking URI or one whose experiment is gone; MLflow errors propagate."""
    if source.kind != "study" or not source.tracking_uri:
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(source.tracking_uri)
    experiment = client.get_experiment_by_name(source.experiment or source.name)
    if experiment is None:
        log(
            f"MLflow: experiment {source.experiment or source.name!r} not found at "
            f"{source.tracking_uri}; nothing logged there"
        )
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.study = '{source.name}'",
        order_by=["attributes.start_time DESC"],
    )
    by_trial = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return StudyRuns(client, source.tracking_uri, parents[0] if parents else None, by_trial)


def _mlflow_warning(source: EvaluationSource, what: str, error: Exception, log: Log) -> None:
    log(
        f"warning: MLflow at {source.tracking_uri}: could not log {what} "
        f"({type(error).__name__}: {error}); the outputs on disk in {source.out_dir} are "
        "complete, rerun the command to log them"
    )


def log_to_mlflow(
    source: EvaluationSource, scored: list[Scored], parent_files: list[Path], log: Log
) -> bool:
    """Log ``scored`` (``test.*`` metrics, tags and ``test/`` figures on each trial's run;
    CAM's as ``test.cam.*`` and ``test/cam/`` on the parent run) and ``parent_files``
    (under ``evaluation/`` on the parent run). True when everything was logged.

    A single run, a missing run or an unreachable MLflow is a line in ``log`` (a
    warning), never an error: the outputs on disk are complete either way."""
    try:
        runs = study_runs(source, log)
        if runs is None:
            return False
        logged = _log_scores(runs, source, scored, log)
        if parent_files and runs.parent is None:
            log(
                f"MLflow: no parent run of study {source.name}; {len(parent_files)} files "
                "only on disk"
            )
            return False
        for path in parent_files:
            runs.client.log_artifact(
                runs.parent.info.run_id, str(path), artifact_path=PARENT_ARTIFACT_PATH
            )
    except Exception as error:  # any MLflow/network failure: the disk outputs stand
        what = [*(item.key for item in scored), *(path.name for path in parent_files)]
        _mlflow_warning(source, ", ".join(what), error, log)
        return False
    return logged


def _cam_artifact_path(source: EvaluationSource, key: str) -> str:
    """``test/cam`` on the parent run; ``test/<cam key>`` when the study has several f."""
    several = len({trial.classifier for trial in source.trials}) > 1
    return f"{TRIAL_ARTIFACT_PATH}/{key if several else 'cam'}"


def _log_scores(runs: StudyRuns, source: EvaluationSource, scored: list[Scored], log: Log) -> bool:
    """Each scored item's metrics, tags and figures on its run; False when a run is
    missing (said in ``log``). MLflow errors propagate."""
    from mlflow.entities import Metric

    from study.version import code_version

    client = runs.client
    evaluated_by = f"wsol evaluate ({code_version()})"
    timestamp = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    complete = True
    for item in scored:
        run = runs.by_trial.get(item.key) if item.method != "CAM" else runs.parent
        if run is None:
            log(f"MLflow: no run for {item.key}; its test metrics are only on disk")
            complete = False
            continue
        prefix = "test." if item.method != "CAM" else "test.cam."
        metrics = [
            Metric(f"{prefix}{name}", float(value), timestamp, 0)
            for name, value in item.metrics.items()
            if isinstance(value, int | float) and math.isfinite(value)
        ]
        client.log_batch(run.info.run_id, metrics=metrics)
        client.set_tag(run.info.run_id, f"{prefix}evaluated_at", item.evaluated_at)
        client.set_tag(run.info.run_id, f"{prefix}evaluated_by", evaluated_by)
        client.set_tag(run.info.run_id, f"{prefix}trial_status", item.status)
        if item.method == "CAM":
            for path in item.figures.values():
                client.log_artifact(
                    run.info.run_id, path, artifact_path=_cam_artifact_path(source, item.key)
                )
            continue
        # At the artifact root, one name per figure: MLflow's compare view shows only the
        # root-level files that every compared run has.
        with tempfile.TemporaryDirectory(prefix="wsol-artifacts-") as staging:
            for kind, path in item.figures.items():
                named = Path(staging) / f"{TRIAL_ARTIFACT_PREFIX}{kind}{Path(path).suffix}"
                shutil.copyfile(path, named)
                client.log_artifact(run.info.run_id, str(named))
    return complete


# --------------------------------------------------------------------------- tables


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}"


def trial_table(source: EvaluationSource, scored: list[Scored]) -> list[list[str]]:
    """Header and one row per scored trial (and CAM baseline); a trial that did not
    finish is labelled in its method cell."""
    header = ["trial", "method", *source.search_keys, "epoch", *(t for _, t in METRIC_COLUMNS)]
    rows = [header]
    for item in scored:
        named = source.kind == "study" and item.method != "CAM"
        rows.append(
            [
                trial_name(item.method, item.key) if named else item.key,
                item.label,
                *(str(item.params.get(key, "-")) for key in source.search_keys),
                str(item.selected_epoch or "-"),
                *(_format(item.metrics.get(name)) for name, _ in METRIC_COLUMNS),
            ]
        )
    return rows


def row_table(source: EvaluationSource, scored: list[Scored]) -> list[list[str]]:
    """Mean and standard deviation over the trials (seeds) of each row, CAM first."""
    header = ["method", "trials", *(t for _, t in METRIC_COLUMNS)]
    rows = [header]
    methods = ["CAM", *source.rows]
    for method in methods:
        group = [item for item in scored if item.method == method]
        if not group:
            continue
        unfinished = sum(item.status not in EVALUABLE for item in group)
        label = method if not unfinished else f"{method} ({unfinished} of {len(group)} unfinished)"
        cells = [label, str(len(group))]
        for name, _ in METRIC_COLUMNS:
            values = [item.metrics[name] for item in group if name in item.metrics]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(_format(values[0]))
            else:
                cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}")
        rows.append(cells)
    return rows


def markdown(rows: list[list[str]]) -> str:
    """A header-first table as Markdown."""
    return markdown_table(rows[0], rows[1:])


def _csv(rows: list[list[str]]) -> str:
    return csv_table(rows[0], rows[1:])


# --------------------------------------------------------------------------- entry points


@dataclass
class EvaluationOutcome:
    source: EvaluationSource
    scored: list[Scored]
    rows_markdown: str
    trials_markdown: str
    diagnostics: list[dict[str, Any]]


def evaluate(
    target: str,
    *,
    storage_root: str = "studies",
    out: Path | None = None,
    force: bool = False,
    epoch_curve: bool = False,
    allow_incomplete: bool = False,
    device: str = "auto",
    progress: bool = True,
    log: Log = print,
) -> EvaluationOutcome:
    """Score every selected checkpoint of ``target`` (and the CAM baseline) on the test
    split; write tables, figures and MLflow ``test.*`` metrics. See the module docstring."""
    from wsol.compute import resolve_device

    source = resolve_source(target, storage_root, out, allow_incomplete)
    if epoch_curve and not source.keep_all_checkpoints:
        raise StudyError(
            f"--epoch-curve needs every epoch's checkpoint; study {source.name} kept only the "
            "best ones. Run it with `keep_all_checkpoints: true` in the spec"
        )
    torch_device = resolve_device(device)
    out_dir = source.out_dir
    (out_dir / "trials").mkdir(parents=True, exist_ok=True)
    log(
        f"evaluating {source.kind} {source.name} ({len(source.trials)} selected checkpoints) "
        f"on the test split -> {out_dir}"
    )
    for skipped in source.skipped:
        log(f"not scored: {skipped}")
    scored: list[Scored] = []
    fresh: list[Scored] = []
    total = len(source.trials)
    for index, trial in enumerate(source.trials, start=1):
        # Every time, cached or not: the manifest's epoch is what its history selects.
        verify_selection(trial, trial.selected_epoch)
        cache = out_dir / "trials" / f"{trial.trial_id}.json"
        key = scoring_key(trial)
        cached = None if force else _read_cache(cache)
        label = trial.row if trial.status in EVALUABLE else f"{trial.row}, {trial.status}"
        if cached is not None and cached.get("scored_from") == key:
            scored.append(Scored.from_json(cached))
            log(
                f"[{index}/{total}] {trial.name} ({label}, epoch {trial.selected_epoch}): "
                f"already scored ({cache})"
            )
            continue
        if cached is not None:
            before = cached.get("selected_epoch")
            log(
                f"[{index}/{total}] {trial.name}: its selection, checkpoint, f or the code "
                f"changed since it was scored (epoch {before} -> {trial.selected_epoch}); "
                "scoring again"
            )
        log(
            f"[{index}/{total}] {trial.name} ({label}, epoch {trial.selected_epoch}): "
            "scoring on the test split"
        )
        item = _score_trial(trial, key, torch_device, out_dir, progress)
        write_json_atomically(cache, item.to_json())
        scored.append(item)
        fresh.append(item)
    for location in dict.fromkeys(trial.classifier for trial in source.trials):
        from study.version import code_version

        cache = out_dir / "trials" / f"{cam_key(location)}.json"
        key = {"classifier": file_identity(location), "code_version": code_version()}
        cached = None if force else _read_cache(cache)
        if cached is not None and cached.get("scored_from") == key:
            scored.insert(0, Scored.from_json(cached))
            continue
        trial = next(t for t in source.trials if t.classifier == location)
        with storage.local_copy(trial.mask_file) as local:
            from wsol.checkpoint import load_mask_state

            config = _config_of(load_mask_state(local))
        if config.classifier_kind != "softmax":
            log(f"no CAM baseline for {location}: Method II's f has no class FC layer")
            continue
        log(f"CAM baseline of {location}: scoring on the test split")
        item = _score_cam(location, config, key, torch_device, out_dir, progress)
        write_json_atomically(cache, item.to_json())
        scored.insert(0, item)
        fresh.append(item)
    diagnostics = []
    if epoch_curve:
        for trial in source.trials:
            cache = out_dir / "diagnostics" / f"epoch_curve_{trial.trial_id}.json"
            key = {
                **scoring_key(trial),
                "epochs": {str(e): file_identity(f) for e, f in trial.checkpoints.items()},
            }
            cached = None if force else _read_cache(cache)
            if cached is not None and cached.get("scored_from") == key:
                diagnostics.append(cached)
                continue
            log(f"{DIAGNOSTIC}: every epoch of {trial.name} on the test split")
            result = {**_epoch_curve(trial, torch_device, out_dir, progress), "scored_from": key}
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomically(cache, result)
            diagnostics.append(result)
    trials_rows = trial_table(source, scored)
    rows_rows = row_table(source, scored)
    write_text_atomically(out_dir / "results_trials.md", markdown(trials_rows))
    write_text_atomically(out_dir / "results_trials.csv", _csv(trials_rows))
    write_text_atomically(out_dir / "results_rows.md", markdown(rows_rows))
    write_text_atomically(out_dir / "results_rows.csv", _csv(rows_rows))
    # The tables every time, not only when something was scored: a previous run may
    # not have reached MLflow.
    log_to_mlflow(source, fresh, [out_dir / name for name in RESULT_TABLES], log)
    outcome = EvaluationOutcome(
        source, scored, markdown(rows_rows), markdown(trials_rows), diagnostics
    )
    log("\n" + outcome.rows_markdown)
    for result in diagnostics:
        log(
            f"{DIAGNOSTIC}: {result['trial_id']} selected epoch {result['selected_epoch']} "
            f"scores {result['test_gt_known_loc_at_selected']:.1f}% test GT-known loc; the "
            f"best epoch on test ({result['best_epoch_on_test']}) scores "
            f"{result['best_test_gt_known_loc']:.1f}% (gap {result['gap']:.1f} points)"
        )
    if not fresh:
        log("nothing new to score (every selected checkpoint was scored before; --force redoes)")
    log(f"tables: {out_dir / 'results_rows.md'}, {out_dir / 'results_trials.md'}")
    return outcome
