"""The study spec: a YAML file that describes a hyperparameter or ablation study.

A spec names a base :class:`~wsol.config.RunConfig`, optional ablation ``rows`` (label ->
dotted overrides), a ``search_space`` over dotted config paths, the search algorithm
(``grid`` or ``optuna``), how trials are compared (a *validation* metric, never a test
one), per-trial resources, checkpoint retention, where results go (``storage``) and
where they are tracked (``mlflow``)::

    name: fig8
    base: {mask: {epochs: 20}}
    rows:
      full: {}
      no-reg: {mask.reg: false}
    search_space:
      seed: {grid: [0, 1, 2]}
    search: {algorithm: grid, num_samples: 1}
    trial_selection: {metric: val_s_score, mode: max}
    resources: {cpu: 1, gpu: 0.25}          # per trial
    classifier_resources: {cpu: 4, gpu: 1}  # per f of the classifier stage (default: resources)
    storage: studies
    optuna: {storage: null}                 # default sqlite:///<storage>/optuna.db

:func:`load_spec` / :func:`spec_from_dict` validate everything that can be checked
without training: every error line names the field path (``search_space.mask.lam.
loguniform``), says what is expected, and the message starts with the spec's file. A
:class:`Study` that loads is one whose every trial config validates. ``load_spec(path,
overrides)`` applies ``--set KEY=VALUE`` overrides (dotted paths into the spec, see
:func:`apply_spec_overrides`) before validating, so they are checked like the file.

This module imports neither Ray nor Optuna nor MLflow: the runner turns a
:class:`Dimension` into a Tune domain (``grid`` -> ``tune.grid_search``, ``choice`` ->
``tune.choice``, ``uniform`` -> ``tune.uniform``, ``loguniform`` -> ``tune.loguniform``).

Paths: a local ``storage`` (and the default MLflow and Optuna databases under it) is resolved
against the *current working directory*, as with every other relative path a user types
(``data.root`` in a config, ``--out``), not against the spec file's folder.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import shlex
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from wsol.config import (
    ConfigError,
    RunConfig,
    classifier_key,
    config_from_dict,
    flatten_config,
    parse_override,
    read_yaml_mapping,
    set_dotted,
)

# Names become folder names under storage: letters, digits, '_', '.', '-', not starting
# with '.' (so never '.' or '..', nor a hidden folder), no path separators.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"


def check_name(name: str, what: str) -> str:
    """``name`` if it is safe as one folder name (see NAME_PATTERN), else SpecError
    naming ``what`` (e.g. ``--name``, ``name``, ``row label``)."""
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise SpecError(
            f"{what} {name!r} is not a safe folder name: use letters, digits, '_', '.' and "
            "'-', not starting with '.', and no '/'"
        )
    return name


DEFAULT_ROW = "default"
# The validation metrics the trainable reports that make sense for comparing trials.
# val_gt_known_loc needs a validation split with ground-truth boxes (CUB-format data has
# boxes for every image, so the held-out validation share has them too).
KNOWN_SELECTION_METRICS = ("val_s_score", "val_gt_known_loc")
# Dimensions over these sections change f; the classifier stage trains every distinct f
# before any mask trial starts, so their values must be enumerable up front (grid only).
CLASSIFIER_SECTIONS = ("classifier.", "data.")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# SQLAlchemy database URLs Optuna's RDBStorage opens (dialect, optional +driver).
_RDB_URL = re.compile(r"^(sqlite|postgresql|mysql|oracle|mssql)(\+[A-Za-z0-9_]+)?://")
DIMENSION_KINDS = ("grid", "choice", "uniform", "loguniform")


class SpecError(ConfigError):
    """A study spec is invalid; the message names the file, each bad field path and the fix."""


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dimension(_SpecModel):
    """One search dimension: exactly one of ``grid``, ``choice``, ``uniform``, ``loguniform``.

    ``grid`` / ``choice``: a non-empty list of distinct values (each valid for the config
    field). ``uniform`` / ``loguniform``: a ``[low, high]`` pair with ``low < high``
    (``low > 0`` on a log scale), only over float fields.
    """

    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @field_validator("grid", "choice")
    @classmethod
    def _non_empty_distinct(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("expected a non-empty list of values")
        seen: list[Any] = []
        for value in values:
            # A repeated grid value silently doubles trials; repeats are num_samples' job.
            if any(type(value) is type(other) and value == other for other in seen):
                raise ValueError(
                    f"value {value!r} is listed twice; to repeat trials use search.num_samples"
                )
            seen.append(value)
        return values

    @field_validator("uniform", "loguniform", mode="before")
    @classmethod
    def _pair(cls, bounds: Any) -> Any:
        if bounds is not None and not (isinstance(bounds, list | tuple) and len(bounds) == 2):
            raise ValueError(f"expected a [low, high] pair, got {bounds!r}")
        return bounds

    @field_validator("uniform")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"expected [low, high] with low < high, got {list(bounds)}")
        return bounds

    @field_validator("loguniform")
    @classmethod
    def _ordered_positive(cls, bounds: tuple[float, float] | None) -> tuple[float, float] | None:
        if bounds is None:
            return None
        if not bounds[0] < bounds[1]:
            raise ValueError(f"expected [low, high] with low < high, got {list(bounds)}")
        if bounds[0] <= 0:
            raise ValueError(f"expected low > 0 on a log scale, got {list(bounds)}")
        return bounds

    @model_validator(mode="after")
    def _exactly_one(self) -> Dimension:
        given = [
            kind
            for kind in ("grid", "choice", "uniform", "loguniform")
            if getattr(self, kind) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of grid, choice, uniform, loguniform, "
                f"got {', '.join(given) or 'none'}"
            )
        return self

    @property
    def kind(self) -> Literal["grid", "choice", "uniform", "loguniform"]:
        """Which of the four forms this dimension is."""
        if self.grid is not None:
            return "grid"
        if self.choice is not None:
            return "choice"
        if self.uniform is not None:
            return "uniform"
        return "loguniform"

    @property
    def values(self) -> list[Any]:
        """The listed values of a grid/choice dimension ([] for a continuous one)."""
        return list(self.grid if self.grid is not None else self.choice or [])

    @property
    def bounds(self) -> tuple[float, float] | None:
        """``(low, high)`` of a uniform/loguniform dimension (None for a listed one)."""
        return self.uniform if self.uniform is not None else self.loguniform


class AshaConfig(_SpecModel):
    """Ray Tune's ASHA scheduler over epochs, on the guarded validation S-score of each
    trial's selection so far (label-free; never test data)."""

    grace_period: int = Field(
        2, ge=1, description="Epochs every trial runs before ASHA may stop it (first rung)."
    )
    reduction_factor: float = Field(
        2.0, gt=1, description="At each rung, the best 1/reduction_factor of trials go on."
    )
    max_t: int | None = Field(
        None, ge=1, description="The last rung, in epochs; default: the trials' mask.epochs."
    )


