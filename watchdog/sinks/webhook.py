"""POSTs every stall and resolution as JSON to a webhook URL."""

from __future__ import annotations

from watchdog.core.transitions import Resolved, Stalled, Transition
from watchdog.io.outbox import Letter, Outbox
from watchdog.sinks.alert import describe, document


class WebhookSink:
    """Queues one JSON document per stall or resolution; delivery happens in the outbox."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def emit(self, transition: Transition) -> None:
        if isinstance(transition, Stalled | Resolved):
            self.outbox.put(Letter(body=document(transition), what=describe(transition)))
