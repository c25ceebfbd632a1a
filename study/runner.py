"""Run a study spec on Ray Tune: pre-flight, the classifier stage, mask trials, summary.

``run_study`` is what ``wsol study SPEC`` calls::

    pre-flight   dataset readable, MLflow reachable, one trial fits the cluster
    stage 1      each distinct f (by content hash) trained once as a Ray task, stored at
                 <storage>/classifiers/<key>/classifier.pt, reused on --resume and by
                 every study with the same storage
    stage 2      one Ray Tune trial per mask config: ``mask_trial`` wraps
                 wsol.train.train_mask, reports the validation metrics every epoch with a
                 checkpoint, resumes from tune.get_checkpoint() after a failure
    summary      per-trial table; <storage>/<name>/study.json lists each trial's selected
                 checkpoint (what ``wsol evaluate`` scores, and nothing else)

The test split is structurally out of reach: trials get their data from
``wsol.data.read_training_splits``, which returns train and validation only.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from study import storage
from study.errors import StudyError
from study.spec import DEFAULT_ROW, Resources, Study, classifier_key, spec_from_dict
from wsol.config import RunConfig, flatten_config

Log = Callable[[str], None]
STUDY_MANIFEST = "study.json"
# Keys of a trial's tune config that are not search-space dimensions.
ROW_KEY = "row"
# Select_epoch breaks ties on S by the earliest epoch; the checkpoint manager must keep
# that same epoch, so its score carries the tie-break (S-scores are means of values in
# [0,1]; 1e-9 per epoch stays far below any difference that matters).
_TIE_BREAK_PER_EPOCH = 1e-9
# How often the driver saves Tune's experiment state (what --resume restores), and how long
# a superseded checkpoint is kept after that, so the saved state never names a deleted one.
STATE_SAVE_PERIOD_S = 10
RETENTION_GRACE_S = 3 * STATE_SAVE_PERIOD_S


# --------------------------------------------------------------------------- paths


def resolve_paths(config: RunConfig, base: Path) -> RunConfig:
    """Make relative data/weights/checkpoint paths absolute against ``base`` (the
    driver's working directory): Ray workers run elsewhere (Tune changes into trial
    folders), so a relative path typed by the user would otherwise point nowhere."""

    def absolute(path: Path | None) -> Path | None:
        if path is None or path.is_absolute() or "://" in str(path):
            return path
        return (base / path).resolve()

    return config.model_copy(
        update={
            "data": config.data.model_copy(
                update={
                    "root": absolute(config.data.root),
                    "cache_dir": absolute(config.data.cache_dir),
                }
            ),
            "classifier": config.classifier.model_copy(
                update={
                    "weights_path": absolute(config.classifier.weights_path),
                    "checkpoint": absolute(config.classifier.checkpoint),
                }
            ),
            "mask": config.mask.model_copy(
                update={"weights_path": absolute(config.mask.weights_path)}
            ),
        }
    )


def classifier_location(study: Study, config: RunConfig) -> str:
    """Where f of ``config`` lives: its own checkpoint file, or the content-addressed
    ``<storage>/classifiers/<key>/classifier.pt``."""
    if config.classifier.checkpoint is not None:
        return str(config.classifier.checkpoint)
    return storage.join(
        study.storage_path(), "classifiers", classifier_key(config), "classifier.pt"
    )


def experiment_path(study: Study, name: str) -> str:
    return storage.join(study.storage_path(), name)


# --------------------------------------------------------------------------- pre-flight


def check_datasets(study: Study, cwd: Path) -> None:
    """Every distinct dataset of the study passes ``wsol data check`` on the splits a study
    reads (train, and the official validation split where the format has one; never
    test) and gives a non-empty validation split."""
    from wsol.data import DatasetError, has_official_validation, read_training_splits
    from wsol.data.check import check_dataset, training_split_names
    from wsol.data.index import describe_problems

    checked: set[tuple[str, str, bool]] = set()
    seen: set[str] = set()
    for config in study.classifier_configs():
        config = resolve_paths(config, cwd)
        data = config.data
        key = data.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        folder = (str(data.root), data.format, data.require_masks)
        try:
            if folder not in checked:
                checked.add(folder)
                report = check_dataset(
                    data.root,
                    data.format,
                    training_split_names(data.format),
                    require_masks=data.require_masks,
                )
                if not report.ok:
                    raise StudyError(
                        f"pre-flight: dataset of {config.name} ({data.format} at {data.root}) "
                        f"has {len(report.problems)} problem(s):\n"
                        f"{describe_problems(report.problems)}\n"
                        f"`wsol data check {data.root} --format {data.format}` lists them all"
                    )
            splits = read_training_splits(data)
        except (DatasetError, FileNotFoundError, OSError) as error:
            raise StudyError(f"pre-flight: dataset of {config.name}: {error}") from None
        if not splits.val:
            how = (
                "its official validation split is empty"
                if has_official_validation(data.format)
                else f"with data.val_fraction={data.val_fraction}; raise it"
            )
            raise StudyError(
                f"pre-flight: dataset {data.root} gives an empty validation split {how}"
            )


def check_resources(study: Study) -> None:
    """Fail fast when no node of the running cluster can ever hold one trial, or one f of
    the classifier stage."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    _check_fits(nodes, "resources", "per trial", study.resources)
    if study.classifier_resources is not None:
        _check_fits(nodes, "classifier_resources", "per f", study.classifier_resources)


