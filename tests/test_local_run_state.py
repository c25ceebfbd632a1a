"""The single-run folder stays true under interrupts, resumes with edits and full disks."""

from __future__ import annotations

import builtins
import errno
import io
import json
from pathlib import Path

import pytest
from run_configs import tiny_run_config

import wsol.loop
from study.cli import main as wsol_main
from wsol.checkpoint import load_mask_state
from wsol.config import ConfigError
from wsol.local_run import run_local


def _config(root: Path, **mask):
    return tiny_run_config(root, classifier={"epochs": 1}, mask={"epochs": 2, **mask})


def _quiet(config, out: Path, **kwargs):
    return run_local(config, out, progress=False, log=lambda _: None, **kwargs)


def test_an_interrupt_between_the_two_checkpoint_writes_never_loses_the_selection(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = wsol.loop.save_mask_state
    calls = []

    def killed_on_second_write(path, *args, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 2:  # epoch 1 is always the best so far: it writes two files
            raise KeyboardInterrupt
        real_save(path, *args, **kwargs)

    monkeypatch.setattr(wsol.loop, "save_mask_state", killed_on_second_write)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _quiet(_config(synthetic_root), out)
    monkeypatch.setattr(wsol.loop, "save_mask_state", real_save)

    result = _quiet(_config(synthetic_root), out, resume=True)

    selection = json.loads((out / "selection.json").read_text())
    assert selection["epoch"] == result.selection.epoch
    assert load_mask_state(out / "selected.pt")["epoch"] == selection["epoch"]


def test_resume_with_a_changed_config_is_refused_naming_each_field(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(_config(synthetic_root).model_dump_json())
    out = tmp_path / "run"
    base = ["train", "--config", str(config_path), "--out", str(out), "--no-progress"]
    assert wsol_main(base) == 0
    before = (out / "config.yaml").read_text()

    code = wsol_main([*base, "--resume", "--lam", "5", "--set", "mask.reg=false"])

    err = capsys.readouterr().err
    assert code == 2
    assert "mask.lam: 1.0 -> 5.0" in err and "mask.reg: True -> False" in err
    assert "Only mask.epochs may grow" in err
    assert (out / "config.yaml").read_text() == before  # the run's record is untouched


def test_resume_may_train_longer_but_not_shorter(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _quiet(_config(synthetic_root), out)
    longer = _quiet(_config(synthetic_root, epochs=3), out, resume=True)
    assert [row["epoch"] for row in longer.history] == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"mask.epochs: 3 -> 1"):
        _quiet(_config(synthetic_root, epochs=1), out, resume=True)


def test_a_stored_classifier_trained_with_other_settings_is_not_reused(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    _quiet(_config(synthetic_root), out)
    (out / "config.yaml").unlink()  # no record of the config: the f's own must refuse
    changed = _config(synthetic_root).model_copy(deep=True)
    changed.classifier.lr = 0.5
    with pytest.raises(ConfigError, match=r"classifier\.lr"):
        _quiet(changed, out, resume=True)


def _disk_full_on(names: tuple[str, ...]):
    """An ``open`` whose writes to files whose name contains one of ``names`` (their
    temporaries included) write half the text, then fail as a full disk does."""
    real_open = io.open

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if any(name in Path(str(file)).name for name in names) and set(mode) & {"w", "a"}:
            write = handle.write

            def half(text):
                write(text[: len(text) // 2])
                handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            handle.write = half
        return handle

    return fake_open


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    fake = _disk_full_on(names)
    monkeypatch.setattr(builtins, "open", fake)
    monkeypatch.setattr(io, "open", fake)  # what pathlib's write_text calls


def test_a_full_disk_mid_write_leaves_the_previous_complete_files(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _quiet(_config(synthetic_root), out)
    previous = {name: (out / name).read_text() for name in ("metrics.jsonl", "selection.json")}

    _fill_the_disk(monkeypatch, ("metrics.jsonl", "selection.json"))
    with pytest.raises(OSError, match="No space left"):
        _quiet(_config(synthetic_root, epochs=3), out, resume=True)
    monkeypatch.undo()

    for name, text in previous.items():
        assert (out / name).read_text() == text, name  # whole, and the previous version
    assert not list(out.glob(".*.tmp"))


def test_a_full_disk_while_caching_a_test_score_keeps_the_previous_cache(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from study.evaluation import evaluate

    out = tmp_path / "run"
    _quiet(_config(synthetic_root), out)
    evaluate(str(out), progress=False, log=lambda _: None)
    cache = out / "evaluation" / "trials" / "run.json"
    previous = cache.read_text()

    _fill_the_disk(monkeypatch, ("run.json",))
    with pytest.raises(OSError, match="No space left"):
        evaluate(str(out), force=True, progress=False, log=lambda _: None)
    monkeypatch.undo()

    assert cache.read_text() == previous
    evaluate(str(out), progress=False, log=lambda _: None)  # reads it back


def test_a_cached_test_score_is_redone_when_the_selection_moves(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from study.evaluation import evaluate

    out = tmp_path / "run"
    _quiet(_config(synthetic_root, epochs=1), out)
    first = evaluate(str(out), progress=False, log=lambda _: None)
    assert [item.selected_epoch for item in first.scored if item.method != "CAM"] == [1]
    # The run goes on and its selection moves to epoch 2 (made certain here by its history).
    _quiet(_config(synthetic_root, epochs=2), out, resume=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row, s_score in zip(rows, (0.5, 0.9), strict=True):
        row.update(val_s_score=s_score, excluded_reason=None)
    (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "selected.pt").write_bytes((out / "last.pt").read_bytes())
    selection = json.loads((out / "selection.json").read_text())
    (out / "selection.json").write_text(json.dumps({**selection, "epoch": 2, "s_score": 0.9}))
    lines: list[str] = []

    second = evaluate(str(out), progress=False, log=lines.append)

    assert [item.selected_epoch for item in second.scored if item.method != "CAM"] == [2]
    assert any("epoch 1 -> 2" in line and "scoring again" in line for line in lines)
    assert not any("already scored" in line for line in lines)
