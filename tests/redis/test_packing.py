"""The commands the Redis transport packs itself are the bytes redis-py
would send for them."""

from __future__ import annotations

import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from chute._backends.redis_client import packed

ARGS = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)


#: A command's name: one word (redis-py splits a name with spaces in it,
#: "CLIENT ID", into its words; chute sends them as words).
NAMES = st.from_regex(r"[A-Za-z]{1,16}", fullmatch=True)


@given(NAMES, st.lists(ARGS, max_size=8))
def test_a_packed_command_is_what_redis_py_sends(name: str, args: list[object]) -> None:
    command = (name, *args)
    assert packed(command) == b"".join(aioredis.Connection().pack_command(*command))


def test_a_blocked_reads_commands_are_packed_as_redis_py_packs_them() -> None:
    read = ["XREADGROUP", "GROUP", "chute", "c:1", "COUNT", 1, "BLOCK", 250, "STREAMS", "k", ">"]
    pack = aioredis.Connection().pack_command
    assert packed(("CLIENT", "ID")) + packed(read) == b"".join(
        [*pack("CLIENT", "ID"), *pack(*read)]
    )