def _check_fits(nodes: list[dict[str, Any]], field: str, what: str, resources: Resources) -> None:
    need_cpu, need_gpu = resources.cpu, resources.gpu
    fits = [
        node
        for node in nodes
        if node["Resources"].get("CPU", 0) >= need_cpu
        and (need_gpu == 0 or node["Resources"].get("GPU", 0) >= min(need_gpu, 1.0))
        and node["Resources"].get("GPU", 0) >= need_gpu
    ]
    if fits:
        return
    described = "; ".join(
        f"node {node['NodeManagerAddress']}: "
        f"CPU={node['Resources'].get('CPU', 0):g} GPU={node['Resources'].get('GPU', 0):g}"
        for node in nodes
    )
    raise StudyError(
        f"pre-flight: {field} {{cpu: {need_cpu:g}, gpu: {need_gpu:g}}} {what} fit no node "
        f"of this cluster ({described or 'no live node'}); it would stay pending forever. "
        "Lower resources in the spec (gpu: 0 runs on CPU) or add such nodes "
        "(--skip-resource-check if an autoscaler will)"
    )


def preflight(study: Study, cwd: Path, check_cluster: bool = True) -> None:
    from study.tracking import TrackingUnavailableError, check_tracking_uri

    check_datasets(study, cwd)
    try:
        check_tracking_uri(study.tracking_uri())
    except TrackingUnavailableError as error:
        raise StudyError(f"pre-flight: {error}") from None
    if check_cluster:
        check_resources(study)


# --------------------------------------------------------------------------- stage 1


