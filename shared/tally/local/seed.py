"""`tally seed`: realistic demo data, awarded through the real award sweep."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

from tqdm import tqdm

from tally.db.connection import get_connection
from tally.points.service import award_pending

SUBJECTS = [
    "bird song",
    "rainforest ambience",
    "urban traffic",
    "ocean waves",
    "thunderstorm",
    "violin",
    "tabla",
    "whale calls",
    "frog chorus",
    "market crowd",
    "train station",
    "wind turbine",
    "church bells",
    "bee hive",
    "glacier melt",
    "desert wind",
    "cicadas",
    "footsteps on snow",
    "typewriter",
    "vinyl crackle",
    "didgeridoo",
    "mbira",
    "shakuhachi",
    "heartbeat",
    "machine shop",
    "kitchen",
    "playground",
]
GRADES = ["A", "B", "B", "C", "C", "C", "D", "F"]


def _session(rng: random.Random, wallet: str, approved: bool = True) -> dict[str, Any]:
    subject = rng.choice(SUBJECTS)
    sample_count = rng.choice([1, 5, 20, 50, 120, 300]) if rng.random() < 0.9 else 1000
    return {
        "id": uuid.UUID(int=rng.getrandbits(128)),
        "wallet": wallet,
        "metadata": {
            "walletAddress": wallet,
            "title": f"{subject.title()} recordings",
            "sampleCount": sample_count,
        },
        "results": {
            "approved": approved,
            "rarityScore": round(rng.uniform(20, 100), 1),
            "qualityScore": round(rng.uniform(0.35, 1.0), 3),
            "subject": subject,
            "specificityGrade": rng.choice(GRADES),
            "verifiedClaims": rng.random() < 0.3,
            "contentHash": uuid.UUID(int=rng.getrandbits(128)).hex,
        },
    }


def seed(*, users: int = 1000, pending: int = 25, random_seed: int = 42) -> dict[str, int]:
    """Create `users` wallets with 1-5 approved datasets each, award them, and leave `pending`
    approved sessions for the running award job to pick up."""
    from psycopg.types.json import Jsonb

    rng = random.Random(random_seed)
    sessions = [_session(rng, f"0x{rng.getrandbits(160):040x}") for _ in range(users)]
    for s in list(sessions):
        sessions.extend(_session(rng, s["wallet"]) for _ in range(rng.randint(0, 4)))
    conn = get_connection()
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY verification_sessions (id, status, wallet_address, initial_data, results, "
            "completed_at) FROM STDIN"
        ) as copy,
    ):
        for s in tqdm(sessions, desc="sessions", unit="row"):
            copy.write_row(
                (
                    s["id"],
                    "completed",
                    s["wallet"],
                    Jsonb({"metadata": s["metadata"]}),
                    Jsonb(s["results"]),
                    datetime.now(UTC),
                )
            )
    awarded = 0
    with tqdm(total=len(sessions), desc="awards", unit="award") as bar:
        while True:
            result = award_pending(batch_size=500)
            done = result.awarded + result.skipped + result.held + result.failed
            bar.update(done)
            awarded += result.awarded
            if done == 0:
                break
    extra = [_session(rng, s["wallet"]) for s in rng.sample(sessions, min(pending, len(sessions)))]
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY verification_sessions (id, status, wallet_address, initial_data, results) "
            "FROM STDIN"
        ) as copy,
    ):
        for s in extra:
            copy.write_row(
                (
                    s["id"],
                    "completed",
                    s["wallet"],
                    Jsonb({"metadata": s["metadata"]}),
                    Jsonb(s["results"]),
                )
            )
    summary = {"users": users, "sessions": len(sessions), "awarded": awarded, "pending": len(extra)}
    print(f"Seeded: {summary}")
    return summary
