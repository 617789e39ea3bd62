"""Proof of usefulness at 100k receipts: the finalizer draining a backlog, what a run costs when
nothing is finalizable, two finalizers at once, and the attestation and receipt write paths.

Agents (each with a reputation row and a stake), receipts and attestations are generated with
INSERT ... SELECT generate_series: a receipt names an agent, a client and a committee of m
distinct other agents, and gets its client's ACCEPTED plus two committee members' AUDIT_PASS, so
it has exactly k = 3 distinct qualifying attesters and is finalizable (the idle set gets two, so
none is). Then, each on freshly loaded receipts (the tables truncated in between):

1. `run_finalizer()` drains the backlog, once at the default `POU_FINALIZER_BATCH` and once at
   a larger batch: one call, batch by batch until none is left, as the scheduled job runs.
2. `run_finalizer()` over a backlog without quorum, several times: what every minute costs.
3. Two `run_finalizer()` at once in threads (each with its own connection, as two overlapping
   invocations would be); together they must finalize every receipt.
4. Signing agents (did:key, registered and staked through the service) are the only ones with
   enough stake for a committee; receipts are created through `create_receipt` and attested
   through `attest` with real Ed25519 signatures, against the attestations already loaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.db import connect
from bench.stats import Summary, log, time_calls

Conn = psycopg.Connection[dict[str, Any]]

# Receipts per INSERT statement while loading.
CHUNK = 100_000
# The larger finalizer batch measured next to the default one.
LARGE_BATCH = 5_000
# Idle finalizer runs (no receipt has quorum); the median is reported.
IDLE_RUNS = 7
# Quorate receipts loaded behind the set without quorum: one for this many of those.
BEHIND_SHARE = 10
# Steady-state runs: a batch of quorate receipts on top of a drained set.
STEADY_RUNS = 3
# Two finalizers at once: rounds beyond one per batch before giving up on draining.
MAX_EXTRA_ROUNDS = 10
# Signing agents for the write paths: the client and a committee come from them.
SIGNERS = 12
SIGNER_SEED = 40_000  # pou_identity(SIGNER_SEED + i): fixed keys, as the sample cast's
# Stake the signers lock, and the committee minimum raised to it while the write paths are
# measured, so that every committee is made of agents whose keys the bench holds.
SIGNER_STAKE = 1_000_000
LOADED_STAKE = 100
# Attestations per receipt on the write path: the client's ACCEPTED and m AUDIT_PASS.
WARMUP = 10
# While the suite runs: nobody is throttled, and every attestation must carry a signature.
BENCH_ENV = {"POU_ATTESTATIONS_PER_HOUR": str(10**9), "POU_REQUIRE_SIGNATURES": "true"}
K, M = 3, 5


def agent_did(number_sql: str, width: int) -> str:
    """SQL for the DID of agent number `number_sql` (1-based): fixed width, so DIDs sort as
    their numbers do."""
    return f"'did:web:bench-agent-' || lpad(({number_sql})::text, {width}, '0')"


def _width(agents: int) -> int:
    return max(6, len(str(agents)))


def _scalar(conn: Conn, sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return next(iter(row.values()))


# -- the data set ---------------------------------------------------------------------------------


@dataclass
class Load:
    """One set of receipts loaded for a measurement."""

    label: str
    receipts: int
    attestations: int
    per_receipt: int  # qualifying attestations each
    seconds: float  # the INSERT statements
    vacuum_seconds: float  # VACUUM (ANALYZE) after them, as autovacuum would have
    statements: int


def load_agents(conn: Conn, agents: int) -> float:
    """`agents` agents, each with a default reputation row and a stake that makes it
    committee-eligible at the default POU_COMMITTEE_MIN_STAKE."""
    started = time.perf_counter()
    conn.execute(
        f"""
        WITH a AS (
            INSERT INTO agents (did, registered_by)
            SELECT {agent_did("g", _width(agents))}, 'admin'
            FROM generate_series(1, %(n)s) AS g
            RETURNING did
        ),
        rep AS (
            INSERT INTO agent_reputation (agent_id) SELECT did FROM a
        )
        INSERT INTO agent_stakes (agent_id, amount_locked) SELECT did, %(stake)s FROM a
        """,
        {"n": agents, "stake": LOADED_STAKE},
    )
    conn.execute("VACUUM (ANALYZE) agents, agent_reputation, agent_stakes")
    return time.perf_counter() - started


def receipts_sql(agents: int) -> str:
    """Receipts g1..g2 and their attestations in one statement.

    Agents are numbered 0..n-1 around a circle: the committee is the five from a random b,
    the agent and the client two different random agents among the n - 6 after them (never
    b - 1), so all seven are distinct. The attestations are the client's ACCEPTED, then the
    AUDIT_PASS of two consecutive committee members from a random position, the first
    %(per)s of those. Receipts are created 1 ms apart over the past, in id order of g.
    """
    w = _width(agents)

    def member(offset: str) -> str:
        return agent_did(f"1 + (b + {offset}) %% %(n)s", w)

    return f"""