@ray.remote
def _train_classifier_task(config_json: str, location: str) -> str:
    """Train one f and store it at ``location`` (a Ray task: runs on any node)."""
    import json

    from wsol.config import config_to_yaml
    from wsol.data import read_training_splits
    from wsol.train import save_classifier, train_classifier

    config = RunConfig.model_validate_json(config_json)
    _cap_gpu_memory(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    splits = read_training_splits(config.data)
    folder = location.rsplit("/", 1)[0]
    storage.write_text(storage.join(folder, "config.yaml"), config_to_yaml(config))
    rows: list[dict[str, Any]] = []

    def on_epoch(report, save) -> None:
        rows.append(
            {
                "epoch": report.epoch,
                "epochs": config.classifier.epochs,
                **report.metrics,
                # Ray sets OMP_NUM_THREADS to classifier_resources.cpu: the share f trains on.
                "torch_threads": _torch_threads(),
            }
        )
        # The driver reads this to show progress (a task's prints do not reach it).
        storage.write_text(
            storage.join(folder, "metrics.jsonl"), "".join(json.dumps(r) + "\n" for r in rows)
        )

    classifier, history = train_classifier(config, splits, on_epoch)
    with tempfile.TemporaryDirectory() as directory:
        local = Path(directory) / "classifier.pt"
        save_classifier(local, classifier, config, splits.class_names, history)
        storage.upload_file(local, location)  # last: its presence means "complete"
    last = rows[-1] if rows else {}
    return f"val top-1 {last.get('val_top1_cls', float('nan')):.1f}%"


def train_classifiers(study: Study, cwd: Path, log: Log) -> dict[str, str]:
    """Stage 1: train every distinct f the study needs that storage does not hold yet.

    Returns classifier key -> location of its ``classifier.pt``.
    """
    locations: dict[str, str] = {}
    pending: dict[ray.ObjectRef, tuple[str, str]] = {}
    resources = study.f_resources
    for config in study.classifier_configs():
        key = classifier_key(config)
        location = classifier_location(study, config)
        locations[key] = location
        if config.classifier.checkpoint is not None:
            resolved = resolve_paths(config, cwd).classifier.checkpoint
            locations[key] = str(resolved)
            if not storage.exists(str(resolved)):
                raise StudyError(f"pre-flight: classifier.checkpoint {resolved} does not exist")
            log(f"classifier {key}: given checkpoint {resolved}")
            continue
        if storage.exists(location):
            log(f"classifier {key}: reusing {location}")
            continue
        config_json = resolve_paths(config, cwd).model_dump_json()
        task = _train_classifier_task.options(
            num_cpus=resources.cpu, num_gpus=resources.gpu, max_retries=study.max_failures
        )
        pending[task.remote(config_json, location)] = (key, config.classifier.backbone)
        log(f"classifier {key}: training {config.classifier.backbone} -> {location}")
    started = time.perf_counter()
    shown: dict[str, int] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
        for key, _backbone in pending.values():
            _show_classifier_progress(key, locations[key], shown, started, log)
        if not done:
            continue
        key, backbone = pending.pop(done[0])
        try:
            summary = ray.get(done[0])
        except ray.exceptions.RayError as error:
            raise StudyError(f"classifier {key} ({backbone}) failed: {error}") from None
        log(
            f"classifier {key}: done, {summary} ({time.perf_counter() - started:.0f}s; "
            f"{len(pending)} still training)"
        )
    return locations


def _show_classifier_progress(
    key: str, location: str, shown: dict[str, int], started: float, log: Log
) -> None:
    """Log the epochs of f ``key`` finished since the last call (read from storage)."""
    import json

    metrics = storage.join(location.rsplit("/", 1)[0], "metrics.jsonl")
    try:
        rows = [json.loads(line) for line in storage.read_text(metrics).splitlines()]
    except (FileNotFoundError, OSError, ValueError):
        return
    for row in rows[shown.get(key, 0) :]:
        top1 = row.get("val_top1_cls")
        log(
            f"classifier {key}: epoch {row['epoch']}/{row.get('epochs', '?')}"
            + (f"  val top-1 {top1:.1f}%" if top1 is not None else "")
            + f"  ({time.perf_counter() - started:.0f}s)"
        )
    shown[key] = len(rows)


# --------------------------------------------------------------------------- stage 2


def _cap_gpu_memory(gpu_fraction: float) -> None:
    """Ray's fractional GPUs are logical only: cap this process's CUDA allocations to
    its share, so trials packed on one GPU cannot push each other out of memory."""
    import torch

    if 0 < gpu_fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu_fraction, 0)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def trial_params(tune_config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(row, search-space params) of a trial's Tune config."""
    params = {key: value for key, value in tune_config.items() if key != ROW_KEY}
    return tune_config.get(ROW_KEY, DEFAULT_ROW), params


def checkpoint_rank(selection_score: float, epoch: int) -> float:
    """The score Tune's checkpoint manager keeps the best of: the guarded S-score with
    select_epoch's tie-break (earliest epoch) folded in."""
    return selection_score - _TIE_BREAK_PER_EPOCH * epoch


@dataclass
class _TrialContext:
    spec: dict[str, Any]
    source: str
    cwd: str
    classifier_locations: dict[str, str] = field(default_factory=dict)


def mask_trial(tune_config: dict[str, Any], context: _TrialContext) -> None:
    """Ray Tune function trainable: train g for one trial config.

    Reports once per epoch (``epoch``, the validation metrics with ``val_s_score`` first,
    ``selection_score``, ``excluded``, the selection so far, ``objective``) with a
    checkpoint directory holding ``mask.pt`` (and at the last epoch ``weight_maps.png``).
    After a failure Tune restarts it and it continues from ``tune.get_checkpoint()``.
    """
    from wsol.data import WsolDataset, build_transform, read_training_splits
    from wsol.local_run import tracked_validation_images
    from wsol.train import load_classifier, load_mask_state, resolve_device, train_mask
    from wsol.viz import weight_map_evolution

    study = spec_from_dict(context.spec, source=context.source)
    row, params = trial_params(tune_config)
    config = resolve_paths(study.trial_config(row, params), Path(context.cwd))
    _cap_gpu_memory(study.resources.gpu)
    device = resolve_device(config.device)
    location = context.classifier_locations[classifier_key(study.trial_config(row, params))]
    with storage.local_copy(location) as local:
        classifier, _ = load_classifier(local, device)

    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume_state = load_mask_state(Path(directory) / "mask.pt")

    splits = read_training_splits(config.data)  # train + validation; never the test split
    val_set = WsolDataset(splits.val, build_transform(config.data, False), config.seed)
    images, gt_boxes = tracked_validation_images(config, val_set, config.selection.num_visualized)
    history: list[dict[str, Any]] = list((resume_state or {}).get("history", []))
    visuals: list[dict[str, Any]] = list((resume_state or {}).get("visuals", []))
    metric = study.trial_selection.metric
    placement = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(gpu) for gpu in ray.get_gpu_ids()),
        "pid": os.getpid(),
        # Ray sets OMP_NUM_THREADS to resources.cpu, so torch computes on the trial's share.
        "torch_threads": _torch_threads(),
    }

    def on_epoch(report, save) -> None:
        from wsol.train import select_epoch

        history.append(
            {"epoch": report.epoch, **report.metrics, "excluded_reason": report.excluded_reason}
        )
        visuals.append(
            {"epoch": report.epoch, "maps": report.visual_maps, "boxes": report.visual_boxes}
        )
        selection = select_epoch(history)
        selected = next(row for row in history if row["epoch"] == selection.epoch)
        objective = selected.get(metric, math.nan)
        if metric == "val_s_score":
            # The guarded score: a trial whose every epoch is degenerate (plain max-S
            # fallback) ranks below every trial with a selectable epoch.
            objective = selected["selection_score"]
        result = {
            "epoch": report.epoch,
            **report.metrics,
            "excluded": int(report.excluded_reason is not None),
            "checkpoint_rank": checkpoint_rank(report.metrics["selection_score"], report.epoch),
            "selected_epoch": selection.epoch,
            "selected_val_s_score": selection.s_score,
            "objective": objective,
            "row": row,
            **placement,
        }
        with tempfile.TemporaryDirectory() as directory:
            save(Path(directory) / "mask.pt")
            if report.epoch == config.mask.epochs and images:
                weight_map_evolution(
                    Path(directory) / "weight_maps.png",
                    images,
                    gt_boxes,
                    visuals,
                    selection.epoch,
                    excluded_epochs=list(selection.excluded),
                    title=f"{config.name} ({tune.get_context().get_trial_id()})",
                )
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(directory))

    train_mask(config, classifier, splits, on_epoch, resume_state=resume_state)


