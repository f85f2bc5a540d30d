"""The pure parts of global limits (SPEC §8 "Limits"): parsing, the claim's gate, the
worker's wait, the ledger of the compare-and-set backends; and the blocking client."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from omniq import OmniQ
from omniq import _limit_ledger as ledger
from omniq._limits import Gate, Limit, LimitedClaim, held_until, hold_wait, parse_rate
from omniq.errors import ConfigError
from omniq.models import TaskStatus, utcnow


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100/s", (100, 1.0)), ("30/m", (30, 60.0)), ("500/h", (500, 3600.0)), (" 7 / s ", (7, 1.0))],
)
def test_rates_parse_per_second_minute_and_hour(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("bad", ["", "10", "10/d", "0/s", "-1/s", "1.5/s", "ten/s", None, 10])
def test_a_bad_rate_is_a_config_error_naming_it(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"rate_limit=.*expected a rate like") as caught:
        parse_rate(bad)
    assert isinstance(caught.value, ValueError)


def test_a_limit_round_trips_through_its_stored_form() -> None:
    for limit in (Limit(rate=5, per=60.0), Limit(concurrency=3), Limit(rate=1, concurrency=2)):
        assert Limit.decode(limit.encode()) == limit
    assert Limit.of(None, None) is None


def test_the_gate_fills_a_rate_window_then_says_when_it_frees() -> None:
    gate = Gate({"q:a": Limit(rate=3, per=1.0)}, now=100.0)
    gate.load("q:a", [99.2, 99.5], 0)  # two starts already in the window
    assert gate.admit(["q:a"])
    assert not gate.admit(["q:a"])
    assert gate.held and gate.blocked == {"q:a"}
    assert gate.until == pytest.approx(100.2)  # the oldest of the three leaves then
    assert gate.windows["q:a"].taken == 1


def test_the_gate_blocks_on_a_cap_with_no_time_to_wait_for() -> None:
    gate = Gate({"t:f": Limit(concurrency=2), "q:a": Limit(rate=10)}, now=0.0)
    keys = gate.keys("a", "f")
    assert keys == ["q:a", "t:f"]
    for key in gate.needs(keys):
        gate.load(key, [], 1)
    assert gate.admit(keys)
    assert not gate.admit(keys)
    assert gate.held and gate.until is None
    assert gate.windows["q:a"].taken == 1  # the refused start counts nowhere


def test_a_worker_waits_for_the_window_or_polls_for_a_cap() -> None:
    now = utcnow()
    assert hold_wait((True, now + timedelta(seconds=0.3)), 1.0, now) == pytest.approx(0.3)
    assert hold_wait((True, now + timedelta(hours=1)), 1.0, now) == 1.0
    assert hold_wait((True, None), 0.5, now) == 0.5
    assert held_until(LimitedClaim([], None)) == (True, None)
    assert held_until([]) == (False, None)


def test_the_ledger_logs_starts_and_gives_dead_holders_slots_back() -> None:
    state = ledger.Ledger()
    ledger.set_limits(state, {"q:a": Limit(rate=2, per=1.0, concurrency=2)})
    candidates = [(i, "a", f"t{i}", None) for i in range(4)]
    picks, gate = ledger.decide(state, candidates, limit=4, now=10.0, dead=set())
    assert picks == [0, 1] and gate.held
    assert state.starts["q:a"] == [10.0, 10.0]
    assert set(state.holders["q:a"]) == {"t0", "t1"}
    # A second later: the window is free again, and t0 ended, so one slot is free.
    picks, _ = ledger.decide(state, candidates[2:], limit=4, now=11.0, dead={"t0"})
    assert picks == [2]
    assert set(state.holders["q:a"]) == {"t1", "t2"}
    ledger.set_limits(state, {"q:a": None})
    assert ledger.encode(state) is None  # no limit left: the record goes


def test_a_holder_keeps_its_slot_while_it_runs_or_is_being_leased() -> None:
    now = 1000.0
    assert ledger.holds_slot(now - 5, TaskStatus.RUNNING, int((now + 1) * 1e6), now)
    assert not ledger.holds_slot(now - 5, TaskStatus.RUNNING, int((now - 1) * 1e6), now)
    assert ledger.holds_slot(now - 1, TaskStatus.PENDING, None, now)  # lease on its way
    assert not ledger.holds_slot(now - 60, TaskStatus.PENDING, None, now)
    assert not ledger.holds_slot(now - 1, TaskStatus.COMPLETE, None, now)
    assert not ledger.holds_slot(now - 1, None, None, now)


def test_the_blocking_client_sets_and_refuses_limits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/omniq.db"
    with OmniQ(task_queue=url, result_storage=url, event_storage=False) as oq:
        with pytest.raises(ConfigError, match="rate_limit='fast'"):
            oq.limit_queue("mail", rate_limit="fast")
        oq.limit_queue("mail", rate_limit="2/s", max_concurrency=1)
        oq.limit_queue("mail")
