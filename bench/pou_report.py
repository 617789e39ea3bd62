"""The proof-of-usefulness section of docs/performance.md, between the bench:pou markers."""

from __future__ import annotations

from pathlib import Path

from bench.pou import (
    BENCH_ENV,
    IDLE_RUNS,
    LOADED_STAKE,
    SIGNER_STAKE,
    STEADY_RUNS,
    Drain,
    K,
    M,
    PouReport,
    QuorumPlan,
)
from bench.report import (
    SuiteRunInfo,
    _bullet,
    _duration,
    _ms,
    _para,
    machine_rows,
    write_block,
)
from bench.report import seconds_text as _s
from bench.stats import Summary

START = "<!-- bench:pou:start -->"
END = "<!-- bench:pou:end -->"
# The deployed job: rate(1 minute), 60 s timeout, stops a batch loop 10 s before it
# (JOB_SAFETY_MARGIN_MS); statements time out after DB_STATEMENT_TIMEOUT_MS.
SCHEDULE_S = 60


def write(path: Path, block: str) -> None:
    write_block(path, block, START, END)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def _ok(ok: bool) -> str:
    return "ok" if ok else "**FAILED**"


def _run_table(info: SuiteRunInfo, rep: PouReport) -> str:
    quick = " (`--quick`: smoke-test sizes, not representative)" if info.quick else ""
    env = ", ".join(f"{k} {v}" for k, v in BENCH_ENV.items())
    return "\n".join(
        [
            *machine_rows(info),
            f"| Sizes | {rep.agents:,} agents; {rep.receipts:,} pending receipts per set "
            f"(k={K}, m={M}) with {K * rep.receipts:,} attestations, or "
            f"{(K - 1) * rep.receipts:,} for the set without quorum; "
            f"{rep.writes.attest.n:,} signed attestations on the write path{quick} |",
            f"| Tally settings | POU_FINALIZER_BATCH {rep.default_batch:,} (default) and "
            f"{rep.large_batch:,}; POU_POINTS_PER_TASK {rep.points_per_task} (default: no ledger "
            f"entry); {env} |",
            f"| Bench run time | {_duration(info.bench_seconds)} |",
            f"| Load before the run | {info.load_at_start[0]:.2f} / {info.load_at_start[1]:.2f} / "
            f"{info.load_at_start[2]:.2f} (1/5/15-minute `os.getloadavg()`; PostgreSQL and the "
            "bench share the same cores) |",
        ]
    )


def _dataset(rep: PouReport) -> str:
    lines = [
        f"{rep.agents:,} agents (`did:web:bench-agent-NNNNNN`), each with a default reputation "
        f"row and {LOADED_STAKE} atomic units locked, in {_s(rep.agents_seconds)} s.",
    ]
    for load in rep.loads:
        lines.append(
            f"Set `{load.label}`: {load.receipts:,} receipts and {load.attestations:,} "
            f"attestations ({load.per_receipt} qualifying each) in {load.statements} "
            f"statement{'' if load.statements == 1 else 's'}, {_s(load.seconds)} s "
            f"({load.receipts / load.seconds:,.0f} receipts/s), then `VACUUM (ANALYZE)` "
            f"{_s(load.vacuum_seconds)} s."
        )
    lines.append(
        "On disk at the end: "
        + ", ".join(f"`{name}` {_mb(size)}" for name, size in rep.sizes.items())
        + "."
    )
    return "\n".join(_bullet(line) for line in lines)


def _drain_row(name: str, d: Drain) -> str:
    first, last = d.first_last()
    return (
        f"| {name} | {d.receipts:,} | {d.batch_size:,} | {d.batches} | **{_s(d.seconds)}** | "
        f"**{d.rate:,.0f}** | {_ms(d.per_batch.p50)} | {_ms(d.per_batch.p95)} | "
        f"{_ms(d.statement.p50)} | {_ms(d.reputation.p50)} | "
        f"{_ms(first.finalize_seconds * 1000) if first else '-'} | "
        f"{_ms(last.finalize_seconds * 1000) if last else '-'} |"
    )


