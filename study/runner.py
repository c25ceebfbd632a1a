"""Run a study spec on Ray Tune: pre-flight, the classifier stage, mask trials, summary.

``run_study`` is what ``wsol study SPEC`` calls::

    pre-flight   dataset readable, MLflow reachable, one trial fits the cluster
                 (study.preflight)
    stage 1      each distinct f (by content hash) trained once as a Ray task, stored at
                 <storage>/classifiers/<key>/classifier.pt, reused on --resume and by
                 every study with the same storage (study.classifiers)
    stage 2      one Ray Tune trial per mask config: ``mask_trial`` (study.trainable)
                 wraps wsol.loop.train_mask, reports every epoch with a checkpoint,
                 resumes from tune.get_checkpoint() after a failure; checkpoints pruned
                 by study.retention, tracked in MLflow by study.tracking
    summary      per-trial table; <storage>/<name>/study.json (study.manifest) lists each
                 trial's selected checkpoint (what ``wsol evaluate`` scores, and nothing
                 else)

The test split is structurally out of reach: trials get their data from
``wsol.data.read_training_splits``, which returns train and validation only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from study import storage
from study.classifiers import train_classifiers
from study.console import ConsoleProgress
from study.errors import StudyError
from study.manifest import (
    ERROR,
    EVALUABLE,
    STOPPED,
    TABLE_LEGEND,
    TrialSummary,
    format_diagnostics,
    format_table,
    summarize,
    write_manifest,
)
from study.names import trial_name
from study.preflight import check_inputs, check_resources, check_study_folder
from study.retention import STATE_SAVE_PERIOD_S, CheckpointRetention
from study.scheduling import build_scheduler, build_stopper
from study.spec import DEFAULT_ROW, Study, check_name
from study.trainable import ROW_KEY, TrialContext, mask_trial, trial_params
from wsol.config import flatten_config
from wsol.diagnostics import Diagnostics
from wsol.files import write_text_atomically

Log = Callable[[str], None]


def experiment_path(study: Study, name: str) -> str:
    return storage.join(study.storage_path(), name)


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


def _searcher(study: Study, name: str):
    """Ray Tune's OptunaSearch for an ``optuna`` study (None for ``grid``): a TPE sampler
    seeded by ``search.seed``, the trials kept in the RDB storage of
    :meth:`Study.optuna_storage` as the Optuna study ``name``, so optuna-dashboard can
    show them, each with the user attribute ``trial_id`` (the Tune trial id of the
    manifest, the MLflow run and the trial folder). OptunaSearch creates the Optuna study
    with ``load_if_exists``; on ``--resume`` Tune restores the searcher's own state, which
    reopens the same study (the pre-flight refuses a new study whose name the storage
    already holds)."""
    url = study.optuna_storage()
    if url is None:
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from study.preflight import sqlite_database_path

    class NamedTrialsOptunaSearch(OptunaSearch):
        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            params = super().suggest(trial_id)
            # OptunaSearch keeps no public handle on the Optuna trial it asked for.
            ot_trial = getattr(self, "_ot_trials", {}).get(trial_id)
            if ot_trial is not None:
                ot_trial.set_user_attr("trial_id", trial_id)
            return params

    if url.startswith("sqlite"):
        database = sqlite_database_path(url)
        if database is not None:
            # SQLite creates the file, not its folder.
            database.parent.mkdir(parents=True, exist_ok=True)
    return NamedTrialsOptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=study.search.seed),
        metric="objective",
        mode=study.trial_selection.mode,
        study_name=name,
        storage=optuna.storages.RDBStorage(url),
    )


def _trial_name(trial) -> str:
    """Ray's trial name and the trial's folder: the one display name (trial_name)."""
    return trial_name(trial.config.get(ROW_KEY, DEFAULT_ROW), trial.trial_id)


def build_tuner(
    study: Study,
    name: str,
    context: TrialContext,
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
    if resume and tune.Tuner.can_restore(path):
        log(f"resuming study from {path}")
        return tune.Tuner.restore(
            path, trainable, resume_unfinished=True, resume_errored=True, param_space=None
        )
    if resume:
        log(f"nothing to resume at {path}; starting the study")
    # CheckpointRetention prunes, safely for --resume, by the selection's own ordering.
    checkpoint_config = tune.CheckpointConfig(num_to_keep=None)
    run_config = tune.RunConfig(
        name=name,
        storage_path=study.storage_path(),
        checkpoint_config=checkpoint_config,
        failure_config=tune.FailureConfig(max_failures=study.max_failures),
        # Tune's JSON and CSV result logs, without its TensorBoard logger (not installed
        # by this project; TUNE_DISABLE_AUTO_CALLBACK_LOGGERS is set by run_study).
        callbacks=[*callbacks, JsonLoggerCallback(), CSVLoggerCallback()],
        stop=build_stopper(study),
        # study.console prints progress in the study's terms instead of Ray's table.
        verbose=0,
    )
    scheduler = build_scheduler(study)
    tune_config = tune.TuneConfig(
        # ASHA ranks by its own metric (the guarded S); Tune refuses a second one here.
        metric=None if scheduler else "objective",
        mode=None if scheduler else study.trial_selection.mode,
        scheduler=scheduler,
        search_alg=_searcher(study, name),
        num_samples=study.search.num_samples,
        max_concurrent_trials=study.max_concurrent_trials or None,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
    )
    return tune.Tuner(
        trainable, param_space=search_space(study), tune_config=tune_config, run_config=run_config
    )


@dataclass
class StudyOutcome:
    name: str
    summaries: list[TrialSummary]
    manifest: str
    table: str
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM" when stopped early


class StudyInterrupted(StudyError):
    """A signal stopped the study before its trials started; nothing is lost."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (a preempted node, ``ray job stop``) stop a study the
    same way: the first asks Ray Tune to end the run, which saves its state (Tune's own
    graceful stop, reached through SIGUSR1), so ``--resume`` continues it; the signal is
    recorded for the manifest and the exit status. A second one aborts at once; one that
    arrives before Tune runs (the classifier stage) raises :class:`StudyInterrupted`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, log: Log) -> None:
        self.log = log
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        self._previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)
        self._tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's would take SIGINT from us
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._previous:
            if self._tune_sigint is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_sigint

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            raise KeyboardInterrupt(f"second {name}: aborting without saving")
        self.received = name
        tune_is_running = signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
        if not tune_is_running:
            raise StudyInterrupted(
                f"{name} before any trial started; nothing to resume yet (trained f's are "
                "kept and reused)",
                name,
            )
        self.log(
            f"\n{name}: stopping the study; Ray Tune saves its state so --resume can finish "
            "it (send it again to abort at once)"
        )
        os.kill(os.getpid(), signal.SIGUSR1)

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process a signal ended."""
        return 128 + int(getattr(signal, self.received)) if self.received else 0


def _describe_trial(study: Study) -> Callable[[dict[str, Any]], Any]:
    from study.tracking import TrialDataset, TrialInfo

    def describe(tune_config: dict[str, Any]) -> TrialInfo:
        row, params = trial_params(tune_config)
        trial = study.trial(row, params, Path.cwd())
        data = trial.run_config.data
        overrides = {**study.row_overrides(row), **params}
        note = f"Study {study.name}, row {row}: " + (
            ", ".join(f"{key}={value}" for key, value in overrides.items()) or "the base config"
        )
        return TrialInfo(
            row=row,
            params=flatten_config(trial.config),
            tags={"classifier_key": trial.classifier_key, "mlflow.note.content": note},
            color_key=color_key(study, row, params),
            dataset=TrialDataset(
                name=f"{data.format}:{Path(data.root).name}",
                source=str(data.root),
                split=f"val_fraction={data.val_fraction} split_seed={data.split_seed}",
            ),
        )

    return describe


def color_key(study: Study, row: str, params: dict[str, Any]) -> str:
    """What a trial's MLflow colour is chosen by: its row when the study has several
    (seeds of a row share it), else its search point without the seed (``mask.lam=0.5``),
    else the whole point."""
    if len(study.row_labels()) > 1:
        return row
    point = {key: value for key, value in params.items() if key != "seed"} or params
    return ",".join(f"{key}={value}" for key, value in sorted(point.items())) or row


def shared_params(study: Study, cwd: Path) -> dict[str, Any]:
    """The parent run's params: every trial-config field that no row and no search
    dimension changes (flattened, dotted), plus the study's search settings."""
    configs = [flatten_config(study.trial(row, {}, cwd).config) for row in study.row_labels()]
    varying = set(study.search_space)
    for config in configs[1:]:
        varying |= {
            key
            for key in config.keys() | configs[0].keys()
            if config.get(key) != configs[0].get(key)
        }
    params = {
        key: value for key, value in configs[0].items() if key not in varying and key != "name"
    }
    params.update(
        {
            "study.rows": ", ".join(study.row_labels()),
            "study.search.algorithm": study.search.algorithm,
            "study.search.num_samples": study.search.num_samples,
            "study.trial_selection": f"{study.trial_selection.mode} {study.trial_selection.metric}",
            **{
                f"study.search_space.{key}": dimension.model_dump(exclude_none=True)
                for key, dimension in study.search_space.items()
            },
        }
    )
    return params


