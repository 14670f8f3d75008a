"""Which Redis errors services wait out (attendance, gallery sync) and which they dead-letter.

The error replies are Redis's own texts, parsed by redis-py's reply parser into the exceptions
a real server's reply would raise; the integration test provokes WRONGTYPE, a script error and
a refused connection on real sockets."""

from __future__ import annotations

import pytest
import redis
from redis._parsers.base import BaseParser

from facegate.redis_client import waiting_may_cure


@pytest.mark.parametrize(
    "reply",
    [
        "LOADING Redis is loading the dataset in memory",
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
    ],
)
def test_a_server_not_ready_is_waited_for(reply: str) -> None:
    assert waiting_may_cure(_reply(reply))


@pytest.mark.parametrize(
    "reply",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR user_script:3: Expected value but found invalid token at character 1 script: 5c1",
        "NOPERM User facegate has no permissions to run the 'evalsha' command",
        "ERR unknown command 'EVALSHA'",
    ],
)
def test_a_refusal_of_the_update_itself_is_not_retried(reply: str) -> None:
    assert not waiting_may_cure(_reply(reply))


def test_no_answer_at_all_is_waited_for() -> None:
    assert waiting_may_cure(redis.ConnectionError("Error 111 connecting to localhost:6379."))
    assert waiting_may_cure(redis.TimeoutError("Timeout reading from socket"))
    assert waiting_may_cure(redis.AuthenticationError("invalid username-password pair"))


def _reply(text: str) -> redis.RedisError:
    """The exception redis-py raises for a server's error reply ``text``."""
    error = BaseParser.parse_error(text)  # type: ignore[no-untyped-call]
    assert isinstance(error, redis.RedisError)
    return error
