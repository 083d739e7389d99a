"""The Embedding deployment's batching: requests become jobs bounded in tokens."""

from __future__ import annotations

from deployments.embedding import MAX_BATCH_TOKENS, MAX_JOB_TOKENS, batch_tokens, split_into_jobs
from deployments.engines.embedding import Tokenized


def test_requests_are_queued_as_jobs_bounded_in_tokens() -> None:
    """A request of long texts becomes several jobs, in order; batch_size_fn counts tokens,
    so a batch holds at most MAX_BATCH_TOKENS and any single job fits in one."""
    lengths = [3000, 3000, 3000, 8192, 10, 10]
    tokens = [Tokenized(list(range(n)), truncated=n == 8192) for n in lengths]
    jobs = split_into_jobs(tokens, frozenset({"dense"}))
    assert [[len(t.ids) for t in job.tokens] for job in jobs] == [
        [3000, 3000], [3000], [8192], [10, 10]]
    assert all(job.size <= MAX_JOB_TOKENS <= MAX_BATCH_TOKENS for job in jobs)
    assert batch_tokens(jobs) == sum(lengths)
    assert split_into_jobs([], frozenset({"dense"})) == []