def _study_info(study: Study, cwd: Path, state_dir: Path):
    """The experiment's and parent run's record: description, shared params, and the
    spec (the YAML as written, and ``spec.json``, the validated spec with defaults)."""
    from study.tracking import StudyInfo

    validated = state_dir / "spec.json"
    validated.write_text(
        json.dumps(study.model_dump(mode="json", exclude={"source"}), indent=2) + "\n"
    )
    files = [str(path) for path in (Path(study.source), validated) if path.is_file()]
    return StudyInfo(
        description=study.description,
        params=shared_params(study, cwd),
        files=tuple(files),
        source=f"wsol study {study.source}",
    )


def _console(study: Study, log: Log) -> ConsoleProgress:
    def epochs_of(tune_config: dict[str, Any]) -> int:
        row, params = trial_params(tune_config)
        return study.trial(row, params, Path.cwd()).run_config.mask.epochs

    return ConsoleProgress(
        study.trial_selection.metric, study.trial_selection.mode, epochs_of, log=log
    )


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
    name = check_name(name, "--name") if name is not None else study.name
    cwd = check_study_folder(study, name, resume, Path.cwd())
    check_inputs(study, cwd)
    log(f"pre-flight passed: data readable, MLflow at {study.tracking_uri()}")
    if not ray.is_initialized():
        if address is None:
            # Loopback only, where Ray allows it (the CLI sets Ray's switch before import).
            ray.init(
                address="local",
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        else:
            ray.init(address=address, log_to_driver=False)
    log(f"study {name}: Ray {ray.__version__} with {ray.cluster_resources()}")
    if check_cluster:
        check_resources(study)

    with StopSignals(log) as stop:
        return _run(study, name, cwd, resume, callbacks, stop, log)


def _run(
    study: Study,
    name: str,
    cwd: Path,
    resume: bool,
    callbacks: list[tune.Callback] | None,
    stop: StopSignals,
    log: Log,
) -> StudyOutcome:
    from study.tracking import (
        MlflowStudyCallback,
        log_parent_artifacts,
        mark_interrupted,
        tag_trials,
    )
    from study.version import code_version

    locations = train_classifiers(study, cwd, log)
    context = TrialContext(study=study, cwd=str(cwd), classifier_locations=locations)
    state_dir = driver_state_dir(study, name)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_file = state_dir / "mlflow_state.json"
    tracker = MlflowStudyCallback(
        tracking_uri=study.tracking_uri(),
        experiment=study.experiment_name(),
        study_name=name,
        state_file=state_file,
        describe_trial=_describe_trial(study),
        code_version=code_version(),
        study_info=_study_info(study, cwd, state_dir),
    )
    retention = CheckpointRetention(None if study.keep_all_checkpoints else study.keep_checkpoints)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_SAVE_PERIOD_S))
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # build_tuner names its loggers
    # MLflow's HTTP client retries for minutes by default, which would stall Tune's loop
    # (the tracker runs in it) while a tracking server restarts.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    tuner = build_tuner(
        study,
        name,
        context,
        [tracker, retention, _console(study, log), *(callbacks or [])],
        resume,
        log,
    )
    started = time.perf_counter()
    results = tuner.fit()
    retention.finalize(results)
    summaries = summarize(study, results, locations, cwd)
    manifest = write_manifest(study, name, summaries, interrupted_by=stop.received)
    tag_trials(study.tracking_uri(), state_file, {s.trial_id: _run_tags(s) for s in summaries})
    unfinished = [s for s in summaries if s.status not in EVALUABLE]
    stopped = [s for s in summaries if s.status == STOPPED]
    if stop.received:
        mark_interrupted(
            study.tracking_uri(), state_file, [s.trial_id for s in unfinished], stop.received
        )
    table = format_table(study, summaries)
    diagnostics = format_diagnostics(summaries)
    summary_file = state_dir / "study_summary.md"
    write_text_atomically(
        summary_file,
        f"# Study {name}\n\n{TABLE_LEGEND}\n\n{table}\n\n```\n"
        + "\n".join(diagnostics)
        + "\n```\n",
    )
    log_parent_artifacts(study.tracking_uri(), state_file, [summary_file])
    failed = [s for s in summaries if s.status == ERROR]
    log(f"\nstudy {name}: {len(summaries)} trials in {time.perf_counter() - started:.0f}s")
    log(table)
    log(TABLE_LEGEND)
    for line in diagnostics:
        log(line)
    for summary in failed:
        log(f"trial {summary.name} failed: {summary.error}")
    if stopped:
        saved = sum(s.epochs_planned - s.epochs for s in stopped)
        log(
            "stopped early by search.scheduler: "
            + ", ".join(f"{s.name} at epoch {s.epochs} ({s.stopped_by})" for s in stopped)
            + f"; {saved} epochs not trained. Their selections stand and are evaluated."
        )
    log(f"trials and checkpoints: {experiment_path(study, name)}")
    log(f"manifest (selected checkpoints): {manifest}")
    log(f"MLflow: {study.tracking_uri()} experiment {study.experiment_name()!r}")
    for line in _ui_hint(study.tracking_uri(), state_file):
        log(line)
    if study.optuna_storage():
        log(f"Optuna study {name!r}: optuna-dashboard {study.optuna_storage()}")
    if unfinished:
        resume_command = study.resume_command(name)
        cause = f"interrupted by {stop.received}" if stop.received else "not finished"
        log(
            f"\nstudy {name} {cause}: {len(unfinished)} of {len(summaries)} trials did not "
            f"finish ({', '.join(f'{s.name} {s.status}' for s in unfinished)}). Its state "
            f"is saved; finish it with:\n  {resume_command}\n`wsol evaluate` scores only "
            "finished trials (--allow-incomplete scores the rest, labelled as such)."
        )
    if failed:
        print(f"{len(failed)} trial(s) failed", file=sys.stderr)
    return StudyOutcome(
        name=name,
        summaries=summaries,
        manifest=manifest,
        table=table,
        interrupted_by=stop.received,
    )


