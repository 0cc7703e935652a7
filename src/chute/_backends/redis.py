"""The distributed transport: a queue on Redis Streams (or Valkey), as a
backend of the durable core (``chute._durable``).

Keys of queue ``name`` (one hash tag, so that a cluster keeps them on one
node): ``chute:{name}:items``, the stream, read through the consumer group
``chute``; ``chute:{name}:meta``, a hash of the bounds, the shutdown state
and the counters (its field ``v``, the schema, marks the queue as chute's:
``queue_names`` finds queues by it); ``chute:{name}:dead``, the dead letters
(a stream: the item, its deliveries, why it died and its last error; the
entry's id says when); ``chute:{name}:later``, the items given back with a
delay (a sorted set); ``chute:{name}:back``, the ids of entries given back
in place (still pending, but waiting to be claimed);
``chute:{name}:errors``, the last error of each item that failed with one
(a hash by entry id, deleted with the entry); and ``chute:{name}:deadrank``,
the dead letters' ids in order (a sorted set, kept by every burial), where
a page of dead letters at an offset finds its first entry by rank instead
of walking the stream to it.

The age of the oldest ready item (``statistics().oldest_ready_age``) is,
here, the time since the oldest waiting entry joined the stream (its id's
milliseconds): for an item put with a delay, or given back with one, since
the get that moved it into the stream once due; for an item given back
without a delay, or by a cancelled get, since its put.

The bounds (``maxsize``, ``max_deliveries``) are stored in the meta hash
and the scripts read them at every call. Every change is one Lua script
(``redis_lua.py``), atomic on the server: a bounded put checks the length
and appends (Redis's own ``MAXLEN`` would trim the oldest items, silently
losing them); a claim takes the given-back and expired entries first
(oldest first), then new ones with ``XREADGROUP``; an ack checks that the
entry is still this job's — owner and delivery count, the fencing token —
before ``XACK`` and ``XDEL``. A get that finds nothing waits on the server
with ``XREADGROUP BLOCK`` on a connection of its own (``blocking_wait``),
as a consumer of its own, with the script that hands what it read to this
process's consumer (TOOK) sent right behind it: one round trip. A
cancelled wait is cut short with ``CLIENT UNBLOCK``.

Every item handed out is first an entry pending for this queue's consumer.
A plain get's entries are deleted once it returned them: by the next claim
or count this process sends (in the same script), or by a task that runs
right after; a get cancelled before it returns gives its entries back in
place, made claimable at once (``XCLAIM ... IDLE``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, cast

from .._contract import UNSET, ErrorInfo, Outcome, Unset, check_connect_timeout
from .._durable.backend import (
    DUPLICATE,
    PLAIN,
    Call,
    Capabilities,
    Claimed,
    Counts,
    DeadRecord,
    PutOptions,
    QueueState,
    Record,
    Settle,
    Stored,
    never_fits,
)
from .._durable.queue import DurableQueue, check_visibility, checked_opening
from .._durable.steps import see_through
from .._durable.waiting import ALL, EVERYONE, Rings, Wait
from .._exceptions import ChuteError, LeaseLost, QueueNotFound, QueueShutDown
from .redis_client import (
    Meta,
    bounded,
    client_options,
    display,
    error_info,
    failure,
    scan_names,
    text,
)
from .redis_link import POLL, Pair, ServerLink, pairs

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the redis:// transport needs the Redis client: pip install 'chute[redis]'"
    ) from exc

from .._open import parse_redis_url

__all__ = ["RedisBackend", "RedisQueue"]

T = TypeVar("T")
R = TypeVar("R")
Undo = Callable[[R], Call[Any] | None]

#: 2: dead letters keep why they died (reason, last error), items keep their
#: last error, and every delayed item waits in ``later``. A queue of schema 1
#: is brought up to 2 when opened (nothing to rewrite: its dead letters list
#: with reason "failed" and no error).
SCHEMA_VERSION = 2


class Script(Call[R]):
    """A Redis backend's call: a script, its arguments, and what reads its
    reply (raising chute's errors) — run the same from a task or a thread."""

    __slots__ = ("args", "name", "parse")

    def __init__(self, name: str, args: list[Any], parse: Callable[[Any], R]) -> None:
        self.name = name
        self.args = args
        self.parse = parse


class Claim(Call[Claimed]):
    """``claim``: the claim script, or, with ``wait``, a blocked read first."""

    __slots__ = ("leased", "n", "wait")

    def __init__(self, n: int, leased: bool, wait: float) -> None:
        self.n, self.leased, self.wait = n, leased, wait


class RedisBackend(ServerLink):
    """One named queue on one Redis server, for this process."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        blocking_wait=True,
        arrival_order_across_clients=True,
        immediate_shutdown_removes=False,
        delays=True,
        delayed_puts=True,
        keyed_puts=True,
        schedules=True,
    )
    #: Other clients' changes are not seen: full puts and joins look again.
    poll_interval: float | None = POLL
    idle_poll_interval: float | None = POLL  # unused: its getters wait on the server
    #: A call is sent within ``run``'s first step and its reply read to the
    #: end in the calling task (``redis_client.read_through``); a large one,
    #: or one sent again after NOSCRIPT, by a task of its own (``through``).
    sees_calls_through = True

    def __init__(
        self,
        url: str,
        name: str,
        *,
        maxsize: int | Unset = UNSET,
        max_deliveries: int | Unset | None = UNSET,
        create: bool = True,
        visibility_timeout: float = 30.0,
        connect_timeout: float = 5.0,
    ) -> None:
        place = parse_redis_url(url)
        connect_timeout = check_connect_timeout(connect_timeout)
        self._visibility = check_visibility(visibility_timeout)
        self._vt_ms = max(1, round(self._visibility * 1000))
        where = f"{place['host']}:{place['port']}"
        super().__init__(url, name, where, connect_timeout)
        try:
            self._declare(maxsize, max_deliveries, create)
        except BaseException:
            self._sync.close()
            raise

    # -- opening -------------------------------------------------------------------------

    def _declare_args(
        self, maxsize: int | Unset, max_deliveries: int | Unset | None, create: bool
    ) -> list[Any]:
        return [
            "" if isinstance(maxsize, Unset) else maxsize,
            "" if isinstance(max_deliveries, Unset) else (max_deliveries or "none"),
            SCHEMA_VERSION,
            int(create),
        ]

    def _declare(
        self, maxsize: int | Unset, max_deliveries: int | Unset | None, create: bool
    ) -> None:
        """Create or look up the queue (and store what is passed)."""
        reply = self._script_sync("declare", self._declare_args(maxsize, max_deliveries, create))
        status = text(reply[0])
        if status == "alien":
            key = self._keys[1 if text(reply[1]) == "hash" else 0]
            raise ChuteError(
                f"Redis at {self.where}: the key {key!r}"
                f" exists (a {text(reply[1])}) but was not made by chute; "
                "choose another queue name"
            )
        if status == "newer":
            raise ChuteError(
                f"queue {self.name!r} on Redis at {self.where} was made by a newer chute "
                f"(schema {text(reply[1])}); this one reads schema {SCHEMA_VERSION}: upgrade chute"
            )
        if status == "missing":
            try:
                names = scan_names(self._sync)
            except (redis.RedisError, OSError) as exc:
                raise failure(exc, self.where) from exc
            there = f"queues there: {', '.join(names)}" if names else "no queues there"
            raise QueueNotFound(f"no queue {self.name!r} on {display(self._url)}; {there}")

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        """The names of the queues on the server at ``url``, sorted. Creates
        nothing. Options: those of the queue (only ``connect_timeout``
        matters here). Blocking I/O: call it off the event loop."""
        unknown = set(options) - {
            "codec",
            "visibility_timeout",
            "max_deliveries",
            "connect_timeout",
        }
        if unknown:
            raise TypeError(f"unknown option(s) for a redis:// queue: {', '.join(sorted(unknown))}")
        place = parse_redis_url(url)
        timeout = check_connect_timeout(options.get("connect_timeout", 5.0))
        client = bounded(redis.Redis.from_url(url, **client_options(timeout)))
        try:
            return scan_names(client)
        except (redis.RedisError, OSError) as exc:
            raise failure(exc, f"{place['host']}:{place['port']}") from exc
        finally:
            client.close()

    @property
    def seq(self) -> int:
        return self._seq

    def _gone(self) -> QueueNotFound:
        return QueueNotFound(
            f"queue {self.name!r} is no longer on Redis at {self.where} (its keys were deleted)"
        )

    # -- running calls -------------------------------------------------------------------

    async def _send(
        self,
        call: Call[R],
        batch: list[Pair] | None = None,
        held: list[asyncio.CancelledError] | None = None,
    ) -> R:
        if type(call) is Claim:
            return cast(R, await self._claim(call, batch, held))
        script = cast("Script[R]", call)
        return script.parse(await self._script(script.name, script.args, batch, held))

    async def run(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        if type(call) is Claim and call.wait > 0:
            # Cuts its wait short and gives back what it got if cancelled.
            return cast(R, await self._claim(call))
        name = "claim" if type(call) is Claim else cast("Script[R]", call).name
        # Seen through in this task once sent: a cancellation meanwhile is
        # held until the reply is read, and what the call did is undone
        # before it goes on.
        held: list[asyncio.CancelledError] = []
        try:
            result = await self._send(call, self._finishes_for(name), held)
        except Exception:
            if held:  # failed, or refused: nothing to undo
                raise held[0] from None
            raise
        if held:
            back = undo(result) if undo is not None else None
            if back is not None:
                await see_through(self._send(back))
            raise held[0]
        if type(call) is Claim and not call.leased:
            self._taken(cast(Claimed, result).records)
        return result

    def run_sync(self, call: Call[R], *, undo: Undo[R] | None = None) -> R:
        if type(call) is Claim:
            claimed = self._claim_sync(call)
            if not call.leased and claimed.records:
                # No task here to delete them after: now (a second round trip).
                self._script_sync("finish", [self._consumer, *pairs(claimed.records)])
            return cast(R, claimed)
        script = cast("Script[R]", call)
        return script.parse(self._script_sync(script.name, script.args))

    # -- claiming, and waiting on the server -----------------------------------------------

    def claim(self, n: int, *, lease: float | None, wait: float = 0.0) -> Claim:
        return Claim(n, lease is not None, wait)

    def _claim_args(self, n: int) -> list[Any]:
        return [self._consumer, n, self._vt_ms]

    def _claimed(self, reply: Any, leased: bool) -> Claimed:
        status = text(reply[0])
        if status == "empty" and int(reply[1]) < 0:
            # Nothing there, nor delayed: the next blocking gets may wait at once.
            self._empty_look_at = time.monotonic()
        if status == "ok":
            new = tuple.__new__  # Record's own __new__ is a slow Python function
            records = [
                new(Record, (reply[i], reply[i + 1], int(reply[i + 2]), int(reply[i + 3]), None))
                for i in range(1, len(reply), 4)
            ]
            self._seq += 1
            self.hub.ring({Wait.PUT: len(records), Wait.JOIN: ALL})
            return Claimed(records)
        if status == "empty":
            ms = int(reply[1])
            return Claimed([], None if ms < 0 else time.time() + ms / 1000)
        if status == "shutdown":
            raise QueueShutDown()
        raise self._gone()

    async def _claim(
        self,
        call: Claim,
        batch: list[Pair] | None = None,
        held: list[asyncio.CancelledError] | None = None,
    ) -> Claimed:
        if call.wait > 0:
            got, status = await self._blocked_read(call.n, call.wait)
            if status == "ok":
                claimed = self._took(got)
                if not call.leased:
                    self._taken(got)
                return claimed
            if status == "shutdown":  # the entries went back
                raise QueueShutDown()
            # Nothing new (or older ones wait): given-back entries, expired
            # leases and due delays are found by the script, undone as any
            # claim if cancelled.
            leased = call.leased

            def undo(claimed: Claimed) -> Script[None] | None:
                return self.give_back(claimed.records, leased=leased) if claimed.records else None

            return await self.run(Claim(call.n, leased, 0.0), undo=undo)
        reply = await self._script("claim", self._claim_args(call.n), batch, held)
        return self._claimed(reply, call.leased)

    def _claim_sync(self, call: Claim) -> Claimed:
        if call.wait > 0:
            got, status = self._blocked_read_sync(call.n, call.wait)
            if status == "ok":
                return self._took(got)
            if status == "shutdown":
                raise QueueShutDown()
        return self._claimed(self._script_sync("claim", self._claim_args(call.n)), call.leased)

    def _took(self, got: list[Record]) -> Claimed:
        """What a blocked read handed over, counted by TOOK: this get's."""
        self._seq += 1
        self.hub.ring({Wait.PUT: len(got), Wait.JOIN: ALL})
        return Claimed(got)

    # -- giving back, burying, settling ------------------------------------------------------

    def give_back(self, records: list[Record], *, leased: bool) -> Script[None]:
        if not leased:
            self._keep(records)
        args = [self._consumer, 1, *pairs(records)]
        return self._changing("give_back", args, {Wait.GET: len(records)})

    def bury(self, records: list[tuple[Record, ErrorInfo]], *, leased: bool) -> Script[None]:
        if not leased:
            self._keep([r for r, _ in records])
        why: list[Any] = [self._consumer]
        for record, info in records:
            why += [record.key, record.token, info.to_json()]
        return Script("bury", why, self._ringing({Wait.JOIN: ALL}))

    def _changing(self, name: str, args: list[Any], rings: Rings) -> Script[None]:
        """A change that items given back in place follow: this process's
        blocked reads are cut short to find them (``XREADGROUP`` would not)."""

        def parse(reply: Any) -> None:
            self._seq += 1
            self.hub.ring(rings)
            self._wake_readers()

        return Script(name, args, parse)

    def _ringing(self, rings: Rings) -> Callable[[Any], None]:
        def parse(reply: Any) -> None:
            self._seq += 1
            self.hub.ring(rings)

        return parse

    def settle(
        self, record: Record, how: Settle, *, delay: float | None, error: ErrorInfo | None
    ) -> Script[Outcome]:
        ms = round((delay or 0) * 1000)
        args = [self._consumer, record.key, record.token, how.value, ms, self._vt_ms]
        args.append("" if error is None else error.to_json())

        def parse(reply: Any) -> Outcome:
            status = text(reply)
            if status == "stale":
                raise LeaseLost(
                    f"queue {self.name!r}: this job's lease ran out and the item was delivered "
                    "again (or its keys were deleted); it is settled by whoever holds it now"
                )
            if status == "done":
                raise ValueError(
                    "task_done() was already called for every item: this job cannot be settled"
                )
            self._seq += 1
            if how is Settle.ACK:
                self.hub.ring({Wait.PUT: 1, Wait.JOIN: ALL})
            else:
                self.hub.ring(EVERYONE if delay else {Wait.GET: 1, Wait.JOIN: ALL})
                self._wake_readers()
            return cast(Outcome, status if status in ("acked", "dead") else "retried")

        return Script("settle", args, parse)

    def extend(self, record: Record, seconds: float) -> Script[None]:
        if seconds > self._visibility:
            raise ValueError(
                f"a lease is extended by at most the visibility timeout ({self._visibility:g} s) "
                "at a time"
            )
        ms = round(seconds * 1000)
        args = [self._consumer, record.key, record.token, "extend", ms, self._vt_ms, ""]

        def parse(reply: Any) -> None:
            if text(reply) == "stale":
                raise LeaseLost(
                    f"queue {self.name!r}: this job's lease ran out and the item was delivered "
                    "again; its lease cannot be extended"
                )

        return Script("settle", args, parse)

    # -- storing ---------------------------------------------------------------------------

    def store(
        self, records: list[bytes], options: PutOptions = PLAIN
    ) -> Script[list[bytes] | Stored | None]:
        # A priority is refused by the core: a stream keeps arrival order only.
        delay = 0 if options.delay is None else max(1, round(options.delay * 1000))
        mark, slot = options.mark or ("", 0)
        args = [self._consumer, delay, options.key or "", mark, slot, len(records), *records]

        def parse(reply: Any) -> list[bytes] | Stored | None:
            status = text(reply[0])
            if status == "ok":
                self._seq += 1
                self.hub.ring({Wait.GET: len(records)})
                return list(reply[1:])
            if status == "full":
                return None
            if status == "duplicate":
                return DUPLICATE
            if status == "never":
                raise never_fits(len(records), int(reply[1]))
            if status == "shutdown":
                raise QueueShutDown()
            raise self._gone()

        return Script("put", args, parse)

    def subscribe(self) -> None:
        return None  # nothing to make: getters wait on the server, putters and joiners poll

    def take_back(self, receipt: list[bytes]) -> Script[None]:
        def parse(reply: Any) -> None:
            if int(reply):
                self._seq += 1
                self.hub.ring({Wait.PUT: len(receipt), Wait.JOIN: ALL})

        return Script("take_back", receipt, parse)

    # -- the queue -------------------------------------------------------------------------

    def counts(self, *, oldest: bool = False) -> Script[Counts]:
        def parse(reply: Any) -> Counts:
            if text(reply[0]) == "gone":
                raise self._gone()
            m = Meta.of(reply)
            return Counts(
                maxsize=m.maxsize,
                max_deliveries=m.max_deliveries,
                state=QueueState(m.state),
                ready=max(0, m.ready) + m.scheduled,
                in_flight=m.held + m.delayed,
                delayed=m.delayed,
                total_put=m.total_put,
                total_got=m.total_got,
                peak=m.peak,
                dead=m.dead,
                unfinished=m.unfinished,
                scheduled=m.scheduled,
                oldest_ready_age=None if m.oldest_ms is None else m.oldest_ms / 1000,
            )

        return Script("read", [self._consumer, int(oldest)], parse)

    def _control(self, args: list[Any], rings: Rings, *, unblock: bool = False) -> Script[None]:
        def parse(reply: Any) -> None:
            status = text(reply)
            if status == "done":
                raise ValueError("task_done() called too many times")
            if status == "gone":
                raise self._gone()
            self._seq += 1
            self.hub.ring(rings)
            if unblock:
                self._wake_readers()

        return Script("control", args, parse)

    def task_done(self) -> Script[None]:
        return self._control(["task_done"], {Wait.JOIN: ALL})

    def shutdown(self, *, immediate: bool) -> Script[None]:
        return self._control(["shutdown", 2 if immediate else 1], EVERYONE, unblock=True)

    def reopen(self) -> Script[None]:
        return self._control(["reopen"], EVERYONE)

    def configure(
        self, *, maxsize: int | Unset, max_deliveries: int | Unset | None
    ) -> Script[None]:
        def parse(reply: Any) -> None:
            if text(reply[0]) != "ok":
                raise self._gone()
            self._seq += 1
            self.hub.ring({Wait.PUT: ALL})

        return Script("declare", self._declare_args(maxsize, max_deliveries, False), parse)

    def dead_letters(
        self, *, limit: int | None = None, offset: int = 0, newest_first: bool = False
    ) -> Script[list[DeadRecord]]:
        args = ["page", offset, -1 if limit is None else limit, int(newest_first)]
        return Script("dead", args, _dead_records)

    def purge_dead(self, ids: list[str] | None = None) -> Script[list[DeadRecord]]:
        return Script("dead", ["purge", *_chosen(ids)], _dead_records)

    def requeue_dead(self, ids: list[str] | None = None) -> Script[int]:
        def parse(reply: Any) -> int:
            n = int(reply)
            if n < 0:
                raise QueueShutDown("cannot requeue into a queue that is shut down")
            self._seq += 1
            self.hub.ring({Wait.GET: n, Wait.JOIN: ALL})
            return n

        return Script("dead", ["requeue", *_chosen(ids)], parse)


#: A stream entry id as the server makes one: two unsigned 64-bit numbers.
_ENTRY_ID = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")


def _chosen(ids: list[str] | None) -> list[str]:
    """The dead script's arguments for ``ids``: all, or these (each checked
    to be an entry id the server could have made: ``ValueError`` if not)."""
    if ids is None:
        return ["all"]
    for id_ in ids:
        found = _ENTRY_ID.fullmatch(id_)
        if found is None or any(int(part) >= 2**64 for part in found.groups()):
            raise ValueError(f"{id_!r} is not a dead letter id of this queue (a stream entry id)")
    return ["ids", *ids]


def _dead_records(reply: Any) -> list[DeadRecord]:
    out: list[DeadRecord] = []
    for i in range(0, len(reply), 5):
        id_, data, deliveries, reason, error = reply[i : i + 5]
        out.append(
            DeadRecord(
                data=data,
                deliveries=int(text(deliveries) or 0),
                # Buried with an id of the server's clock: when it died.
                died_at=int(text(id_).split("-")[0]) / 1000,
                reason=text(reason) or "failed",  # schema 1 kept no reason
                error=error_info(error),
                id=text(id_),
            )
        )
    return out


class RedisQueue(DurableQueue[T]):
    """A queue on a Redis stream, shared by every client of the server;
    made by ``chute.open("redis://...")``.

    ``maxsize`` and ``max_deliveries`` belong to the queue: left out
    (``None`` / not passed), the stored ones hold (a new queue: unbounded,
    no limit); passed, they replace them for every client. ``create=False``
    opens only a queue that exists (``QueueNotFound`` otherwise; nothing is
    created). ``connect_timeout`` bounds each connection's whole set-up,
    TLS handshake included."""

    #: What this transport can do (its backend's declaration).
    capabilities: ClassVar[Capabilities] = RedisBackend.capabilities

    def __init__(
        self,
        url: str,
        name: str,
        maxsize: int | None = None,
        *,
        create: bool = True,
        codec: object = "json",
        visibility_timeout: float = 30.0,
        max_deliveries: int | Unset | None = UNSET,
        connect_timeout: float = 5.0,
    ) -> None:
        bounds = checked_opening(name, maxsize, max_deliveries, codec, visibility_timeout)
        backend = RedisBackend(
            url,
            name,
            create=create,
            visibility_timeout=visibility_timeout,
            connect_timeout=connect_timeout,
            **bounds,
        )
        super().__init__(backend, codec=codec, visibility_timeout=visibility_timeout)

    @classmethod
    def queue_names(cls, url: str, **options: Any) -> list[str]:
        """The names of the queues on the server at ``url``, sorted. Creates
        nothing. Blocking I/O: call it off the event loop."""
        return RedisBackend.queue_names(url, **options)
