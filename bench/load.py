"""Load: a bounded, mixed load on every route group of `tally dev` while its jobs run.

1. A fresh database on the bench's server is seeded by `tally seed --users N` (users with
   points, a season, community taps and profiles, the sample proof-of-usefulness cast), and
   the match generator and proposal creator run once, so voters have proposals from the start.
2. `tally dev` serves it as a real subprocess on a free loopback port: every API route on one
   uvicorn app, every schedule firing (award, PoU finalizer and the matchmaking jobs every
   minute).
3. Through the admin API: auditor agents registered and staked, worker agents and clients
   registered. The committee minimum stake is raised to the auditors' stake for the run, so
   every committee is drawn from agents whose keys the bench holds, evenly (see AUDITORS).
4. Worker threads, each with its own keep-alive httpx.Client, loop over a weighted mix of
   reads and writes across the five route groups (ACTIONS) for a fixed window, after a short
   warm-up that is not counted. The window is placed so that the per-minute jobs fire inside it.
5. Every response is classified: 2xx; a non-2xx that a correct client may get (each Kind's
   `legitimate` statuses and problem codes); or an error (a transport error, any 5xx, any
   other 4xx). Job runs come from `tally dev`'s output, the writes that landed from the
   database.

Write limits are respected, not raised: writes are spread over many token subjects (each
member's own token, a service token per worker and kind), and the bench keeps each DID's
attestations under POU_ATTESTATIONS_PER_HOUR.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench.db import Server, connect
from bench.report import write_block
from bench.stats import Summary, log

START = "<!-- bench:load:start -->"
END = "<!-- bench:load:end -->"

GROUPS = ("points", "leaderboards", "community", "matchmaking", "pou")
# Untimed traffic before the window: first imports, caches, connections.
WARMUP_S = 5.0
# Per-minute jobs must fire at least this far inside the window.
TICK_MARGIN_S = 3.0
REQUEST_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
# Tokens are signed once per subject and live longer than any run.
TOKEN_TTL_S = 4 * 3600

# Proof of usefulness: auditors sit on committees (staked), worker agents do the tasks, clients
# accept them. With POU_COMMITTEE_MIN_STAKE at the auditors' stake, only auditors qualify for a
# committee; their reputation never changes (only a receipt's agent gets an EWMA step), so they
# tie on trust and committees spread evenly over them (ties by md5(task_id || did)).
AUDITORS = 24
WORKER_AGENTS = 16
CLIENTS = 40
IDENTITY_SEED = 60_000  # new_identity((IDENTITY_SEED + i).to_bytes(32)): fixed keys
AUDITOR_STAKE = 1_000_000
# Attestations the bench lets one DID make; the server refuses the 101st in an hour.
ATTEST_BUDGET = 90

SERVER_ENV = {
    "TALLY_AUTH_MODE": "local",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "TAP_MAX_AGE_DAYS": "3650",
    "POU_COMMITTEE_MIN_STAKE": str(AUDITOR_STAKE),
}

# `tally seed` only. At 100k users `seed_community` inserts 1.2M taps in one statement, which
# outlasts the default 30 s statement timeout (the user seed lifts it for its own transaction,
# the community step does not), so the seed would fail; and its log is a file, with the ETL's
# stage timings at INFO.
SEED_ENV = {"DB_STATEMENT_TIMEOUT_MS": "0", "POWERTOOLS_LOG_LEVEL": "INFO"}

INTERESTS = [
    "birdsong", "hiking", "field recording", "moths", "rivers", "owls", "frogs", "bats",
    "mosses", "tide pools", "bees", "lichens", "night walks", "whales", "forests", "dunes",
]  # fmt: skip
ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "America/Los_Angeles"]
PLACES = ["Brooklyn, New York, USA", "Berlin, Germany", "Pune, Maharashtra, India"]
SUBJECTS = ["bird song", "ocean waves", "violin", "frog chorus", "train station", "bee hive"]
INTENTS = ["summarize", "translate", "classify", "transcribe"]
# The radar's window is a request parameter (1 to 168 hours): each is its own row.
RADAR_HOURS = (1, 24, 168)
# Each read, sent alone after the window (no other request in flight): its own cost.
ALONE_CALLS = 3
# A request this slow at p95 under load, or taking this share of the workers' time, is a
# "slow read" of the report.
SLOW_P95_MS = 500.0
HEAVY_SHARE = 0.10
# A deployed API function's timeout (template.yaml), in ms.
GATEWAY_TIMEOUT_MS = 29_000.0


@dataclass(frozen=True)
class Kind:
    """One kind of request, and the non-2xx answers a correct client may get to it."""

    group: str
    write: bool
    legitimate: frozenset[tuple[int, str]] = frozenset()


# (status, problem code) a well-behaved client can get, and why (for the report).
LEGITIMATE_WHY = {
    (404, "no_matches_available"): "no proposal is open for this voter and none can be opened "
    "now (the queue is empty until the generator refills it)",
    (409, "voting_closed"): "the proposal reached its threshold (or expired) between the "
    "voter's `next` and the vote",
    (409, "RECEIPT_NOT_PENDING"): "the finalizer finalized the receipt once its quorum was in, "
    "before this further attestation",
    (409, "QUORUM_NOT_MET"): "finalize asked before the quorum was in",
}

KINDS: dict[str, Kind] = {
    "GET /api/leaderboard": Kind("points", False),
    "GET /api/users/{wallet}": Kind("points", False),
    "GET /api/me": Kind("points", False),
    "POST /api/verifications": Kind("points", True),
    "GET /api/v1/leaderboard/seasons": Kind("leaderboards", False),
    "GET /api/v1/leaderboard/season/{season}": Kind("leaderboards", False),
    "GET /api/v1/leaderboard/season/{season}/around/{user_id}": Kind("leaderboards", False),
    "GET /api/v1/leaderboard/user/{user_id}/stats": Kind("leaderboards", False),
    "POST /api/community/taps": Kind("community", True),
    "PUT /api/profiles/{address}": Kind("community", True),
    "GET /api/community/weekly": Kind("community", False),
    "GET /api/community/quests": Kind("community", False),
    **{f"GET /api/community/radar?hours={h}": Kind("community", False) for h in RADAR_HOURS},
    "GET /api/community/health": Kind("community", False),
    "GET /api/matches/next": Kind("matchmaking", False, frozenset({(404, "no_matches_available")})),
    "POST /api/proposals/{id}/votes": Kind(
        "matchmaking", True, frozenset({(409, "voting_closed")})
    ),
    "GET /api/conversations": Kind("matchmaking", False),
    "GET /api/system/health": Kind("matchmaking", False),
    "POST /api/receipts": Kind("pou", True),
    "POST /api/receipts/{id}/attestations": Kind(
        "pou", True, frozenset({(409, "RECEIPT_NOT_PENDING")})
    ),
    "POST /api/receipts/{id}/finalize": Kind("pou", True, frozenset({(409, "QUORUM_NOT_MET")})),
    "GET /api/receipts/{id}": Kind("pou", False),
    "GET /api/receipts/{id}/committee": Kind("pou", False),
    "GET /api/reputation/{did}": Kind("pou", False),
    "GET /api/pou/health": Kind("pou", False),
}


# -- identities and tokens -------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    did: str
    key: Any  # Ed25519PrivateKey


def identities(first: int, count: int) -> list[Identity]:
    from tally.pou.identity import new_identity

    out = []
    for n in range(first, first + count):
        key, did = new_identity(n.to_bytes(32, "big"))
        out.append(Identity(did, key))
    return out


class Tokens:
    """HS256 bearer tokens as the local runtime checks them, signed once per subject."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self._cache: dict[tuple[str, str], str] = {}

    def get(self, subject: str, *roles: str) -> str:
        scope = " ".join(f"tally/{r}" for r in roles)
        cached = self._cache.get((subject, scope))
        if cached is None:
            now = int(time.time())
            claims = {
                "sub": subject,
                "iss": "tally-local",
                "aud": "tally",
                "iat": now,
                "exp": now + TOKEN_TTL_S,
                "scope": scope,
            }
            cached = jwt.encode(claims, self.secret, algorithm="HS256")
            self._cache[(subject, scope)] = cached
        return cached


