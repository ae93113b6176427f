"""An ack (or reject) of a message delivered before the broker connection was
lost, made after it (a run that ends once the worker has reconnected), must
not raise: kombu's Redis channel then has no connection and no pool, and its
``AttributeError`` ended the worker's event loop and the worker with it
(``worker.broker_fixes``). Real kombu channels on a real Redis, left in the
state a lost connection leaves them in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import kombu
import pytest
import redis
from kombu.message import Message

from worker import broker_fixes


@pytest.fixture
def taken(redis_url: str) -> Iterator[tuple[kombu.Connection, Message, str]]:
    """A message taken from a queue, not acked, on a kombu connection."""
    broker_fixes.install()
    queue_name = f"test-broker-fixes-{uuid.uuid4().hex}"
    with kombu.Connection(redis_url) as connection:
        channel = connection.channel()
        queue = kombu.Queue(queue_name, channel=channel)
        queue.declare()
        kombu.Producer(channel).publish({"task": "x"}, routing_key=queue_name)
        message = queue.get(no_ack=False)
        assert message is not None
        yield connection, message, queue_name


def _lose(message: Message) -> None:
    """What a lost connection leaves on the message's channel: no pools and
    no connection (the state the worker's crash showed)."""
    channel = message.channel
    channel._disconnect_pools()
    channel.connection = None


def test_an_ack_after_the_connection_was_lost_is_dropped_not_raised(
    taken: tuple[kombu.Connection, Message, str], redis_url: str
) -> None:
    _, message, _ = taken
    _lose(message)

    message.ack()

    assert message.acknowledged
    # Redis keeps its copy: restored after its visibility timeout, then
    # dropped by the claim (its task has ended by then).
    assert redis.Redis.from_url(redis_url).hexists("unacked", message.delivery_tag)


def test_a_reject_after_the_connection_was_lost_is_dropped_not_raised(
    taken: tuple[kombu.Connection, Message, str],
) -> None:
    _, message, _ = taken
    _lose(message)

    message.reject(requeue=True)

    assert message.acknowledged  # kombu's word for acked, rejected or requeued


def test_an_ack_on_a_live_connection_still_removes_the_message(
    taken: tuple[kombu.Connection, Message, str], redis_url: str
) -> None:
    _, message, _ = taken

    message.ack()

    assert not redis.Redis.from_url(redis_url).hexists("unacked", message.delivery_tag)