def _merged(rep: PouReport) -> Drain:
    """Every round of two finalizers at once as one run: their sums, their batches."""
    rounds = rep.rounds.rounds
    return Drain(
        label="rounds",
        batch_size=rounds[0].batch_size,
        receipts=rounds[0].receipts,
        threads=2,
        seconds=rep.rounds.seconds,
        finalized=rep.rounds.finalized,
        batches=sum(r.batches for r in rounds),
        timed=[b for r in rounds for b in r.timed],
    )


def _drain_table(rep: PouReport) -> str:
    c = rep.concurrent
    split = " + ".join(f"{n:,}" for n in c.per_thread)
    left = f", {c.left_pending:,} left pending" if c.left_pending else ""
    rounds = len(rep.rounds.rounds)
    return "\n".join(
        [
            "| Run | Receipts | Batch | Batches | Wall s | Receipts/s | Per batch p50 ms | p95 ms "
            "| batch statement p50 ms | reputation p50 ms | statement, first batch ms | "
            "last batch ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *[_drain_row(f"One `run_finalizer()`, batch {d.batch_size:,}", d) for d in rep.drains],
            _drain_row(
                f"One `run_finalizer()`, behind {rep.idle.receipts:,} older receipts without "
                "quorum",
                rep.behind,
            ),
            _drain_row(f"Two `run_finalizer()` at once (finalized {split}{left})", c),
        ]
        + (
            [
                _drain_row(
                    f"Two at once, again until none is pending ({rounds} rounds, wall time summed)",
                    _merged(rep),
                )
            ]
            if rounds > 1
            else []
        )
    )


def _idle_table(rep: PouReport) -> str:
    idle, steady = rep.idle, rep.steady
    runs = Summary.of(idle.runs)
    st = steady.run_seconds
    return "\n".join(
        [
            "| Run | Pending | Finalized in the tables | Runs | p50 ms | max ms | "
            "batch statement p50 ms | attestations it reads | share of each minute |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| Idle: nothing has quorum, nothing finalized | {idle.receipts:,} | 0 | {runs.n} | "
            f"**{_ms(runs.p50)}** | {_ms(runs.max)} | {_ms(idle.statement.p50)} | "
            f"{rep.plan.attestations_read:,} | {runs.p50 / 1000 / SCHEDULE_S:.1%} |",
            f"| Steady: one batch with quorum, on a drained set | {steady.pending:,} | "
            f"{steady.history:,} | {st.n} | **{_ms(st.p50)}** | {_ms(st.max)} | "
            f"{_ms(steady.statement.p50)} | {steady.plan.attestations_read:,} | "
            f"{st.p50 / 1000 / SCHEDULE_S:.1%} |",
        ]
    )


def _checks(rep: PouReport) -> str:
    return "\n".join(
        ["| Check | Result |", "|---|---|"]
        + [f"| {name} | {_ok(ok)} |" for name, ok in rep.checks.items()]
    )