class SchedulerConfig(_SpecModel):
    """Early termination of trials that cannot win. A stopped trial keeps its selection
    (the best epoch it reached), has status STOPPED and is evaluated like any other."""

    asha: AshaConfig | None = None
    stop_after_degenerate: int | None = Field(
        None,
        ge=1,
        description="Stop a trial after this many consecutive degenerate epochs (excluded "
        "by selection.skip_degenerate's guard), e.g. a lambda whose maps are all or nothing. "
        "Larger than the epochs a fresh g needs to leave the degenerate start.",
    )

    @property
    def active(self) -> bool:
        return self.asha is not None or self.stop_after_degenerate is not None


class SearchConfig(_SpecModel):
    """How trials are generated, and which are stopped early.

    ``grid``: every row x grid point, the whole grid repeated ``num_samples`` times.
    ``optuna``: ``num_samples`` trials proposed by a TPE sampler seeded with ``seed``.
    ``scheduler``: ASHA and/or the degenerate-epoch rule (both work with either algorithm;
    Optuna's own pruning is not used, ASHA covers it).
    """

    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1)
    seed: int = 0
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)


class TrialSelection(_SpecModel):
    """The metric that compares trials: a validation metric, never a test one.

    Each trial's reported value is that of its selected epoch (max validation S-score).
    ``val_gt_known_loc`` needs a validation split with ground-truth boxes.
    """

    metric: str = "val_s_score"
    mode: Literal["max", "min"] = "max"

    def objective(self, history: Sequence[dict[str, Any]], selected_epoch: int) -> float:
        """The value that ranks a trial: ``metric`` at its selected epoch (NaN when that
        epoch does not report it). For ``val_s_score`` the guarded score
        (``selection_score``), so a trial whose every epoch is degenerate (plain max-S
        fallback) ranks below every trial with a selectable epoch."""
        selected = next(row for row in history if row["epoch"] == selected_epoch)
        if self.metric == "val_s_score":
            return selected["selection_score"]
        return selected.get(self.metric, math.nan)

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, metric: str) -> str:
        if "test" in metric.lower():
            raise ValueError(
                f"{metric!r} names test data: trials are selected on validation metrics only "
                f"(e.g. {', '.join(KNOWN_SELECTION_METRICS)}); the test split is never used "
                "for selection, only by `wsol evaluate` on already-selected checkpoints"
            )
        if not metric.startswith("val_"):
            raise ValueError(
                f"expected a validation metric starting with 'val_' "
                f"(e.g. {', '.join(KNOWN_SELECTION_METRICS)}), got {metric!r}"
            )
        return metric


