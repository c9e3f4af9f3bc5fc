"""The body search that lets most requests skip the walk for what no database can store
(`storable.may_hold_unstorable`): it may be wrong only on the safe side. Here, for
numbers: every one that Python's JSON parser (the server's) or pydantic's reads as
infinite must be found, however it is spelled. And the walk of a validated batch item
(`storable.numbers_are_finite`) must reach every place a number can be."""

from __future__ import annotations

import json
import math
from typing import Any

import pydantic_core
import pytest
from pydantic import BaseModel, TypeAdapter

from chatledger.batch.schemas import Item
from chatledger.errors import InvalidInput
from chatledger.storable import check_json, may_hold_unstorable, numbers_are_finite


def numbers() -> list[str]:
    """Numbers around the largest float, spelled with and without exponents, signs,
    fractions and leading zeros in the exponent."""
    spelled = []
    for digits in (1, 2, 100, 209, 210, 211, 250, 300, 308, 309, 310, 400):
        for mantissa in ("1" + "0" * (digits - 1), "9" * digits, "1" * digits + ".25"):
            spelled.append(mantissa)
            for exponent in (0, 1, 9, 10, 60, 98, 99, 100, 101, 200, 250, 307, 308, 309, 999):
                for spelling in ("e{}", "E{}", "e+{}", "E+0{}", "e00{}", "e-{}"):
                    spelled.append(mantissa + spelling.format(exponent))
    return spelled


NUMBERS = numbers()


def test_every_number_read_as_infinite_is_found() -> None:
    infinite = 0
    for number in NUMBERS:
        for sign in ("", "-"):
            body = f'{{"metadata": {{"score": [1, {sign}{number}]}}}}'.encode()
            read = [json.loads(body), pydantic_core.from_json(body)]
            values = [r["metadata"]["score"][1] for r in read]  # (an int is any size)
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                infinite += 1
                assert may_hold_unstorable(body), body
    assert infinite > 1000  # the spellings above reach past the largest float


@pytest.mark.parametrize(
    "number", ["0", "-1", "1.5", "1.5e-05", "1e+16", "2.5E-300", "123456789012345678901234567890"]
)
def test_ordinary_numbers_are_not_suspect(number: str) -> None:
    body = f'{{"prompt": "a question", "usage": {{"input_tokens": {number}}}}}'.encode()
    assert not may_hold_unstorable(body)


def test_a_number_found_is_told_apart_by_the_walk() -> None:
    body = b'{"metadata": {"a": 1e300, "b": ["x", 1e400]}}'
    assert may_hold_unstorable(body)
    with pytest.raises(InvalidInput, match="numbers must be finite") as refused:
        check_json(json.loads(body))
    assert refused.value.field == "metadata.b.1"


# Each place of a batch item that can hold free-form JSON, with a number in it.
ITEMS_WITH_A_NUMBER = [
    '{"kind": "run", "id": "r", "settings": {"t": [%s]}}',
    '{"kind": "run", "id": "r", "metadata": {"a": {"b": %s}}}',
    '{"kind": "message", "id": "m", "run_id": "r", "role": "user", "content": "",'
    ' "metadata": {"s": %s}}',
    '{"kind": "message", "id": "m", "run_id": "r", "role": "assistant", "content": "",'
    ' "error": {"n": %s}}',
    '{"kind": "interaction", "id": "t", "run_id": "r", "prompt": "q", "response": "a",'
    ' "model": "echo", "usage": {"input_tokens": 1, "output_tokens": 1},'
    ' "metadata": {"s": %s}}',
    '{"kind": "trace_entries", "thread_id": "th", "entries":'
    ' [{"node": "n", "status": "done", "data": {"x": [1, %s]}}]}',
]


@pytest.mark.parametrize("item", ITEMS_WITH_A_NUMBER)
def test_a_validated_item_is_walked_wherever_a_number_can_be(item: str) -> None:
    adapter = TypeAdapter[Item](Item)
    assert numbers_are_finite(adapter.validate_json(item % "1.5e300"))
    for number in ("NaN", "-Infinity", "1e999"):
        assert not numbers_are_finite(adapter.validate_json(item % number)), number


class Node(BaseModel):
    """A model that holds itself: its fields are found without asking about it forever."""

    name: str
    data: dict[str, Any] = {}
    next: Node | None = None


def test_a_model_that_holds_itself_is_walked_all_the_way_down() -> None:
    last = Node(name="last", data={"score": 0.5})
    chain = Node(name="first", next=Node(name="second", next=last))
    assert numbers_are_finite(chain)

    last.data["score"] = math.inf
    assert not numbers_are_finite(chain)