class AttestBudget:
    """Attestations each DID may still make in this run (shared by the workers)."""

    def __init__(self, dids: list[str]) -> None:
        self._left = dict.fromkeys(dids, ATTEST_BUDGET)
        self._lock = threading.Lock()
        self.exhausted = 0  # attesters wanted but out of budget

    def take(self, candidates: list[str], count: int, rng: random.Random) -> list[str]:
        with self._lock:
            usable = [d for d in candidates if self._left.get(d, 0) > 0]
            rng.shuffle(usable)
            # Spend the fullest budgets first, so they run out as late as possible.
            usable.sort(key=lambda d: -self._left[d])
            chosen = usable[:count]
            for did in chosen:
                self._left[did] -= 1
            self.exhausted += count - len(chosen)
            return chosen


# -- the run's plan and what every request gave ----------------------------------------------


@dataclass
class Plan:
    """What the workers share: where to send, who to be, and when to count."""

    base_url: str
    tokens: Tokens
    wallets: list[str]
    season: str
    auditors: list[Identity]
    agents: list[Identity]
    clients: list[Identity]
    budget: AttestBudget
    sample_task: str
    warmup_start: float
    window_start: float
    window_end: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def did_key(self, did: str) -> Any:
        for ident in (*self.auditors, *self.agents, *self.clients):
            if ident.did == did:
                return ident.key
        raise KeyError(did)


@dataclass(frozen=True)
class Sample:
    kind: str
    started: float  # time.time()
    seconds: float
    status: int  # 0: no response (transport error)
    outcome: str  # "ok", "legitimate" or "error"
    code: str  # the problem's code for a non-2xx, else ""


@dataclass
class Flow:
    """One receipt on its way: the attestations and the finalize still to send."""

    task_id: str
    steps: deque[tuple[str, str]]  # (step, did): accept, audit_own, audit_signed, finalize