class Resources(_SpecModel):
    """What one trial reserves. ``gpu`` may be fractional (0.25: four trials share a GPU)
    up to 1; above 1 it must be a whole number."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, gpu: float) -> float:
        if gpu > 1 and gpu != int(gpu):
            raise ValueError(f"a share above 1 GPU must be a whole number, got {gpu}")
        return gpu


class MlflowConfig(_SpecModel):
    """Where trials are tracked. ``tracking_uri`` defaults to ``sqlite:///<storage>/mlflow.db``
    for a local storage and must be given for a remote one; ``experiment`` to the spec name."""

    tracking_uri: str | None = None
    experiment: str | None = None


class OptunaConfig(_SpecModel):
    """Where an Optuna study (``search.algorithm: optuna``) keeps its trials, so that
    ``optuna-dashboard <storage>`` shows them: an SQLAlchemy database URL
    (``sqlite:////abs/optuna.db``, ``postgresql://user@host/db``, ``mysql://...``).
    Default ``sqlite:///<storage>/optuna.db`` for a local storage; required for a remote
    one. Only the driver writes it (Ray Tune's searcher runs there), so SQLite is safe
    even on a cluster. The Optuna study is named after the study (``--name``)."""

    storage: str | None = None

    @field_validator("storage")
    @classmethod
    def _rdb_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not _RDB_URL.match(url):
            raise ValueError(
                "expected an SQLAlchemy database URL for Optuna's RDBStorage, e.g. "
                "sqlite:////abs/path/optuna.db or postgresql://user@host/db, got "
                f"{url!r}"
            )
        if url.startswith("sqlite") and url.split("://", 1)[1] in ("", "/", "/:memory:"):
            raise ValueError(
                f"{url!r} is an in-memory database, gone when the study ends: give a file, "
                "e.g. sqlite:////abs/path/optuna.db"
            )
        return url


class StudySpec(_SpecModel):
    """The YAML schema of a study spec (see the module docstring)."""

    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    rows: dict[str, dict[str, Any]] | None = None
    search_space: dict[str, Dimension] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    trial_selection: TrialSelection = Field(default_factory=TrialSelection)
    resources: Resources = Field(default_factory=Resources)
    classifier_resources: Resources | None = Field(
        None,
        description="What training one f reserves (the classifier stage runs before any "
        "trial, so it can take a whole node); default: resources.",
    )
    max_concurrent_trials: int = Field(0, ge=0, description="0: as many as fit.")
    max_failures: int = Field(2, ge=0, description="Retries of a trial from its last checkpoint.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept per trial.")
    keep_all_checkpoints: bool = Field(False, description="Keep every epoch's checkpoint.")
    kept_weights_precision: Literal["fp32", "fp16"] = Field(
        "fp32",
        description="How kept checkpoints store g's weights: 'fp16' halves them (for "
        "keep_all_checkpoints and the epoch-curve diagnostic); evaluation loads fp32.",
    )
    storage: str = Field("studies", min_length=1)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    optuna: OptunaConfig = Field(default_factory=OptunaConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.match(NAME_PATTERN, name):
            raise ValueError(
                f"{name!r} is not a safe folder name: use letters, digits, '_', '.' and '-', "
                "not starting with '.', and no '/'"
            )
        return name

    @field_validator("rows", mode="before")
    @classmethod
    def _empty_row_is_no_overrides(cls, rows: Any) -> Any:
        # `label:` with nothing after it is YAML null; it reads naturally as "no overrides".
        if isinstance(rows, dict):
            return {label: {} if value is None else value for label, value in rows.items()}
        return rows

    @field_validator("rows")
    @classmethod
    def _row_labels(
        cls, rows: dict[str, dict[str, Any]] | None
    ) -> dict[str, dict[str, Any]] | None:
        if rows is None:
            return None
        if not rows:
            raise ValueError("expected at least one row; leave `rows` out for a single row")
        for label in rows:
            # Labels become run names and folder names.
            if not re.match(NAME_PATTERN, str(label)):
                raise ValueError(
                    f"row label {label!r} is not a safe folder name: use letters, digits, "
                    "'_', '.' and '-', not starting with '.'"
                )
        return rows


class Study(StudySpec):
    """A validated study spec and the file it came from.

    Construct with :func:`load_spec` or :func:`spec_from_dict`, which check the rules that
    span fields (keys, algorithm, rows vs. search space, per-value validity).
    """

    source: Path
    # The --set overrides applied to the file (already in the fields above); kept to
    # repeat them in the --resume command line. Not part of the spec's dump.
    overrides: tuple[str, ...] = Field((), exclude=True)

    @property
    def f_resources(self) -> Resources:
        """What one classifier-stage task reserves: ``classifier_resources`` or ``resources``."""
        return self.classifier_resources or self.resources

    def row_labels(self) -> list[str]:
        """Row labels in spec order; ``["default"]`` when the spec has no rows."""
        return list(self.rows) if self.rows else [DEFAULT_ROW]

    def row_overrides(self, row: str) -> dict[str, Any]:
        """The dotted overrides of ``row`` (``{}`` for the default row)."""
        if row not in self.row_labels():
            raise SpecError(
                f"{self.source}: unknown row {row!r}; rows: {', '.join(self.row_labels())}"
            )
        return dict(self.rows[row]) if self.rows else {}

    def trial_config(self, row: str, params: dict[str, Any]) -> RunConfig:
        """The config of one trial: base < row overrides < sampled ``params``, validated.

        ``params`` maps search-space keys (dotted) to values; a key outside the search
        space is an error. ``name`` is set to ``"<study name>/<row>"``.
        """
        unknown = sorted(set(params) - set(self.search_space))
        if unknown:
            raise SpecError(
                f"{self.source}: trial params {unknown} are not search_space keys; "
                f"search_space: {', '.join(self.search_space) or '(empty)'}"
            )
        raw = self.base
        for key, value in [*self.row_overrides(row).items(), *params.items()]:
            raw = set_dotted(raw, key, value)
        raw = set_dotted(raw, "name", f"{self.name}/{row}")
        try:
            return config_from_dict(raw, source=f"{self.source} row {row!r} params {params}")
        except ConfigError as error:
            raise SpecError(str(error)) from None

    def trial(self, row: str, params: dict[str, Any], cwd: Path) -> TrialSpec:
        """One trial, expanded once: its :meth:`trial_config` as written, the same with
        relative paths made absolute against ``cwd`` (the driver's working directory, see
        :func:`resolve_paths`) to run with, and the key of its f."""
        config = self.trial_config(row, params)
        return TrialSpec(
            row=row,
            params=dict(params),
            config=config,
            run_config=resolve_paths(config, cwd),
            classifier_key=classifier_key(config),
        )

    def point_config(self, point: dict[str, Any]) -> RunConfig:
        """:meth:`trial_config` of a :meth:`grid_points` entry (its ``"row"`` plus params)."""
        params = {key: value for key, value in point.items() if key != "row"}
        return self.trial_config(point.get("row", DEFAULT_ROW), params)

    def grid_points(self) -> list[dict[str, Any]]:
        """All trials of one pass of a grid study: rows x grid dimensions.

        Each point is ``{"row": label, <dotted key>: value, ...}``. Order is stable: rows
        in spec order outermost, then the grid dimensions in spec order, the last varying
        fastest. Repetition by ``search.num_samples`` is the runner's job, not included.
        Raises SpecError for ``algorithm: optuna``, whose trials are sampled, not listed.
        """
        if self.search.algorithm != "grid":
            raise SpecError(
                f"{self.source}: grid_points() is for search.algorithm grid, "
                f"not {self.search.algorithm!r}"
            )
        keys = list(self.search_space)
        value_lists = [self.search_space[key].values for key in keys]
        return [
            {"row": row, **dict(zip(keys, combination, strict=True))}
            for row in self.row_labels()
            for combination in itertools.product(*value_lists)
        ]

    def max_mask_epochs(self) -> int:
        """The most epochs any trial of the study trains g for."""
        epochs = [self.trial_config(row, {}).mask.epochs for row in self.row_labels()]
        dimension = self.search_space.get("mask.epochs")
        if dimension is not None:
            epochs.extend(int(value) for value in dimension.values)
        return max(epochs)

    def classifier_configs(self) -> list[RunConfig]:
        """The distinct configs that determine f, one per :func:`classifier_key`, in the
        order first met: over all grid points for ``grid``, the base+row for ``optuna``
        (where no dimension may touch ``classifier.*`` / ``data.*``)."""
        if self.search.algorithm == "grid":
            configs = [self.point_config(point) for point in self.grid_points()]
        else:
            configs = [self.trial_config(row, {}) for row in self.row_labels()]
        distinct: dict[str, RunConfig] = {}
        for config in configs:
            distinct.setdefault(classifier_key(config), config)
        return list(distinct.values())

    def storage_path(self) -> str:
        """Ray Tune's ``storage_path``: a URI as written, or a local path made absolute
        against the current working directory. Trials go under ``<storage>/<name>``."""
        if is_uri(self.storage):
            return self.storage
        return str(Path(self.storage).expanduser().resolve())

    def is_remote_storage(self) -> bool:
        """True for a URI other than ``file://`` (S3, GCS, ...)."""
        return is_remote_uri(self.storage)

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: as given, else ``sqlite:///<absolute storage>/mlflow.db``.

        SQLite on a network file system is unsafe with concurrent writers; on a cluster
        give an MLflow server (ray_cluster.yaml starts one on the head node).
        """
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return self._sqlite_beside_storage("mlflow.db")

    def optuna_storage(self) -> str | None:
        """The Optuna RDB storage URL of an ``optuna`` study (None for ``grid``): as
        given, else ``sqlite:///<absolute storage>/optuna.db``, beside the MLflow store."""
        if self.search.algorithm != "optuna":
            return None
        return self.optuna.storage or self._sqlite_beside_storage("optuna.db")

    def _sqlite_beside_storage(self, filename: str) -> str:
        storage = self.storage_path()
        if storage.startswith("file://"):
            storage = storage.removeprefix("file://")
        return f"sqlite:///{storage.rstrip('/')}/{filename}"

    def resume_command(self, name: str) -> str:
        """The ``wsol study`` command line that resumes this study under ``name``: the
        spec file, its --set overrides (the resume check compares the spec with them
        applied) and ``--name`` when it is not the spec's."""
        parts = ["wsol", "study", str(self.source)]
        for override in self.overrides:
            parts += ["--set", shlex.quote(override)]
        parts.append("--resume")
        if name != self.name:
            parts += ["--name", name]
        return " ".join(parts)

    def experiment_name(self) -> str:
        """The MLflow experiment: ``mlflow.experiment`` or the spec name."""
        return self.mlflow.experiment or self.name

    def diff_keys(self) -> list[str]:
        """Dotted config keys that vary across trials: search-space keys in spec order, then
        keys set by any row in order of first appearance (for per-trial tables)."""
        keys = list(self.search_space)
        for overrides in (self.rows or {}).values():
            keys.extend(key for key in overrides if key not in keys)
        return keys


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a study: its ablation row, its sampled search-space ``params``, its
    config as the spec writes it (what MLflow records), the config it runs with (paths
    absolute) and the content key of its f."""

    row: str
    params: dict[str, Any]
    config: RunConfig
    run_config: RunConfig
    classifier_key: str


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


def is_uri(storage: str) -> bool:
    """True when ``storage`` has a scheme (``s3://``, ``gs://``, ``file://``...)."""
    return bool(_URI_SCHEME.match(storage))


def is_remote_uri(storage: str) -> bool:
    """True for a URI other than ``file://`` (S3, GCS, ...): not a path on this machine."""
    return is_uri(storage) and not storage.startswith("file://")


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> Study:
    """Read a study spec YAML file, apply ``--set KEY=VALUE`` ``overrides`` (see
    :func:`apply_spec_overrides`), validate; SpecError names the file, each bad field
    and, when there are overrides, says they were applied."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"study spec not found: {path}")
    raw = read_yaml_mapping(path, "study spec", SpecError)
    try:
        raw = apply_spec_overrides(raw, overrides)
        study = spec_from_dict(raw, source=path)
    except SpecError as error:
        if not overrides:
            raise
        applied = " ".join(f"--set {override}" for override in overrides)
        raise SpecError(f"{error}\n  (with {applied})") from None
    return study.model_copy(update={"overrides": tuple(overrides)})


def apply_spec_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the parsed spec ``raw`` with each ``KEY=VALUE`` of ``overrides`` set.

    KEY is a dotted path into the spec: a field (``storage``, ``search.num_samples``,
    ``search.scheduler.asha.grace_period``), ``base.<config key>`` (``base.mask.lam``),
    ``rows.<label>.<config key>`` (an existing row), or ``search_space.<config
    key>.<kind>`` (replaces that dimension, e.g. ``search_space.mask.lam.choice=[1, 2]``).
    VALUE is parsed as YAML, as ``wsol train --set`` parses it. An unknown key raises
    SpecError naming it and listing the valid keys at that level; types are checked when
    the result is validated.
    """
    for text in overrides:
        if "=" not in text:
            raise SpecError(f"--set {text!r} must look like KEY=VALUE, e.g. base.mask.lam=0.5")
        key, value = parse_override(text)
        raw = _set_spec_key(raw, key, value)
    return raw


def _set_spec_key(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``raw`` with spec path ``key`` set to ``value`` (see :func:`apply_spec_overrides`)."""
    parts = key.split(".")
    model: type[BaseModel] = StudySpec
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        fields = model.model_fields
        if part not in fields:
            prefix = ".".join(parts[:depth])
            raise SpecError(
                f"--set {key}: unknown spec key {where!r}; valid keys here: "
                + ", ".join(_dotted(prefix, name) for name in fields)
            )
        rest = parts[depth + 1 :]
        if model is StudySpec and part in ("base", "rows", "search_space"):
            return _set_mapping_key(raw, part, rest, key, value)
        submodel = _model_of(fields[part].annotation)
        if submodel is None:
            if rest:
                raise SpecError(f"--set {key}: {where!r} is a value, not a section")
            return _set_path(raw, parts, value)
        if not rest:
            raise SpecError(
                f"--set {key}: {where!r} is a section; set one of its fields, e.g. "
                f"--set {where}.{next(iter(submodel.model_fields))}=..."
            )
        model = submodel
    raise AssertionError("unreachable: the loop returns at a leaf")


def _set_mapping_key(
    raw: dict[str, Any], section: str, rest: list[str], key: str, value: Any
) -> dict[str, Any]:
    """Set a key under ``base`` (a config path), ``rows.<label>`` (a dotted config key
    of an existing row) or ``search_space`` (``<config key>.<kind>``, replacing the
    dimension)."""
    if section == "base":
        dotted = ".".join(rest)
        try:
            set_dotted({}, dotted, value)
        except ConfigError as error:
            raise SpecError(f"--set {key}: {error}") from None
        return _set_path(raw, ["base", *rest], value)
    if section == "rows":
        rows = raw.get("rows") or {}
        if not rest or rest[0] not in rows:
            raise SpecError(
                f"--set {key}: expected rows.<label>.<config key> with a row of the spec "
                f"({', '.join(map(str, rows)) or 'it has no rows'})"
            )
        dotted = ".".join(rest[1:])
        problem = _key_problem(dotted) if dotted else "name a config key of the row"
        if problem:
            raise SpecError(f"--set {key}: {problem}")
        new_rows = {label: dict(overrides or {}) for label, overrides in rows.items()}
        new_rows[rest[0]][dotted] = value
        return {**raw, "rows": new_rows}
    if len(rest) < 2 or rest[-1] not in DIMENSION_KINDS:
        raise SpecError(
            f"--set {key}: expected search_space.<config key>.<kind> with kind one of "
            f"{', '.join(DIMENSION_KINDS)} (e.g. search_space.mask.lam.choice=[0.5, 1])"
        )
    dotted = ".".join(rest[:-1])
    problem = _key_problem(dotted)
    if problem:
        raise SpecError(f"--set {key}: {problem}")
    space = dict(raw.get("search_space") or {})
    space[dotted] = {rest[-1]: value}
    return {**raw, "search_space": space}


def _set_path(raw: dict[str, Any], parts: list[str], value: Any) -> dict[str, Any]:
    """A copy of nested ``raw`` with ``parts`` set to ``value``, creating mappings."""
    if len(parts) == 1:
        return {**raw, parts[0]: value}
    child = raw.get(parts[0])
    return {**raw, parts[0]: _set_path(child if isinstance(child, dict) else {}, parts[1:], value)}


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The spec model an annotation holds (``X``, ``X | None``), or None for a value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [arg for arg in get_args(annotation) if _model_of(arg) is not None]
        return models[0] if len(models) == 1 else None
    return None


def _model_at(loc: Sequence[str | int]) -> tuple[type[BaseModel], str] | None:
    """The spec model whose field ``loc`` names, and the dotted path of that model, by
    walking StudySpec's annotations (through ``X | None`` and ``dict[str, X]``); None
    when ``loc`` leaves the spec models (e.g. into ``base``, a plain mapping)."""
    model: type[BaseModel] = StudySpec
    walked: list[str] = []
    index = 0
    parents = list(loc[:-1])
    while index < len(parents):
        part = str(parents[index])
        field = model.model_fields.get(part)
        if field is None:
            return None
        walked.append(part)
        index += 1
        annotation = field.annotation
        if get_origin(annotation) is dict:
            # dict[str, X]: the next part is a key (a dimension's config key).
            if index >= len(parents):
                return None
            walked.append(str(parents[index]))
            index += 1
            annotation = get_args(annotation)[1]
        submodel = _model_of(annotation)
        if submodel is None:
            return None
        model = submodel
    return model, ".".join(walked)


def spec_from_dict(raw: Any, source: str | Path = "<dict>") -> Study:
    """Validate a parsed spec mapping into a :class:`Study` (``source`` names it in errors).

    Raises SpecError listing every problem, one ``<dotted field path>: <what is expected>``
    line each, under a header naming ``source``.
    """
    if not isinstance(raw, dict):
        raise SpecError(
            f"invalid study spec ({source}): expected a mapping, got {type(raw).__name__}"
        )
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(_format(source, _pydantic_problems(error))) from None
    problems, search_space = _check(spec)
    if problems:
        raise SpecError(_format(source, problems))
    fields = {name: getattr(spec, name) for name in StudySpec.model_fields}
    fields["search_space"] = search_space
    return Study(**fields, source=Path(source))


def _format(source: str | Path, problems: list[str]) -> str:
    return "\n".join([f"invalid study spec ({source}):", *(f"  {line}" for line in problems)])


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "<root>"
        found = _model_at(item["loc"]) if item["type"] == "extra_forbidden" else None
        if found is not None:
            model, prefix = found
            valid = ", ".join(_dotted(prefix, name) for name in model.model_fields)
            problems.append(f"{path}: unknown spec key; valid keys here: {valid}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        got_text = (
            ""
            if isinstance(got, dict | list) or item["type"] == "value_error"
            else f" (got {got!r})"
        )
        problems.append(f"{path}: {message}{got_text}")
    return problems


@functools.cache
def _leaf_annotations() -> dict[str, Any]:
    """Dotted leaf path of RunConfig -> its annotation."""
    leaves: dict[str, Any] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            else:
                leaves[f"{prefix}{name}"] = annotation

    walk(RunConfig, "")
    return leaves


def _key_problem(key: str) -> str | None:
    """Why ``key`` is not a settable leaf of RunConfig, or None."""
    if key == "name":
        return "'name' is set per trial to '<study name>/<row>'; it cannot be overridden"
    try:
        # set_dotted's message lists the valid neighbours of an unknown key, and refuses
        # a section given a non-mapping value.
        set_dotted({}, key, 0)
    except ConfigError as error:
        return str(error)
    return None


def _config_problems(raw: dict[str, Any], label: str) -> list[str]:
    """The per-field lines of config_from_dict's error for ``raw`` (empty when valid)."""
    try:
        config_from_dict(raw, source=label)
    except ConfigError as error:
        lines = str(error).splitlines()
        return [line.strip() for line in lines[1:]] or lines
    return []


def _check(spec: StudySpec) -> tuple[list[str], dict[str, Dimension]]:
    """The rules that span fields; returns (problems, search space with typed values)."""
    problems = [f"base.{line}" for line in _config_problems(spec.base, "base")]
    if problems:
        # Everything below builds on the base config.
        return problems, spec.search_space

    row_raws: dict[str, dict[str, Any]] = {}
    for label, overrides in (spec.rows or {DEFAULT_ROW: {}}).items():
        raw = spec.base
        row_ok = True
        for key, value in overrides.items():
            problem = _key_problem(key)
            if problem:
                problems.append(f"rows.{label}.{key}: {problem}")
                row_ok = False
                continue
            raw = set_dotted(raw, key, value)
        if row_ok:
            row_problems = _config_problems(raw, f"row {label}")
            problems.extend(f"rows.{label}.{line}" for line in row_problems)
            if not row_problems:
                row_raws[label] = raw
                device = config_from_dict(raw).device
                where = "base.device" if "device" not in overrides else f"rows.{label}.device"
                for field, reserved in (
                    ("resources", spec.resources),
                    ("classifier_resources", spec.classifier_resources),
                ):
                    if device == "cuda" and reserved is not None and reserved.gpu == 0:
                        problems.append(
                            f"{where}: 'cuda' needs {field}.gpu > 0 "
                            "(Ray hides GPUs from a task that reserves none)"
                        )

    algorithm = spec.search.algorithm
    row_keys = {key: label for label, overrides in (spec.rows or {}).items() for key in overrides}
    leaves = _leaf_annotations()
    typed_space: dict[str, Dimension] = {}
    for key, dimension in spec.search_space.items():
        where = f"search_space.{key}"
        problem = _key_problem(key)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        kind = dimension.kind
        if key in row_keys:
            problems.append(
                f"{where}: also set by row {row_keys[key]!r}; a key is either a row override "
                "or a search dimension, not both"
            )
        if key.startswith(CLASSIFIER_SECTIONS) and algorithm != "grid":
            problems.append(
                f"{where}.{kind}: a dimension over classifier.* or data.* needs "
                "search.algorithm grid: every distinct classifier f is trained before any mask "
                "trial, so its values must be enumerable up front"
            )
        elif algorithm == "grid" and kind != "grid":
            problems.append(
                f"{where}.{kind}: search.algorithm grid takes only grid dimensions; "
                f"use search.algorithm optuna to sample {kind} dimensions"
            )
        elif algorithm == "optuna" and kind == "grid":
            problems.append(
                f"{where}.grid: search.algorithm optuna cannot take grid dimensions (Ray Tune's "
                "OptunaSearch does not accept tune.grid_search); use choice instead"
            )
        if kind in ("uniform", "loguniform") and leaves[key] is not float:
            problems.append(
                f"{where}.{kind}: {key} is not a float field; list its values with "
                f"{'grid' if algorithm == 'grid' else 'choice'} instead"
            )
            continue
        # With every row broken (already reported), still check values against the base.
        typed, value_problems = _typed_dimension(key, dimension, row_raws or {"base": spec.base})
        problems.extend(value_problems)
        typed_space[key] = typed

    metric = spec.trial_selection.metric
    if row_raws:
        from wsol.methods import method_of

        reported = {
            label: method_of(config_from_dict(raw)).validation_metrics()
            for label, raw in row_raws.items()
        }
        missing = [label for label, names in reported.items() if metric not in names]
        if missing:
            known = sorted(set().union(*reported.values()))
            problems.append(
                f"trial_selection.metric: {metric!r} is not reported by the trials of "
                f"{'row' if len(missing) == 1 else 'rows'} {', '.join(missing)}; "
                f"each epoch reports {', '.join(known)}"
            )

    if algorithm == "optuna":
        if spec.rows and len(spec.rows) > 1:
            problems.append(
                f"rows: search.algorithm optuna takes at most one row, got {len(spec.rows)}: "
                "rows are enumerated like a grid, which Ray Tune's OptunaSearch cannot take; "
                "use one spec per row or search.algorithm grid"
            )
        if not spec.search_space:
            problems.append(
                "search_space: search.algorithm optuna needs at least one choice, uniform "
                "or loguniform dimension"
            )

    if spec.mlflow.tracking_uri is None and is_remote_uri(spec.storage):
        problems.append(
            f"mlflow.tracking_uri: required when storage is a remote URI ({spec.storage!r}); "
            "e.g. http://127.0.0.1:5000 for the MLflow server on the Ray head node"
        )
    if spec.optuna.storage is not None and algorithm != "optuna":
        problems.append(
            f"optuna.storage: read only by search.algorithm optuna, not {algorithm!r}; "
            "remove it or set search.algorithm optuna"
        )
    if algorithm == "optuna" and spec.optuna.storage is None and is_remote_uri(spec.storage):
        problems.append(
            f"optuna.storage: required when storage is a remote URI ({spec.storage!r}) and "
            "search.algorithm is optuna: the default SQLite file cannot live in a bucket; "
            "e.g. sqlite:////home/<you>/optuna.db on the machine that runs `wsol study`, "
            "or postgresql://user@host/db"
        )
    return problems, typed_space


def _typed_dimension(
    key: str, dimension: Dimension, row_raws: dict[str, dict[str, Any]]
) -> tuple[Dimension, list[str]]:
    """Validate each value (or bound) of ``dimension`` by building every valid row's config
    with it applied; return the dimension with values as the schema types them (YAML's
    ``1e-4`` is a string until a float field reads it) and the problems found."""
    kind = dimension.kind
    listed = kind in ("grid", "choice")
    candidates = dimension.values if listed else list(dimension.bounds or ())
    problems: list[str] = []
    typed_values: list[Any] = []
    for index, value in enumerate(candidates):
        place = f"search_space.{key}.{kind}[{index}]"
        typed = value
        for label, raw in row_raws.items():
            trial_raw = set_dotted(raw, key, value)
            value_problems = _config_problems(trial_raw, label)
            if value_problems:
                in_row = f" (with row {label!r})" if len(row_raws) > 1 else ""
                detail = "; ".join(value_problems)
                problems.append(
                    f"{place}: value {value!r} is not valid for {key}{in_row}: {detail}"
                )
                break
            typed = flatten_config(config_from_dict(trial_raw))[key]
        typed_values.append(typed)
    if problems or not listed:
        return dimension, problems
    if len({json.dumps(value, sort_keys=True) for value in typed_values}) < len(typed_values):
        problems.append(
            f"search_space.{key}.{kind}: values {dimension.values} repeat once typed as {key} "
            "reads them; to repeat trials use search.num_samples"
        )
        return dimension, problems
    return dimension.model_copy(update={kind: typed_values}), problems
