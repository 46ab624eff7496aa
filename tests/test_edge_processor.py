"""StreamProcessor rules that a real broker cannot be made to break on demand: the commit
order, a commit that fails (e.g. a rebalance racing it), and history re-reads after a rewind.
The Kafka client is replaced here only for those failures; everything else is covered against
the real broker in test_edge_kafka.py."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from memae_ts.connectors.metrics import EdgeMetrics
from memae_ts.connectors.processor import ServedModel, StreamProcessor
from processor_fakes import MeanEngine, Msg, ScriptedPolls
from prometheus_client import CollectorRegistry


@dataclass
class FakeSource(ScriptedPolls):
    log: list[str]
    batches: list[list[Msg]] = field(default_factory=list)
    commit_results: list[bool] = field(default_factory=list)
    commits: list[dict[int, int]] = field(default_factory=list)
    assigned: set[int] = field(default_factory=lambda: {0, 1})
    replay_until: dict[int, int] = field(default_factory=dict)

    def history_mask(self, partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return np.array(
            [o < self.replay_until.get(p, -1) for p, o in zip(partitions, offsets, strict=True)], dtype=bool
        )

    def commit(self, next_offsets: dict[int, int], rebuild_from: dict[int, int]) -> bool:
        self.log.append("commit")
        ok = self.commit_results.pop(0) if self.commit_results else True
        if ok:
            self.commits.append(dict(next_offsets))
        return ok

    def settle(self, timeout_ms: int) -> None:
        self.log.append("settle")

    def close(self) -> None:
        self.log.append("close")


@dataclass
class FakeSink:
    log: list[str]
    published: list[dict] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)

    def publish_many(self, keys: list[bytes], values: list[bytes]) -> None:
        self.log.append(f"publish {len(values)}")
        self.published.extend(json.loads(v) for v in values)

    def dead_letter(self, key, value, reason, detail, source) -> None:  # type: ignore[no-untyped-def]
        self.log.append("dead_letter")
        self.dead.append(reason)

    def flush(self, timeout_s: float = 60.0) -> int:
        self.log.append("flush")
        return 0

    def close(self) -> None:
        self.log.append("sink close")


def reading(p: int, off: int, t: int, v: float = 1.0) -> Msg:
    return Msg(p, off, b"a%d" % p, json.dumps([t, v, 2 * v]).encode())


def make(window: int = 2) -> tuple[StreamProcessor, FakeSource, FakeSink]:
    log: list[str] = []
    source = FakeSource(log)
    sink = FakeSink(log)
    model = ServedModel(MeanEngine(), ["x", "y"], window, threshold=1.0, version="v1")
    proc = StreamProcessor(lambda *callbacks: source, sink, model, EdgeMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    return proc, source, sink


def test_scores_are_flushed_before_offsets_are_committed():
    proc, source, sink = make()
    broken = Msg(0, 2, b"a0", b"{")
    source.batches = [[reading(0, 0, 0), reading(0, 1, 60), broken, reading(0, 3, 120)]]
    proc.step()
    # dead letters as they come, scores once per batch, then all acks, then the commit
    assert sink.log == ["dead_letter", "publish 2", "flush", "commit"]
    assert source.commits == [{0: 4}]
    assert [r["ts"] for r in sink.published] == ["1970-01-01T00:01:00Z", "1970-01-01T00:02:00Z"]


def test_a_failed_commit_is_retried_with_the_next_checkpoint():
    proc, source, _ = make()
    source.batches = [[reading(0, 0, 0), reading(1, 0, 0)], []]
    source.commit_results = [False, True]
    proc.step()
    assert source.commits == []
    proc.step()  # nothing new, but the uncommitted offsets are committed now
    assert source.commits == [{0: 1, 1: 1}]


def test_a_revocation_commits_what_is_pending_while_the_partitions_are_still_ours():
    """With a failed commit (or a commit interval) offsets are pending when a rebalance takes
    partitions away; committing them in the revocation callback, while they are still ours,
    spares the next owner from scoring those readings again."""
    proc, source, _ = make()
    source.batches = [[reading(0, 0, 0), reading(1, 0, 0)], []]
    source.commit_results = [False, True]
    proc.step()
    proc._on_revoked({1})
    source.assigned = {0}
    proc.step()
    assert source.commits == [{0: 1, 1: 1}]


def test_revoked_partitions_drop_their_uncommitted_offsets():
    """When the revocation's own commit is refused too, the revoked partitions' offsets are
    dropped (the next owner re-reads them): the next commit carries only what is still ours."""
    proc, source, _ = make()
    source.batches = [[reading(0, 0, 0), reading(1, 0, 0)], []]
    source.commit_results = [False, False, True]
    proc.step()
    proc._on_revoked({1})
    source.assigned = {0}
    proc.step()
    assert source.commits == [{0: 1}]


def test_history_rebuilds_windows_without_scoring_or_committing_again():
    proc, source, sink = make(window=3)
    source.replay_until = {0: 2}  # offsets 0 and 1 were scored before the restart
    source.batches = [[reading(0, 0, 0), reading(0, 1, 60), reading(0, 2, 120)]]
    proc.step()
    assert [r["ts"] for r in sink.published] == ["1970-01-01T00:02:00Z"]  # first window, no warm-up
    assert source.commits == [{0: 3}]


class BrokenEngine:
    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("engine crashed")


def test_a_poll_that_fails_while_scoring_commits_nothing_of_it_even_at_shutdown():
    proc, source, sink = make()
    source.batches = [[reading(0, 0, 0), reading(0, 1, 60)], [reading(0, 2, 120), reading(0, 3, 180)]]
    proc.step()
    assert source.commits == [{0: 2}]
    proc.model.engine = BrokenEngine()
    with pytest.raises(RuntimeError, match="engine crashed"):
        proc.step()
    proc.close()  # the shutdown checkpoint must not commit offsets 2 and 3: never scored
    assert source.commits == [{0: 2}]
    assert len(sink.published) == 1


def test_a_poll_is_scored_in_slices_and_published_in_order():
    proc, source, sink = make(window=2)
    proc.config.score_chunk = 3
    source.batches = [[reading(0, i, 60 * i, v=float(i)) for i in range(10)]]
    proc.step()
    assert sink.log == ["publish 2", "publish 3", "publish 3", "publish 1", "flush", "commit"]
    assert [r["ts"] for r in sink.published] == [f"1970-01-01T00:{i:02d}:00Z" for i in range(1, 10)]
    assert source.commits == [{0: 10}]


def test_a_stop_during_a_rebalance_lets_it_finish_and_commits_before_leaving():
    """A commit refused because a member joins or leaves just as we stop (RebalanceInProgress)
    used to end a clean stop with nothing committed: the restart scored everything again."""
    proc, source, _ = make()
    source.batches = [[reading(0, 0, 0), reading(0, 1, 60)]]
    source.commit_results = [False, False, True]
    proc.step()
    assert source.commits == []
    proc.close()
    assert source.commits == [{0: 2}]
    assert source.log.count("settle") == 1 and source.log[-2:] == ["close", "sink close"]