class Worker(threading.Thread):
    def __init__(self, index: int, plan: Plan, workers: int) -> None:
        super().__init__(name=f"load-{index}", daemon=True)
        self.index = index
        self.plan = plan
        self.rng = random.Random(f"{plan.run_id}:{index}")
        # Voters are this worker's own, so no two workers act for one member at once.
        self.voters = plan.wallets[index::workers]
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.crash: BaseException | None = None
        self.pending_vote: tuple[str, str] | None = None  # (voter, proposal id)
        self.conversation_members: deque[str] = deque(maxlen=50)
        self.receipts: deque[str] = deque(maxlen=50)
        self.flow: Flow | None = None
        self.counter = 0
        self.cold_top = 10  # the radar's default `top`; the load never sends another
        self.client: httpx.Client | None = None

    # -- plumbing --

    def run(self) -> None:
        actions, weights = zip(*ACTIONS, strict=True)
        try:
            with httpx.Client(base_url=self.plan.base_url, timeout=REQUEST_TIMEOUT_S) as client:
                self.client = client
                while time.time() < self.plan.window_end:
                    self.rng.choices(actions, weights)[0](self)
        except BaseException as exc:  # reported: a crashed worker must not pass silently
            self.crash = exc

    def call(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response | None:
        assert self.client is not None
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        started = time.time()
        clock = time.perf_counter()
        response: httpx.Response | None
        detail = ""
        try:
            response = self.client.request(method, url, headers=sent, json=body, params=params)
            status = response.status_code
        except httpx.HTTPError as exc:
            response, status = None, 0
            detail = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - clock
        code = ""
        if response is not None and not 200 <= status < 300:
            code = _problem_code(response)
            detail = response.text[:300]
        if 200 <= status < 300:
            outcome = "ok"
        elif (status, code) in KINDS[kind].legitimate:
            outcome = "legitimate"
        else:
            outcome = "error"
        if self.plan.window_start <= started < self.plan.window_end:
            self.samples.append(Sample(kind, started, seconds, status, outcome, code))
            if outcome == "error" and len(self.errors) < 20:
                self.errors.append(f"{method} {url} -> {status or 'no response'}: {detail}")
        return response if outcome == "ok" else None

    def wallet(self) -> str:
        return self.rng.choice(self.plan.wallets)

    def user(self, subject: str) -> str:
        return self.plan.tokens.get(subject, "user")

    def service(self, role: str) -> str:
        return self.plan.tokens.get(f"load-{role}-{self.index}", "service")

    def next_id(self) -> str:
        self.counter += 1
        return f"{self.plan.run_id}-{self.index}-{self.counter}"

    def recent_receipt(self) -> str:
        return self.rng.choice(self.receipts) if self.receipts else self.plan.sample_task

    # -- points --

    def leaderboard(self) -> None:
        limit = self.rng.choice((10, 50, 100))
        self.call("GET /api/leaderboard", "GET", "/api/leaderboard", params={"limit": limit})

    def user_profile(self) -> None:
        self.call("GET /api/users/{wallet}", "GET", f"/api/users/{self.wallet()}")

    def me(self) -> None:
        self.call("GET /api/me", "GET", "/api/me", token=self.user(self.wallet()))

    def verification(self) -> None:
        subject = self.rng.choice(SUBJECTS)
        body = {
            "sessionId": str(uuid.uuid4()),
            "status": "completed",
            "metadata": {
                "walletAddress": self.wallet(),
                "title": f"{subject} set",
                "sampleCount": self.rng.choice((5, 20, 120)),
            },
            "results": {
                "approved": True,
                "rarityScore": self.rng.randint(20, 100),
                "qualityScore": round(self.rng.uniform(0.4, 1.0), 3),
                "subject": subject,
                "specificityGrade": self.rng.choice("ABC"),
                "verifiedClaims": self.rng.random() < 0.3,
                "contentHash": uuid.uuid4().hex,
            },
        }
        self.call(
            "POST /api/verifications",
            "POST",
            "/api/verifications",
            token=self.service("verifier"),
            body=body,
        )

    # -- leaderboards --

    def seasons(self) -> None:
        self.call("GET /api/v1/leaderboard/seasons", "GET", "/api/v1/leaderboard/seasons")

    def season_board(self) -> None:
        self.call(
            "GET /api/v1/leaderboard/season/{season}",
            "GET",
            f"/api/v1/leaderboard/season/{self.plan.season}",
            params={"limit": self.rng.choice((10, 50, 100))},
        )

    def around(self) -> None:
        self.call(
            "GET /api/v1/leaderboard/season/{season}/around/{user_id}",
            "GET",
            f"/api/v1/leaderboard/season/{self.plan.season}/around/{self.wallet()}",
        )

    def stats(self) -> None:
        params = {"season": self.plan.season} if self.rng.random() < 0.5 else None
        self.call(
            "GET /api/v1/leaderboard/user/{user_id}/stats",
            "GET",
            f"/api/v1/leaderboard/user/{self.wallet()}/stats",
            params=params,
        )

    # -- community --

    def taps(self) -> None:
        now = time.time()
        taps = []
        for j in range(self.rng.randint(5, 20)):
            a, b = self.rng.sample(self.plan.wallets, 2)
            at = datetime.fromtimestamp(now - self.rng.uniform(0, 3600), UTC)
            taps.append(
                {
                    "client_tap_id": f"load-{self.next_id()}-{j}",
                    "id1": a,
                    "id2": b,
                    "time": at.isoformat().replace("+00:00", "Z"),
                }
            )
        self.call(
            "POST /api/community/taps",
            "POST",
            "/api/community/taps",
            token=self.service("taps"),
            body={"taps": taps},
        )

    def put_profile(self) -> None:
        member = self.rng.choice(self.voters)
        body = {
            "display_name": f"Member {member[-6:]}",
            "location": self.rng.choice(PLACES),
            "timezone": self.rng.choice(ZONES),
            "attributes": {"interests": self.rng.sample(INTERESTS, 3)},
            "opt_in": True,
        }
        self.call(
            "PUT /api/profiles/{address}",
            "PUT",
            f"/api/profiles/{member}",
            token=self.user(member),
            body=body,
        )

    def _community_get(self, name: str, params: dict[str, Any], kind: str = "") -> None:
        if self.rng.random() < 0.5:
            params["tz"] = self.rng.choice(ZONES)
        self.call(
            kind or f"GET /api/community/{name}",
            "GET",
            f"/api/community/{name}",
            token=self.user(self.wallet()),
            params=params,
        )

    def weekly(self) -> None:
        self._community_get("weekly", {})

    def quests(self) -> None:
        self._community_get("quests", {})

    def radar(self, hours: int | None = None, top: int | None = None) -> None:
        hours = hours or self.rng.choice(RADAR_HOURS)
        params: dict[str, Any] = {"hours": hours}
        if top is not None:
            params["top"] = top
        self._community_get("radar", params, f"GET /api/community/radar?hours={hours}")

    def radar_uncached(self, hours: int) -> None:
        """A radar window nobody asked for yet (another `top`): computed, not cached."""
        self.cold_top += 1
        self.radar(hours, self.cold_top)

    def community_health(self) -> None:
        self._community_get("health", {})

    # -- matchmaking --

    def next_match(self) -> None:
        voter = self.rng.choice(self.voters)
        response = self.call(
            "GET /api/matches/next", "GET", "/api/matches/next", token=self.user(voter)
        )
        if response is not None:
            self.pending_vote = (voter, response.json()["proposal"]["id"])

    def vote(self) -> None:
        if self.pending_vote is None:
            self.next_match()
            return
        voter, proposal = self.pending_vote
        self.pending_vote = None
        response = self.call(
            "POST /api/proposals/{id}/votes",
            "POST",
            f"/api/proposals/{proposal}/votes",
            token=self.user(voter),
            body={"vote": self.rng.choice(("yes", "no"))},
        )
        if response is not None and response.json().get("conversation_id"):
            closed = response.json()["proposal"]
            self.conversation_members.extend([closed["user_a_address"], closed["user_b_address"]])

    def conversations(self) -> None:
        if self.conversation_members and self.rng.random() < 0.5:
            member = self.rng.choice(self.conversation_members)
        else:
            member = self.rng.choice(self.voters)
        self.call("GET /api/conversations", "GET", "/api/conversations", token=self.user(member))

    def system_health(self) -> None:
        self.call("GET /api/system/health", "GET", "/api/system/health")

    # -- proof of usefulness --

    def pou_write(self) -> None:
        """The next step of this worker's receipt, or a new receipt."""
        if self.flow is None or not self.flow.steps:
            self.new_receipt()
            return
        step, did = self.flow.steps.popleft()
        task = self.flow.task_id
        if step == "finalize":
            self.call(
                "POST /api/receipts/{id}/finalize",
                "POST",
                f"/api/receipts/{task}/finalize",
                token=self.user(did),
            )
            return
        from tally.pou.identity import attestation_payload, sign

        kind = "ACCEPTED" if step == "accept" else "AUDIT_PASS"
        score = round(self.rng.uniform(0.6, 1.0), 2)
        confidence = round(self.rng.uniform(0.7, 1.0), 2)
        body: dict[str, Any] = {"type": kind, "score": score, "confidence": confidence}
        if step == "audit_signed":
            # A backend naming the auditor: the auditor's signature proves it.
            payload = attestation_payload(task, did, kind, score, confidence, None)
            body["signature"] = sign(self.plan.did_key(did), payload)
            token = self.plan.tokens.get(f"load-broker-{self.index}", "user", "service")
        else:
            token = self.user(did)  # the attester's own token: no signature needed
        self.call(
            "POST /api/receipts/{id}/attestations",
            "POST",
            f"/api/receipts/{task}/attestations",
            token=token,
            body=body,
            headers={"X-AINP-DID": did},
        )

    def new_receipt(self) -> None:
        agent = self.rng.choice(self.plan.agents)
        client = self.rng.choice(self.plan.clients)
        ident = self.next_id()
        body = {
            "intent_id": f"intent-{ident}",
            "negotiation_id": f"negotiation-{ident}",
            "agent_did": agent.did,
            "client_did": client.did,
            "intent_type": self.rng.choice(INTENTS),
            "inputs_ref": f"ipfs://load-inputs-{ident}",
            "outputs_ref": f"ipfs://load-outputs-{ident}",
            "metrics": {"latency_ms": self.rng.randint(200, 4000)},
            "payment_request_id": f"payreq-{ident}",
            "amount_atomic": str(self.rng.randint(1_000, 500_000)),
        }
        response = self.call(
            "POST /api/receipts",
            "POST",
            "/api/receipts",
            token=self.service("broker"),
            body=body,
        )
        self.flow = None
        if response is None:
            return
        receipt = response.json()
        self.receipts.append(receipt["id"])
        # k = 3: the client's ACCEPTED and two AUDIT_PASS; sometimes a third audit after it.
        extra = 1 if self.rng.random() < 0.3 else 0
        accepted = self.plan.budget.take([client.did], 1, self.rng)
        audits = self.plan.budget.take(receipt["committee"], 2 + extra, self.rng)
        steps: deque[tuple[str, str]] = deque(("accept", did) for did in accepted)
        for n, did in enumerate(audits):
            steps.append(("audit_own" if n % 2 == 0 else "audit_signed", did))
        # Half the receipts are finalized by the API once quorate, the rest by the finalizer.
        if len(accepted) + min(len(audits), 2) >= receipt["k"] and self.rng.random() < 0.5:
            steps.append(("finalize", client.did))
        self.flow = Flow(receipt["id"], steps)

    def get_receipt(self) -> None:
        self.call(
            "GET /api/receipts/{id}",
            "GET",
            f"/api/receipts/{self.recent_receipt()}",
            token=self.user(self.wallet()),
        )

    def committee(self) -> None:
        self.call(
            "GET /api/receipts/{id}/committee",
            "GET",
            f"/api/receipts/{self.recent_receipt()}/committee",
        )

    def reputation(self) -> None:
        ident = self.rng.choice((*self.plan.agents, *self.plan.auditors, *self.plan.clients))
        self.call("GET /api/reputation/{did}", "GET", f"/api/reputation/{ident.did}")

    def pou_health(self) -> None:
        self.call("GET /api/pou/health", "GET", "/api/pou/health")


# The mix: (action, weight). Writes weigh 29 of 100; a vote without a proposal to vote on
# becomes a `next`.
ACTIONS: list[tuple[Callable[[Worker], None], int]] = [
    (Worker.leaderboard, 4),
    (Worker.user_profile, 4),
    (Worker.me, 3),
    (Worker.verification, 5),
    (Worker.seasons, 2),
    (Worker.season_board, 5),
    (Worker.around, 5),
    (Worker.stats, 5),
    (Worker.taps, 4),
    (Worker.put_profile, 3),
    (Worker.weekly, 3),
    (Worker.quests, 3),
    (Worker.radar, 2),
    (Worker.community_health, 3),
    (Worker.next_match, 6),
    (Worker.vote, 6),
    (Worker.conversations, 3),
    (Worker.system_health, 3),
    (Worker.pou_write, 11),
    (Worker.get_receipt, 3),
    (Worker.committee, 2),
    (Worker.reputation, 3),
    (Worker.pou_health, 3),
]


def alone(plan: Plan) -> tuple[dict[str, float], list[str]]:
    """Median ms of each read sent by itself, nothing else in flight (jobs aside)."""
    probe = Plan(**{**plan.__dict__, "window_start": 0.0, "window_end": float("inf")})
    worker = Worker(0, probe, 1)
    reads: list[Callable[[], None]] = [
        worker.leaderboard,
        worker.user_profile,
        worker.me,
        worker.seasons,
        worker.season_board,
        worker.around,
        worker.stats,
        worker.weekly,
        worker.quests,
        *[partial(worker.radar_uncached, h) for h in RADAR_HOURS],
        worker.community_health,
        worker.next_match,
        worker.conversations,
        worker.system_health,
        worker.get_receipt,
        worker.committee,
        worker.reputation,
        worker.pou_health,
    ]
    with httpx.Client(base_url=plan.base_url, timeout=120) as client:
        worker.client = client
        for read in reads:
            for _ in range(ALONE_CALLS):
                read()
    by_kind: dict[str, list[float]] = {}
    for sample in worker.samples:
        by_kind.setdefault(sample.kind, []).append(sample.seconds)
    return {kind: Summary.of(times).p50 for kind, times in by_kind.items()}, worker.errors


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


# -- tally dev as a subprocess ---------------------------------------------------------------

_ACCESS = re.compile(r'^INFO:\s+[\d.]+:\d+ - "')
_SCHEDULE = re.compile(r"^\s*schedule\s+(\S+): (.*)$")
_NEXT = re.compile(r"\((\w+)\), next (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC$")


@dataclass(frozen=True)
class JobRun:
    job: str
    ended: float
    ms: float
    status: str  # ok, failed, skipped
    result: dict[str, Any]


class DevServer:
    """`tally dev` on a free loopback port, its output read line by line as it comes."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.env = env
        self.log_path = log_path
        self.job_runs: list[JobRun] = []
        self.first_ticks: dict[str, float] = {}  # per-minute jobs: first fire (epoch)
        self.problems: list[tuple[float, str]] = []  # warnings, errors, tracebacks
        self.access_lines = 0
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [_tally(), "dev", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(  # noqa: S603 - our own tally script, fixed arguments
            command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=Path.cwd(),
        )
        self._reader = threading.Thread(target=self._read, name="tally-dev-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "w") as log_file:
            for line in self.proc.stdout:
                now = time.time()
                line = line.rstrip("\n")
                if _ACCESS.match(line):
                    self.access_lines += 1
                    continue
                log_file.write(f"{now:.3f} {line}\n")
                self._parse(now, line)

    def _parse(self, now: float, line: str) -> None:
        match = _SCHEDULE.match(line)
        if match:
            key, rest = match.groups()
            nxt = _NEXT.search(rest)
            if nxt and rest.startswith("rate(1 minute)"):
                at = datetime.strptime(nxt.group(2), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                self.first_ticks[key] = at.timestamp()
            elif rest.startswith("ok in "):
                ms, _, payload = rest[len("ok in ") :].partition(" ms ")
                try:
                    result = json.loads(payload)
                except ValueError:
                    result = {}
                self.job_runs.append(JobRun(key, now, float(ms), "ok", result))
            elif rest.startswith("FAILED"):
                self.job_runs.append(JobRun(key, now, 0.0, "failed", {"error": rest}))
                self.problems.append((now, line))
            elif "skipped" in rest:
                self.job_runs.append(JobRun(key, now, 0.0, "skipped", {}))
            return
        if (
            '"level":"ERROR"' in line.replace(" ", "")
            or '"level":"WARNING"' in line.replace(" ", "")
            or line.startswith(("Traceback", "ERROR", "WARNING"))
        ):
            self.problems.append((now, line[:500]))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"tally dev exited with {self.proc.returncode}; see {self.log_path}"
                    )
                try:
                    if client.get("/api/system/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"tally dev did not answer within {READY_TIMEOUT_S:.0f} s")

    def stop(self) -> float:
        """Stop as Ctrl-C does (uvicorn and the scheduler shut down cleanly); seconds taken."""
        started = time.perf_counter()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        return time.perf_counter() - started


def _tally() -> str:
    return str(Path(sys.executable).with_name("tally"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(url: str, secret: str, home: Path, *, seeding: bool = False) -> dict[str, str]:
    """The environment of `tally seed` and `tally dev`. The seed keeps the default committee
    rule, so the sample receipt it makes gets its committee as it would anywhere."""
    env = dict(os.environ)
    env.update(SERVER_ENV)
    if seeding:
        env.pop("POU_COMMITTEE_MIN_STAKE")
        env.update(SEED_ENV)
    env.update({"DATABASE_URL": url, "TALLY_JWT_SECRET": secret, "TALLY_HOME": str(home)})
    return env


def code_version() -> str:
    """The commit `tally dev` runs, and the files of Tally changed on top of it."""
    git = ["git", "-C", str(Path.cwd())]
    try:
        head = subprocess.run(  # noqa: S603 - git with fixed arguments
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(  # noqa: S603 - git with fixed arguments
            [*git, "status", "--porcelain", "--", "shared", "functions", "template.yaml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    files = [line[3:] for line in changed if line.strip()]
    if not files:
        return f"commit {head}"
    return f"commit {head} with uncommitted changes to " + ", ".join(f"`{f}`" for f in files)


def _ancestors() -> set[int]:
    """This process and the ones that started it (a shell running the bench is not other
    work)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def other_work() -> list[str]:
    """Other benchmarks or test runs on the machine (they would share the cores)."""
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, UnicodeDecodeError):
            continue
        args = command.split()
        if not args or Path(args[0]).name == "timeout":
            continue  # the wrapper of a run found by its own command line
        pytest = any(Path(a).name == "pytest" for a in args[:3])
        if pytest or ("bench" in args and "--suite" in args):
            found.append(command[:120])
    return found