WITH picks AS MATERIALIZED (
    SELECT gen_random_uuid() AS id, g, b,
           {member("5 + x")} AS agent_did,
           {member("5 + (x + 1 + floor(random() * (%(n)s - 7))::int) %% (%(n)s - 6)")}
               AS client_did,
           ARRAY(SELECT {member("j")} FROM generate_series(0, 4) AS j ORDER BY j) AS committee,
           floor(random() * 5)::int AS audit_from,
           %(start)s::timestamptz + (g - 1) * interval '1 millisecond' AS created_at
    FROM (
        SELECT g, floor(random() * %(n)s)::int AS b, floor(random() * (%(n)s - 6))::int AS x
        FROM generate_series(%(g1)s::bigint, %(g2)s::bigint) AS g
    ) AS r
),
receipts AS (
    INSERT INTO task_receipts (id, intent_id, negotiation_id, agent_did, client_did,
        intent_type, inputs_ref, outputs_ref, metrics, payment_request_id, amount_atomic,
        committee, k, m, created_at)
    SELECT id, 'bench-intent-' || g, %(tag)s || '-' || g, agent_did, client_did,
           (ARRAY['summarize', 'translate', 'classify', 'extract'])[1 + g %% 4],
           'ipfs://bench-in-' || g, 'ipfs://bench-out-' || g,
           jsonb_build_object('latency_ms', 200 + floor(random() * 4800)::int,
                              'tokens', floor(random() * 4000)::int),
           'payreq-' || %(tag)s || '-' || g, 1000 + floor(random() * 1000000)::int,
           committee, {K}, {M}, created_at
    FROM picks
)
INSERT INTO task_attestations (task_id, by_did, type, score, confidence, evidence_ref,
                               created_at)
SELECT p.id, v.by_did, v.type, round((0.6 + 0.4 * random())::numeric, 3)::float8,
       round((0.7 + 0.3 * random())::numeric, 3)::float8, 'ipfs://bench-evidence',
       p.created_at + v.n * interval '1 second'
FROM picks p
CROSS JOIN LATERAL (VALUES
    (1, p.client_did, 'ACCEPTED'),
    (2, p.committee[1 + p.audit_from], 'AUDIT_PASS'),
    (3, p.committee[1 + (p.audit_from + 1) %% 5], 'AUDIT_PASS')
) AS v(n, by_did, type)
WHERE v.n <= %(per)s
"""


def load_receipts(conn: Conn, label: str, receipts: int, agents: int, per_receipt: int) -> Load:
    """`receipts` pending receipts, created 1 ms apart and ending now, with `per_receipt`
    qualifying attestations each (3: finalizable; 2: short of quorum)."""
    sql = receipts_sql(agents)
    before = int(_scalar(conn, "SELECT count(*) FROM task_attestations"))
    start = _scalar(conn, "SELECT now() - %s * interval '1 millisecond'", (receipts,))
    started = time.perf_counter()
    statements = 0
    for g1 in range(1, receipts + 1, CHUNK):
        conn.execute(
            sql,
            {
                "n": agents,
                "g1": g1,
                "g2": min(g1 + CHUNK - 1, receipts),
                "tag": label,
                "per": per_receipt,
                "start": start,
            },
        )
        statements += 1
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("VACUUM (ANALYZE) task_receipts, task_attestations")
    return Load(
        label=label,
        receipts=receipts,
        attestations=int(_scalar(conn, "SELECT count(*) FROM task_attestations")) - before,
        per_receipt=per_receipt,
        seconds=seconds,
        vacuum_seconds=time.perf_counter() - started,
        statements=statements,
    )


def reset(conn: Conn) -> None:
    """Empty the receipts and give every agent its default reputation back: the next set
    starts where the first did."""
    conn.execute("TRUNCATE task_attestations, task_receipts CASCADE")
    dims = ", ".join(f"{d} = DEFAULT" for d in "qtrsvie")
    conn.execute(f"UPDATE agent_reputation SET {dims}, updated_at = DEFAULT")
    conn.execute("VACUUM (ANALYZE) agent_reputation")


# -- the finalizer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One finalizer transaction: wall time (commit included), its two statements, rows."""

    seconds: float
    finalize_seconds: float  # FINALIZE_BATCH: find the quorate, lock, update
    reputation_seconds: float  # lock the agents' reputation rows, REPUTATION_UPDATE
    finalized: int


