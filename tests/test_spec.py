"""Study specs: validation names the field path and file; trials, grids and f keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from study.spec import SpecError, Study, classifier_key, load_spec, spec_from_dict
from wsol.config import ConfigError, RunConfig

FIG8 = """
name: fig8
description: lambda sweep with and without the regularizer
base:
  data: {root: data/synthetic, crop: 64, resize: 72}
  mask: {epochs: 3, lam: 1.0}
rows:
  full: {}
  no-reg: {mask.reg: false}
search_space:
  seed: {grid: [0, 1, 2]}
  mask.lr: {grid: [1e-4, 1.0e-3]}
search: {algorithm: grid, num_samples: 2}
trial_selection: {metric: val_s_score, mode: max}
resources: {cpu: 2, gpu: 0.25}
max_concurrent_trials: 4
keep_all_checkpoints: true
storage: studies
"""


def make(**fields: Any) -> dict[str, Any]:
    """A minimal valid spec dict with ``fields`` set on top."""
    return {"name": "s", **fields}


def problems(raw: dict[str, Any], source: str = "spec.yaml") -> str:
    with pytest.raises(SpecError) as error:
        spec_from_dict(raw, source)
    message = str(error.value)
    assert source in message.splitlines()[0]
    return message


@pytest.fixture
def fig8(tmp_path: Path) -> Study:
    path = tmp_path / "fig8.yaml"
    path.write_text(FIG8)
    return load_spec(path)


def test_a_valid_spec_loads_and_round_trips(fig8: Study) -> None:
    assert fig8.name == "fig8" and fig8.source.name == "fig8.yaml"
    assert fig8.row_labels() == ["full", "no-reg"]
    assert fig8.search.num_samples == 2 and fig8.resources.gpu == 0.25
    assert fig8.keep_all_checkpoints and fig8.max_concurrent_trials == 4
    dumped = fig8.model_dump(mode="json", exclude={"source"}, exclude_none=True)
    again = spec_from_dict(yaml.safe_load(yaml.safe_dump(dumped)), fig8.source)
    assert again == fig8


def test_defaults_of_an_almost_empty_spec() -> None:
    study = spec_from_dict({"name": "s"})
    assert study.row_labels() == ["default"]
    assert study.search.algorithm == "grid" and study.search.num_samples == 1
    assert (study.trial_selection.metric, study.trial_selection.mode) == ("val_s_score", "max")
    assert (study.resources.cpu, study.resources.gpu) == (1.0, 0.0)
    assert (study.max_failures, study.keep_checkpoints) == (2, 2)
    assert study.grid_points() == [{"row": "default"}]
    assert study.experiment_name() == "s"


def test_grid_values_are_typed_by_the_config_field(fig8: Study) -> None:
    # PyYAML reads 1e-4 (no dot) as a string; the float field makes it a float.
    assert fig8.search_space["mask.lr"].values == [1e-4, 1e-3]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            make(search_space={"mask.lamda": {"grid": [1.0]}}),
            ["search_space.mask.lamda", "unknown config key", "mask.lam"],
            id="unknown-search-key-lists-neighbours",
        ),
        pytest.param(
            make(rows={"no-reg": {"mask.regg": False}}),
            ["rows.no-reg.mask.regg", "unknown config key", "mask.reg"],
            id="unknown-row-key",
        ),
        pytest.param(
            make(search_space={"mask": {"grid": [1]}}),
            ["search_space.mask", "is a section"],
            id="section-is-not-a-leaf",
        ),
        pytest.param(
            make(rows={"a": {"name": "x"}}),
            ["rows.a.name", "set per trial"],
            id="name-is-not-overridable",
        ),
        pytest.param(
            make(search_space={"seed": {"grid": [0], "choice": [1]}}),
            ["search_space.seed", "exactly one of grid, choice, uniform, loguniform"],
            id="two-kinds-in-one-dimension",
        ),
        pytest.param(
            make(search_space={"seed": {}}),
            ["search_space.seed", "exactly one of", "got none"],
            id="no-kind",
        ),
        pytest.param(
            make(search_space={"seed": {"grid": []}}),
            ["search_space.seed.grid", "non-empty"],
            id="empty-grid",
        ),
        pytest.param(
            make(search_space={"seed": {"grid": [0, 0]}}),
            ["search_space.seed.grid", "twice", "num_samples"],
            id="repeated-grid-value",
        ),
        pytest.param(
            make(
                search={"algorithm": "optuna"}, search_space={"mask.lr": {"uniform": [0.1, 0.01]}}
            ),
            ["search_space.mask.lr.uniform", "low < high"],
            id="uniform-bounds-reversed",
        ),
        pytest.param(
            make(search={"algorithm": "optuna"}, search_space={"mask.lam": {"loguniform": [0, 1]}}),
            ["search_space.mask.lam.loguniform", "low > 0"],
            id="loguniform-from-zero",
        ),
        pytest.param(
            make(search={"algorithm": "optuna"}, search_space={"mask.lam": {"uniform": [1]}}),
            ["search_space.mask.lam.uniform", "[low, high] pair"],
            id="uniform-not-a-pair",
        ),
        pytest.param(
            make(search_space={"mask.encoder": {"grid": ["resnet18", "resnet19"]}}),
            ["search_space.mask.encoder.grid[1]", "'resnet19'", "resnet34"],
            id="invalid-grid-value",
        ),
        pytest.param(
            make(search={"algorithm": "optuna"}, search_space={"mask.lam": {"uniform": [-1, 1]}}),
            ["search_space.mask.lam.uniform[0]", "-1"],
            id="invalid-bound",
        ),
        pytest.param(
            make(search={"algorithm": "optuna"}, search_space={"mask.epochs": {"uniform": [1, 9]}}),
            ["search_space.mask.epochs.uniform", "not a float field", "choice"],
            id="continuous-over-an-int-field",
        ),
        pytest.param(
            make(search_space={"mask.encoder": {"choice": ["resnet18", "resnet34"]}}),
            ["search_space.mask.encoder.choice", "only grid dimensions", "optuna"],
            id="grid-refuses-choice",
        ),
        pytest.param(
            make(search_space={"mask.lam": {"loguniform": [0.01, 10.0]}}),
            ["search_space.mask.lam.loguniform", "only grid dimensions", "optuna"],
            id="grid-refuses-loguniform",
        ),
        pytest.param(
            make(
                search={"algorithm": "optuna"},
                rows={"a": {}, "b": {"mask.reg": False}},
                search_space={"mask.lam": {"loguniform": [0.01, 10.0]}},
            ),
            ["rows:", "at most one row", "OptunaSearch"],
            id="optuna-refuses-several-rows",
        ),
        pytest.param(
            make(search={"algorithm": "optuna"}),
            ["search_space:", "optuna needs at least one"],
            id="optuna-needs-a-dimension",
        ),
        pytest.param(
            make(
                rows={"a": {"mask.lam": 0.5}},
                search_space={"mask.lam": {"grid": [1.0, 2.0]}},
            ),
            ["search_space.mask.lam", "also set by row 'a'"],
            id="rows-and-search-space-share-a-key",
        ),
        pytest.param(
            make(
                search={"algorithm": "optuna"},
                search_space={"classifier.lr": {"loguniform": [1e-4, 1e-2]}},
            ),
            ["search_space.classifier.lr.loguniform", "needs search.algorithm grid", "enumerable"],
            id="classifier-dimension-under-optuna",
        ),
        pytest.param(
            make(search={"algorithm": "optuna"}, search_space={"data.crop": {"choice": [64, 96]}}),
            ["search_space.data.crop.choice", "needs search.algorithm grid"],
            id="data-dimension-under-optuna",
        ),
        pytest.param(
            make(trial_selection={"metric": "s_score"}),
            ["trial_selection.metric", "starting with 'val_'"],
            id="metric-not-validation",
        ),
        pytest.param(
            make(trial_selection={"metric": "val_s_score", "mode": "maximize"}),
            ["trial_selection.mode"],
            id="mode-not-max-or-min",
        ),
        pytest.param(
            make(resources={"gpu": 1.5}),
            ["resources.gpu", "whole number"],
            id="fractional-gpu-above-one",
        ),
        pytest.param(make(resources={"gpu": -0.5}), ["resources.gpu"], id="negative-gpu"),
        pytest.param(make(resources={"cpu": 0}), ["resources.cpu"], id="no-cpu"),
        pytest.param(
            make(base={"device": "cuda"}),
            ["base.device", "resources.gpu > 0"],
            id="cuda-without-a-gpu",
        ),
        pytest.param(
            make(base={"device": "cuda"}, resources={"gpu": 0.25}, classifier_resources={"cpu": 2}),
            ["base.device", "classifier_resources.gpu > 0"],
            id="cuda-f-without-a-gpu",
        ),
        pytest.param(
            make(classifier_resources={"gpu": 1.5}),
            ["classifier_resources.gpu", "whole number"],
            id="fractional-f-gpu-above-one",
        ),
        pytest.param(
            make(storage="s3://bucket/studies"),
            ["mlflow.tracking_uri", "required", "remote"],
            id="remote-storage-needs-a-tracking-uri",
        ),
        pytest.param(
            make(base={"mask": {"lam": -1}}),
            ["base.mask.lam", "greater than or equal to 0"],
            id="invalid-base-prefixed-base",
        ),
        pytest.param(
            make(rows={"small": {"data.crop": 33}}),
            ["rows.small.data.crop", "multiple of 32"],
            id="invalid-row-value",
        ),
        pytest.param(make(name="fig 8"), ["name", "not a safe folder name"], id="bad-name"),
        pytest.param(make(name=".."), ["name", "not a safe folder name"], id="dot-dot-name"),
        pytest.param(make(name="a/b"), ["name", "no '/'"], id="name-with-separator"),
        pytest.param(make(rows={"..": {}}), ["rows", "row label '..'"], id="dot-dot-row-label"),
        pytest.param(make(rows={"a b": {}}), ["rows", "'a b'"], id="bad-row-label"),
        pytest.param(make(rows={}), ["rows", "at least one row"], id="empty-rows"),
        pytest.param(
            make(seed=3),
            ["seed: unknown spec key; valid keys here: name, description, base", "storage"],
            id="unknown-field-lists-the-spec-fields",
        ),
        pytest.param(
            make(search={"algoritm": "grid"}),
            ["search.algoritm: unknown spec key", "search.algorithm, search.num_samples"],
            id="unknown-nested-field-lists-its-section",
        ),
        pytest.param(
            make(search_space={"seed": {"gird": [0]}}),
            ["search_space.seed.gird: unknown spec key", "search_space.seed.grid"],
            id="unknown-dimension-kind-lists-the-kinds",
        ),
        pytest.param(
            make(base={"mask": {"lamm": 1}}),
            ["base.mask.lamm: unknown config key 'mask.lamm'; valid keys here:", "mask.lam,"],
            id="unknown-base-key-lists-its-section",
        ),
        pytest.param(
            make(base={"maks": {"lam": 1}}),
            ["base.maks: unknown config key 'maks'; valid keys here:", "mask,", "selection"],
            id="unknown-base-section-lists-the-sections",
        ),
        pytest.param(
            make(
                search={"algorithm": "optuna"},
                search_space={"mask.lam": {"loguniform": [0.1, 1]}},
                optuna={"storage": "optuna.db"},
            ),
            ["optuna.storage", "SQLAlchemy database URL", "'optuna.db'"],
            id="optuna-storage-not-a-database-url",
        ),
        pytest.param(
            make(
                search={"algorithm": "optuna"},
                search_space={"mask.lam": {"loguniform": [0.1, 1]}},
                optuna={"storage": "sqlite://"},
            ),
            ["optuna.storage", "in-memory"],
            id="optuna-storage-in-memory",
        ),
        pytest.param(
            make(optuna={"storage": "sqlite:////tmp/optuna.db"}),
            ["optuna.storage", "only by search.algorithm optuna"],
            id="optuna-storage-on-a-grid-study",
        ),
        pytest.param(
            make(
                search={"algorithm": "optuna"},
                search_space={"mask.lam": {"loguniform": [0.1, 1]}},
                storage="s3://bucket/studies",
                mlflow={"tracking_uri": "http://127.0.0.1:5000"},
            ),
            ["optuna.storage", "required", "remote"],
            id="remote-storage-optuna-needs-a-storage",
        ),
        pytest.param(
            make(search={"algorithm": "random"}), ["search.algorithm"], id="unknown-algorithm"
        ),
    ],
)
def test_each_rule_fails_naming_the_field_path(raw: dict[str, Any], expected: list[str]) -> None:
    message = problems(raw)
    for text in expected:
        assert text in message, f"{text!r} not in:\n{message}"


def test_a_base_value_error_quotes_the_value_once() -> None:
    message = problems(make(base={"data": {"crop": 100}}))
    assert message.splitlines()[1:] == [
        "  base.data.crop: must be a multiple of 32 (g downsamples 5 times), got 100"
    ]


def test_optuna_refuses_grid_dimensions_and_suggests_choice() -> None:
    message = problems(make(search={"algorithm": "optuna"}, search_space={"seed": {"grid": [0]}}))
    assert "search_space.seed.grid" in message
    assert "tune.grid_search" in message and "use choice" in message


def test_a_test_metric_is_refused_because_test_data_never_selects() -> None:
    for metric in ("test_gt_known_loc", "val_test_s_score"):
        message = problems(make(trial_selection={"metric": metric}))
        assert "trial_selection.metric" in message
        assert "test split is never used for selection" in message


def test_val_gt_known_loc_is_an_accepted_selection_metric() -> None:
    study = spec_from_dict(make(trial_selection={"metric": "val_gt_known_loc", "mode": "max"}))
    assert study.trial_selection.metric == "val_gt_known_loc"


def test_the_classifier_stage_reserves_its_own_resources_or_the_trials() -> None:
    assert spec_from_dict(make(resources={"cpu": 3})).f_resources.cpu == 3
    study = spec_from_dict(make(resources={"cpu": 1}, classifier_resources={"cpu": 4, "gpu": 1}))
    assert (study.f_resources.cpu, study.f_resources.gpu) == (4, 1)
    assert (study.resources.cpu, study.resources.gpu) == (1, 0)


@pytest.mark.parametrize("gpu", [0, 0.25, 1, 2])
def test_gpu_share_may_be_fractional_up_to_one_then_whole(gpu: float) -> None:
    assert spec_from_dict(make(resources={"gpu": gpu})).resources.gpu == gpu


def test_all_problems_are_reported_at_once() -> None:
    message = problems(
        make(
            search_space={"mask.lamda": {"grid": [1]}, "mask.encoder": {"grid": ["resnet19"]}},
            storage="gs://bucket",
        )
    )
    assert "search_space.mask.lamda" in message
    assert "search_space.mask.encoder.grid[0]" in message
    assert "mlflow.tracking_uri" in message


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: s\nsearch_space:\n  mask.encoder: {grid: [resnet19]}\n")
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(path) in str(error.value)
    assert "search_space.mask.encoder.grid[0]" in str(error.value)


def test_missing_file_and_invalid_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "absent.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml"):
        load_spec(path)
    path.write_text("- a list\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(path)


def test_spec_error_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        spec_from_dict(make(seed=1))


def test_grid_points_are_rows_times_grid_in_a_stable_order(fig8: Study) -> None:
    points = fig8.grid_points()
    assert len(points) == 2 * 3 * 2  # rows x seed x mask.lr; num_samples is the runner's
    assert points[0] == {"row": "full", "seed": 0, "mask.lr": 1e-4}
    assert points[1] == {"row": "full", "seed": 0, "mask.lr": 1e-3}
    assert points[2] == {"row": "full", "seed": 1, "mask.lr": 1e-4}
    assert points[6] == {"row": "no-reg", "seed": 0, "mask.lr": 1e-4}
    assert points == fig8.grid_points()


def test_grid_points_are_refused_for_optuna() -> None:
    study = spec_from_dict(
        make(search={"algorithm": "optuna"}, search_space={"mask.lam": {"uniform": [0.1, 2]}})
    )
    with pytest.raises(SpecError, match="grid"):
        study.grid_points()


def test_trial_config_applies_base_then_row_then_params() -> None:
    study = spec_from_dict(
        make(
            base={"seed": 7, "mask": {"lam": 1.0, "lr": 0.1, "epochs": 5}},
            rows={"a": {"mask.lam": 2.0, "mask.lr": 0.2}},
            search_space={"seed": {"grid": [1]}},
        )
    )
    config = study.trial_config("a", {"seed": 1})
    assert isinstance(config, RunConfig)
    assert config.mask.epochs == 5  # base
    assert (config.mask.lam, config.mask.lr) == (2.0, 0.2)  # row over base
    assert config.seed == 1  # params over base
    assert config.name == "s/a"
    assert study.trial_config("a", {}).seed == 7


def test_params_override_rows_for_optuna() -> None:
    study = spec_from_dict(
        make(
            base={"mask": {"lam": 1.0}},
            rows={"only": {"mask.reg": False}},
            search={"algorithm": "optuna"},
            search_space={"mask.lam": {"loguniform": [0.01, 10.0]}},
        )
    )
    config = study.trial_config("only", {"mask.lam": 0.5})
    assert (config.mask.lam, config.mask.reg, config.name) == (0.5, False, "s/only")


def test_trial_config_refuses_unknown_rows_and_params(fig8: Study) -> None:
    with pytest.raises(SpecError, match="unknown row 'nope'"):
        fig8.trial_config("nope", {})
    with pytest.raises(SpecError, match="not search_space keys"):
        fig8.trial_config("full", {"mask.lam": 0.5})


def test_point_config_splits_the_row_from_the_params(fig8: Study) -> None:
    point = fig8.grid_points()[-1]
    config = fig8.point_config(point)
    assert (config.name, config.mask.reg, config.seed, config.mask.lr) == (
        "fig8/no-reg",
        False,
        2,
        1e-3,
    )


def test_classifier_key_ignores_what_does_not_train_f() -> None:
    base = RunConfig()
    key = classifier_key(base)
    unchanged = [
        base.model_copy(update={"seed": 5, "name": "other", "device": "cpu"}),
        RunConfig(mask={"lam": 0.1, "encoder": "resnet50", "reg": False}),
        RunConfig(selection={"threshold": 0.2, "skip_degenerate": False}),
        RunConfig(data={"num_workers": 8}),
        RunConfig(classifier={"checkpoint": "somewhere/classifier.pt"}),
    ]
    for config in unchanged:
        assert classifier_key(config) == key
    assert len(key) == 16 and int(key, 16) >= 0


def test_classifier_key_changes_with_what_trains_f() -> None:
    key = classifier_key(RunConfig())
    changed = [
        RunConfig(classifier={"backbone": "resnet34"}),
        RunConfig(classifier={"seed": 1}),
        RunConfig(data={"crop": 192}),
        RunConfig(data={"root": "elsewhere"}),
        RunConfig(deterministic=True),
    ]
    keys = {classifier_key(config) for config in changed}
    assert key not in keys and len(keys) == len(changed)


def test_classifier_configs_are_deduplicated_by_key(fig8: Study) -> None:
    # 12 grid points over seed, mask.lr and mask.reg: all share one f.
    assert len(fig8.classifier_configs()) == 1
    study = spec_from_dict(
        make(
            rows={
                "full": {},
                "no-reg": {"mask.reg": False},
                "r34": {"classifier.backbone": "resnet34"},
            },
            search_space={"seed": {"grid": [0, 1]}, "classifier.seed": {"grid": [0, 1]}},
        )
    )
    configs = study.classifier_configs()
    assert len(study.grid_points()) == 12
    assert len(configs) == 4  # backbone {18, 34} x classifier.seed {0, 1}
    assert len({classifier_key(config) for config in configs}) == 4
    assert [(c.classifier.backbone, c.classifier.seed) for c in configs] == [
        ("resnet18", 0),
        ("resnet18", 1),
        ("resnet34", 0),
        ("resnet34", 1),
    ]


def test_classifier_configs_for_optuna_are_the_base_and_row() -> None:
    study = spec_from_dict(
        make(search={"algorithm": "optuna"}, search_space={"mask.lam": {"uniform": [0.1, 2]}})
    )
    (config,) = study.classifier_configs()
    assert classifier_key(config) == classifier_key(RunConfig())


def test_default_tracking_uri_is_sqlite_under_the_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = spec_from_dict(make(storage="studies"))
    assert study.storage_path() == str(tmp_path.resolve() / "studies")
    assert study.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/studies/mlflow.db"


def test_remote_storage_is_kept_as_a_uri_and_tracking_uri_as_given() -> None:
    study = spec_from_dict(
        make(storage="s3://bucket/studies", mlflow={"tracking_uri": "http://127.0.0.1:5000"})
    )
    assert study.storage_path() == "s3://bucket/studies"
    assert study.tracking_uri() == "http://127.0.0.1:5000"
    assert study.is_remote_storage()


def test_file_uri_storage_defaults_to_sqlite_at_its_path() -> None:
    study = spec_from_dict(make(storage="file:///shared/studies"))
    assert not study.is_remote_storage()
    assert study.tracking_uri() == "sqlite:////shared/studies/mlflow.db"


def test_experiment_defaults_to_the_spec_name_unless_given() -> None:
    assert spec_from_dict(make(mlflow={"experiment": "e"})).experiment_name() == "e"


def test_diff_keys_are_search_keys_then_row_keys(fig8: Study) -> None:
    assert fig8.diff_keys() == ["seed", "mask.lr", "mask.reg"]
    assert spec_from_dict(make()).diff_keys() == []


OPTUNA = make(search={"algorithm": "optuna"}, search_space={"mask.lam": {"loguniform": [0.1, 1]}})


def test_optuna_storage_defaults_to_sqlite_beside_the_mlflow_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = spec_from_dict({**OPTUNA, "storage": "studies"})
    assert study.optuna_storage() == f"sqlite:///{tmp_path.resolve()}/studies/optuna.db"
    assert study.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/studies/mlflow.db"
    given = spec_from_dict({**OPTUNA, "optuna": {"storage": "postgresql://me@db/optuna"}})
    assert given.optuna_storage() == "postgresql://me@db/optuna"
    assert spec_from_dict(make()).optuna_storage() is None  # a grid study has no Optuna study


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "fig8.yaml"
    path.write_text(FIG8)
    return path


def test_set_overrides_apply_to_the_spec_before_validation(tmp_path: Path) -> None:
    study = load_spec(
        _spec_file(tmp_path),
        [
            "base.mask.lam=0.5",
            "search.num_samples=4",
            "storage=runs/x",
            "rows.no-reg.mask.lam=2",
            "search_space.seed.grid=[0, 1]",
            "search.scheduler.asha.grace_period=3",
        ],
    )
    assert study.base["mask"] == {"epochs": 3, "lam": 0.5}
    assert study.search.num_samples == 4 and study.storage == "runs/x"
    assert study.trial_config("no-reg", {}).mask.lam == 2
    assert study.search_space["seed"].values == [0, 1]
    assert study.search.scheduler.asha is not None
    assert study.search.scheduler.asha.grace_period == 3
    # Kept for the --resume command line, but not part of the spec itself.
    assert "overrides" not in study.model_dump()
    assert study.resume_command("fig8") == (
        f"wsol study {tmp_path / 'fig8.yaml'} --set base.mask.lam=0.5 --set "
        "search.num_samples=4 --set storage=runs/x --set rows.no-reg.mask.lam=2 --set "
        "'search_space.seed.grid=[0, 1]' --set search.scheduler.asha.grace_period=3 --resume"
    )


def test_a_set_search_space_kind_replaces_the_dimension(tmp_path: Path) -> None:
    study = load_spec(_spec_file(tmp_path), ["search_space.mask.lr.grid=[0.01]"])
    assert study.search_space["mask.lr"].values == [0.01]
    with pytest.raises(SpecError, match=r"search_space\.<config key>\.<kind>"):
        load_spec(_spec_file(tmp_path), ["search_space.seed.grdi=[0]"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        pytest.param(
            "serach.num_samples=2",
            ["unknown spec key 'serach'", "valid keys here: name, description, base"],
            id="unknown-top-level",
        ),
        pytest.param(
            "search.num_sample=2",
            ["unknown spec key 'search.num_sample'", "search.num_samples, search.seed"],
            id="unknown-nested",
        ),
        pytest.param(
            "base.mask.lamm=2",
            ["--set base.mask.lamm", "unknown config key 'mask.lamm'", "mask.lam,"],
            id="unknown-config-key",
        ),
        pytest.param(
            "rows.nope.mask.lam=2", ["rows.<label>.<config key>", "full, no-reg"], id="no-row"
        ),
        pytest.param("search=grid", ["'search' is a section", "search.algorithm"], id="section"),
        pytest.param("storage.path=x", ["'storage' is a value"], id="below-a-value"),
        pytest.param("search.num_samples", ["must look like KEY=VALUE"], id="no-equals"),
        pytest.param(
            "search.num_samples=many",
            ["search.num_samples", "'many'", "(with --set search.num_samples=many)"],
            id="type-checked-by-the-schema",
        ),
        pytest.param(
            "base.data.crop=100",
            ["base.data.crop", "multiple of 32", "(with --set base.data.crop=100)"],
            id="config-value-checked",
        ),
    ],
)
def test_a_bad_set_override_is_refused_naming_it(
    tmp_path: Path, override: str, expected: list[str]
) -> None:
    with pytest.raises(SpecError) as error:
        load_spec(_spec_file(tmp_path), [override])
    for text in expected:
        assert text in str(error.value), f"{text!r} not in:\n{error.value}"
