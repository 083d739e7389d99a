"""The Embedding deployment's batching: requests become jobs bounded in tokens, and a
batch's texts become forwards that pad little."""

from __future__ import annotations

from deployments.embedding import MAX_BATCH_TEXTS, MAX_JOB_TOKENS, plan_forwards, split_into_jobs
from deployments.engines.embedding import Tokenized
from deployments.engines.embedding.flag import PACKED_PADDING_COST


def test_requests_are_queued_as_jobs_bounded_in_tokens() -> None:
    """A request of long texts becomes several jobs, in order, none over MAX_JOB_TOKENS."""
    lengths = [3000, 3000, 3000, 8192, 10, 10]
    tokens = [Tokenized(list(range(n)), truncated=n == 8192) for n in lengths]
    jobs = split_into_jobs(tokens, frozenset({"dense"}))
    assert [[len(t.ids) for t in job.tokens] for job in jobs] == [
        [3000, 3000], [3000], [8192], [10, 10]]
    assert all(job.size <= MAX_JOB_TOKENS for job in jobs)
    assert sum(job.size for job in jobs) == sum(lengths)
    assert split_into_jobs([], frozenset({"dense"})) == []


def padded(lengths: list[int], plan: list[tuple[int, int]]) -> int:
    return sum(lengths[start] * (end - start) for start, end in plan)


def test_a_batch_of_mixed_lengths_is_cut_where_padding_costs_more_than_a_forward() -> None:
    """Short and long texts together: the long ones in their own forward, not padding the
    64 short ones to their length."""
    lengths = [120] * 4 + [12] * 64
    plan = plan_forwards(lengths, overhead=40)
    assert plan == [(0, 4), (4, 68)]
    assert padded(lengths, plan) == sum(lengths)


def test_forwards_are_not_cut_when_the_padding_saved_is_less_than_a_forward() -> None:
    """A forward's fixed cost of 40 tokens is more than cutting 16 texts of 17 tokens from
    texts of 18 saves (16): one forward."""
    lengths = [18] * 16 + [17] * 16
    assert plan_forwards(lengths, overhead=40) == [(0, 32)]
    assert plan_forwards(lengths, overhead=8) == [(0, 16), (16, 32)]


def test_packed_forwards_are_cut_where_lengths_differ_widely_not_for_a_request() -> None:
    """Packed, a forward computes no padding: one request's 16 mixed sentences stay one
    forward where a padded plan cuts them in two; long and short texts still part."""
    request = [21] * 2 + [16] * 6 + [9] * 8
    assert plan_forwards(request, overhead=58) == [(0, 8), (8, 16)]
    assert plan_forwards(request, overhead=58, padding_cost=PACKED_PADDING_COST) == [(0, 16)]
    mixed = [120] * 4 + [12] * 64
    assert plan_forwards(mixed, overhead=40, padding_cost=PACKED_PADDING_COST) == [
        (0, 4), (4, 68)]


def test_a_plan_covers_every_text_once_in_order_within_the_bounds() -> None:
    lengths = sorted(((i * 37) % 300 + 1 for i in range(1000)), reverse=True)
    plan = plan_forwards(lengths, overhead=40, max_tokens=4096)
    assert [start for start, _ in plan] == [0] + [end for _, end in plan[:-1]]
    assert plan[-1][1] == len(lengths)
    for start, end in plan:
        assert end - start <= MAX_BATCH_TEXTS
        assert lengths[start] * (end - start) <= 4096
    # One text alone over the token bound still gets its forward.
    assert plan_forwards([5000, 10], overhead=40, max_tokens=4096) == [(0, 1), (1, 2)]
