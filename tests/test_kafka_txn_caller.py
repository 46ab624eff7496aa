"""The deadline kept around librdkafka calls that do not keep their own (connectors/kafka_txn.py,
``_Caller``; librdkafka issues #5456 and #5511: ``send_offsets_to_transaction`` can wait for a
group coordinator forever). A stuck call must not hold the daemon, and must not hold the calls
after it."""

from __future__ import annotations

import threading
import time

import pytest
from memae_ts.connectors.kafka_txn import _Caller


def test_a_call_that_returns_is_waited_for_and_its_exception_raised_here() -> None:
    def refuse() -> None:
        raise ValueError("refused")

    caller = _Caller()
    assert caller.returned_within(lambda: None, 5)
    with pytest.raises(ValueError, match="refused"):
        caller.returned_within(refuse, 5)
    assert caller.returned_within(lambda: None, 5)  # the same thread goes on after an exception


def test_a_stuck_call_is_left_behind_and_the_next_call_runs_on_a_new_thread() -> None:
    caller = _Caller()
    assert caller.returned_within(lambda: None, 5)
    before = threading.active_count()
    release = threading.Event()
    started = time.monotonic()
    assert not caller.returned_within(lambda: release.wait(30), 0.2)
    assert time.monotonic() - started < 5
    assert caller.returned_within(lambda: None, 5)  # not queued behind the stuck one
    assert threading.active_count() == before + 1
    release.set()  # the stuck call returns: its thread ends
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
