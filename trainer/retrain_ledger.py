"""The retraining request a training service is acting on, kept in Redis until its run ends.

``facegate train serve`` commits the records that asked for a run before it runs it, so that a
run which kills its process (out of memory, say) is not asked for again by the same records on
every restart.  What that commit would lose when the process dies mid-run (SIGKILL, a lost node,
a SIGTERM during a deployment) is kept here instead: the request is written before the commit
and removed when the run ends, whatever its outcome.  A service that starts and finds a request
takes it over (one more attempt) and runs it again; past ``max_attempts`` it gives the request
up, with an error in the log and a failed run in the metrics.

One hash per consumer group, ``facegate:retrain:pending:<group>``: services of other groups (a
test's, a second deployment's) do not resume each other's runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

PENDING_KEY = "facegate:retrain:pending:{group}"


@dataclass(frozen=True)
class PendingRun:
    """A request whose run began and did not end: its trigger, reason and attempts so far."""

    trigger: str
    reason: str
    requested_at: float
    attempts: int


class RetrainLedger:
    """Begin, end and take over the one pending run of a consumer group."""

    def __init__(self, client: redis.Redis[bytes], group_id: str) -> None:
        self.client = client
        self.key = PENDING_KEY.format(group=group_id)

    def begin(self, trigger: str, reason: str) -> None:
        """Record a run about to start (its first attempt); raises ``redis.RedisError``."""
        mapping: dict[str | bytes, bytes | float | int | str] = {
            "trigger": trigger,
            "reason": reason,
            "requested_at": repr(time.time()),
            "attempts": "1",
        }
        with self.client.pipeline() as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, mapping=mapping)
            pipe.execute()

    def end(self) -> None:
        """The run ended (a canary, a refusal or a failure): nothing to resume."""
        self.client.delete(self.key)

    def take_over(self) -> PendingRun | None:
        """The pending run with its attempt count raised by one, or None when there is none.

        The attempt is counted in a WATCH transaction, so that two take-overs count two.
        """
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(self.key)
                    # After WATCH the pipeline runs commands at once (until MULTI).
                    raw = cast("dict[bytes, bytes]", pipe.hgetall(self.key))
                    if not raw:
                        return None
                    fields = {k.decode(): v.decode() for k, v in raw.items()}
                    attempts = int(fields.get("attempts", "1")) + 1
                    pipe.multi()
                    pipe.hset(self.key, "attempts", str(attempts))
                    pipe.execute()
                    return PendingRun(
                        trigger=fields.get("trigger", "unknown"),
                        reason=fields.get("reason", ""),
                        requested_at=float(fields.get("requested_at", "0")),
                        attempts=attempts,
                    )
                except redis.WatchError:
                    continue  # ended or begun meanwhile: read it again
