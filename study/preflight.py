"""Pre-flight: what a study checks before it trains anything.

The datasets the study reads pass ``wsol data check`` and give a non-empty validation
split; the MLflow tracking URI is usable; each trial (and each f of the classifier
stage) fits some node of the running cluster.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from study.errors import StudyError
from study.spec import Resources, Study, resolve_paths
from wsol.config import flatten_mapping


class TrackingUnavailableError(ValueError):
    """The MLflow tracking URI of a study cannot be used."""


_SERVER_HINT = (
    "Start a tracking server (e.g. `mlflow server --backend-store-uri sqlite:///mlflow.db "
    "--host 127.0.0.1 --port 5000`) or point the study at a local database with "
    "tracking_uri 'sqlite:///<folder>/mlflow.db'."
)


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Pre-flight check of a study's MLflow tracking URI; raises TrackingUnavailableError.

    - `http(s)://`: GET `<uri>/health` (served by `mlflow server`), one try, `timeout_s`.
    - `sqlite:///path`: the database's folder exists (or can be created) and is writable.
    - a plain path or `file:` URI: refused, MLflow 3.x's file store is in maintenance mode.
    - other schemes (databricks, postgresql, ...): accepted without a check.
    """
    if not uri or not uri.strip():
        raise TrackingUnavailableError(f"MLflow tracking URI is empty. {_SERVER_HINT}")
    scheme = urlparse(uri).scheme.lower()
    if uri.strip().lower() in ("databricks", "databricks-uc", "uc"):
        return  # MLflow's scheme-less Databricks shorthands
    if scheme in ("http", "https"):
        _check_http_tracking_uri(uri, timeout_s)
    elif scheme == "sqlite":
        _check_sqlite_tracking_uri(uri)
    elif scheme in ("", "file") or len(scheme) == 1:  # len 1: a Windows drive letter
        raise TrackingUnavailableError(
            f"MLflow tracking URI {uri!r} is a local file store (a './mlruns' style "
            "folder). MLflow 3.x keeps the file store in maintenance mode: it gets no "
            "further updates and refuses to open unless MLFLOW_ALLOW_FILE_STORE=true. Use "
            "'sqlite:///<folder>/mlflow.db' for a local study or the 'http://host:port' "
            "of an `mlflow server`; `mlflow migrate-filestore` moves existing runs."
        )
    # Anything else (databricks, postgresql, mysql, plugins): no cheap, side-effect
    # free check exists, so accept it as given.


def _check_http_tracking_uri(uri: str, timeout_s: float) -> None:
    health_url = uri.rstrip("/") + "/health"
    request = urllib.request.Request(health_url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} answered HTTP {exc.code} on {health_url} "
            f"(expected 200). Check that the URI points at an `mlflow server` "
            f"(including any --static-prefix). {_SERVER_HINT}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} is not reachable ({reason}; GET {health_url}, "
            f"timeout {timeout_s:g} s). {_SERVER_HINT}"
        ) from exc
    if status != 200:
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} answered HTTP {status} on {health_url} "
            f"(expected 200). {_SERVER_HINT}"
        )


def sqlite_database_path(uri: str) -> Path | None:
    """The file of a `sqlite:///...` URI, or None for an in-memory database."""
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    rest = rest.split("?", 1)[0]
    # sqlite:///relative.db -> "/relative.db"; sqlite:////abs.db -> "//abs.db"
    path = rest[1:] if rest.startswith("/") else rest
    if not path or path == ":memory:":
        return None
    return Path(path)


def _check_sqlite_tracking_uri(uri: str) -> None:
    database = sqlite_database_path(uri)
    if database is None:
        return  # in-memory: nothing on disk to check
    folder = database.parent if str(database.parent) else Path(".")
    if database.exists() and not database.is_file():
        raise TrackingUnavailableError(
            f"MLflow tracking URI {uri!r}: {database} exists but is not a file. "
            "Point the URI at a database file, e.g. 'sqlite:///<folder>/mlflow.db'."
        )
    # The nearest folder that exists must be a writable directory: either the database
    # folder itself or the ancestor in which it will be created.
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is not a folder, so {folder} cannot be created"
    else:
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            problem = f"{existing} is not writable ({exc.strerror or exc})"
    if problem is None and database.exists() and not os.access(database, os.R_OK | os.W_OK):
        problem = f"{database} is not readable and writable"
    if problem is not None:
        raise TrackingUnavailableError(
            f"MLflow tracking URI {uri!r} cannot be used: {problem}. Choose a database "
            "path in a writable folder, e.g. 'sqlite:///<study storage>/mlflow.db'."
        )


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
    import ray

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