# -- setup -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedResult:
    seconds: float
    lines: list[str]


def seed(env: dict[str, str], users: int, log_path: Path) -> SeedResult:
    started = time.perf_counter()
    with open(log_path, "w") as out:
        done = subprocess.run(  # noqa: S603 - our own tally script, fixed arguments
            [_tally(), "seed", "--users", str(users)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path.cwd(),
            check=False,
        )
    seconds = time.perf_counter() - started
    text = log_path.read_text()
    if done.returncode != 0:
        raise RuntimeError(f"tally seed failed ({done.returncode}): {text[-2000:]}")
    lines = [
        line.strip()
        for line in re.split(r"[\r\n]", text)
        if line.startswith(("Seeded", "Created season"))
    ]
    etl = [
        (m.group(1), float(m.group(2)))
        for m in re.finditer(
            r'"message":"Community ETL stage finished".*?"stage":"(\w+)".*?"seconds":([0-9.]+)',
            text,
        )
    ]
    if etl:
        stages = ", ".join(f"{name} {sec:.0f} s" for name, sec in etl if sec >= 1)
        lines.append(
            f"the community rollups (the nightly job's first run, over the 14 days) took "
            f"{sum(sec for _, sec in etl):.0f} s of it ({stages})"
        )
    return SeedResult(seconds, lines)


def prime_matchmaking() -> dict[str, Any]:
    """The generator and the creator once, as their first scheduled runs would."""
    from tally.matchmaking import service
    from tally.settings import reset_settings

    reset_settings()
    generated = service.generate_matches()
    created = service.create_proposals()
    return {"queued": generated.detail.get("added", 0), "opened": created.detail.get("opened", 0)}


def register_agents(base_url: str, tokens: Tokens, plan_ids: dict[str, list[Identity]]) -> None:
    admin = {"Authorization": f"Bearer {tokens.get('load-admin', 'admin')}"}
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S, headers=admin) as client:
        for role, people in plan_ids.items():
            for ident in people:
                r = client.post("/api/admin/agents", json={"did": ident.did})
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"registering {role} {ident.did}: {r.status_code} {r.text}")
                if role == "auditors":
                    r = client.post(
                        f"/api/admin/agents/{ident.did}/stake",
                        json={"amount_atomic": str(AUDITOR_STAKE), "reference": "load-stake"},
                    )
                    if r.status_code != 200:
                        raise RuntimeError(f"staking {ident.did}: {r.status_code} {r.text}")