def search_space(study: Study) -> dict[str, Any]:
    """The Tune param space: ``row`` plus one domain per dotted search-space key."""
    space: dict[str, Any] = {}
    rows = study.row_labels()
    if study.search.algorithm == "grid":
        space[ROW_KEY] = tune.grid_search(rows) if len(rows) > 1 else rows[0]
    else:
        space[ROW_KEY] = rows[0]
    for key, dimension in study.search_space.items():
        kind = dimension.kind
        if kind == "grid":
            space[key] = tune.grid_search(dimension.values)
        elif kind == "choice":
            space[key] = tune.choice(dimension.values)
        elif kind == "uniform":
            space[key] = tune.uniform(*dimension.bounds)
        else:
            space[key] = tune.loguniform(*dimension.bounds)
    return space


def _searcher(study: Study):
    if study.search.algorithm != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=study.search.seed),
        metric="objective",
        mode=study.trial_selection.mode,
    )


def _trial_dirname(trial) -> str:
    return f"{trial.config.get(ROW_KEY, DEFAULT_ROW)}_{trial.trial_id}"


def build_tuner(
    study: Study,
    name: str,
    context: _TrialContext,
    callbacks: list[tune.Callback],
    resume: bool,
    log: Log,
) -> tune.Tuner:
    """A new Tuner, or the restored one when ``resume`` and the experiment exists."""
    trainable = tune.with_resources(
        tune.with_parameters(mask_trial, context=context),
        {"cpu": study.resources.cpu, "gpu": study.resources.gpu},
    )
    path = experiment_path(study, name)
    restorable = tune.Tuner.can_restore(path)
    if resume and restorable:
        log(f"resuming study from {path}")
        return tune.Tuner.restore(
            path, trainable, resume_unfinished=True, resume_errored=True, param_space=None
        )
    if restorable:
        raise StudyError(
            f"study {name!r} already exists at {path}; pass --resume to finish it, "
            "or --name to start another"
        )
    if resume:
        log(f"nothing to resume at {path}; starting the study")
    checkpoint_config = tune.CheckpointConfig(
        num_to_keep=None,  # CheckpointRetention prunes, safely for --resume
        checkpoint_score_attribute="checkpoint_rank",
        checkpoint_score_order="max",
    )
    run_config = tune.RunConfig(
        name=name,
        storage_path=study.storage_path(),
        checkpoint_config=checkpoint_config,
        failure_config=tune.FailureConfig(max_failures=study.max_failures),
        callbacks=callbacks,
    )
    tune_config = tune.TuneConfig(
        metric="objective",
        mode=study.trial_selection.mode,
        search_alg=_searcher(study),
        num_samples=study.search.num_samples,
        max_concurrent_trials=study.max_concurrent_trials or None,
        trial_dirname_creator=_trial_dirname,
    )
    return tune.Tuner(
        trainable, param_space=search_space(study), tune_config=tune_config, run_config=run_config
    )


