"""The connection state machine."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iod.domain.status import (
    PENDING_CHANGE_STATUSES,
    TRANSITIONS,
    ChangeStatus,
    ConnectionStatus,
    IllegalTransition,
    accepts_changes,
    can_transition,
    transition,
)
from tests.conftest import thorough

P = ConnectionStatus.PROVISIONING
A = ConnectionStatus.ACTIVE
S = ConnectionStatus.SUSPENDED
T = ConnectionStatus.TERMINATED

# The design: provisioning -> active, active <-> suspended, any live state -> terminated.
ALLOWED = {(P, A), (A, S), (S, A), (P, T), (A, T), (S, T)}
ALL_PAIRS = list(itertools.product(ConnectionStatus, repeat=2))


def test_there_are_four_statuses_and_sixteen_pairs() -> None:
    assert [s.value for s in ConnectionStatus] == [
        "provisioning",
        "active",
        "suspended",
        "terminated",
    ]
    assert len(ALL_PAIRS) == 16


def test_transition_table_is_exactly_the_design() -> None:
    table = {(current, target) for current, targets in TRANSITIONS.items() for target in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(ConnectionStatus)
    assert all(isinstance(targets, frozenset) for targets in TRANSITIONS.values())


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_every_pair(current: ConnectionStatus, target: ConnectionStatus) -> None:
    allowed = (current, target) in ALLOWED
    assert can_transition(current, target) is allowed
    if allowed:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(current, target)
        assert info.value.current is current
        assert info.value.target is target
        assert str(current) in str(info.value)
        assert str(target) in str(info.value)


@pytest.mark.parametrize("status", list(ConnectionStatus))
def test_no_status_transitions_to_itself(status: ConnectionStatus) -> None:
    assert not can_transition(status, status)
    with pytest.raises(IllegalTransition):
        transition(status, status)


def test_terminated_is_final() -> None:
    assert TRANSITIONS[T] == frozenset()
    for target in ConnectionStatus:
        with pytest.raises(IllegalTransition):
            transition(T, target)


def test_nothing_returns_to_provisioning() -> None:
    for current in ConnectionStatus:
        assert not can_transition(current, P)


def test_illegal_transition_message() -> None:
    with pytest.raises(IllegalTransition, match="terminated cannot become active"):
        transition(T, A)


@pytest.mark.parametrize(
    ("status", "expected"), [(P, True), (A, True), (S, True), (T, False)], ids=str
)
def test_accepts_changes(status: ConnectionStatus, expected: bool) -> None:
    assert accepts_changes(status) is expected


def test_accepts_changes_from_a_plain_string_value() -> None:
    # Statuses read back from the database may arrive as StrEnum members built from text.
    assert accepts_changes(ConnectionStatus("terminated")) is False
    assert accepts_changes(ConnectionStatus("active")) is True


def test_statuses_compare_equal_to_their_wire_text() -> None:
    assert A == "active"
    assert str(T) == "terminated"
    assert ConnectionStatus("suspended") is S


def test_pending_change_statuses() -> None:
    assert {ChangeStatus.SCHEDULED, ChangeStatus.APPLYING} == PENDING_CHANGE_STATUSES
    assert {c.value for c in ChangeStatus} == {
        "scheduled",
        "applying",
        "applied",
        "failed",
        "cancelled",
    }


@settings(max_examples=thorough(200))
@given(st.lists(st.sampled_from(list(ConnectionStatus)), max_size=20))
def test_random_walks_follow_the_design(targets: list[ConnectionStatus]) -> None:
    """Apply arbitrary requests; only designed moves happen and terminated is absorbing."""
    state = P
    terminated = False
    for target in targets:
        try:
            new = transition(state, target)
        except IllegalTransition:
            assert (state, target) not in ALLOWED
            continue
        assert (state, new) in ALLOWED
        assert not terminated
        state = new
        terminated = state is T
        assert accepts_changes(state) is not terminated