def place_window(ticks: dict[str, float], ready: float, seconds: float) -> float:
    """The window's start: as soon as the warm-up allows, or later, so that the per-minute jobs
    fire inside the window early enough to finish in it (15 s, or half the window, before its
    end)."""
    earliest = ready + WARMUP_S
    if not ticks:
        return earliest
    tick = min(ticks.values())
    while tick < earliest + TICK_MARGIN_S:
        tick += 60
    return max(earliest, tick - (seconds - min(15.0, seconds / 2)))


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """One row: a route group, a request kind, or all of them."""

    name: str
    group: str
    requests: int
    writes: int
    rate: float
    latency: Summary
    errors: int
    legitimate: int
    statuses: dict[str, int]


@dataclass(frozen=True)
class JobFigures:
    job: str
    runs: int
    failed: int
    skipped: int
    max_ms: float
    did: str


@dataclass
class LoadReport:
    users: int
    workers: int
    seconds: float  # the window as planned
    warmup: float
    wait_for_tick: float
    seed: SeedResult
    primed: dict[str, Any]
    total: Figures
    groups: list[Figures]
    kinds: list[Figures]
    legitimate: dict[tuple[int, str], int]
    jobs: list[JobFigures]
    effects: dict[str, int]
    error_examples: list[str]
    server_problems: list[str]
    other_work: list[str]
    attest_exhausted: int
    stop_seconds: float
    access_lines: int
    crashed: list[str]
    alone_ms: dict[str, float]
    alone_errors: list[str]
    code: str


def _figures(name: str, group: str, samples: list[Sample], seconds: float) -> Figures:
    statuses = Counter(
        f"{s.status}" + (f" {s.code}" if s.code else "") if s.status else "no response"
        for s in samples
    )
    return Figures(
        name=name,
        group=group,
        requests=len(samples),
        writes=sum(1 for s in samples if KINDS[s.kind].write),
        rate=len(samples) / seconds if seconds else 0.0,
        latency=Summary.of([s.seconds for s in samples]),
        errors=sum(1 for s in samples if s.outcome == "error"),
        legitimate=sum(1 for s in samples if s.outcome == "legitimate"),
        statuses=dict(statuses.most_common()),
    )


def _job_figures(runs: list[JobRun], start: float, end: float) -> list[JobFigures]:
    """Runs that overlapped the window (a run's output line comes when it ends)."""
    inside = [r for r in runs if r.ended >= start and r.ended - r.ms / 1000 <= end]
    out = []
    for job in sorted({r.job for r in inside}):
        mine = [r for r in inside if r.job == job]
        ok = [r for r in mine if r.status == "ok"]
        out.append(
            JobFigures(
                job=job,
                runs=len(ok),
                failed=sum(1 for r in mine if r.status == "failed"),
                skipped=sum(1 for r in mine if r.status == "skipped"),
                max_ms=max((r.ms for r in ok), default=0.0),
                did="; ".join(_job_result(r.result) for r in ok),
            )
        )
    return out