# --------------------------------------------------------------------------- retention


def _rank(metrics: dict[str, Any]) -> float:
    return float(metrics.get("checkpoint_rank", -math.inf))


class CheckpointRetention(tune.Callback):
    """Keep each trial's ``keep`` best checkpoints by :func:`checkpoint_rank` plus what a
    resume needs; delete the rest.

    Not Ray's ``CheckpointConfig(num_to_keep=...)``: it deletes a checkpoint the moment
    it falls out of the top k, while the experiment state saved for ``--resume`` may still
    name it as the trial's latest (we hit this: after a driver kill, the resumed trial
    failed with "Could not recover from checkpoint as it does not exist on storage
    anymore"). Here a checkpoint is deleted only once it has been superseded by a newer
    one for ``grace_s``, longer than the state-save period; :meth:`finalize` prunes the
    rest after the run, when the saved state marks the trials finished.
    """

    def __init__(self, keep: int, grace_s: float = RETENTION_GRACE_S) -> None:
        self.keep = keep
        self.grace_s = grace_s
        self._superseded: dict[str, float] = {}  # checkpoint path -> when superseded
        self._deleted: set[str] = set()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        # Called before Tune registers ``checkpoint``: the manager's latest is the old one.
        manager = trial.run_metadata.checkpoint_manager
        now = time.monotonic()
        if manager.latest_checkpoint_result is not None:
            self._superseded[manager.latest_checkpoint_result.checkpoint.path] = now
        results = [(r.checkpoint, r.metrics) for r in manager.best_checkpoint_results]
        protected = {checkpoint.path}
        if manager.latest_checkpoint_result is not None:
            protected.add(manager.latest_checkpoint_result.checkpoint.path)
        for doomed in self._doomed(results, protected):
            superseded = self._superseded.get(doomed.path)
            if superseded is not None and now - superseded >= self.grace_s:
                self._delete(doomed)

    def finalize(self, results: tune.ResultGrid) -> None:
        """After the run: keep only the ``keep`` best and the latest of every trial."""
        for result in results:
            protected = {result.checkpoint.path} if result.checkpoint else set()
            for doomed in self._doomed(result.best_checkpoints or [], protected):
                self._delete(doomed)

    def _doomed(self, results: list[tuple[tune.Checkpoint, dict]], protected: set[str]):
        ranked = sorted(results, key=lambda item: _rank(item[1]), reverse=True)
        kept = protected | {checkpoint.path for checkpoint, _ in ranked[: self.keep]}
        return [
            checkpoint
            for checkpoint, _ in ranked
            if checkpoint.path not in kept and checkpoint.path not in self._deleted
        ]

    def _delete(self, checkpoint: tune.Checkpoint) -> None:
        self._deleted.add(checkpoint.path)
        with contextlib.suppress(FileNotFoundError):
            checkpoint.filesystem.delete_dir(checkpoint.path)


def existing_checkpoints(result: tune.Result) -> list[tuple[tune.Checkpoint, dict]]:
    """``result.best_checkpoints`` minus those :class:`CheckpointRetention` deleted."""
    return [
        (checkpoint, metrics)
        for checkpoint, metrics in result.best_checkpoints or []
        if checkpoint.filesystem.get_file_info(checkpoint.path).type
        != storage.pafs.FileType.NotFound
    ]


