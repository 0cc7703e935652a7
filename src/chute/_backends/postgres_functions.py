"""The PostgreSQL transport's functions, one per change to a queue.

Every change to a queue is one call of a PL/pgSQL function, run in one
transaction on the server (as each Redis change is one Lua script): the
bound is checked and the item inserted, or a claim finds and leases its
items, or an ack checks the fencing token and deletes, without a round trip
between the steps. They live in chute's schema, next to its tables
(``postgres_sql.py``, which installs both in one script).

**The exact bound.** A put on a bounded queue (``maxsize`` > 0) takes the
queue's transaction-level advisory lock, then counts the claimable items and
inserts: puts of one queue are serialised, from every machine, until each
commits, and the next one's count (a new snapshot, read committed) sees
what the previous one stored. Claims take no lock: they only lower the
count, so a put counting while one commits errs on the safe side. A put on
an unbounded queue takes no lock at all.

**Waking.** A change notifies the channel ``chute.<schema>`` with the
queue's id, whom it concerns (getters, putters, joiners) and how many, when
its transaction commits (so a put inside the caller's transaction wakes
getters only if it commits) -- but only if a client other than the one that
made it has registered waiters for the queue (``chute_listener``): a client
registers before its first waiter sleeps, and from then on is notified. A
producer with its consumers in one process, or a client that never waits,
sends no notification at all (measured: a put cost its client 170-260 us of
CPU with one, 76 without, most of it the listener thread waking for its own
notification). A registration and a change's look at the registrations are
ordered by an advisory lock (``chute_listen``), so no change falls between
a waiter's last look and its registration. A change of the queue's state
and a put in a caller's transaction notify always.

**Written out.** The calls on every item's way (``chute_put``,
``chute_claim``, an ack in ``chute_settle``) do what ``chute_row``,
``chute_add`` and ``chute_ring`` do in their own bodies instead of calling
them: each nested call is a query of its own on the server (a plan to
start, a function frame), and measured with ``pg_stat_statements``
(``track = all``) the three calls cost more than the statements they ran
(``chute_add`` 99 us around a 40 us UPDATE, ``chute_ring`` 62 us around
19 us). The other calls keep the shared functions.

**The claim** (``chute_claim``) is two indexed looks, as ``EXPLAIN`` shows
them on a queue of 200,000 items, half of them out on leases::

    Limit
      ->  LockRows
            ->  Index Scan using chute_item_ready on chute_item i
                  Index Cond: (queue = $1)
                  Filter: (visible_at IS NULL)

    Limit
      ->  LockRows
            ->  Index Scan using chute_item_due on chute_item i
                  Index Cond: ((queue = $1) AND (visible_at <= $2))

Ready items come from a partial index holding only them, in id order, so a
claim never walks over items out on leases (with none out, the planner may
read the primary key instead: the same order, nothing to skip); leases and delays that ran out
come from a second partial index ordered by when they run out, whose scan
stops at the first that has not. ``FOR UPDATE SKIP LOCKED`` lets concurrent
claims pass each other's rows instead of queueing on them.
"""

__all__ = ["FUNCTIONS"]