def _job_result(result: dict[str, Any]) -> str:
    """The job's answer in a few words: its non-zero counts."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items() if isinstance(v, int | float)})
        elif isinstance(value, bool):
            if value and key == "stopped_early":
                flat[key] = "yes"
        elif isinstance(value, int | float):
            flat[key] = value
    return ", ".join(f"{k} {v}" for k, v in flat.items() if v) or "nothing to do"


EFFECTS = {
    "verification sessions awarded by the award job": (
        "SELECT count(*) FROM verification_sessions WHERE points_status = 'awarded' "
        "AND points_calculated_at >= %(s)s AND points_calculated_at < %(e)s"
    ),
    "points ledger entries written": (
        "SELECT count(*) FROM points_ledger WHERE created_at >= %(s)s AND created_at < %(e)s"
    ),
    "taps received": (
        "SELECT count(*) FROM taps WHERE received_at >= %(s)s AND received_at < %(e)s"
    ),
    "match proposals opened for voting": (
        "SELECT count(*) FROM match_proposals "
        "WHERE voting_started_at >= %(s)s AND voting_started_at < %(e)s"
    ),
    "match proposals closed": (
        "SELECT count(*) FROM match_proposals WHERE finalized_at >= %(s)s AND finalized_at < %(e)s"
    ),
    "votes cast": (
        "SELECT count(*) FROM match_votes WHERE created_at >= %(s)s AND created_at < %(e)s"
    ),
    "conversations opened": (
        "SELECT count(*) FROM conversations WHERE created_at >= %(s)s AND created_at < %(e)s"
    ),
    "system_metrics rows (one per matchmaking job run)": (
        "SELECT count(*) FROM system_metrics WHERE recorded_at >= %(s)s AND recorded_at < %(e)s"
    ),
    "receipts created": (
        "SELECT count(*) FROM task_receipts WHERE created_at >= %(s)s AND created_at < %(e)s"
    ),
    "attestations stored": (
        "SELECT count(*) FROM task_attestations WHERE created_at >= %(s)s AND created_at < %(e)s"
    ),
    "receipts finalized": (
        "SELECT count(*) FROM task_receipts WHERE finalized_at >= %(s)s AND finalized_at < %(e)s"
    ),
}


def effects(url: str, start: float, end: float) -> dict[str, int]:
    bounds = {"s": datetime.fromtimestamp(start, UTC), "e": datetime.fromtimestamp(end, UTC)}
    out = {}
    with connect(url) as conn:
        for name, sql in EFFECTS.items():
            row = conn.execute(sql, bounds).fetchone()
            out[name] = int(next(iter(row.values()))) if row else 0
        row = conn.execute(
            "SELECT count(*) AS n FROM task_receipts WHERE status = 'pending' "
            "AND created_at >= %(s)s AND created_at < %(e)s",
            bounds,
        ).fetchone()
        out["receipts of the window still pending at the end"] = int(row["n"]) if row else 0
    return out


def _data(url: str, users: int) -> tuple[list[str], str]:
    with connect(url) as conn:
        wallets = [
            r["wallet_address"]
            for r in conn.execute(
                "SELECT wallet_address FROM users ORDER BY wallet_address LIMIT %s",
                (max(users, 1),),
            ).fetchall()
        ]
        row = conn.execute("SELECT slug FROM seasons ORDER BY starts_at LIMIT 1").fetchone()
    if len(wallets) < 2 or row is None:
        raise RuntimeError("the seed left no users or no season")
    return wallets, str(row["slug"])


@contextmanager
def _dev(env: dict[str, str], log_path: Path) -> Iterator[DevServer]:
    dev = DevServer(env, log_path)
    dev.start()
    try:
        yield dev
    finally:
        dev.stop()


def run(url: str, users: int, seconds: float, workers: int, work_dir: Path) -> LoadReport:
    from tally.local.seed import POU_SAMPLE_TASK

    secret = secrets.token_urlsafe(32)
    env = server_env(url, secret, work_dir)
    log(f"load: seeding {users:,} users with `tally seed`")
    seeded = seed(server_env(url, secret, work_dir, seeding=True), users, work_dir / "seed.log")
    log(f"load: seeded in {seeded.seconds:.0f}s")
    primed = prime_matchmaking()
    wallets, season = _data(url, users)
    tokens = Tokens(secret)
    auditors = identities(IDENTITY_SEED, AUDITORS)
    agents = identities(IDENTITY_SEED + AUDITORS, WORKER_AGENTS)
    clients = identities(IDENTITY_SEED + AUDITORS + WORKER_AGENTS, CLIENTS)
    budget = AttestBudget([i.did for i in (*auditors, *clients)])

    code = code_version()
    with _dev(env, work_dir / "tally-dev.log") as dev:
        dev.wait_ready()
        register_agents(
            dev.base_url, tokens, {"auditors": auditors, "agents": agents, "clients": clients}
        )
        ready = time.time()
        window_start = place_window(dev.first_ticks, ready, seconds)
        plan = Plan(
            base_url=dev.base_url,
            tokens=tokens,
            wallets=wallets,
            season=season,
            auditors=auditors,
            agents=agents,
            clients=clients,
            budget=budget,
            sample_task=str(POU_SAMPLE_TASK),
            warmup_start=window_start - WARMUP_S,
            window_start=window_start,
            window_end=window_start + seconds,
        )
        wait = plan.warmup_start - time.time()
        if wait > 0:
            log(f"load: waiting {wait:.0f}s so that the per-minute jobs fire inside the window")
            time.sleep(wait)
        log(f"load: {workers} workers, {WARMUP_S:.0f}s warm-up, then {seconds:.0f}s measured")
        busy = other_work()
        threads = [Worker(i, plan, workers) for i in range(workers)]
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, plan.window_start + seconds / 2 - time.time()))
        busy += [c for c in other_work() if c not in busy]  # and halfway through
        for thread in threads:
            thread.join(timeout=seconds + WARMUP_S + REQUEST_TIMEOUT_S + 30)
        busy += [c for c in other_work() if c not in busy]
        log("load: each read alone")
        alone_ms, alone_errors = alone(plan)
        time.sleep(1.0)  # the last job lines
        stop_seconds = dev.stop()
        log(f"load: tally dev stopped in {stop_seconds:.1f}s")

    samples = [s for t in threads for s in t.samples]
    window = (plan.window_start, plan.window_end)
    groups = [
        _figures(g, g, [s for s in samples if KINDS[s.kind].group == g], seconds) for g in GROUPS
    ]
    kinds = [
        _figures(k, KINDS[k].group, [s for s in samples if s.kind == k], seconds) for k in KINDS
    ]
    legitimate = Counter((s.status, s.code) for s in samples if s.outcome == "legitimate")
    problems = [line for at, line in dev.problems if window[0] - WARMUP_S <= at <= window[1] + 5]
    return LoadReport(
        users=len(wallets),
        workers=workers,
        seconds=seconds,
        warmup=WARMUP_S,
        wait_for_tick=max(wait, 0.0),
        seed=seeded,
        primed=primed,
        total=_figures("all", "all", samples, seconds),
        groups=groups,
        kinds=kinds,
        legitimate=dict(legitimate),
        jobs=_job_figures(dev.job_runs, *window),
        effects=effects(url, *window),
        error_examples=[e for t in threads for e in t.errors][:20],
        server_problems=problems[:20],
        other_work=busy,
        attest_exhausted=budget.exhausted,
        stop_seconds=stop_seconds,
        access_lines=dev.access_lines,
        crashed=[f"{t.name}: {t.crash!r}" for t in threads if t.crash is not None],
        alone_ms=alone_ms,
        alone_errors=alone_errors,
        code=code,
    )


# -- the report ------------------------------------------------------------------------------


def _ms(value: float) -> str:
    if value != value:  # NaN: nothing measured
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _row(f: Figures, bold: bool = False) -> str:
    name = f"**{f.name}**" if bold else f.name
    reads = f.requests - f.writes
    return (
        f"| {name} | {f.requests:,} | {reads:,} / {f.writes:,} | {f.rate:,.1f} | "
        f"{_ms(f.latency.p50)} | {_ms(f.latency.p95)} | {_ms(f.latency.p99)} | "
        f"{_ms(f.latency.max)} | **{f.errors}** | {f.legitimate:,} |"
    )


def _busy(f: Figures) -> float:
    """Seconds the workers spent waiting for this kind of request."""
    return f.latency.mean * f.requests / 1000 if f.requests else 0.0


def _kind_row(f: Figures, rep: LoadReport) -> str:
    statuses = ", ".join(f"{k}: {v:,}" for k, v in f.statuses.items()) or "-"
    alone = rep.alone_ms.get(f.name)
    waited = _busy(rep.total)
    share = f"{_busy(f) / waited:.0%}" if waited else "-"
    return (
        f"| `{f.name}` | {f.group} | {f.requests:,} | {_ms(f.latency.p50)} | "
        f"{_ms(f.latency.p95)} | {_ms(f.latency.p99)} | "
        f"{_ms(alone) if alone is not None else '-'} | {share} | {statuses} |"
    )


def render(
    rep: LoadReport, facts: dict[str, str], embedded: bool, bench_seconds: float, quick: bool
) -> str:
    from bench.report import _bullet, _para

    settings_line = ", ".join(f"{k} {v}" for k, v in facts.items() if k != "server_version")
    total = rep.total
    reads = total.requests - total.writes
    verdict = (
        "**0 errors**"
        if total.errors == 0 and not rep.crashed
        else f"**{total.errors} errors** (see below)"
    )
    overrides = ", ".join(f"`{k}={v}`" for k, v in SERVER_ENV.items())
    busy = (
        "Nothing else was running (no other bench suite, no pytest) when the window began, "
        "halfway through, or when it ended."
        if not rep.other_work
        else "**Other work shared the machine during the run**: "
        + "; ".join(f"`{c}`" for c in rep.other_work)
        + ". Latencies are inflated accordingly."
    )
    how = [
        "### Load: how these figures were taken",
        _para(
            f"Generated by `python -m bench --suite load{' --quick' if quick else ''}` on "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} ({os.cpu_count()} CPU cores, "
            f"{platform.platform()}, Python {platform.python_version()}; PostgreSQL "
            f"{facts.get('server_version', '?')}, {'embedded' if embedded else 'given'}, "
            f"{settings_line}); {bench_seconds / 60:.0f} min in all; Tally at {rep.code}. A "
            "re-run replaces everything between the `bench:load` markers of this file and "
            "nothing else."
        ),
        "\n".join(
            [
                _bullet(
                    f"**Data.** A fresh database seeded by `tally seed --users {rep.users:,}` "
                    "(with `DB_STATEMENT_TIMEOUT_MS=0`: its community step is one statement "
                    "inserting 12 taps per user, which at 100k users outlasts the default 30 s "
                    f"statement timeout) in {rep.seed.seconds:.0f} s: "
                    + "; ".join(rep.seed.lines).rstrip(".")
                    + f". The match generator and proposal creator then ran once "
                    f"({rep.primed['queued']} pairs queued, {rep.primed['opened']} proposals "
                    "opened), so voters had proposals from the first request."
                ),
                _bullet(
                    "**Server.** `tally dev` as a subprocess on 127.0.0.1: every API route on "
                    "one uvicorn process (synchronous handlers on its thread pool, one "
                    "PostgreSQL connection per thread), its access log on, and every schedule "
                    f"firing. Environment: {overrides} (committees drawn from the staked "
                    f"auditors only, see below), a JWT secret of the run's own; everything else "
                    "at its default (write limits 120 / 12,000 / 600 per minute per user / "
                    "service / admin subject, 100 attestations per DID per hour, matchmaking "
                    "preset `small`, k = 3 of m = 5)."
                ),
                _bullet(
                    f"**Client.** {rep.workers} worker threads in the bench process, each with "
                    "its own keep-alive `httpx.Client`, looping over a weighted mix of the five "
                    f"route groups for {rep.seconds:.0f} s after a {rep.warmup:.0f} s warm-up "
                    "that is not counted"
                    + (
                        f" (the start was delayed {rep.wait_for_tick:.0f} s so that the "
                        "per-minute jobs fire inside the window)"
                        if rep.wait_for_tick >= 1
                        else ""
                    )
                    + ". Latency is wall time around each request in the client, so it "
                    f"includes the client's own share of the {os.cpu_count()} cores, which it "
                    "splits with `tally dev` and PostgreSQL. Throughput counts the requests "
                    "started in the window."
                ),
                _bullet(
                    "**Identities.** Tokens are HS256 JWTs signed by the bench (sub, iss, aud, "
                    "iat, exp, scope). Reads and member writes use the member's own token "
                    "(random among the seeded users; each worker votes and edits profiles for "
                    "its own share of them); service writes a token per worker and kind. "
                    f"Proof of usefulness: {AUDITORS} auditors registered and staked through "
                    f"the admin API, {WORKER_AGENTS} agents doing tasks and {CLIENTS} clients "
                    "registered, all did:key identities whose keys the bench holds. A receipt "
                    "gets its client's ACCEPTED (the client's own token) and two or three "
                    "committee AUDIT_PASS (alternately the auditor's own token, and a service "
                    "token naming the auditor with the auditor's Ed25519 signature); half are "
                    "then finalized through the API, the rest left to the finalizer job. Why the "
                    "committee minimum: a committee is the m most trusted eligible agents "
                    "(ties by md5), and one finalized task already lifts an agent above the "
                    "0.5 prior, so with the default minimum of 0 the few busiest agents would "
                    "hold nearly every seat and, at 100 attestations an hour each, cap how many "
                    "receipts can be audited; staked auditors who never work stay tied, so "
                    "their seats rotate. The bench keeps each DID under "
                    f"{ATTEST_BUDGET} attestations"
                    + (
                        f" ({rep.attest_exhausted} wanted attestations were skipped for it)"
                        if rep.attest_exhausted
                        else " (never reached)"
                    )
                    + "."
                ),
                _bullet(
                    "**Errors.** A transport error, any 5xx, or any 4xx a correct client would "
                    "not get. The legitimate non-2xx are listed below with their reason; "
                    "anything else counts as an error."
                ),
                _bullet(busy),
            ]
        ),
    ]
    groups = "\n".join(
        [
            "| Route group | Requests | Reads / writes | req/s | p50 ms | p95 ms | p99 ms "
            "| max ms | Errors | Legitimate non-2xx |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        + [_row(g) for g in rep.groups]
        + [_row(rep.total, bold=True)]
    )
    kinds = "\n".join(
        [
            "| Request | Group | n | p50 ms | p95 ms | p99 ms | alone ms | Time | Statuses |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        + [_kind_row(k, rep) for k in rep.kinds]
    )
    legit = (
        "\n".join(
            _bullet(f"{n:,} x {status} `{code}`: {LEGITIMATE_WHY.get((status, code), '')}.")
            for (status, code), n in sorted(rep.legitimate.items(), key=lambda x: -x[1])
        )
        or "- none."
    )
    figures = [
        f"### Load: {rep.users:,} users, {rep.workers} workers, {rep.seconds:.0f} s",
        _para(
            f"{total.requests:,} requests in {rep.seconds:.0f} s, {total.rate:,.0f} req/s "
            f"({reads / total.requests:.0%} reads, {total.writes / total.requests:.0%} writes): "
            f"{verdict}."
            if total.requests
            else "No request was made: the run failed."
        ),
        groups,
        "Legitimate non-2xx answers (counted apart, not as errors):",
        legit,
        _para(
            "Per request. *alone ms*: the median of "
            f"{ALONE_CALLS} calls sent one at a time after the window, nothing else in flight "
            "(reads only), i.e. the request's own cost (for the radar, windows nobody had "
            "asked for yet, so computed rather than answered from its cache); *Time*: its "
            "share of the time the workers spent waiting for responses (a closed loop: a slow "
            "request holds its worker, so it lowers every group's throughput)."
        ),
        kinds,
    ]
    if total.errors or rep.crashed or rep.alone_errors:
        figures += [
            "Errors (first examples):",
            "\n".join(
                f"- `{e}`"
                for e in [
                    *rep.crashed,
                    *rep.error_examples,
                    *(f"(alone, after the window) {e}" for e in rep.alone_errors),
                ]
            ),
        ]
    jobs = "\n".join(
        [
            "| Job | Runs | Failed | Skipped (overlap) | Longest ms | What it did |",
            "|---|---:|---:|---:|---:|---|",
        ]
        + [
            f"| {j.job} | {j.runs} | {j.failed} | {j.skipped} | {j.max_ms:,.0f} | {j.did} |"
            for j in rep.jobs
        ]
    )
    landed = "\n".join(
        ["| Written during the window | Rows |", "|---|---:|"]
        + [f"| {name} | {n:,} |" for name, n in rep.effects.items()]
    )
    problems = (
        "\n".join(f"- `{p[:300]}`" for p in rep.server_problems) if rep.server_problems else "none."
    )
    jobs_section = [
        "### Load: the jobs during the window",
        _para(
            "Job runs that overlapped the window, from `tally dev`'s output (one line per run "
            "as it ends, with the handler's result), and what landed in the database between "
            "the window's first and last second:"
        ),
        jobs if rep.jobs else "No job run overlapped the window.",
        landed,
        _para(
            f"Warnings and errors `tally dev` logged around the window "
            f"(POWERTOOLS_LOG_LEVEL=WARNING; its {rep.access_lines:,} access-log lines left "
            "out): " + ("" if rep.server_problems else "none.")
        ),
    ]
    if rep.server_problems:
        jobs_section.append(problems)
    jobs_section.append(
        _para(f"`tally dev` stopped cleanly on SIGINT in {rep.stop_seconds:.1f} s afterwards.")
    )
    return "\n\n".join([*how, *figures, *jobs_section, *analysis(rep)])


def analysis(rep: LoadReport) -> list[str]:
    from bench.report import _para

    if not rep.total.requests:
        return []
    kinds = [k for k in rep.kinds if k.requests]
    waited = _busy(rep.total)
    heavy = sorted(
        (k for k in kinds if k.latency.p95 >= SLOW_P95_MS or _busy(k) >= HEAVY_SHARE * waited),
        key=lambda k: -_busy(k),
    )
    light = [k for k in kinds if k not in heavy]
    light_p50 = Summary.of([k.latency.p50 / 1000 for k in light]).p50 if light else float("nan")
    light_alone = Summary.of(
        [rep.alone_ms[k.name] / 1000 for k in light if k.name in rep.alone_ms]
    ).p50
    paragraphs = [
        f"""**Where the time goes.** The {rep.workers} workers, `tally dev` (one Python process
        whose request threads share one interpreter lock) and PostgreSQL share
        {os.cpu_count()} cores, and each worker waits for its answer before sending the next
        request, so the throughput above is what this machine gives at that concurrency, not a
        capacity of Tally, and most of a cheap request's latency under load is waiting its
        turn: the median read or write answers in {_ms(light_p50)} ms at p50 under load; the
        median read takes {_ms(light_alone)} ms alone."""
    ]
    if heavy:
        listed = "; ".join(
            f"`{k.name}` {_ms(rep.alone_ms[k.name])} ms alone, {_ms(k.latency.p50)} / "
            f"{_ms(k.latency.p95)} / {_ms(k.latency.max)} ms at p50 / p95 / max under load, "
            f"{_busy(k) / waited:.0%} of the workers' waiting for "
            f"{k.requests / rep.total.requests:.0%} of the requests"
            for k in heavy
        )
        worst = max(k.latency.max for k in heavy)
        verdict = "beyond" if worst > GATEWAY_TIMEOUT_MS else "within"
        paragraphs.append(
            f"""**Slow reads.** A few reads cost far more than the rest: {listed}. Together
            they took {sum(_busy(k) for k in heavy) / waited:.0%} of the workers' time, which
            is what holds the total throughput down. The slowest answer took
            {worst / 1000:.1f} s, {verdict} the 29 s a deployed API function has (its Lambda
            timeout; API Gateway gives up at 30 s)."""
        )
        radars = [k for k in heavy if k.name.startswith("GET /api/community/radar")]
        if radars:
            paragraphs.append(
                """**The radar's tail is its cache's misses.** Each process keeps a radar
                window for `COMMUNITY_RADAR_CACHE_SECONDS` (60 s); the key is the window's
                start in UTC, its length and `top`, so a new hour, a zone with a half-hour
                offset, or an expired entry recomputes the window from the taps. Hence a
                median of a few milliseconds (hits) next to a tail of seconds (misses, each
                slowed by the load, and several at once when requests for a missing window
                arrive together: nothing makes them wait for the first one's answer). The
                *alone* column gives a miss's own cost."""
            )
    award = next((j for j in rep.jobs if j.job.startswith("AwardPoints") and j.runs), None)
    awarded = _job_count(award.did, "awarded") if award else 0
    failed = sum(j.failed for j in rep.jobs)
    skipped = sum(j.skipped for j in rep.jobs)
    clean = (
        "Every job that ran during the window finished without a failure or an overlap."
        if not failed and not skipped
        else f"**{failed} job runs failed and {skipped} were skipped (still running)**."
    )
    if award and award.runs == 1 and awarded and award.max_ms:
        paragraphs.append(
            f"""**The jobs under load.** {clean} The award job awarded {awarded:,} sessions
            (the verifications posted since its previous run) in {award.max_ms / 1000:.1f} s,
            {awarded / award.max_ms * 1000:,.0f} awards/s while the API shared the machine:
            awards are serialised on the platform's dataset counter, one transaction each."""
        )
    next_kind = next(k for k in rep.kinds if k.name == "GET /api/matches/next")
    none = rep.legitimate.get((404, "no_matches_available"), 0)
    if next_kind.requests and none / next_kind.requests >= 0.05:
        share = none / next_kind.requests
        paragraphs.append(
            f"""**Matchmaking runs dry under load.** {none:,} of {next_kind.requests:,} `next`
            calls ({share:.0%}) found nothing to vote on. With the `small` preset the generator
            keeps at most 75 pairs queued and refills only when fewer than 50 remain, once a
            minute, and the creator keeps 12 proposals in voting; voters who vote as fast as
            these workers close proposals (5 yes or 5 no) faster than the queue is refilled.
            That is the preset's capacity, not a fault: `MATCH_PRESET=medium|large` (or
            `MATCH_QUEUE_TARGET`) sizes it for more voters."""
        )
    return ["### Load: reading these figures", *[_para(p) for p in paragraphs]]


