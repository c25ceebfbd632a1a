"""MLflow tracking of a study, from the Ray Tune driver.

`MlflowStudyCallback` is a Ray Tune callback that runs on the driver (the process that
calls `Tuner.fit`) and records a study in MLflow so the MLflow UI can compare its
trials: one parent run per study, one nested run per trial (params = the flattened
trial config, per-epoch study metrics with step = epoch, the weight-map figure as an
artifact). After the run, :func:`tag_trials` tags each trial run with its status and the
checkpoint the study manifest selected (the manifest is the one source of both).

Why not Ray's own integrations: `setup_mlflow` logs from inside the trial, and trials
on cluster workers may not reach the tracking server; `MLflowLoggerCallback` makes no
parent run per study and knows nothing of resumed studies. Everything here goes
through one `MlflowClient(tracking_uri)`; no global MLflow state is touched.

Resumes and retries are de-duplicated through a small JSON state file
(:mod:`study.tracking_state`): a trial that is started again (a retry after a worker failure,
a resumed driver) keeps its run, and epochs that Tune replays are not logged twice.

An MLflow failure never kills a study once it runs: it is logged as a warning on the
"study.tracking" logger and the study goes on. Only `setup()` re-raises, so a study
whose tracking server is unreachable fails before any training starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ray.tune import Callback

from study import storage
from study.names import WEIGHT_MAPS_FILE, trial_name
from study.preflight import check_tracking_uri, sqlite_database_path
from study.tracking_state import StudyTrackingState, TrialTrackingState
from study.version import code_version
from wsol.colors import PARENT_COLOR, row_color

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial

logger = logging.getLogger("study.tracking")

#: Tag and param limits of MLflow 3.x (mlflow/utils/validation.py).
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000

#: Result keys logged as metrics: numeric values whose key has one of these prefixes ...
STUDY_METRIC_PREFIXES = ("val_", "train_")
#: ... or is one of these keys ...
STUDY_METRIC_KEYS = frozenset({"selection_score", "objective", "excluded_epochs"})
#: ... plus the selection so far (``selected_X`` logged as ``selected.X``: the value at
#: the epoch selected so far, so a runs table's latest value is the selected epoch's) ...
SELECTED_PREFIX = "selected_"
SELECTED_METRIC_PREFIX = "selected."
#: ... plus Ray's own keys, renamed.
RENAMED_RESULT_KEYS = {"time_this_iter_s": "epoch_seconds"}
#: Logged once more when a trial completes (from its last result), unless already logged.
FINAL_METRIC_KEYS = ("selected.epoch", "selected.val_s_score")

#: The MLflow UI's experiment kind (the `mlflow.experimentKind` experiment tag, read by
#: MLflow 3's UI): a model-training experiment opens on its runs, not on GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: Description of an experiment or a run, shown by the UI (and editable there).
NOTE_TAG = "mlflow.note.content"
#: A run's colour in the UI's charts and tables.
RUN_COLOR_TAG = "mlflow.runColor"
#: The parent run's colour; a trial's is its row's (wsol.colors.row_color).
PARENT_RUN_COLOR = PARENT_COLOR
SPEC_ARTIFACT_PATH = "spec"

#: At the artifact root: MLflow's compare view shows only root-level files common to
#: the compared runs.
FIGURES_ARTIFACT_PATH: str | None = None

#: Tags the callback owns on a trial run; TrialInfo.tags cannot override them.
RESERVED_TRIAL_TAGS = frozenset(
    {
        "mlflow.parentRunId",
        "mlflow.runName",
        RUN_COLOR_TAG,
        "study",
        "row",
        "trial_id",
        "code_version",
    }
)


@dataclass(frozen=True)
class TrialInfo:
    """What MLflow should know about one trial, derived from its Tune config."""

    row: str  # ablation row label, e.g. "full", "no-reg"
    params: dict[str, Any]  # flattened trial config, dotted keys -> scalar values
    tags: dict[str, str] = field(default_factory=dict)  # extra tags
    color_key: str = ""  # what picks its colour (run_color); default: the row
    dataset: TrialDataset | None = None  # its training data, for the UI's Dataset column


@dataclass(frozen=True)
class TrialDataset:
    """The data a trial trains and selects on (train and validation splits only)."""

    name: str  # e.g. "cub:CUB_200_2011"
    source: str  # the dataset folder, absolute
    split: str  # what identifies the train/validation carve, e.g. "val_fraction=0.1 ..."

    def entity(self) -> Any:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        digest = hashlib.sha256(f"{self.source}|{self.split}".encode()).hexdigest()[:8]
        return DatasetInput(
            Dataset(self.name, digest, "local", json.dumps({"uri": self.source})),
            tags=[InputTag("mlflow.data.context", "train+validation")],
        )


@dataclass(frozen=True)
class StudyInfo:
    """What MLflow should know about a study, for its experiment and parent run."""

    description: str = ""  # the spec's description: experiment and parent-run note
    params: dict[str, Any] = field(default_factory=dict)  # what every trial shares
    files: tuple[str, ...] = ()  # logged under spec/ on the parent run (spec YAML...)
    source: str = ""  # the spec file: the runs' Source column (mlflow.source.name)


def run_color(key: str) -> str:
    """The UI colour of a trial whose row (or search point) is ``key``: its row's colour
    in every figure too (wsol.colors.row_color)."""
    return row_color(key)


# --------------------------------------------------------------------------------------
# Code version and tracking URI pre-flight


# --------------------------------------------------------------------------------------
# What is logged


def study_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of one Tune result that the study logs, as floats.

    Numeric values of keys with a prefix in STUDY_METRIC_PREFIXES or in
    STUDY_METRIC_KEYS, ``selected_X`` as ``selected.X``, and `time_this_iter_s` renamed
    `epoch_seconds`. Booleans count as 0/1; strings, None, dicts and Ray's bookkeeping
    keys are left out.
    """
    metrics: dict[str, float] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            continue
        if key in RENAMED_RESULT_KEYS:
            name = RENAMED_RESULT_KEYS[key]
        elif key.startswith(SELECTED_PREFIX):
            name = SELECTED_METRIC_PREFIX + key.removeprefix(SELECTED_PREFIX)
        elif key.startswith(STUDY_METRIC_PREFIXES) or key in STUDY_METRIC_KEYS:
            name = key
        else:
            continue
        number = _as_number(value)
        if number is not None:
            metrics[name] = number
    return metrics


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    # 0-d numpy / torch values, without importing either
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        with contextlib.suppress(Exception):
            return _as_number(value.item())
    return None