# --------------------------------------------------------------------------- summary


@dataclass
class TrialSummary:
    trial_id: str
    row: str
    params: dict[str, Any]
    status: str
    epochs: int
    selected_epoch: int | None
    selected_s_score: float | None
    objective: float | None
    selected_checkpoint: str | None
    excluded_epochs: list[int]
    path: str
    classifier: str
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    error: str | None = None


def _selected_checkpoint(result: tune.Result, epoch: int | None) -> str | None:
    if epoch is None:
        return None
    for checkpoint, metrics in existing_checkpoints(result):
        if metrics.get("epoch") == epoch:
            return _uri(result.filesystem, checkpoint.path)
    return None


def _uri(filesystem: Any, path: str) -> str:
    """A path on a non-local filesystem as ``<scheme>://path``; a local path as is."""
    if filesystem is None or isinstance(filesystem, storage.pafs.LocalFileSystem):
        return path
    return f"{filesystem.type_name}://{path}"


_HISTORY_COLUMNS = ("epoch", "val_s_score", "excluded", "val_gt_known_loc")


def summarize(
    study: Study, results: tune.ResultGrid, classifier_locations: dict[str, str]
) -> list[TrialSummary]:
    """One :class:`TrialSummary` per trial, rows in spec order. ``history`` holds each
    epoch's ``epoch``, ``val_s_score``, ``excluded`` (and ``val_gt_known_loc``):
    enough for ``wsol evaluate`` to re-derive the selection it is asked to score."""
    summaries = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        row, params = trial_params(config)
        epoch = metrics.get("selected_epoch")
        frame = result.metrics_dataframe
        history: list[dict[str, Any]] = []
        if frame is not None and "epoch" in frame:
            columns = [c for c in _HISTORY_COLUMNS if c in frame]
            frame = frame[columns].drop_duplicates("epoch", keep="last").sort_values("epoch")
            history = [
                {
                    key: (int(value) if key in ("epoch", "excluded") else float(value))
                    for key, value in record.items()
                }
                for record in frame.to_dict("records")
            ]
        excluded = [row_["epoch"] for row_ in history if row_.get("excluded")]
        summaries.append(
            TrialSummary(
                trial_id=metrics.get("trial_id", Path(result.path).name),
                row=row,
                params=params,
                status="ERROR" if result.error else "TERMINATED",
                epochs=int(metrics.get("epoch", 0)),
                selected_epoch=int(epoch) if epoch is not None else None,
                selected_s_score=metrics.get("selected_val_s_score"),
                objective=metrics.get("objective"),
                selected_checkpoint=_selected_checkpoint(result, epoch),
                excluded_epochs=excluded,
                path=_uri(result.filesystem, result.path),
                classifier=classifier_locations[classifier_key(study.trial_config(row, params))],
                history=history,
                checkpoints={
                    int(m["epoch"]): _uri(result.filesystem, c.path)
                    for c, m in existing_checkpoints(result)
                },
                error=str(result.error).splitlines()[0] if result.error else None,
            )
        )
    summaries.sort(key=lambda s: (study.row_labels().index(s.row), s.trial_id))
    return summaries


