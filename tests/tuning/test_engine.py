"""The output folder of a study: resolved once, refused when it holds a study, cleared by --overwrite."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from perftune.errors import StudyStateError
from perftune.spec import load_spec
from perftune.tuning.engine import STUDY_FILES, StudyState, _open_state, _write_atomic, resolve_out

SPEC = """
name: folder
datasets: [diabetes]
models: [sgd_logistic]
search:
  space:
    batch_size: [32]
objectives: [accuracy]
"""


@pytest.fixture
def spec(tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(SPEC) + f"workspace: {tmp_path / 'ws'}\n")
    return load_spec(path)


def fill(out: Path, spec) -> None:
    """Every file a study and its analyses leave in the output folder."""
    out.mkdir(parents=True)
    StudyState(spec.fingerprint(), "run", "sqlite:///x.db", "perftune", "now").write(out)
    for name in STUDY_FILES:
        target = out / name
        if name in ("ray", "groups", "report"):
            target.mkdir()
            (target / "inside.json").write_text("{}")
        elif not target.exists():
            target.write_text("{}")


def test_a_relative_out_is_resolved_once_to_an_absolute_folder(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_out(spec, "runs/x") == tmp_path / "runs" / "x"
    assert resolve_out(spec, None) == tmp_path / "ws" / "runs" / "folder"


def test_a_folder_holding_a_finished_study_is_refused_without_resume_or_overwrite(spec, tmp_path):
    out = tmp_path / "out"
    fill(out, spec)
    with pytest.raises(
        StudyStateError,
        match=r"already holds a finished study; continue it with --resume, choose a new --out, or replace it .* "
        "with --overwrite",
    ):
        _open_state(spec, out, resume=False)
    assert all((out / name).exists() for name in STUDY_FILES)


def test_an_unfinished_study_is_refused_rather_than_wiped(spec, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    StudyState(spec.fingerprint(), "run", "sqlite:///x.db", "perftune", "now").write(out)
    (out / "ray").mkdir()
    with pytest.raises(StudyStateError, match="already holds an unfinished study; continue it with --resume"):
        _open_state(spec, out, resume=False)
    assert (out / "ray").is_dir() and (out / "state.json").is_file()


def test_overwrite_removes_what_derived_from_the_study_and_nothing_else(spec, tmp_path):
    out = tmp_path / "out"
    fill(out, spec)
    (out / "notes.txt").write_text("the user's own file")
    assert _open_state(spec, out, resume=False, overwrite=True) is None
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_an_empty_or_new_folder_needs_no_flag(spec, tmp_path):
    assert _open_state(spec, tmp_path / "new", resume=False) is None
    (tmp_path / "empty").mkdir()
    assert _open_state(spec, tmp_path / "empty", resume=False) is None


def test_out_naming_a_file_is_refused(spec, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(StudyStateError, match="is a file, not a folder; choose a folder"):
        _open_state(spec, tmp_path / "taken", resume=False)


def test_resume_and_overwrite_together_are_refused(spec, tmp_path):
    with pytest.raises(StudyStateError, match="choose one"):
        _open_state(spec, tmp_path, resume=True, overwrite=True)


def test_an_atomic_write_leaves_no_temporary_file(tmp_path):
    marker = tmp_path / "group.json"
    _write_atomic(marker, json.dumps({"a": 1}))
    _write_atomic(marker, json.dumps({"a": 2}))
    assert json.loads(marker.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["group.json"]
