"""User errors: one line and exit status 2 from the scripts; faults in the code keep their stack."""

import pytest

from dsae.checkpoint import CheckpointError
from dsae.data import DatasetError
from dsae.errors import USER_ERRORS, ConfigError, report_user_errors
from envs import SceneError


@pytest.mark.parametrize("error", [ConfigError, DatasetError, CheckpointError, SceneError])
def test_a_user_error_is_one_line_and_status_2(error, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @report_user_errors
    def task():
        raise error("train.steps must be >= 1, got -1")

    with pytest.raises(SystemExit) as exit_:
        task()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: train.steps must be >= 1, got -1\n"


def test_hydra_full_error_shows_the_stack_of_a_user_error(monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):
        report_user_errors(lambda: (_ for _ in ()).throw(ConfigError("bad")))()


def test_a_fault_in_the_code_is_not_hidden(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @report_user_errors
    def task():
        return {}["missing"]

    with pytest.raises(KeyError):
        task()
    assert not issubclass(KeyError, USER_ERRORS)


def test_user_errors_stay_the_builtin_kinds_callers_catch():
    assert issubclass(ConfigError, ValueError) and issubclass(SceneError, ValueError)
    assert issubclass(DatasetError, RuntimeError) and issubclass(CheckpointError, RuntimeError)