def _job_count(did: str, name: str) -> int:
    """A count out of a job's summary ("awarded 411, points 27728; ...")."""
    found = re.findall(rf"\b{name} (\d+)", did)
    return sum(int(n) for n in found)


def write(path: Path, block: str) -> None:
    """The block in its file, with a `## Load` heading unless the file has one already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Reliability\n")
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    outside = text[:start] + text[end:] if start != -1 and end > start else text
    if not re.search(r"^## Load\s*$", outside, flags=re.MULTILINE):
        block = "## Load\n\n" + block
    write_block(path, block, START, END)


def run_suite(
    server: Server,
    facts: dict[str, str],
    out: Path,
    *,
    seconds: float,
    users: int,
    workers: int,
    quick: bool,
) -> bool:
    from bench.db import fresh_database
    from bench.stats import quiet_stdout

    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="tally-load-") as tmp,
        quiet_stdout(),
        fresh_database(server, "load") as url,
    ):
        try:
            rep = run(url, users, seconds, workers, Path(tmp))
        except BaseException:
            for name in ("seed.log", "tally-dev.log"):
                path = Path(tmp) / name
                if path.exists():
                    print(f"--- {name} (tail)", file=sys.stderr)
                    print(path.read_text()[-3000:], file=sys.stderr)
            raise
    write(out, render(rep, facts, server.embedded, time.perf_counter() - started, quick))
    log(
        f"load: {rep.total.requests:,} requests, {rep.total.rate:,.0f} req/s, "
        f"{rep.total.errors} errors; wrote {out}"
    )
    for example in [*rep.crashed, *rep.error_examples[:5]]:
        log(f"load: error: {example}")
    return rep.total.errors == 0 and not rep.crashed and rep.total.requests > 0