#: Their ``CREATE OR REPLACE FUNCTION`` script, run after the tables are made:
#: ``@S`` stands for the quoted schema, ``@CHANNEL`` for its notification
#: channel and ``@LOCK`` for its advisory lock key (``postgres_sql.install_sql``
#: fills them in).
FUNCTIONS = """
-- Add to this connection's shard of a queue's counters. PL/pgSQL, and an
-- UPDATE before an INSERT: its plans are kept for the session (a SQL
-- function's are made again at every call before PostgreSQL 18), and the
-- row is there at every call but the first (an upsert cost 56 us a call,
-- this about half).
CREATE OR REPLACE FUNCTION @S.chute_add(q int, d_put bigint, d_got bigint, d_added bigint,
                                        d_done bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE k int := pg_backend_pid() % 64;
BEGIN
    UPDATE @S.chute_count c SET put = c.put + d_put, got = c.got + d_got,
        added = c.added + d_added, done = c.done + d_done
    WHERE c.queue = q AND c.shard = k;
    IF NOT FOUND THEN
        INSERT INTO @S.chute_count AS c (queue, shard, put, got, added, done)
        VALUES (q, k, d_put, d_got, d_added, d_done)
        ON CONFLICT (queue, shard) DO UPDATE SET put = c.put + d_put, got = c.got + d_got,
            added = c.added + d_added, done = c.done + d_done;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION @S.chute_now() RETURNS double precision LANGUAGE sql AS $$
    SELECT extract(epoch FROM clock_timestamp())::double precision
$$;

-- Tell the clients that wait: kind g (getters), p (putters), j (joiners),
-- e (everyone); n of them. A change of the queue's state (e), and a put in a
-- caller's transaction (no sender), tell everyone; any other change only if
-- a client other than its sender registered waiters (chute_listen): a NOTIFY
-- that no one needs costs the server its notification lock at commit and
-- every listening client a wake-up. The shared lock orders this look at the
-- registrations against a registration's exclusive one (see chute_listen).
CREATE OR REPLACE FUNCTION @S.chute_ring(q int, kind text, n bigint, sender text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF kind <> 'e' AND sender <> '' THEN
        PERFORM pg_advisory_xact_lock_shared(@LOCK, -q);
        IF NOT EXISTS (SELECT 1 FROM @S.chute_listener l
                       WHERE l.queue = q AND l.sender <> chute_ring.sender) THEN
            RETURN;
        END IF;
    END IF;
    PERFORM pg_notify(@CHANNEL, q || ' ' || kind || ' ' || n || ' ' || sender);
END $$;

-- Register a client (sender) whose waiters sleep until rung, and whose
-- LISTEN connection is the server process ``pid``; registrations of clients
-- whose listener is gone are dropped. The exclusive lock waits for every
-- change that looked at the registrations without this one, and then
-- commits: a look made after this returned sees those changes, and every
-- later change sees this registration and notifies.
CREATE OR REPLACE FUNCTION @S.chute_listen(q int, sender text, pid int)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(@LOCK, -q);
    DELETE FROM @S.chute_listener l
    WHERE l.queue = q AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid);
    INSERT INTO @S.chute_listener AS l (queue, sender, pid)
    VALUES (q, chute_listen.sender, chute_listen.pid)
    ON CONFLICT ON CONSTRAINT chute_listener_pkey DO UPDATE SET pid = excluded.pid;
END $$;

-- The queue's row, or error CH003; CH001 if shut down (at least to_state).
CREATE OR REPLACE FUNCTION @S.chute_row(q int) RETURNS @S.chute_queue
LANGUAGE plpgsql AS $$
DECLARE r @S.chute_queue;
BEGIN
    SELECT * INTO r FROM @S.chute_queue WHERE id = q;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the queue is no longer in the database' USING ERRCODE = 'CH003';
    END IF;
    RETURN r;
END $$;

-- The items in the queue: ready, come due, or put with a delay (which count
-- toward the bound before they are due).
CREATE OR REPLACE FUNCTION @S.chute_ready(q int) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM @S.chute_item WHERE queue = q AND visible_at IS NULL)
         + (SELECT count(*) FROM @S.chute_item WHERE queue = q AND visible_at <= @S.chute_now())
         + (SELECT count(*) FROM @S.chute_item WHERE queue = q AND leased = 3
            AND visible_at > @S.chute_now())
$$;

-- Store records within the bound: their ids, NULL if they do not fit now.
-- With a delay (seconds), a priority and a key: '{}' (nothing stored) if an
-- item with that key is in the queue; the unique index settles races. With
-- a mark (a schedule and its slot): '{}' unless the schedule's mark is below
-- the slot, which it then becomes (its row lock settles races).
CREATE OR REPLACE FUNCTION @S.chute_put(q int, records bytea[], delay_ double precision,
        prio int, put_key text, mark_name text, mark_slot bigint, sender text)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    r @S.chute_queue;
    n int := cardinality(records);
    ready bigint;
    ids bigint[];
    k int;
    at double precision;  -- when the records are claimable from
BEGIN
    -- chute_row, chute_add and chute_ring written out (see "Written out"):
    SELECT * INTO r FROM @S.chute_queue WHERE id = q;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the queue is no longer in the database' USING ERRCODE = 'CH003';
    END IF;
    IF r.state <> 0 THEN RAISE EXCEPTION 'shut down' USING ERRCODE = 'CH001'; END IF;
    IF put_key IS NOT NULL AND EXISTS (SELECT 1 FROM @S.chute_item i
                                       WHERE i.queue = q AND i.key = put_key) THEN
        RETURN '{}';
    END IF;
    IF r.maxsize > 0 THEN
        IF n > r.maxsize THEN
            RAISE EXCEPTION 'a batch of % items can never fit a queue of maxsize %', n, r.maxsize
                USING ERRCODE = 'CH002';
        END IF;
        -- Held by another put until it commits. Wait up to about 50 ms for
        -- it (another put's lock is that short); held longer (by a caller's
        -- open transaction that put an item), the queue counts as full
        -- until that transaction ends: it may be about to fill it.
        FOR k IN 1 .. 50 LOOP
            EXIT WHEN pg_try_advisory_xact_lock(@LOCK, q);
            IF k = 50 THEN RETURN NULL; END IF;
            PERFORM pg_sleep(0.001);
        END LOOP;
        r := @S.chute_row(q);  -- as of the lock: a shutdown or a new bound meanwhile
        IF r.state <> 0 THEN RAISE EXCEPTION 'shut down' USING ERRCODE = 'CH001'; END IF;
        ready := @S.chute_ready(q);
        IF r.maxsize > 0 AND ready + n > r.maxsize THEN RETURN NULL; END IF;
        IF ready + n > r.peak THEN
            UPDATE @S.chute_queue SET peak = ready + n WHERE id = q;
        END IF;
    END IF;
    IF mark_name IS NOT NULL THEN
        INSERT INTO @S.chute_mark AS m (queue, name, slot) VALUES (q, mark_name, mark_slot)
        ON CONFLICT (queue, name) DO UPDATE SET slot = excluded.slot WHERE m.slot < excluded.slot
        RETURNING ARRAY[m.slot] INTO ids;
        IF ids IS NULL THEN RETURN '{}'; END IF;  -- put already, by this or another client
    END IF;
    at := @S.chute_now() + CASE WHEN delay_ > 0 THEN delay_ ELSE 0 END;
    IF put_key IS NOT NULL THEN  -- a single record
        INSERT INTO @S.chute_item AS i (queue, data, leased, visible_at, priority, key, ready_at)
        VALUES (q, records[1], CASE WHEN delay_ > 0 THEN 3 ELSE 0 END,
                CASE WHEN delay_ > 0 THEN at END, prio, put_key, at)
        ON CONFLICT (queue, key) WHERE key IS NOT NULL DO NOTHING
        RETURNING ARRAY[i.id] INTO ids;
        IF ids IS NULL THEN RETURN '{}'; END IF;  -- another put of the key won the race
    ELSIF delay_ > 0 OR prio <> 0 THEN
        WITH stored AS (
            INSERT INTO @S.chute_item (queue, data, leased, visible_at, priority, ready_at)
            SELECT q, record, CASE WHEN delay_ > 0 THEN 3 ELSE 0 END,
                   CASE WHEN delay_ > 0 THEN at END, prio, at
            FROM unnest(records) WITH ORDINALITY AS u(record, i) ORDER BY i
            RETURNING id
        ) SELECT array_agg(id ORDER BY id) INTO ids FROM stored;
    ELSIF n = 1 THEN
        INSERT INTO @S.chute_item (queue, data, ready_at) VALUES (q, records[1], at)
        RETURNING ARRAY[id] INTO ids;
    ELSE
        WITH stored AS (
            INSERT INTO @S.chute_item (queue, data, ready_at)
            SELECT q, record, at FROM unnest(records) WITH ORDINALITY AS u(record, i) ORDER BY i
            RETURNING id
        ) SELECT array_agg(id ORDER BY id) INTO ids FROM stored;
    END IF;
    UPDATE @S.chute_count c SET put = c.put + n, added = c.added + n
    WHERE c.queue = q AND c.shard = pg_backend_pid() % 64;
    IF NOT FOUND THEN PERFORM @S.chute_add(q, n, 0, n, 0); END IF;
    IF chute_put.sender = '' THEN
        PERFORM pg_notify(@CHANNEL, q || ' g ' || n || ' ');
    ELSE
        PERFORM pg_advisory_xact_lock_shared(@LOCK, -q);
        IF EXISTS (SELECT 1 FROM @S.chute_listener l
                   WHERE l.queue = q AND l.sender <> chute_put.sender) THEN
            PERFORM pg_notify(@CHANNEL, q || ' g ' || n || ' ' || chute_put.sender);
        END IF;
    END IF;
    RETURN ids;
END $$;

-- Undo a put whose caller was cancelled: all its records, if none was claimed.
CREATE OR REPLACE FUNCTION @S.chute_take_back(q int, ids bigint[], sender text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE n int := cardinality(ids);
BEGIN
    IF (SELECT count(*) FROM @S.chute_item WHERE id = ANY(ids) AND deliveries = 0
            AND (visible_at IS NULL OR leased = 3)) = n THEN
        DELETE FROM @S.chute_item WHERE id = ANY(ids);
        PERFORM @S.chute_add(q, -n, 0, -n, 0);
        PERFORM @S.chute_ring(q, 'p', n, sender);
    END IF;
END $$;

-- Claim up to n items, oldest first (lease NULL: take them for good).
-- Nothing claimable: one row of NULLs but due, when the next lease or
-- delay runs out.
CREATE OR REPLACE FUNCTION @S.chute_claim(q int, n int, lease double precision, sender text)
RETURNS TABLE (id bigint, data bytea, deliveries int, token bigint, due double precision,
               priority int, key text, ready_at double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r @S.chute_queue;
    now_ double precision := @S.chute_now();
    late record;
    picked bigint[];
    mixed boolean := false;
    dead int := 0;
BEGIN
    SELECT * INTO r FROM @S.chute_queue WHERE chute_queue.id = q;  -- chute_row, written out
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the queue is no longer in the database' USING ERRCODE = 'CH003';
    END IF;
    IF r.state = 2 THEN RAISE EXCEPTION 'shut down' USING ERRCODE = 'CH001'; END IF;
    -- Items put with a delay that came due join the ready ones first, so
    -- that their priority counts exactly (looked for first: rarely any).
    IF EXISTS (SELECT 1 FROM @S.chute_item s
               WHERE s.queue = q AND s.leased = 3 AND s.visible_at <= now_) THEN
        UPDATE @S.chute_item i SET leased = 0, visible_at = NULL
        WHERE i.id = ANY(ARRAY(SELECT s.id FROM @S.chute_item s
                               WHERE s.queue = q AND s.leased = 3 AND s.visible_at <= now_
                               LIMIT 1000 FOR UPDATE SKIP LOCKED));
    END IF;
    SELECT array_agg(i.id) INTO picked FROM (
        SELECT i.id FROM @S.chute_item i WHERE i.queue = q AND i.visible_at IS NULL
        ORDER BY i.priority, i.id LIMIT n FOR UPDATE SKIP LOCKED) i;
    picked := coalesce(picked, '{}');
    FOR late IN
        SELECT i.id, i.leased, i.deliveries FROM @S.chute_item i
        WHERE i.queue = q AND i.visible_at <= now_
        ORDER BY i.visible_at LIMIT n FOR UPDATE SKIP LOCKED
    LOOP
        IF late.leased = 1 AND r.max_deliveries IS NOT NULL
                AND late.deliveries >= r.max_deliveries THEN
            -- Its holder's lease ran out on the last delivery allowed.
            PERFORM @S.chute_to_dead(q, late.id, 'lease expired', NULL);
            dead := dead + 1;
        ELSE
            picked := picked || late.id;
            mixed := true;
        END IF;
    END LOOP;
    IF dead > 0 THEN
        PERFORM @S.chute_add(q, 0, 0, 0, dead);
    END IF;
    IF mixed THEN
        -- The first n in the queue's order across both (the others stay,
        -- unlocked at commit).
        SELECT array_agg(x.id) INTO picked FROM (
            SELECT i.id FROM @S.chute_item i WHERE i.id = ANY(picked)
            ORDER BY i.priority, i.id LIMIT n) x;
    ELSIF cardinality(picked) = 0 THEN
        picked := NULL;
    END IF;
    IF picked IS NULL THEN
        -- Drained only if no claimable item is left, locked by another
        -- claim or not (that claim may yet roll back).
        IF r.state = 1
                AND NOT EXISTS (SELECT 1 FROM @S.chute_item i
                                WHERE i.queue = q AND i.visible_at IS NULL)
                AND NOT EXISTS (SELECT 1 FROM @S.chute_item i
                                WHERE i.queue = q AND i.visible_at <= now_) THEN
            RAISE EXCEPTION 'shut down' USING ERRCODE = 'CH001';
        END IF;
        RETURN QUERY SELECT NULL::bigint, NULL::bytea, NULL::int, NULL::bigint,
            (SELECT min(i.visible_at) FROM @S.chute_item i
             WHERE i.queue = q AND i.visible_at IS NOT NULL), NULL::int, NULL::text,
            NULL::double precision;
        RETURN;
    END IF;
    UPDATE @S.chute_count c SET got = c.got + cardinality(picked)  -- chute_add, written out
    WHERE c.queue = q AND c.shard = pg_backend_pid() % 64;
    IF NOT FOUND THEN PERFORM @S.chute_add(q, 0, cardinality(picked), 0, 0); END IF;
    -- A claim need not wait for the disk: if the server crashes before it
    -- is flushed, the claim is forgotten and the item delivered again
    -- (never lost; the job's ack then finds its token gone and is refused).
    -- An ack waits for the disk (and so writes the claim before it): once
    -- it returned, the item is never delivered again.
    PERFORM set_config('synchronous_commit', 'off', true);
    IF r.maxsize > 0 THEN
        PERFORM @S.chute_ring(q, 'p', cardinality(picked), sender);
    END IF;
    IF lease IS NULL THEN
        RETURN QUERY WITH taken AS (
            DELETE FROM @S.chute_item i WHERE i.id = ANY(picked)
            RETURNING i.id, i.data, i.deliveries, i.token, i.priority, i.key, i.ready_at
        ) SELECT t.id, t.data, t.deliveries, t.token, NULL::double precision, t.priority, t.key,
                 t.ready_at
          FROM taken t ORDER BY t.priority, t.id;
    ELSE
        RETURN QUERY WITH leased AS (
            UPDATE @S.chute_item i SET leased = 1, visible_at = now_ + lease,
                token = i.token + 1, deliveries = i.deliveries + 1
            WHERE i.id = ANY(picked)
            RETURNING i.id, i.data, i.deliveries, i.token, i.priority, i.key, i.ready_at
        ) SELECT l.id, l.data, l.deliveries, l.token, NULL::double precision, l.priority, l.key,
                 l.ready_at
          FROM leased l ORDER BY l.priority, l.id;
    END IF;
END $$;

-- Move a stored item to the dead letters (its last error unless one is given).
CREATE OR REPLACE FUNCTION @S.chute_to_dead(q int, item bigint, why text, error text)
RETURNS void LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM @S.chute_item WHERE id = item RETURNING data, deliveries, last_error)
    INSERT INTO @S.chute_dead (queue, data, deliveries, died_at, reason, last_error)
    SELECT q, data, deliveries, @S.chute_now(), why, coalesce(error, last_error) FROM gone
$$;

-- Give claimed records back as if never claimed (same ids, same places).
CREATE OR REPLACE FUNCTION @S.chute_give_back(q int, ids bigint[], tokens bigint[],
        records bytea[], deliveries int[], leased boolean, priorities int[], keys text[],
        ready_ats double precision[], sender text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE n int := cardinality(ids);
BEGIN
    IF leased THEN
        UPDATE @S.chute_item i SET leased = 0, visible_at = NULL, deliveries = i.deliveries - 1
        FROM unnest(ids, tokens) AS u(id, token)
        WHERE i.id = u.id AND i.token = u.token AND i.leased = 1;
    ELSE
        -- A plain get freed their keys: a put may have taken one since.
        -- Then the item comes back without it (nothing lost), and if that
        -- put has not committed yet, the whole batch does.
        BEGIN
            INSERT INTO @S.chute_item (id, queue, data, deliveries, token, priority, key,
                                       ready_at)
            SELECT u.id, q, u.data, u.deliveries, u.token, u.priority,
                   CASE WHEN EXISTS (SELECT 1 FROM @S.chute_item i
                                     WHERE i.queue = q AND i.key = u.key) THEN NULL
                        ELSE u.key END, u.ready_at
            FROM unnest(ids, records, deliveries, tokens, priorities, keys, ready_ats)
                AS u(id, data, deliveries, token, priority, key, ready_at);
        EXCEPTION WHEN unique_violation THEN
            INSERT INTO @S.chute_item (id, queue, data, deliveries, token, priority, ready_at)
            SELECT u.id, q, u.data, u.deliveries, u.token, u.priority, u.ready_at
            FROM unnest(ids, records, deliveries, tokens, priorities, ready_ats)
                AS u(id, data, deliveries, token, priority, ready_at);
        END;
    END IF;
    PERFORM @S.chute_add(q, 0, -n, 0, 0);
    PERFORM @S.chute_ring(q, 'g', n, sender);
END $$;

-- Claimed records that cannot be decoded, to the dead letters.
CREATE OR REPLACE FUNCTION @S.chute_bury(q int, ids bigint[], records bytea[],
        deliveries int[], errors text[], leased boolean, sender text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE k int;
BEGIN
    FOR k IN 1 .. cardinality(ids) LOOP
        IF leased THEN
            PERFORM @S.chute_to_dead(q, ids[k], 'undecodable', errors[k]);
        ELSE
            INSERT INTO @S.chute_dead (queue, data, deliveries, died_at, reason, last_error)
            VALUES (q, records[k], deliveries[k], @S.chute_now(), 'undecodable', errors[k]);
        END IF;
    END LOOP;
    PERFORM @S.chute_add(q, 0, 0, 0, cardinality(ids));
    PERFORM @S.chute_ring(q, 'j', 0, sender);
END $$;

-- End a leased delivery if the token still holds it: 'acked', 'retried',
-- 'dead'; error CH004 if the lease ran out and the item went to another.
CREATE OR REPLACE FUNCTION @S.chute_settle(q int, item bigint, tok bigint, ack boolean,
        delay double precision, error text, sender text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r @S.chute_queue;
    tries int;
BEGIN
    IF (SELECT coalesce(sum(added - done), 0) FROM @S.chute_count WHERE queue = q) <= 0 THEN
        RAISE EXCEPTION 'task_done() was already called for every item: this job cannot be settled'
            USING ERRCODE = 'CH005';
    END IF;
    IF ack THEN
        DELETE FROM @S.chute_item WHERE id = item AND token = tok AND leased = 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'it is settled by whoever holds it now' USING ERRCODE = 'CH004';
        END IF;
        -- chute_add and chute_ring, written out (see "Written out"):
        UPDATE @S.chute_count c SET done = c.done + 1
        WHERE c.queue = q AND c.shard = pg_backend_pid() % 64;
        IF NOT FOUND THEN PERFORM @S.chute_add(q, 0, 0, 0, 1); END IF;
        IF chute_settle.sender = '' THEN
            PERFORM pg_notify(@CHANNEL, q || ' j 1 ');
        ELSE
            PERFORM pg_advisory_xact_lock_shared(@LOCK, -q);
            IF EXISTS (SELECT 1 FROM @S.chute_listener l
                       WHERE l.queue = q AND l.sender <> chute_settle.sender) THEN
                PERFORM pg_notify(@CHANNEL, q || ' j 1 ' || chute_settle.sender);
            END IF;
        END IF;
        RETURN 'acked';
    END IF;
    SELECT i.deliveries INTO tries FROM @S.chute_item i
    WHERE i.id = item AND i.token = tok AND i.leased = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'it is settled by whoever holds it now' USING ERRCODE = 'CH004';
    END IF;
    r := @S.chute_row(q);
    IF r.state = 2 OR (r.max_deliveries IS NOT NULL AND tries >= r.max_deliveries) THEN
        PERFORM @S.chute_to_dead(q, item, 'failed', error);
        PERFORM @S.chute_add(q, 0, 0, 0, 1);
        PERFORM @S.chute_ring(q, 'j', 1, sender);
        RETURN 'dead';
    END IF;
    IF delay > 0 THEN
        UPDATE @S.chute_item SET leased = 2, visible_at = @S.chute_now() + delay,
            last_error = coalesce(error, last_error) WHERE id = item;
        PERFORM @S.chute_ring(q, 'e', 0, sender);
    ELSE
        UPDATE @S.chute_item SET leased = 0, visible_at = NULL,
            last_error = coalesce(error, last_error) WHERE id = item;
        PERFORM @S.chute_ring(q, 'g', 1, sender);
    END IF;
    RETURN 'retried';
END $$;

CREATE OR REPLACE FUNCTION @S.chute_extend(q int, item bigint, tok bigint,
        seconds double precision) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE @S.chute_item SET visible_at = @S.chute_now() + seconds
    WHERE id = item AND token = tok AND leased = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'its lease cannot be extended' USING ERRCODE = 'CH004';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION @S.chute_task_done(q int, sender text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT coalesce(sum(added - done), 0) FROM @S.chute_count WHERE queue = q) <= 0 THEN
        RAISE EXCEPTION 'task_done() called too many times' USING ERRCODE = 'CH005';
    END IF;
    PERFORM @S.chute_add(q, 0, 0, 0, 1);
    PERFORM @S.chute_ring(q, 'j', 1, sender);
END $$;

-- A snapshot, in the order of the core's Counts: maxsize, max_deliveries,
-- state, ready (scheduled ones included), in flight (leased, or given back
-- with a delay), delayed, put, got, peak, dead, unfinished, scheduled; and,
-- if asked (oldest), the seconds since the oldest item claimable now became
-- ready, in index seeks only however many items wait: for each priority (at
-- most 1000, found by a skip scan of chute_item_order), the earliest ready
-- time among its first 8 items in id order; the earliest due time of items
-- put with a delay that came due (not yet made ready by a claim); and that
-- of the items whose lease or delay ran out (few: they are claimed first).
-- Ids grow with put times, so in a priority only items put with a delay,
-- which came due later than they were put, can stand before an older one:
-- looking past the first covers them (unless more than 8 of them stand
-- together at the head: then the age says less than it is).
CREATE OR REPLACE FUNCTION @S.chute_counts(q int, oldest boolean)
RETURNS TABLE (maxsize int, max_deliveries int, state smallint, ready bigint, in_flight bigint,
               delayed bigint, total_put bigint, total_got bigint, peak bigint, dead bigint,
               unfinished bigint, scheduled bigint, oldest_age double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r @S.chute_queue := @S.chute_row(q);
    now_ double precision := @S.chute_now();
    n_ready bigint := @S.chute_ready(q);
    n_leased bigint;
    n_delayed bigint;
    since double precision;
    c record;
BEGIN
    IF n_ready > r.peak THEN  -- an unbounded queue's peak, as seen by a look
        UPDATE @S.chute_queue SET peak = n_ready WHERE id = q AND peak < n_ready;
        r.peak := n_ready;
    END IF;
    SELECT coalesce(sum(k.put), 0) AS put, coalesce(sum(k.got), 0) AS got,
           greatest(coalesce(sum(k.added - k.done), 0), 0) AS unfinished
    INTO c FROM @S.chute_count k WHERE k.queue = q;
    SELECT count(*) INTO n_leased FROM @S.chute_item i
    WHERE i.queue = q AND i.leased = 1 AND i.visible_at > now_;
    SELECT count(*) INTO n_delayed FROM @S.chute_item i
    WHERE i.queue = q AND i.leased = 2 AND i.visible_at > now_;
    IF oldest THEN
        WITH RECURSIVE lane (p, n) AS (
            (SELECT i.priority, 1 FROM @S.chute_item i
             WHERE i.queue = q AND i.visible_at IS NULL ORDER BY i.priority LIMIT 1)
            UNION ALL
            SELECT (SELECT i.priority FROM @S.chute_item i
                    WHERE i.queue = q AND i.visible_at IS NULL AND i.priority > l.p
                    ORDER BY i.priority LIMIT 1), l.n + 1
            FROM lane l WHERE l.p IS NOT NULL AND l.n < 1000
        )
        SELECT min(a.at) INTO since FROM (
            SELECT (SELECT min(h.ready_at) FROM (
                        SELECT i.ready_at FROM @S.chute_item i
                        WHERE i.queue = q AND i.visible_at IS NULL AND i.priority = l.p
                        ORDER BY i.id LIMIT 8) h) AS at
            FROM lane l WHERE l.p IS NOT NULL
            UNION ALL
            SELECT min(i.visible_at) FROM @S.chute_item i
            WHERE i.queue = q AND i.leased = 3 AND i.visible_at <= now_
            UNION ALL
            SELECT min(i.ready_at) FROM @S.chute_item i
            WHERE i.queue = q AND i.leased IN (1, 2) AND i.visible_at <= now_
        ) a;
    END IF;
    RETURN QUERY SELECT r.maxsize, r.max_deliveries, r.state, n_ready, n_leased + n_delayed,
        n_delayed, c.put::bigint, c.got::bigint, r.peak,
        (SELECT count(*) FROM @S.chute_dead d WHERE d.queue = q),
        c.unfinished::bigint,
        (SELECT count(*) FROM @S.chute_item i
         WHERE i.queue = q AND i.leased = 3 AND i.visible_at > now_),
        CASE WHEN since IS NOT NULL THEN greatest(now_ - since, 0) END;
END $$;

-- The dead letters (ids: those of them still there) back at the end of the
-- queue in the order they died; how many.
CREATE OR REPLACE FUNCTION @S.chute_requeue_dead(q int, ids bigint[], sender text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
    IF (@S.chute_row(q)).state <> 0 THEN
        RAISE EXCEPTION 'cannot requeue into a queue that is shut down' USING ERRCODE = 'CH001';
    END IF;
    IF ids IS NULL THEN
        WITH gone AS (DELETE FROM @S.chute_dead WHERE queue = q RETURNING id, data),
        back AS (INSERT INTO @S.chute_item (queue, data, ready_at)
                 SELECT q, data, @S.chute_now() FROM gone ORDER BY id RETURNING 1)
        SELECT count(*) INTO n FROM back;
    ELSE
        WITH gone AS (DELETE FROM @S.chute_dead WHERE queue = q AND id = ANY(ids)
                      RETURNING id, data),
        back AS (INSERT INTO @S.chute_item (queue, data, ready_at)
                 SELECT q, data, @S.chute_now() FROM gone ORDER BY id RETURNING 1)
        SELECT count(*) INTO n FROM back;
    END IF;
    PERFORM @S.chute_add(q, 0, 0, n, 0);
    PERFORM @S.chute_ring(q, 'g', n, sender);
    RETURN n;
END $$;
"""