@dataclass
class Drain:
    """One or more run_finalizer() calls at once over a loaded set."""

    label: str
    batch_size: int
    receipts: int
    threads: int
    seconds: float = 0.0
    finalized: int = 0
    batches: int = 0  # as the outcomes count them (the last, short or empty, included)
    per_thread: list[int] = field(default_factory=list)
    per_thread_batches: list[int] = field(default_factory=list)
    timed: list[Batch] = field(default_factory=list)
    left_pending: int = 0

    @property
    def rate(self) -> float:
        return self.finalized / self.seconds if self.seconds else 0.0

    @property
    def per_batch(self) -> Summary:
        return Summary.of([b.seconds for b in self.full_batches()])

    @property
    def statement(self) -> Summary:
        return Summary.of([b.finalize_seconds for b in self.full_batches()])

    @property
    def reputation(self) -> Summary:
        return Summary.of([b.reputation_seconds for b in self.full_batches()])

    def full_batches(self) -> list[Batch]:
        """Batches that finalized anything (the closing empty one measures the idle cost)."""
        return [b for b in self.timed if b.finalized]

    def first_last(self) -> tuple[Batch | None, Batch | None]:
        full = self.full_batches()
        return (full[0], full[-1]) if full else (None, None)

    def pending_before_last(self) -> int:
        """The backlog the last full batch started from (one finalizer: exact)."""
        full = self.full_batches()
        return self.receipts - sum(b.finalized for b in full[:-1])


@contextmanager
def timed_batches(batches: list[Batch]) -> Iterator[None]:
    """Time every batch of run_finalizer, and its two statements, by wrapping what it looks up
    at each iteration: service.transaction (one per batch, commit included) and the
    repository's finalize and update_reputation. run_finalizer itself runs unchanged."""
    from tally.pou import service
    from tally.pou.repository import PouRepository

    original_transaction = service.transaction
    original_finalize = PouRepository.finalize
    original_reputation = PouRepository.update_reputation
    local = threading.local()  # the batch under way, per finalizer thread

    @contextmanager
    def transaction() -> Iterator[Conn]:
        local.finalize, local.reputation, local.rows = 0.0, 0.0, 0
        started = time.perf_counter()
        with original_transaction() as conn:
            yield conn
        batches.append(
            Batch(time.perf_counter() - started, local.finalize, local.reputation, local.rows)
        )  # list.append is atomic

    def finalize(self: PouRepository, batch: int, task_id: Any = None) -> list[Any]:
        started = time.perf_counter()
        rows = original_finalize(self, batch, task_id)
        local.finalize = time.perf_counter() - started
        local.rows = len(rows)
        return rows

    def update_reputation(self: PouRepository, *args: Any) -> int:
        started = time.perf_counter()
        updated = original_reputation(self, *args)
        local.reputation = time.perf_counter() - started
        return updated

    service.transaction = transaction
    PouRepository.finalize = finalize  # type: ignore[method-assign]
    PouRepository.update_reputation = update_reputation  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        service.transaction = original_transaction
        PouRepository.finalize = original_finalize  # type: ignore[method-assign]
        PouRepository.update_reputation = original_reputation  # type: ignore[method-assign]


