"""Small dense embedding calls go to the Embedding by value, in one gRPC message each way;
a call too big for one would come back from gRPC as an error, so the largest call allowed
that way must fit, and every other call goes by reference."""

from __future__ import annotations

import cloudpickle
import numpy as np
from ray.serve._private.constants import RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH

from serve_app.ingress import BY_VALUE_MAX_CHARS, BY_VALUE_MAX_TEXTS, travels_by_value

WIDEST_VECTOR = 4096  # float32s a text: wider than any embedding model in the catalog


def test_the_largest_call_by_value_fits_in_one_grpc_message_each_way() -> None:
    each = BY_VALUE_MAX_CHARS // BY_VALUE_MAX_TEXTS
    # Distinct texts and vectors (pickle stores a repeated object once), 4 bytes a character.
    texts = [f"{index:04d}" + "\N{GRINNING FACE}" * (each - 4)
             for index in range(BY_VALUE_MAX_TEXTS)]
    assert travels_by_value(texts, ["dense"])
    request = cloudpickle.dumps(((texts, ["dense"], None), {}))
    answer = cloudpickle.dumps([
        {"dense": np.full(WIDEST_VECTOR, index, np.float32), "tokens": 8192, "truncated": True}
        for index in range(BY_VALUE_MAX_TEXTS)])
    assert len(request) < RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH
    assert len(answer) < RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH


def test_larger_calls_and_sparse_or_colbert_answers_go_by_reference() -> None:
    assert not travels_by_value(["kurz"] * (BY_VALUE_MAX_TEXTS + 1), ["dense"])
    assert not travels_by_value(["x" * (BY_VALUE_MAX_CHARS + 1)], ["dense"])
    assert not travels_by_value(["kurz"], ["dense", "sparse"])
    assert not travels_by_value(["kurz"], ["colbert"])