def _run_tags(summary: TrialSummary) -> dict[str, str]:
    """What the manifest says of a trial, as tags of its MLflow run."""
    tags = {"status": summary.status}
    if summary.selected_checkpoint:
        tags["selected_checkpoint"] = summary.selected_checkpoint
    if summary.status == STOPPED:
        tags["stopped_at_epoch"] = str(summary.epochs)
        tags["stopped_by"] = str(summary.stopped_by)
    tags.update(diagnostic_tags(summary.diagnostics))
    return tags


def diagnostic_tags(diagnostics: dict[str, Any]) -> dict[str, str]:
    """A manifest trial's ``diagnostics`` as MLflow tags (``diagnostic.f_weak`` ...:
    true/false/unknown, and the numbers they were decided on); none when undiagnosed."""
    if not diagnostics:
        return {}
    return Diagnostics.from_dict(diagnostics).tags()


def _ui_hint(tracking_uri: str, state_file: Path) -> list[str]:
    """How to look at the study in the MLflow UI: the command that serves a local
    database, and the address of the trials (flat, best objective first)."""
    from study.tracking import experiment_page
    from study.tracking_state import StudyTrackingState

    try:
        state = StudyTrackingState.load(state_file)
    except ValueError:
        state = None
    experiment_id = state.experiment_id if state else None

    lines = []
    if tracking_uri.startswith("sqlite:"):
        lines.append(f"open the UI with: {_mlflow_ui_command(tracking_uri)}")
        base = "http://127.0.0.1:5000"
    elif tracking_uri.startswith(("http://", "https://")):
        base = tracking_uri
    else:
        return lines
    if experiment_id is not None:
        lines.append(f"the trials: {experiment_page(base, experiment_id)}")
    return lines


def _mlflow_ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on ``tracking_uri``, runnable without an
    activated virtual environment (the ``mlflow`` beside this interpreter)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    program = str(mlflow) if mlflow.exists() else "mlflow"
    return f"{program} ui --backend-store-uri {tracking_uri}"