def _epoch_of(result: Mapping[str, Any]) -> int | None:
    value = result.get("epoch")
    number = _as_number(value) if value is not None else None
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read_last_error_line(trial: Trial) -> str | None:
    text: str | None = None
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        with contextlib.suppress(OSError):
            text = Path(error_file).read_text(errors="replace")
    if text is None:
        with contextlib.suppress(Exception):
            error = trial.get_error()  # read through the storage filesystem
            text = str(error) if error is not None else None
    if not text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


# --------------------------------------------------------------------------------------
# The callback


class MlflowStudyCallback(Callback):
    """Driver-side Ray Tune callback that logs a study to MLflow (see the module doc).

    Pass it in `tune.RunConfig(callbacks=[...])`. Tune pickles the run config
    (tuner.pkl), so `describe_trial` must be picklable by cloudpickle (a module-level
    function or a closure over plain data).
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        study_name: str,
        state_file: Path,
        describe_trial: Callable[[dict[str, Any]], TrialInfo],
        code_version: str | None = None,
        study_info: StudyInfo | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.study_info = study_info or StudyInfo()
        self.experiment = experiment
        self.study_name = study_name
        self.state_file = Path(state_file)
        self.describe_trial = describe_trial
        # None: `git describe` (or the package version), resolved in setup() so that a
        # driver resumed from tuner.pkl records the code it actually runs.
        self.code_version = code_version
        self._client: MlflowClient | None = None
        self._state: StudyTrackingState | None = None
        self._failed_trial_ids: set[str] = set()
        self._warned_untracked: set[str] = set()
        self._warned_no_epoch: set[str] = set()

    # Tune pickles callbacks with the run config; the client is rebuilt on demand.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def parent_run_id(self) -> str | None:
        return self._state.parent_run_id if self._state else None

    def run_id_of(self, trial_id: str) -> str | None:
        """The MLflow run of a trial, None when it has none (yet)."""
        entry = self._state.trials.get(trial_id) if self._state else None
        return entry.run_id if entry else None

    # ---- Tune hooks ----------------------------------------------------------------

    def setup(self, stop: Any = None, num_samples: Any = None, **info: Any) -> None:
        """Get or create the experiment and the study's parent run (reused on resume).

        Unlike the other hooks this one raises: a study whose tracking cannot start
        should fail before it trains.
        """
        try:
            self._setup()
        except Exception:
            logger.error(
                "MLflow tracking of study %r cannot start (tracking URI %s, state file %s).",
                self.study_name,
                self.tracking_uri,
                self.state_file,
            )
            raise

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        with self._guard("start the run of trial", trial):
            self._on_trial_start(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ):
        with self._guard("log the metrics of trial", trial):
            self._on_trial_result(trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        entry = self._entry(trial)
        if entry is None:
            return
        last_result = dict(getattr(trial, "last_result", None) or {})
        with self._guard("log the final metrics of trial", trial):
            self._log_final_metrics(entry, last_result)
        with self._guard("log the weight-map figure of trial", trial):
            self._log_weight_maps(trial, entry)
        with self._guard("finish the run of trial", trial):
            self._client_or_raise().set_terminated(entry.run_id, status="FINISHED")
            entry.status = "FINISHED"
            self._save_state()
        self._failed_trial_ids.discard(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        self._failed_trial_ids.add(trial.trial_id)
        entry = self._entry(trial)
        if entry is None:
            return
        with self._guard("mark as failed the run of trial", trial):
            client = self._client_or_raise()
            error_line = _read_last_error_line(trial)
            if error_line:
                client.set_tag(entry.run_id, "error", _truncate(error_line, MAX_TAG_VAL_LENGTH))
            client.set_terminated(entry.run_id, status="FAILED")
            entry.status = "FAILED"
            self._save_state()

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any):
        entry = self._entry(trial)
        if entry is None:
            return
        with self._guard("record the retry of trial", trial):
            entry.retries += 1
            self._save_state()
            # The run stays RUNNING: the retry logs into it (on_trial_start reuses it).
            self._client_or_raise().set_tag(entry.run_id, "retries", str(entry.retries))

    def on_experiment_end(self, trials: list[Trial], **info: Any):
        if self._state is None or self._state.parent_run_id is None:
            return
        failed = set(self._failed_trial_ids)
        unfinished = set()
        for trial in trials:
            status = getattr(trial, "status", None)
            if status == "ERROR":
                failed.add(trial.trial_id)
            elif status == "TERMINATED":
                failed.discard(trial.trial_id)
            else:  # stopped before its end (the study was interrupted)
                unfinished.add(trial.trial_id)
        client = self._client_or_raise()
        for trial_id in sorted(unfinished):
            entry = self._state.trials.get(trial_id)
            if entry is None or entry.status != "RUNNING":
                continue
            with self._guard("mark as killed the run of trial", None):
                client.set_terminated(entry.run_id, status="KILLED")
                entry.status = "KILLED"
        with self._guard("finish the parent run of the study", None):
            status = "FAILED" if failed else "KILLED" if unfinished else "FINISHED"
            client.set_terminated(self._state.parent_run_id, status=status)
            self._save_state()

    # ---- implementation ------------------------------------------------------------

    def _setup(self) -> None:
        from mlflow.exceptions import MlflowException

        if self.code_version is None:
            self.code_version = code_version()
        check_tracking_uri(self.tracking_uri)
        if urlparse(self.tracking_uri).scheme.lower() == "sqlite":
            database = sqlite_database_path(self.tracking_uri)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)

        state = StudyTrackingState.load(self.state_file)
        if state is not None and (
            state.tracking_uri.rstrip("/") != self.tracking_uri.rstrip("/")
            or state.experiment != self.experiment
            or state.study != self.study_name
        ):
            raise ValueError(
                f"MLflow tracking state file {self.state_file} belongs to study "
                f"{state.study!r} in experiment {state.experiment!r} at {state.tracking_uri}, "
                f"not to study {self.study_name!r} in experiment {self.experiment!r} at "
                f"{self.tracking_uri}. Use the study's own state file, or delete this one to "
                "start a new parent run."
            )
        client = self._client_or_raise()
        experiment_id = self._get_or_create_experiment(client)

        if state is not None and state.parent_run_id:
            try:
                parent = client.get_run(state.parent_run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise ValueError(
                    f"MLflow tracking state file {self.state_file} records parent run "
                    f"{state.parent_run_id} but {self.tracking_uri} has no such run ({exc}). "
                    "Delete the state file to start a new parent run."
                ) from exc
            if parent.info.experiment_id != experiment_id:
                raise ValueError(
                    f"MLflow tracking state file {self.state_file} records parent run "
                    f"{state.parent_run_id} of experiment id {parent.info.experiment_id}, "
                    f"but experiment {self.experiment!r} has id {experiment_id}. Delete the "
                    "state file to start a new parent run."
                )
            if parent.info.lifecycle_stage == "deleted":
                client.restore_run(state.parent_run_id)
            client.update_run(state.parent_run_id, status="RUNNING")
            state.experiment_id = experiment_id
            logger.info(
                "Resuming MLflow parent run %s of study %r (%d trial runs recorded in %s).",
                state.parent_run_id,
                self.study_name,
                len(state.trials),
                self.state_file,
            )
        else:
            state = StudyTrackingState(
                tracking_uri=self.tracking_uri,
                experiment=self.experiment,
                study=self.study_name,
                experiment_id=experiment_id,
            )
            tags = {
                "study": self.study_name,
                "code_version": self.code_version,
                "mlflow.runName": self.study_name,
                RUN_COLOR_TAG: PARENT_RUN_COLOR,
                **self._source_tags(),
            }
            if self.study_info.description:
                tags[NOTE_TAG] = self.study_info.description
            parent = client.create_run(experiment_id, tags=tags, run_name=self.study_name)
            state.parent_run_id = parent.info.run_id
        self._state = state
        self._save_state()
        self._log_study(client, state.parent_run_id)

    def _source_tags(self) -> dict[str, str]:
        """What the UI's Source column shows: the spec the study ran."""
        if not self.study_info.source:
            return {}
        return {"mlflow.source.name": self.study_info.source, "mlflow.source.type": "LOCAL"}

    def _log_study(self, client: MlflowClient, run_id: str) -> None:
        """The parent run's params (what the trials share) and the spec files, unless a
        run resumed from the state file has them already (MLflow params are write-once)."""
        from mlflow.entities import Param

        if client.get_run(run_id).data.params:
            return
        params = [
            Param(str(key), _truncate(str(value), MAX_PARAM_VAL_LENGTH))
            for key, value in sorted(self.study_info.params.items())
        ]
        for chunk in _chunks(params, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, params=list(chunk))
        for path in self.study_info.files:
            if Path(path).is_file():
                client.log_artifact(run_id, str(path), artifact_path=SPEC_ARTIFACT_PATH)

    def _get_or_create_experiment(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(
                    self.experiment, artifact_location=self._default_artifact_location()
                )
            except MlflowException:
                # Another driver may have created it in between.
                experiment = client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise
            else:
                self._tag_experiment(client, experiment_id)
                return experiment_id
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {self.experiment!r} (id {experiment.experiment_id}) at "
                f"{self.tracking_uri} is deleted. Restore it (`mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}`) or choose another experiment "
                "name."
            )
        self._tag_experiment(client, experiment.experiment_id)
        return experiment.experiment_id

    def _tag_experiment(self, client: MlflowClient, experiment_id: str) -> None:
        """Open as a model-training experiment; the spec's description as its note."""
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        if self.study_info.description:
            client.set_experiment_tag(experiment_id, NOTE_TAG, self.study_info.description)

    def _default_artifact_location(self) -> str | None:
        # With a sqlite URI, the client's default artifact root is './mlruns' relative to
        # the current directory; keep artifacts next to the database instead. A server
        # chooses its own (--artifacts-destination / --default-artifact-root).
        if urlparse(self.tracking_uri).scheme.lower() != "sqlite":
            return None
        database = sqlite_database_path(self.tracking_uri)
        if database is None:
            return None
        return (database.resolve().parent / "mlartifacts").as_uri()

    def _on_trial_start(self, trial: Trial) -> None:
        state = self._state_or_raise()
        client = self._client_or_raise()
        trial_id = trial.trial_id
        entry = state.trials.get(trial_id)
        if entry is not None:
            # A retry after a worker failure, or a trial resumed by a restarted driver.
            client.update_run(entry.run_id, status="RUNNING")
            if entry.status == "FAILED":
                # Restarted after an error (e.g. Tuner.restore(restart_errored=True)):
                # the run is live again; the `retries` tag keeps the history.
                with contextlib.suppress(Exception):
                    client.delete_tag(entry.run_id, "error")
            entry.status = "RUNNING"
            self._save_state()
            logger.info(
                "Trial %s started again: logging into its MLflow run %s (epochs <= %d "
                "already logged are skipped).",
                trial_id,
                entry.run_id,
                entry.last_epoch,
            )
            return

        info = self.describe_trial(dict(trial.config))
        name = trial_name(info.row, trial_id)
        tags = {
            "mlflow.parentRunId": state.parent_run_id,
            "study": self.study_name,
            "row": info.row,
            "trial_id": trial_id,
            "code_version": self.code_version,
            "mlflow.runName": name,
            RUN_COLOR_TAG: run_color(info.color_key or info.row),
            **self._source_tags(),
        }
        run = client.create_run(state.experiment_id, tags=tags, run_name=name)
        # Record the run before anything else can fail, so a retry cannot duplicate it.
        state.trials[trial_id] = TrialTrackingState(run_id=run.info.run_id, row=info.row)
        self._save_state()
        self._log_params_and_tags(run.info.run_id, trial_id, info)

    def _log_params_and_tags(self, run_id: str, trial_id: str, info: TrialInfo) -> None:
        from mlflow.entities import Param, RunTag

        clashing = sorted(set(info.tags) & RESERVED_TRIAL_TAGS)
        if clashing:
            logger.warning(
                "Trial %s: TrialInfo.tags %s are set by the tracking callback; ignored.",
                trial_id,
                clashing,
            )
        entities: list[Param | RunTag] = [
            RunTag(str(key), _truncate(str(value), MAX_TAG_VAL_LENGTH))
            for key, value in sorted(info.tags.items())
            if key not in RESERVED_TRIAL_TAGS
        ]
        for key, value in sorted(info.params.items()):
            text = str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                logger.warning(
                    "Trial %s: param %r is %d characters long; MLflow keeps %d, truncated.",
                    trial_id,
                    key,
                    len(text),
                    MAX_PARAM_VAL_LENGTH,
                )
                text = _truncate(text, MAX_PARAM_VAL_LENGTH)
            entities.append(Param(str(key), text))
        client = self._client_or_raise()
        for chunk in _chunks(entities, MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(
                run_id,
                params=[item for item in chunk if isinstance(item, Param)],
                tags=[item for item in chunk if isinstance(item, RunTag)],
            )
        if info.dataset is not None:
            client.log_inputs(run_id, datasets=[info.dataset.entity()])

    def _on_trial_result(self, trial: Trial, result: Mapping[str, Any]) -> None:
        entry = self._entry(trial)
        if entry is None:
            return
        epoch = _epoch_of(result)
        if epoch is None:
            epoch = _epoch_of({"epoch": result.get("training_iteration")})
            if trial.trial_id not in self._warned_no_epoch:
                self._warned_no_epoch.add(trial.trial_id)
                logger.warning(
                    "Trial %s reported a result without an integer 'epoch'; logging it at "
                    "step = training_iteration (%s).",
                    trial.trial_id,
                    epoch,
                )
            if epoch is None:
                return
        if epoch <= entry.last_epoch:
            logger.debug(
                "Trial %s: epoch %d already logged (last %d); replayed result skipped.",
                trial.trial_id,
                epoch,
                entry.last_epoch,
            )
            return
        self._log_metrics(entry.run_id, study_metrics(result), step=epoch)
        entry.last_epoch = epoch
        self._save_state()

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(key, value, timestamp, step) for key, value in sorted(metrics.items())]
        client = self._client_or_raise()
        for chunk in _chunks(batch, MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=list(chunk))

    def _log_final_metrics(self, entry: TrialTrackingState, last_result: dict) -> None:
        final = {
            key: value
            for key, value in study_metrics(last_result).items()
            if key in FINAL_METRIC_KEYS
        }
        if not final:
            return
        epoch = _epoch_of(last_result)
        if epoch is not None and epoch <= entry.last_epoch:
            return  # already logged with the per-epoch metrics at that step
        self._log_metrics(entry.run_id, final, step=max(entry.last_epoch, epoch or 0))

    def _log_weight_maps(self, trial: Trial, entry: TrialTrackingState) -> None:
        checkpoint = trial.checkpoint  # the latest checkpoint
        if checkpoint is None:
            logger.warning("Trial %s completed without a checkpoint; no figure.", trial.trial_id)
            return
        source = f"{str(checkpoint.path).rstrip('/')}/{WEIGHT_MAPS_FILE}"
        with tempfile.TemporaryDirectory(prefix="wsol-tracking-") as tmp:
            local = Path(tmp, WEIGHT_MAPS_FILE)
            # Through the checkpoint's filesystem, so remote storage works and only the
            # figure (not the whole checkpoint) is fetched.
            try:
                with (
                    checkpoint.filesystem.open_input_stream(source) as stream,
                    local.open("wb") as out,
                ):
                    shutil.copyfileobj(stream, out)
            except FileNotFoundError:
                logger.warning(
                    "Trial %s: latest checkpoint %s has no %s; no figure logged.",
                    trial.trial_id,
                    storage.uri(checkpoint.filesystem, checkpoint.path),
                    WEIGHT_MAPS_FILE,
                )
                return
            self._client_or_raise().log_artifact(
                entry.run_id, str(local), artifact_path=FIGURES_ARTIFACT_PATH
            )

    # ---- helpers -------------------------------------------------------------------

    def _client_or_raise(self) -> MlflowClient:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _state_or_raise(self) -> StudyTrackingState:
        if self._state is None:
            raise RuntimeError(
                "MlflowStudyCallback.setup() has not run (or failed); nothing is tracked."
            )
        return self._state

    def _entry(self, trial: Trial) -> TrialTrackingState | None:
        entry = self._state.trials.get(trial.trial_id) if self._state else None
        if entry is None and trial.trial_id not in self._warned_untracked:
            self._warned_untracked.add(trial.trial_id)
            logger.warning(
                "Trial %s has no MLflow run in study %r (its start was not tracked); "
                "its results are not logged.",
                trial.trial_id,
                self.study_name,
            )
        return entry

    def _save_state(self) -> None:
        self._state_or_raise().save(self.state_file)

    @contextlib.contextmanager
    def _guard(self, action: str, trial: Trial | None) -> Iterator[None]:
        """Log an MLflow (or state file) failure as a warning instead of raising it."""
        try:
            yield
        except Exception as exc:
            subject = f" {trial.trial_id}" if trial is not None else ""
            logger.warning(
                "MLflow tracking failed to %s%s (study %r, tracking URI %s): %s: %s. The "
                "study goes on; its MLflow record may be incomplete.",
                action,
                subject,
                self.study_name,
                self.tracking_uri,
                type(exc).__name__,
                exc,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )


def tag_trials(tracking_uri: str, state_file: Path, tags: Mapping[str, Mapping[str, str]]) -> None:
    """Set ``tags`` (trial id -> tag -> value) on the trials' MLflow runs, after the run,
    from the study manifest (the one source of each trial's status and selected
    checkpoint). Run ids come from the study's tracking ``state_file``. Failures are
    warnings, as for the callback: the manifest on disk stays the record."""
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    try:
        state = StudyTrackingState.load(Path(state_file))
        if state is None:
            return
        client = MlflowClient(tracking_uri=tracking_uri)
        for trial_id, trial_tags in tags.items():
            entry = state.trials.get(trial_id)
            if entry is None or not trial_tags:
                continue
            client.log_batch(
                entry.run_id,
                tags=[
                    RunTag(key, _truncate(str(value), MAX_TAG_VAL_LENGTH))
                    for key, value in sorted(trial_tags.items())
                ],
            )
    except Exception as exc:
        logger.warning(
            "MLflow tracking failed to tag the trials from the manifest (tracking URI %s): "
            "%s: %s. The manifest (study.json) holds the same.",
            tracking_uri,
            type(exc).__name__,
            exc,
        )


def mark_interrupted(
    tracking_uri: str, state_file: Path, trial_ids: Sequence[str], signal_name: str
) -> None:
    """After a study was stopped by ``signal_name``: its parent run and the runs of
    ``trial_ids`` (the trials that did not finish) end as KILLED, tagged with the signal,
    whatever Tune reported; ``--resume`` sets them RUNNING again."""
    from mlflow.tracking import MlflowClient

    try:
        state = StudyTrackingState.load(Path(state_file))
        if state is None or state.parent_run_id is None:
            return
        client = MlflowClient(tracking_uri=tracking_uri)
        for run_id in [
            state.parent_run_id,
            *(state.trials[t].run_id for t in trial_ids if t in state.trials),
        ]:
            client.set_tag(run_id, "interrupted_by", signal_name)
            client.set_terminated(run_id, status="KILLED")
        for trial_id in trial_ids:
            if trial_id in state.trials:
                state.trials[trial_id].status = "KILLED"
        state.save(Path(state_file))
    except Exception as exc:
        logger.warning(
            "MLflow tracking failed to mark the interrupted study (tracking URI %s): %s: %s. "
            "The manifest (study.json) records the interruption.",
            tracking_uri,
            type(exc).__name__,
            exc,
        )