@contextmanager
def batch_size(size: int) -> Iterator[None]:
    """POU_FINALIZER_BATCH for the duration, as the deployed function's environment sets it."""
    with environment({"POU_FINALIZER_BATCH": str(size)}):
        yield


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Settings through their environment variables, restored after (tally caches them)."""
    from tally.settings import reset_settings

    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_settings()


def run_finalizers(label: str, receipts: int, size: int, threads: int = 1) -> Drain:
    """`threads` run_finalizer() calls at once, each on its own connection (get_connection is
    thread-local), started together; the wall time is from the start to the last return."""
    from tally.db.connection import close_connection
    from tally.observability import metrics
    from tally.pou.service import run_finalizer

    drain = Drain(label=label, batch_size=size, receipts=receipts, threads=threads)
    outcomes: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def worker() -> None:
        try:
            barrier.wait()
            outcomes.append(run_finalizer())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            close_connection()

    with batch_size(size), timed_batches(drain.timed):
        workers = [threading.Thread(target=worker, name=f"finalizer-{i}") for i in range(threads)]
        for thread in workers:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in workers:
            thread.join()
        drain.seconds = time.perf_counter() - started
    # Lambda's log_metrics flushes after each invocation; without it they pile up in memory.
    metrics.clear_metrics()
    if errors:
        raise errors[0]
    drain.finalized = sum(o.finalized for o in outcomes)
    drain.batches = sum(o.batches for o in outcomes)
    drain.per_thread = sorted((o.finalized for o in outcomes), reverse=True)
    drain.per_thread_batches = [
        o.batches for o in sorted(outcomes, key=lambda o: o.finalized, reverse=True)
    ]
    return drain


@dataclass
class Idle:
    """run_finalizer() over a backlog of which nothing has quorum."""

    receipts: int
    runs: list[float]
    finalized: int
    statement: Summary  # FINALIZE_BATCH inside those runs

    @property
    def p50(self) -> float:
        return Summary.of(self.runs).p50


def idle_runs(receipts: int, size: int, runs: int) -> Idle:
    from tally.observability import metrics
    from tally.pou.service import run_finalizer

    seconds: list[float] = []
    timed: list[Batch] = []
    finalized = 0
    with batch_size(size), timed_batches(timed):
        for _ in range(runs):
            started = time.perf_counter()
            finalized += run_finalizer().finalized
            seconds.append(time.perf_counter() - started)
            metrics.clear_metrics()
    return Idle(
        receipts=receipts,
        runs=seconds,
        finalized=finalized,
        statement=Summary.of([b.finalize_seconds for b in timed]),
    )


@dataclass(frozen=True)
class QuorumPlan:
    """EXPLAIN (ANALYZE, BUFFERS) of the finalizer's batch statement, rolled back: what it
    read to find (or not find) a batch, whatever its shape."""

    pending: int  # receipts pending when it ran
    finalized: int  # receipts finalized in the tables
    execution_ms: float
    receipts_read: int  # most rows any scan of task_receipts read (kept or filtered out)
    attestations_read: int  # rows every scan of task_attestations read, all loops
    access: str  # how each table was read
    buffers: int  # shared buffers hit or read
    temp_blocks: int  # 8 kB blocks written to temporary files (sorts or hashes that spilled)
    text: str  # the plan, as text


def quorum_plan(conn: Conn, size: int) -> QuorumPlan:
    """The statement run_finalizer sends per batch, as the repository builds it; rolled back,
    so nothing it would finalize stays finalized."""
    from bench.db import repository_sql
    from tally.pou.repository import PouRepository

    sql, params = repository_sql(PouRepository, lambda repo: repo.finalize(size))
    with conn.transaction(force_rollback=True):
        row = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, FORMAT JSON) " + sql, params
        ).fetchone()
    assert row is not None
    plan = next(iter(row.values()))[0]
    with conn.transaction(force_rollback=True):
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, COSTS OFF) " + sql, params
        ).fetchall()
    nodes = list(_nodes(plan["Plan"]))
    top = plan["Plan"]
    return QuorumPlan(
        pending=_pending(conn),
        finalized=int(
            _scalar(conn, "SELECT count(*) FROM task_receipts WHERE status = 'finalized'")
        ),
        execution_ms=float(plan["Execution Time"]),
        receipts_read=max(
            (_read(n) for n in nodes if n.get("Relation Name") == "task_receipts"), default=0
        ),
        attestations_read=sum(
            _read(n) for n in nodes if n.get("Relation Name") == "task_attestations"
        ),
        access="; ".join(
            dict.fromkeys(
                _access(n)
                for n in nodes
                if n.get("Relation Name") in ("task_receipts", "task_attestations")
                and "Scan" in n["Node Type"]
                and _read(n)
            )
        ),
        buffers=int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)),
        temp_blocks=int(top.get("Temp Written Blocks", 0)),
        text="\n".join(str(next(iter(r.values()))) for r in rows),
    )


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans") or []:
        yield from _nodes(child)


def _read(node: dict[str, Any]) -> int:
    """Rows a scan read over all its loops: those it returned and those its filter dropped."""
    loops = float(node.get("Actual Loops", 1))
    kept = float(node.get("Actual Rows", 0))
    dropped = float(node.get("Rows Removed by Filter", 0))
    return round((kept + dropped) * loops)


def _access(node: dict[str, Any]) -> str:
    """'task_attestations: Index Only Scan (uq_...), 100,000 loops, 200,000 rows'."""
    how = node["Node Type"]
    if node.get("Scan Direction") == "Backward":
        how += " Backward"
    if "Index Name" in node:
        how += f" ({node['Index Name']})"
    loops = int(node.get("Actual Loops", 1))
    times = f", {loops:,} loops" if loops > 1 else ""
    rows = _read(node)
    return f"`{node['Relation Name']}` by {how}{times}, {rows:,} row{'' if rows == 1 else 's'}"


# -- the write paths ------------------------------------------------------------------------------


@dataclass
class Writes:
    signers: int
    receipts: int
    create_receipt: Summary
    attest: Summary
    attestations_before: int
    attestations_after: int
    committees_of_signers: bool  # every committee: m signers, other than the client
    signed: int  # attestations stored with their signature


def register_signers(count: int) -> list[tuple[Any, str]]:
    """did:key agents registered and staked through the service, as an admin would."""
    from tally.local.seed import pou_identity
    from tally.pou import service
    from tally.pou.models import AgentIn, StakeLockIn

    signers = [pou_identity(SIGNER_SEED + i) for i in range(count)]
    for _, did in signers:
        service.register_agent(AgentIn(did=did))
        service.lock_stake(did, StakeLockIn(amount_atomic=SIGNER_STAKE, reference="bench"))
    return signers


def write_paths(conn: Conn, agents: int, attests: int) -> Writes:
    """create_receipt, then attest with signatures computed beforehand (a client's work, not
    the server's): the client's ACCEPTED and every committee member's AUDIT_PASS per receipt."""
    from tally.pou import service
    from tally.pou.identity import attestation_payload, sign
    from tally.pou.models import AttestationIn, ReceiptIn

    signers = register_signers(SIGNERS)
    keys = dict((did, key) for key, did in signers)
    before = int(_scalar(conn, "SELECT count(*) FROM task_attestations"))
    per_receipt = 1 + M
    timed_receipts = -(-(attests + WARMUP) // per_receipt)
    created: list[Any] = []
    width = _width(agents)

    def create(i: int) -> None:
        n = len(created)
        receipt, _ = service.create_receipt(
            ReceiptIn(
                intent_id=f"bench-write-intent-{n}",
                negotiation_id=f"bench-write-{n}",
                agent_did=f"did:web:bench-agent-{1 + n % agents:0{width}d}",
                client_did=signers[n % len(signers)][1],
                intent_type="summarize",
                inputs_ref=f"ipfs://bench-write-in-{n}",
                outputs_ref=f"ipfs://bench-write-out-{n}",
                metrics={"latency_ms": 200 + (n * 37) % 4800},
                payment_request_id=f"payreq-write-{n}",
                amount_atomic=250_000,
            )
        )
        created.append(receipt)

    with environment({"POU_COMMITTEE_MIN_STAKE": str(SIGNER_STAKE)}):
        create_times = time_calls(create, timed_receipts, warmup=WARMUP)
    signer_dids = set(keys)
    committees_ok = all(
        len(r.committee) == M and set(r.committee) <= signer_dids - {r.client_did} for r in created
    )

    calls: list[tuple[Any, str, AttestationIn]] = []
    for receipt in created:
        for did, type_ in [(receipt.client_did, "ACCEPTED")] + [
            (member, "AUDIT_PASS") for member in receipt.committee
        ]:
            if did not in keys:
                continue  # not a committee of signers: reported by the check
            score, confidence = 0.9, 0.95
            payload = attestation_payload(str(receipt.id), did, type_, score, confidence, None)
            body = AttestationIn(
                type=type_, score=score, confidence=confidence, signature=sign(keys[did], payload)
            )
            calls.append((receipt.id, did, body))
    queue = iter(calls)

    def attest(i: int) -> None:
        task_id, did, body = next(queue)
        service.attest(task_id, did, body)

    attest_times = time_calls(attest, min(attests, len(calls) - WARMUP), warmup=WARMUP)
    after = int(_scalar(conn, "SELECT count(*) FROM task_attestations"))
    signed = int(
        _scalar(
            conn,
            "SELECT count(*) FROM task_attestations a JOIN task_receipts r ON r.id = a.task_id "
            "WHERE r.negotiation_id LIKE 'bench-write-%%' AND a.signature IS NOT NULL",
        )
    )
    return Writes(
        signers=len(signers),
        receipts=len(created),
        create_receipt=Summary.of(create_times),
        attest=Summary.of(attest_times),
        attestations_before=before,
        attestations_after=after,
        committees_of_signers=committees_ok,
        signed=signed,
    )


# -- the suite ------------------------------------------------------------------------------------


@dataclass
class Steady:
    """A minute's work on top of history: a fresh batch of quorate receipts pending while
    every receipt of a drained set stays in the tables, finalized."""

    pending: int
    history: int  # finalized receipts in the table
    history_attestations: int
    runs: list[Drain]
    plan: QuorumPlan
    interrupted: Drain  # 2 x batch pending, one receipt of the first batch row-locked
    finalized_before: bool  # the STEADY_RUNS runs left nothing pending

    @property
    def run_seconds(self) -> Summary:
        return Summary.of([d.seconds for d in self.runs])

    @property
    def statement(self) -> Summary:
        return Summary.of([b.finalize_seconds for d in self.runs for b in d.full_batches()])


def steady_state(conn: Conn, agents: int, history: int, size: int) -> Steady:
    """STEADY_RUNS times: load a batch of quorate receipts (newer than the history) and let
    one run_finalizer() finalize them; the plan of its statement is taken before the first.
    Then the same with an attestation in flight (in_flight)."""
    runs: list[Drain] = []
    plan: QuorumPlan | None = None
    attestations = int(_scalar(conn, "SELECT count(*) FROM task_attestations"))
    for i in range(STEADY_RUNS):
        load_receipts(conn, f"steady{i}", size, agents, per_receipt=K)
        if plan is None:
            plan = quorum_plan(conn, size)
        runs.append(run_finalizers(f"steady {i}", size, size))
    assert plan is not None
    finalized_before = _pending(conn) == 0
    interrupted = in_flight(conn, agents, size)
    return Steady(
        pending=size,
        history=history,
        history_attestations=attestations,
        runs=runs,
        plan=plan,
        interrupted=interrupted,
        finalized_before=finalized_before,
    )


def in_flight(conn: Conn, agents: int, size: int) -> Drain:
    """Two batches of quorate receipts pending, and one attestation to a receipt of the oldest
    batch under way: `service.attest` held right after its insert, its transaction open (and
    whatever locks it took), while one run_finalizer() goes through them. Then released."""
    from tally.db.connection import close_connection
    from tally.pou import service
    from tally.pou.models import AttestationIn
    from tally.pou.repository import PouRepository

    load_receipts(conn, "inflight", 2 * size, agents, per_receipt=K)
    target = conn.execute(
        "SELECT id, client_did FROM task_receipts WHERE status = 'pending' "
        "ORDER BY created_at, id LIMIT 1 OFFSET %s",
        (size // 2,),
    ).fetchone()
    assert target is not None
    inserted, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    original = PouRepository.add_attestation

    def held(self: PouRepository, *args: Any, **kwargs: Any) -> Any:
        row = original(self, *args, **kwargs)
        if threading.current_thread().name == "attester":
            inserted.set()
            release.wait(timeout=300)
        return row

    def attester() -> None:
        try:
            body = AttestationIn(type="SAFETY_PASS", score=0.9, confidence=0.9)
            service.attest(target["id"], target["client_did"], body)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            inserted.set()
        finally:
            close_connection()

    thread = threading.Thread(target=attester, name="attester")
    PouRepository.add_attestation = held  # type: ignore[method-assign]
    try:
        # The loaded agents have no key: this one attestation goes unsigned.
        with environment({"POU_REQUIRE_SIGNATURES": "false"}):
            thread.start()
            inserted.wait(timeout=60)
            if errors:
                raise errors[0]
            drain = run_finalizers("attestation in flight", 2 * size, size)
            drain.left_pending = _pending(conn)
    finally:
        release.set()
        thread.join()
        PouRepository.add_attestation = original  # type: ignore[method-assign]
    if errors:
        raise errors[0]
    run_finalizers("after the attestation", drain.left_pending, size)  # the set ends drained
    return drain


@dataclass
class Rounds:
    """Two run_finalizer() at once, again and again, as overlapping scheduled invocations
    would be a minute apart, until the backlog is empty (or MAX_EXTRA_ROUNDS more)."""

    rounds: list[Drain]
    left_pending: int

    @property
    def finalized(self) -> int:
        return sum(r.finalized for r in self.rounds)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.rounds)


def concurrent_rounds(conn: Conn, first: Drain, size: int) -> Rounds:
    rounds = [first]
    pending = first.left_pending
    limit = -(-first.receipts // size) + MAX_EXTRA_ROUNDS
    while pending and len(rounds) < limit:
        drain = run_finalizers(f"two at once, round {len(rounds) + 1}", pending, size, 2)
        pending = drain.left_pending = _pending(conn)
        rounds.append(drain)
        if len(rounds) % 10 == 0:
            log(f"pou: round {len(rounds)}, {pending:,} left pending")
    return Rounds(rounds=rounds, left_pending=pending)


@dataclass
class PouReport:
    agents: int
    receipts: int
    agents_seconds: float
    loads: list[Load]
    drains: list[Drain]  # default batch, large batch
    steady: Steady
    idle: Idle
    behind: Drain  # quorate receipts newer than the set without quorum
    concurrent: Drain  # the first round
    rounds: Rounds
    plan: QuorumPlan
    writes: Writes
    default_batch: int
    large_batch: int
    points_per_task: int
    sizes: dict[str, int]
    checks: dict[str, bool]


def _pending(conn: Conn) -> int:
    return int(_scalar(conn, "SELECT count(*) FROM task_receipts WHERE status = 'pending'"))


def run(url: str, *, agents: int, receipts: int, attests: int) -> PouReport:
    from tally.settings import get_settings

    if agents < 2 + M + 1:
        raise SystemExit(f"--agents must be at least {2 + M + 1}: an agent, a client, {M} more")
    checks: dict[str, bool] = {}
    loads: list[Load] = []
    drains: list[Drain] = []
    with environment(BENCH_ENV), connect(url) as conn:
        settings = get_settings()
        default_batch = settings.pou_finalizer_batch
        large_batch = max(LARGE_BATCH, default_batch)
        log(f"pou: {agents:,} agents")
        agents_seconds = load_agents(conn, agents)

        for size in (default_batch, large_batch):
            if loads:
                reset(conn)
            log(f"pou: loading {receipts:,} finalizable receipts")
            loads.append(load_receipts(conn, f"drain{size}", receipts, agents, per_receipt=K))
            log(f"pou: loaded in {loads[-1].seconds:.1f}s; run_finalizer(), batch {size}")
            drain = run_finalizers(f"batch {size}", receipts, size)
            drain.left_pending = _pending(conn)
            drains.append(drain)
            log(
                f"pou: finalized {drain.finalized:,} in {drain.seconds:.1f}s = "
                f"{drain.rate:,.0f}/s, {drain.batches} batches"
            )
            checks[f"batch {size:,}: one run finalized every receipt"] = (
                drain.finalized == receipts and drain.left_pending == 0
            )
            if size == default_batch:
                log(f"pou: steady state, {size:,} new receipts on the finalized set")
                steady = steady_state(conn, agents, receipts, size)
                checks["steady state: each run finalized its batch"] = (
                    all(d.finalized == size for d in steady.runs) and steady.finalized_before
                )
                log(
                    f"pou: steady run p50 {steady.run_seconds.p50:,.0f} ms; with an "
                    f"attestation in flight one run finalized {steady.interrupted.finalized:,} "
                    f"of {2 * size:,} and left {steady.interrupted.left_pending:,} pending"
                )

        reset(conn)
        log(f"pou: loading {receipts:,} receipts without quorum ({K - 1} attestations each)")
        loads.append(load_receipts(conn, "idle", receipts, agents, per_receipt=K - 1))
        idle = idle_runs(receipts, default_batch, IDLE_RUNS)
        log(f"pou: idle run_finalizer() p50 {idle.p50:,.0f} ms")
        plan = quorum_plan(conn, default_batch)
        checks["idle: nothing finalized"] = idle.finalized == 0 and _pending(conn) == receipts
        mixed = max(receipts // BEHIND_SHARE, default_batch)
        log(f"pou: {mixed:,} finalizable receipts behind them; run_finalizer()")
        loads.append(load_receipts(conn, "behind", mixed, agents, per_receipt=K))
        behind = run_finalizers(f"behind {receipts:,} without quorum", mixed, default_batch)
        behind.left_pending = _pending(conn)
        log(f"pou: finalized {behind.finalized:,} in {behind.seconds:.1f}s = {behind.rate:,.0f}/s")
        checks["behind a backlog without quorum: all of the rest finalized, none of it"] = (
            behind.finalized == mixed and behind.left_pending == receipts
        )

        reset(conn)
        log(f"pou: loading {receipts:,} finalizable receipts; two run_finalizer() at once")
        loads.append(load_receipts(conn, "concurrent", receipts, agents, per_receipt=K))
        concurrent = run_finalizers("two at once", receipts, default_batch, threads=2)
        concurrent.left_pending = _pending(conn)
        log(
            f"pou: two finalizers finalized {' + '.join(f'{n:,}' for n in concurrent.per_thread)}"
            f" in {concurrent.seconds:.1f}s, {concurrent.left_pending:,} left pending"
        )
        checks["two at once: finalized together == receipts"] = (
            concurrent.finalized == receipts and concurrent.left_pending == 0
        )
        rounds = concurrent_rounds(conn, concurrent, default_batch)
        log(
            f"pou: {len(rounds.rounds)} rounds of two finalized {rounds.finalized:,} in "
            f"{rounds.seconds:.1f}s, {rounds.left_pending:,} left pending"
        )
        finalized = int(
            _scalar(conn, "SELECT count(*) FROM task_receipts WHERE status = 'finalized'")
        )
        checks["two at once, round after round: every receipt finalized once"] = (
            rounds.finalized == finalized == receipts and rounds.left_pending == 0
        )

        log(f"pou: write paths, {attests:,} signed attestations")
        writes = write_paths(conn, agents, attests)
        checks["writes: every committee made of signers"] = writes.committees_of_signers
        checks["writes: every attestation stored, with its signature"] = (
            writes.attestations_after - writes.attestations_before
            == writes.attest.n + WARMUP
            == writes.signed
        )
        sizes = {
            name: int(_scalar(conn, "SELECT pg_total_relation_size(%s)", (name,)))
            for name in ("task_receipts", "task_attestations")
        }
        points = settings.pou_points_per_task
    for name, ok in checks.items():
        log(f"pou: check {'ok  ' if ok else 'FAIL'} {name}")
    return PouReport(
        agents=agents,
        receipts=receipts,
        agents_seconds=agents_seconds,
        loads=loads,
        drains=drains,
        steady=steady,
        idle=idle,
        behind=behind,
        concurrent=concurrent,
        rounds=rounds,
        plan=plan,
        writes=writes,
        default_batch=default_batch,
        large_batch=large_batch,
        points_per_task=points,
        sizes=sizes,
        checks=checks,
    )
