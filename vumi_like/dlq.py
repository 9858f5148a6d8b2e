"""Dead letters, for operators: list them, show one, replay some back where they came from.

A dead letter is the raw body of an envelope a worker could not handle, with headers
saying where it came from, why and when (``broker/base.py``). Listing must not
reorder or lose anything, so the scan takes every letter with ``get`` and holds all
of them unsettled until the end; then it requeues them all (RabbitMQ puts requeued
messages back in their original positions) except the ones replayed, which are
acked only after their republish was confirmed. ``get`` is an operator's operation,
so these functions take a ``BrokerInspector`` (``open_inspector``), not a ``Broker``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

import attrs

from vumi_like.broker import BrokerInspector, Delivery
from vumi_like.broker.base import (
    DEAD_LETTER_QUEUE,
    HEADER_ATTEMPT,
    HEADER_DL_ERROR,
    HEADER_DL_ID,
    HEADER_DL_QUEUE,
    HEADER_DL_TIME,
    HEADER_DL_WORKER,
)

DEFAULT_QUEUE = DEAD_LETTER_QUEUE
# Stripped on replay: the letter starts afresh, its retry count included.
_DL_HEADERS = {
    HEADER_ATTEMPT,
    HEADER_DL_ERROR,
    HEADER_DL_ID,
    HEADER_DL_QUEUE,
    HEADER_DL_TIME,
    HEADER_DL_WORKER,
}


@attrs.frozen
class DeadLetter:
    delivery: Delivery

    @property
    def id(self) -> str:
        # Letters parked by other tools carry no id header: name them by their content.
        value = self.delivery.headers.get(HEADER_DL_ID)
        return str(value) if value else hashlib.sha256(self.delivery.body).hexdigest()[:12]

    def _header(self, name: str) -> str:
        value = self.delivery.headers.get(name)
        return "" if value is None else str(value)

    @property
    def source_queue(self) -> str:
        return self._header(HEADER_DL_QUEUE)

    def summary(self) -> str:
        error = self._header(HEADER_DL_ERROR).replace("\n", " ")
        if len(error) > 100:
            error = error[:97] + "..."
        return "\t".join(
            [
                self.id,
                self.source_queue or "?",
                self._header(HEADER_DL_WORKER) or "?",
                self._header(HEADER_DL_TIME) or "?",
                error,
            ]
        )

    def details(self) -> str:
        try:
            body = json.dumps(json.loads(self.delivery.body), indent=2, sort_keys=True)
        except ValueError:
            body = repr(self.delivery.body)
        headers = json.dumps(
            {k: str(v) for k, v in self.delivery.headers.items()}, indent=2, sort_keys=True
        )
        return f"id: {self.id}\nheaders: {headers}\nbody: {body}"


async def _take_all(broker: BrokerInspector, queue: str, limit: int) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    while len(letters) < limit:
        delivery = await broker.get(queue)
        if delivery is None:
            break
        letters.append(DeadLetter(delivery))
    return letters


def _give_back(broker: BrokerInspector, letters: Iterable[DeadLetter]) -> None:
    # Last first: RabbitMQ restores original positions whatever the order, but a broker
    # that puts each requeued message at the head (the memory broker) needs this order
    # to end up with the letters as they were.
    for letter in reversed(list(letters)):
        broker.requeue(letter.delivery)


async def list_letters(
    broker: BrokerInspector, queue: str = DEFAULT_QUEUE, *, limit: int = 1000
) -> list[DeadLetter]:
    letters = await _take_all(broker, queue, limit)
    _give_back(broker, letters)
    return letters


async def find_letter(
    broker: BrokerInspector, queue: str, letter_id: str, *, limit: int = 1000
) -> DeadLetter | None:
    letters = await list_letters(broker, queue, limit=limit)
    return next((letter for letter in letters if letter.id == letter_id), None)


async def replay(
    broker: BrokerInspector, queue: str, ids: set[str] | None, *, limit: int = 1000
) -> list[DeadLetter]:
    """Republish the letters named by ``ids`` (all when ``None``) to their source queues.

    A letter whose source queue is unknown stays where it is.
    """
    letters = await _take_all(broker, queue, limit)
    replayed: list[DeadLetter] = []
    try:
        for letter in letters:
            if (ids is not None and letter.id not in ids) or not letter.source_queue:
                continue
            headers = {k: v for k, v in letter.delivery.headers.items() if k not in _DL_HEADERS}
            await broker.publish(letter.source_queue, letter.delivery.body, headers=headers)
            broker.ack(letter.delivery)
            replayed.append(letter)
    finally:
        _give_back(broker, (letter for letter in letters if letter not in replayed))
    return replayed
