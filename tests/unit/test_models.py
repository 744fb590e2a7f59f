"""The state machine and the job record, tested directly (pure code)."""

from __future__ import annotations

import itertools

import pytest

from jobserver.errors import IllegalTransition
from jobserver.models import (
    MAX_ERROR_MESSAGE,
    MAX_TRACEBACK,
    TERMINAL_STATES,
    JobState,
    check_transition,
    error_info,
    is_legal,
)

LEGAL = {
    (JobState.PENDING, JobState.RUNNING),
    (JobState.PENDING, JobState.CANCELLED),
    (JobState.PENDING, JobState.FAILED),  # deadline passed: expired
    (JobState.RUNNING, JobState.SUCCEEDED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.CANCELLED),
    (JobState.RUNNING, JobState.PENDING),  # retry, lease lost, released at shutdown
}


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(JobState, JobState)))
def test_every_pair_of_states(src: JobState, dst: JobState) -> None:
    if (src, dst) in LEGAL:
        assert is_legal(src, dst)
        check_transition(src, dst)
    else:
        assert not is_legal(src, dst)
        with pytest.raises(IllegalTransition, match=f"{src}.*{dst}"):
            check_transition(src, dst)


def test_terminal_states_have_no_way_out() -> None:
    assert {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED} == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert not any(is_legal(state, other) for other in JobState)


def test_error_info_is_capped() -> None:
    try:
        raise ValueError("m" * 50_000)
    except ValueError as exc:
        info = error_info(exc)
    assert info["type"] == "ValueError"
    assert len(info["message"]) <= MAX_ERROR_MESSAGE
    assert info["message"].endswith("chars, cut]")
    assert len(info["traceback"]) <= MAX_TRACEBACK
    assert "Traceback" in info["traceback"]


def test_error_info_without_an_exception() -> None:
    assert error_info(None, type_="timeout", message="gave up") == {
        "type": "timeout",
        "message": "gave up",
        "traceback": None,
    }
