"""What a rerank engine is: (query, documents) jobs in, one score per document out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class RerankJob:
    query: str
    documents: list[str]
    max_length: int


class RerankEngine(Protocol):
    name: ClassVar[str]
    method: ClassVar[str]  # what the response says ran

    async def score(self, jobs: list[RerankJob]) -> list[list[float]]: ...

    def move(self, device: str) -> None: ...


def split_scores(scores: list[float], jobs: list[RerankJob]) -> list[list[float]]:
    """One flat list of pair scores cut back into one list per job."""
    out, offset = [], 0
    for job in jobs:
        out.append(scores[offset : offset + len(job.documents)])
        offset += len(job.documents)
    return out