def format_table(study: Study, summaries: list[TrialSummary]) -> str:
    """A Markdown table: trial, row, the varying params, selected epoch, S, objective."""
    keys = list(study.search_space)
    metric = study.trial_selection.metric
    header = ["trial", "row", *keys, "status", "selected epoch", "val S", "excluded", metric]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def number(value: Any, digits: int = 4) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    for s in summaries:
        cells = [
            s.trial_id,
            s.row,
            *(number(s.params.get(key)) for key in keys),
            s.status,
            number(s.selected_epoch),
            number(s.selected_s_score),
            _excluded_note(s),
            number(s.objective),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _excluded_note(summary: TrialSummary) -> str:
    """How many epochs the guard excluded; 'all' means the selection fell back to max-S."""
    count = len(summary.excluded_epochs)
    if summary.epochs and count == summary.epochs:
        return f"{count}/{summary.epochs} (all: plain max-S)"
    return f"{count}/{summary.epochs}"


def write_manifest(study: Study, name: str, summaries: list[TrialSummary]) -> str:
    location = storage.join(experiment_path(study, name), STUDY_MANIFEST)
    storage.write_json(
        location,
        {
            "study": name,
            "spec": str(study.source),
            "storage": study.storage_path(),
            "tracking_uri": study.tracking_uri(),
            "experiment": study.experiment_name(),
            "trial_selection": study.trial_selection.model_dump(),
            "rows": study.row_labels(),
            "search_keys": list(study.search_space),
            "keep_all_checkpoints": study.keep_all_checkpoints,
            "trials": [s.__dict__ for s in summaries],
        },
    )
    return location


# --------------------------------------------------------------------------- entry point


@dataclass
class StudyOutcome:
    name: str
    summaries: list[TrialSummary]
    manifest: str
    table: str


def _describe_trial(study: Study) -> Callable[[dict[str, Any]], Any]:
    from study.tracking import TrialInfo

    def describe(tune_config: dict[str, Any]) -> TrialInfo:
        row, params = trial_params(tune_config)
        config = study.trial_config(row, params)
        return TrialInfo(
            row=row,
            params=flatten_config(config),
            tags={"classifier_key": classifier_key(config)},
        )

    return describe


def driver_state_dir(study: Study, name: str) -> Path:
    """Where the driver keeps its own bookkeeping (the MLflow run ids of the study)."""
    if study.is_remote_storage():
        return Path.home() / ".cache" / "wsol-study" / name
    return Path(experiment_path(study, name).removeprefix("file://")) / ".driver"


def run_study(
    study: Study,
    *,
    address: str | None = None,
    resume: bool = False,
    name: str | None = None,
    check_cluster: bool = True,
    callbacks: list[tune.Callback] | None = None,
    log: Log = print,
) -> StudyOutcome:
    """Run ``study`` to completion (see the module docstring) and return its summary.

    ``address``: None starts a local Ray (unless one is already initialised in this
    process); ``"auto"`` or ``"ray://host:10001"`` joins a cluster. ``callbacks``: extra
    Ray Tune callbacks, after the MLflow one.
    """
    from study.tracking import MlflowStudyCallback, code_version

    name = name or study.name
    cwd = Path.cwd()
    if not ray.is_initialized():
        if address is None:
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    log(f"study {name}: Ray {ray.__version__} with {ray.cluster_resources()}")
    preflight(study, cwd, check_cluster=check_cluster)
    log(f"pre-flight passed: data readable, MLflow at {study.tracking_uri()}")

    locations = train_classifiers(study, cwd, log)
    context = _TrialContext(
        spec=study.model_dump(mode="json", exclude={"source"}, exclude_none=True),
        source=str(study.source),
        cwd=str(cwd),
        classifier_locations=locations,
    )
    state_dir = driver_state_dir(study, name)
    state_dir.mkdir(parents=True, exist_ok=True)
    tracker = MlflowStudyCallback(
        tracking_uri=study.tracking_uri(),
        experiment=study.experiment_name(),
        study_name=name,
        state_file=state_dir / "mlflow_state.json",
        describe_trial=_describe_trial(study),
        code_version=code_version(),
    )
    retention = None if study.keep_all_checkpoints else CheckpointRetention(study.keep_checkpoints)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_SAVE_PERIOD_S))
    # MLflow's HTTP client retries for minutes by default, which would stall Tune's loop
    # (the tracker runs in it) while a tracking server restarts.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    tuner = build_tuner(
        study,
        name,
        context,
        [tracker, *([retention] if retention else []), *(callbacks or [])],
        resume,
        log,
    )
    started = time.perf_counter()
    results = tuner.fit()
    if retention is not None:
        retention.finalize(results)
    summaries = summarize(study, results, locations)
    manifest = write_manifest(study, name, summaries)
    table = format_table(study, summaries)
    failed = [s for s in summaries if s.status == "ERROR"]
    log(f"\nstudy {name}: {len(summaries)} trials in {time.perf_counter() - started:.0f}s")
    log(table)
    for summary in failed:
        log(f"trial {summary.trial_id} failed: {summary.error}")
    log(f"trials and checkpoints: {experiment_path(study, name)}")
    log(f"manifest (selected checkpoints): {manifest}")
    log(f"MLflow: {study.tracking_uri()} experiment {study.experiment_name()!r}")
    if study.tracking_uri().startswith("sqlite:"):
        log(f"open the UI with: mlflow ui --backend-store-uri {study.tracking_uri()}")
    if failed:
        print(f"{len(failed)} trial(s) failed", file=sys.stderr)
    return StudyOutcome(name=name, summaries=summaries, manifest=manifest, table=table)