def _writes_table(rep: PouReport) -> str:
    w = rep.writes
    rows = [
        (
            f"`create_receipt` (committee of {M} chosen among {rep.agents + w.signers:,} agents)",
            w.create_receipt,
        ),
        ("`attest` (signed; rate limit, checks, Ed25519 verify, insert)", w.attest),
    ]
    return "\n".join(
        ["| Call | n | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
        + [
            f"| {name} | {s.n:,} | **{_ms(s.p50)}** | {_ms(s.p95)} | {_ms(s.p99)} | {_ms(s.max)} |"
            for name, s in rows
        ]
    )


def _plan_facts(p: QuorumPlan) -> str:
    temp = (
        f", {p.temp_blocks * 8 / 1024:,.0f} MB written to temporary files" if p.temp_blocks else ""
    )
    return (
        f"{_ms(p.execution_ms)} ms, {p.buffers:,} buffers{temp}; it read "
        f"{p.receipts_read:,} receipt rows and {p.attestations_read:,} attestation rows ("
        + "; ".join(p.access.split("; "))
        + ")"
    )


def _plan(info: SuiteRunInfo, rep: PouReport) -> str:
    p, sp = rep.plan, rep.steady.plan
    return "\n\n".join(
        [
            _para(
                f"`FINALIZE_BATCH` as `PouRepository.finalize({rep.default_batch})` sends it, "
                "`EXPLAIN (ANALYZE, BUFFERS, TIMING OFF)` in a transaction rolled back, with "
                f"work_mem {info.postgres.get('work_mem', '?')}. Over the {p.pending:,} pending "
                f"receipts without quorum (the idle row), finding that none has quorum: "
                f"{_plan_facts(p)}."
            ),
            "```text\n" + p.text + "\n```",
            _para(
                f"The same statement with {sp.pending:,} quorate receipts pending and "
                f"{sp.finalized:,} finalized ones in the tables (the steady row): "
                f"{_plan_facts(sp)}."
            ),
        ]
    )


# -- analysis -------------------------------------------------------------------------------------


def _drain_analysis(rep: PouReport) -> str:
    small, large = rep.drains[0], rep.drains[-1]
    first, last = small.first_last()
    text = f"""**Draining.** One `run_finalizer()` finalized {small.finalized:,} receipts in
        {_s(small.seconds)} s ({small.rate:,.0f}/s) at batch {small.batch_size:,}, and in
        {_s(large.seconds)} s ({large.rate:,.0f}/s) at batch {large.batch_size:,}. A batch is
        one transaction: the batch statement ({_ms(small.statement.p50)} ms at the median),
        the agents' reputation rows locked and updated ({_ms(small.reputation.p50)} ms), the
        commit and a log line per receipt."""
    if first and last and first is not last:
        f_ms, l_ms = first.finalize_seconds * 1000, last.finalize_seconds * 1000
        text += f""" The statement took {_ms(f_ms)} ms for the first batch
            ({small.receipts:,} pending) and {_ms(l_ms)} ms for the last full one
            ({small.pending_before_last():,} pending, the others finalized but still in the
            tables)"""
        if f_ms > 2 * l_ms:
            text += """: each batch pays for the backlog behind it, so a drain costs more than
                linearly in the backlog, and a larger batch saves passes."""
        else:
            text += """: a batch costs about the same whatever the backlog behind it."""
    if large.rate < 1.2 * small.rate:
        text += f""" A batch of {large.batch_size:,} barely changes the rate: the work is per
            receipt, not per batch."""
    budget = SCHEDULE_S - 10
    text += f""" As deployed (`rate(1 minute)`, 60 s timeout, the loop stops 10 s before it)
        one run has about {budget} s, room for about {_round(small.rate * budget)} receipts at
        the default batch's rate, if it held on a larger backlog."""
    return text


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _round(n: float) -> str:
    """Two significant figures: an extrapolation, not a measurement."""
    return f"{float(f'{n:.2g}'):,.0f}"


def _steady_analysis(rep: PouReport) -> str:
    st = rep.steady
    p = st.plan
    if p.attestations_read <= 10 * K * st.pending:
        return f"""**Steady state.** A run finalizing {st.pending:,} new receipts on top of
            {st.history:,} finalized ones took {_ms(st.run_seconds.p50)} ms at the median
            ({_ms(st.statement.p50)} ms of it the batch statement, which read
            {p.attestations_read:,} attestation rows): the finalized history does not weigh on
            it."""
    return f"""**History costs every run.** With only {st.pending:,} receipts pending on top
        of {st.history:,} finalized ones, a run took {_ms(st.run_seconds.p50)} ms at the
        median, {_ms(st.statement.p50)} ms of it the batch statement, which read
        {p.attestations_read:,} attestation rows for the {K * st.pending:,} that belong to
        pending receipts. `task_attestations` only grows, so the cost of each run grows with
        everything ever attested, not with the work to do."""


def _idle_analysis(rep: PouReport) -> str:
    idle, behind, clean = rep.idle, rep.behind, rep.drains[0]
    p50 = Summary.of(idle.runs).p50
    text = f"""**Receipts without quorum cost every run.** With {idle.receipts:,} pending
        receipts of which none has quorum, a run that finalizes nothing takes {_ms(p50)} ms at
        the median ({_ms(idle.statement.p50)} ms of it the batch statement, which read
        {rep.plan.receipts_read:,} receipts and {rep.plan.attestations_read:,} attestations to
        find that out), every minute. The statement cannot tell a receipt that will never
        reach quorum from one about to: it re-examines all of them each time, so the cost
        grows with the receipts stuck in `pending` (a committee that never audits, a client
        that never accepts)."""
    if behind.finalized and clean.rate:
        text += f""" They also weigh on every batch of real work when they are older:
            {behind.finalized:,} quorate receipts behind them were finalized at
            {behind.rate:,.0f}/s against {clean.rate:,.0f}/s with nothing stuck
            ({clean.rate / behind.rate if behind.rate else 0:.1f}x slower), because each of its
            {_n(len(behind.full_batches()), "batch statement")} examined the
            {idle.receipts:,} stuck receipts again ({_ms(behind.statement.p50)} ms each at the
            median,
            against {_ms(clean.statement.p50)} ms): the cost of a drain is the stuck backlog
            times the number of batches."""
    return text


def _concurrent_analysis(rep: PouReport) -> str:
    c = rep.concurrent
    one = rep.drains[0]
    split = " and ".join(f"{n:,}" for n in c.per_thread)
    batches = " and ".join(str(b) for b in c.per_thread_batches)
    text = f"""**Two finalizers at once** finalized {c.finalized:,} of {c.receipts:,} receipts
        in {_s(c.seconds)} s ({split}, in {batches} batches"""
    if c.left_pending:
        text += f""") and both returned with {c.left_pending:,} still pending: both statements
            chose the same oldest quorate receipts, each locked only the part of them the
            other had not (`SKIP LOCKED`), finalized fewer than POU_FINALIZER_BATCH, and
            `run_finalizer` took that short batch to mean the backlog was empty and returned,
            without `stopped_early`."""
    elif c.per_thread and c.per_thread[-1] * 10 < c.per_thread[0]:
        text += """): one did almost all the work; the other found the receipts it chose
            locked, got a short batch and returned."""
    else:
        text += f"""), {c.rate / one.rate if one.rate else 0:.2f}x the rate of one: they
            split the work."""
    n = len(rep.rounds.rounds)
    if n > 1:
        text += f""" Started together again and again (as overlapping invocations a minute
            apart would be), the two needed {n} rounds to clear the backlog
            ({rep.rounds.finalized:,} finalized, {rep.rounds.left_pending:,} left): on the
            schedule that is {n} minutes for what one run does in {_s(one.seconds)} s."""
    it = rep.steady.interrupted
    text += f""" With {it.receipts:,} quorate receipts pending and one `attest` to one of the
        oldest under way (held after its insert, before its commit), one run finalized
        {it.finalized:,} of them and left {it.left_pending:,} pending"""
    if it.left_pending > 1:
        text += """: the receipt was locked, so its batch came back short, and the run took
            that for the end of the backlog."""
    elif it.left_pending == 1:
        text += """: only that receipt, which the next run finalizes."""
    else:
        text += "."
    return text + " No receipt was finalized twice."


def _writes_analysis(rep: PouReport) -> str:
    w = rep.writes
    return f"""**Writes.** `attest` takes {_ms(w.attest.p50)} ms at the median
        ({_ms(w.attest.p99)} ms at p99) with {w.attestations_before:,} attestations already in
        the table: two transactions, each ending in a commit that waits for its WAL flush (the
        per-DID rate-limit counter, then the receipt, the attester, the signature check and the
        insert). `create_receipt` takes {_ms(w.create_receipt.p50)} ms: its committee is the
        {M} most trusted eligible agents, found by computing the trust of every active agent
        and ranking them, so it grows with the number of agents ({rep.agents + w.signers:,}
        here). For these figures only the {w.signers} signing agents (did:key, registered and
        staked through the service) had the {SIGNER_STAKE:,} units locked that
        POU_COMMITTEE_MIN_STAKE was raised to, so every committee was one whose keys the bench
        holds; the other agents were still read."""


def render(info: SuiteRunInfo, rep: PouReport) -> str:
    return "\n\n".join(
        [
            "## Proof of usefulness: how these figures were taken",
            _para(
                f"Generated by `python -m bench --suite pou` on {info.date}; a re-run replaces "
                "everything between the `bench:pou` markers of this file and nothing else. "
                "Options: `--receipts`, `--agents`, `--attests`, `--quick`."
            ),
            _run_table(info, rep),
            "## Proof of usefulness: the data set",
            _para(
                "Agents, receipts and attestations are generated in SQL (`INSERT ... SELECT "
                f"generate_series`). Each receipt names an agent, a client and a committee of "
                f"{M} other agents (a random run of {M} consecutive agents; agent and client "
                "two distinct random agents outside it), status `pending`, a unique "
                "`negotiation_id`, `metrics` with `latency_ms` 200-5000; receipts are created "
                "1 ms apart. Its attestations are the client's ACCEPTED and the AUDIT_PASS of "
                f"two committee members (scores 0.6-1.0), so it has exactly k = {K} distinct "
                "qualifying attesters; the set without quorum stops after the first AUDIT_PASS. "
                "Every measurement gets a freshly loaded set: the receipt tables are truncated "
                "and the agents' reputation reset in between."
            ),
            _dataset(rep),
            "## Proof of usefulness: the finalizer",
            _para(
                "Wall time of `tally.pou.service.run_finalizer()`, the scheduled job's own "
                "code, called once: it counts the backlog, then finalizes batch by batch (one "
                "transaction each) until it finds no more. Per-batch figures are timed around "
                "each of its transactions (commit included) and, inside, around its two "
                "statements (`PouRepository.finalize`, the batch statement, and "
                "`update_reputation`), by wrapping them for the run; the closing batch that "
                "finalizes nothing is left out of the percentiles. Two at once: two threads, "
                "each with its own connection, released together."
            ),
            _drain_table(rep),
            _idle_table(rep),
            _para(
                f"Idle: {IDLE_RUNS} calls over the set without quorum. Steady: right after the "
                f"batch-{rep.default_batch:,} drain, {STEADY_RUNS} times a batch of "
                f"{rep.steady.pending:,} new quorate receipts loaded and one call finalizing it. "
                "Share: of the minute between two scheduled runs. Attestations read: the "
                "statement's scan of `task_attestations` in its plan (below)."
            ),
            _checks(rep),
            "## Proof of usefulness: the batch statement",
            _plan(info, rep),
            "## Proof of usefulness: attestation and receipt writes",
            _para(
                f"{rep.writes.signers} did:key agents are registered (`register_agent`) and "
                f"staked (`lock_stake`); {rep.writes.receipts:,} receipts are created through "
                "`create_receipt` (agent a loaded agent, client a signer) and attested through "
                "`attest`: the client's ACCEPTED and each committee member's AUDIT_PASS, each "
                "with an Ed25519 signature over its canonical JSON (computed before the clock "
                "starts), POU_REQUIRE_SIGNATURES on. The first 10 calls of each kind are not "
                "timed. The table holds the concurrent set's attestations."
            ),
            _writes_table(rep),
            "## Proof of usefulness: what limits these figures",
            *[
                _para(p)
                for p in (
                    _drain_analysis(rep),
                    _steady_analysis(rep),
                    _idle_analysis(rep),
                    _concurrent_analysis(rep),
                    _writes_analysis(rep),
                )
                if p
            ],
        ]
    )
