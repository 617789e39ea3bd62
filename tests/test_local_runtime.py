"""The local runtime: schedule expressions, the scheduler, `tally invoke` and `tally dev`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tally.local import template as template_mod
from tally.local.context import FakeLambdaContext
from tally.local.runtime import Scheduler
from tally.local.schedule import ScheduleError, next_fire
from tally.points import service
from tally.points.models import VerificationIn
from tests.support import ROOT, verification_body

T0 = datetime(2026, 1, 15, 12, 0, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_rate_fires_every_interval_from_the_start() -> None:
    assert next_fire("rate(1 minute)", "UTC", T0, T0) == utc(2026, 1, 15, 12, 1, 30)
    assert next_fire("rate(5 minutes)", "UTC", utc(2026, 1, 15, 12, 6), T0) == utc(
        2026, 1, 15, 12, 10, 30
    )
    assert next_fire("rate(1 day)", "UTC", T0, T0) == utc(2026, 1, 16, 12, 0, 30)


def test_cron_in_new_york_follows_daylight_saving() -> None:
    nightly = "cron(0 2 * * ? *)"
    # Winter: 02:00 EST is 07:00 UTC; summer: 02:00 EDT is 06:00 UTC.
    assert next_fire(nightly, "America/New_York", T0, T0) == utc(2026, 1, 16, 7, 0)
    july = utc(2026, 7, 1, 12, 0)
    assert next_fire(nightly, "America/New_York", july, july) == utc(2026, 7, 2, 6, 0)
    # The night the clocks spring forward (8 March 2026) has no 02:00: AWS skips it.
    march = utc(2026, 3, 7, 12, 0)
    fire = next_fire(nightly, "America/New_York", march, march)
    assert fire in (utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 6, 0))


def test_cron_fields() -> None:
    monthly = next_fire("cron(0 3 1 * ? *)", "UTC", T0, T0)
    assert monthly == utc(2026, 2, 1, 3, 0)
    weekdays = next_fire("cron(0 12 ? * MON-FRI *)", "UTC", utc(2026, 1, 16, 13), T0)
    assert weekdays == utc(2026, 1, 19, 12, 0)  # Friday 13:00 -> Monday noon
    every_15 = next_fire("cron(0/15 * * * ? *)", "UTC", T0, T0)
    assert every_15 == utc(2026, 1, 15, 12, 15)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(0 minutes)",
        "rate(1 fortnight)",
        "cron(0 2 * * *)",
        "cron(0 2 * * * *)",
        "cron(61 2 * * ? *)",
        "cron(0 2 L * ? *)",
        "every minute",
    ],
)
def test_bad_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ScheduleError):
        next_fire(expression, "UTC", T0, T0)


def test_fake_context_counts_down() -> None:
    context = FakeLambdaContext(timeout_s=2)
    first = context.get_remaining_time_in_millis()
    assert 1900 <= first <= 2000
    time.sleep(0.05)
    assert context.get_remaining_time_in_millis() < first


def test_scheduler_fires_the_real_handler_with_the_schedule_input(
    db: psycopg.Connection[Any],
) -> None:
    service.record_verification(VerificationIn.model_validate(verification_body()))
    template = template_mod.load()
    scheduler = Scheduler(template)
    ((logical_id, schedule),) = [j for j in scheduler.jobs if j[0] == "AwardPointsFunction"]
    assert schedule.input == {"batch_size": 20000}
    scheduler.fire(logical_id, schedule)
    scheduler.shutdown()
    assert db.execute("SELECT count(*) AS n FROM points_ledger").fetchone() == {"n": 1}


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tally.local.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_tally_invoke_runs_a_function_with_its_sample_event(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    service.record_verification(VerificationIn.model_validate(verification_body()))
    env = {**os.environ, "DATABASE_URL": database_url}
    done = _cli("invoke", "AwardPointsFunction", "-e", "events/award_points.json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{\n") :])
    assert result["awarded"] == 1
    unknown = _cli("invoke", "NoSuchFunction", env=env)
    assert unknown.returncode == 2 and "No function NoSuchFunction" in unknown.stderr


def test_tally_community_runs_the_rollups_and_backfills(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    db.execute(
        "INSERT INTO taps (client_tap_id, id1, id2, time, received_at) "
        "VALUES ('c1', 'ann', 'bo', '2026-11-02T10:00Z', now() - interval '1 hour')"
    )
    env = {**os.environ, "DATABASE_URL": database_url}
    nightly = _cli("community", env=env)
    assert nightly.returncode == 0, nightly.stderr
    assert json.loads(nightly.stdout[nightly.stdout.index("{\n") :])["mode"] == "nightly"
    db.execute("TRUNCATE user_day_activity")
    rebuilt = _cli("community", "--from", "2026-11-01", "--to", "2026-11-03", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    days = db.execute("SELECT user_id, day FROM user_day_activity ORDER BY 1").fetchall()
    assert [d["user_id"] for d in days] == ["ann", "bo"]
    backwards = _cli("community", "--from", "2026-11-03", "--to", "2026-11-01", env=env)
    assert backwards.returncode == 2 and "before" in backwards.stderr
    half = _cli("community", "--from", "2026-11-03", env=env)
    assert half.returncode == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_tally_dev_turns_a_posted_verification_into_points(tmp_path: Path) -> None:
    """The README's first command, end to end, on its own embedded PostgreSQL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "TALLY_JWT_SECRET", "TALLY_AUTH_MODE")
    }
    env["TALLY_HOME"] = str(tmp_path / "home")
    port = _free_port()
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen(
        [sys.executable, "-m", "tally.local.cli", "dev", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/api/leaderboard", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            pytest.fail("tally dev did not start:\n" + Path(log.name).read_text())
        token = _cli("token", "--role", "service", "--sub", "verifier", env=env).stdout.strip()
        wallet = f"0xdev{uuid.uuid4().hex[:12]}"
        posted = httpx.post(
            f"{base}/api/verifications",
            json=verification_body(wallet, rarity=90, quality=0.9),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert posted.status_code == 201, posted.text
        # The award job fires every minute, as template.yaml declares.
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            user = httpx.get(f"{base}/api/users/{wallet}")
            if user.status_code == 200:
                break
            time.sleep(1)
        else:
            pytest.fail("no points within a minute:\n" + Path(log.name).read_text())
        profile = user.json()
        assert profile["total_points"] > 0 and profile["rank"] == 1
        assert profile["tier"] in ("Contributor", "Bronze")
    finally:
        dev.send_signal(signal.SIGINT)
        code = dev.wait(timeout=30)
        output = Path(log.name).read_text()
    assert code == 0, output
    assert "schedule  AwardPointsFunction/EveryMinute" in output
    assert "Stopping schedules" in output