def log_parent_artifacts(
    tracking_uri: str, state_file: Path, files: Sequence[Path], artifact_path: str | None = None
) -> None:
    """Log ``files`` as artifacts of the study's parent run (run id from ``state_file``).
    Failures are warnings, as for the callback: the files on disk stay the record."""
    from mlflow.tracking import MlflowClient

    try:
        state = StudyTrackingState.load(Path(state_file))
        if state is None or state.parent_run_id is None:
            return
        client = MlflowClient(tracking_uri=tracking_uri)
        for path in files:
            client.log_artifact(state.parent_run_id, str(path), artifact_path=artifact_path)
    except Exception as exc:
        logger.warning(
            "MLflow tracking failed to log %s to the study's parent run (tracking URI %s): "
            "%s: %s. They stay on disk.",
            ", ".join(str(path) for path in files),
            tracking_uri,
            type(exc).__name__,
            exc,
        )


#: The runs page's query: the model-training view (MLflow 3's UI opens on GenAI traces
#: otherwise), runs listed flat (the UI nests trials under a collapsed parent only when
#: sorted by start time), best objective first.
RUNS_PAGE_QUERY = (
    "workflowType=machine_learning&orderByKey=metrics.%60objective%60&orderByAsc=false"
)


def experiment_page(ui_base: str, experiment_id: str) -> str:
    """The MLflow UI address of a study's trials: ``ui_base`` is the UI's root URL."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_PAGE_QUERY}"