#: Beside a study's trials: the spec it was started with, validated, and the working
#: directory its relative paths resolve against. ``--resume`` runs exactly this.
STUDY_SPEC = "spec.json"


def _spec_record(study: Study, cwd: Path) -> dict[str, Any]:
    return {
        "spec": study.model_dump(mode="json", exclude={"source"}),
        "source": str(study.source),
        "cwd": str(cwd),
    }


def check_study_folder(study: Study, name: str, resume: bool, cwd: Path) -> Path:
    """Before anything trains: a study that exists is refused without ``resume``; with
    it, the spec must be the one stored when the study started (each differing field is
    named), and the stored working directory is returned (relative paths resolve against
    it, as when the study started). A new study stores its spec and ``cwd``."""
    from ray import tune

    from study import storage

    path = storage.join(study.storage_path(), name)
    record_location = storage.join(path, STUDY_SPEC)
    exists = (
        tune.Tuner.can_restore(path)
        or storage.exists(storage.join(path, "study.json"))
        or storage.exists(record_location)
    )
    if exists and not resume:
        raise StudyError(
            f"study {name!r} already exists at {path}; pass --resume to finish it, "
            "or --name to start another"
        )
    if not exists:
        check_optuna_study_is_new(study, name, path)
    if not storage.exists(record_location):
        storage.write_json(record_location, _spec_record(study, cwd))
        return cwd
    try:
        stored = json.loads(storage.read_text(record_location))
        stored_spec = Study.model_validate({**stored["spec"], "source": stored["source"]})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StudyError(f"{record_location} cannot be read ({error})") from None
    before = flatten_mapping(stored_spec.model_dump(mode="json", exclude={"source"}))
    after = flatten_mapping(study.model_dump(mode="json", exclude={"source"}))
    changed = sorted(
        key for key in before.keys() | after.keys() if before.get(key) != after.get(key)
    )
    if changed:
        lines = "\n".join(f"  {key}: {before.get(key)!r} -> {after.get(key)!r}" for key in changed)
        raise StudyError(
            f"--resume finishes study {name!r} with the spec it started with "
            f"({stored['source']}, stored in {record_location}), but {study.source} differs:\n"
            f"{lines}\nUndo the edit to resume, or start a new study with --name"
        )
    return Path(stored["cwd"])


def check_optuna_study_is_new(study: Study, name: str, path: str) -> None:
    """For a new ``optuna`` study: its Optuna storage holds no study called ``name``
    (one left by an earlier study of that name whose folder was deleted), whose trials
    OptunaSearch would load and feed to this study's sampler. A missing SQLite file
    holds none and is not created here."""
    url = study.optuna_storage()
    if url is None:
        return
    if url.startswith("sqlite"):
        database = sqlite_database_path(url)
        if database is None or not database.is_file():
            return
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        names = optuna.study.get_all_study_names(storage=url)
    except (ImportError, sqlalchemy.exc.SQLAlchemyError) as error:
        raise StudyError(
            f"pre-flight: the Optuna storage {url!r} (optuna.storage) cannot be opened: {error}"
        ) from None
    if name in names:
        raise StudyError(
            f"pre-flight: the Optuna storage {url} already holds a study named {name!r}, but "
            f"there is no study {name!r} at {path} to resume (its folder was deleted?); its "
            "trials would seed this study's sampler. Delete it with `optuna delete-study "
            f"--study-name {name} --storage {url}`, or start this study with another --name"
        )


def check_inputs(study: Study, cwd: Path) -> None:
    """What needs no cluster: the datasets and the MLflow tracking URI (run before Ray
    starts, so a typo costs seconds, not a Ray start-up)."""
    check_datasets(study, cwd)
    try:
        check_tracking_uri(study.tracking_uri())
    except TrackingUnavailableError as error:
        raise StudyError(f"pre-flight: {error}") from None
