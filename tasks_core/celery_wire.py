"""A Celery message as kombu's Redis transport stores it, built directly.

``send_task`` spends about a millisecond of Python on each message (options
merged from the configuration, reprs, kombu's producer and a new Redis client
for each publish): more than the insert of the task it announces. A message
without a countdown is the same few fields every time, so the publisher
builds it here and pushes it with one ``LPUSH`` (a batch's in one pipeline).
The envelope is the one kombu writes (Celery task protocol 2, JSON body in
base64, the default exchange: the list named after the queue), so any Celery
worker reads it as its own; ``tests/integration/test_api_queueing.py`` and
the e2e tests hold it to that. A message with a countdown (an ETA) still goes
through ``send_task``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

# What send_task embeds with the arguments: no callbacks, chains or chords.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def envelope(
    task: str,
    args: list[Any],
    *,
    queue: str,
    headers: dict[str, Any],
    reply_to: str,
) -> str:
    """The JSON kombu stores on the Redis list ``queue`` for a task message."""
    message_id = str(uuid.uuid4())
    body = json.dumps([args, {}, _EMBED]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task,
                "id": message_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": message_id,
                "parent_id": None,
                "argsrepr": repr(args),
                "kwargsrepr": "{}",
                "origin": _ORIGIN,
                "ignore_result": None,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
                **headers,
            },
            "properties": {
                "correlation_id": message_id,
                "reply_to": reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
