"""The one settings object: every tunable of Tally, read from the environment once."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class PointsRules(BaseSettings):
    """Points rules (REFERENCE.md, seed 000). Changing them means a new rule version."""

    model_config = SettingsConfigDict(env_prefix="POINTS_", extra="ignore")

    rule_version: str = "v1"
    min_quality_score: float = Field(0.3, ge=0, le=1)
    bulk_sample_threshold: int = Field(100, ge=1)
    early_contributor_datasets: int = Field(100, ge=0)
    early_adopter_contributors: int = Field(100, ge=0)
    daily_submission_cap: int = Field(50, ge=1)
    rare_subject_multiplier: float = Field(
        2.0, description="A dataset counts as rare when its subject multiplier is at least this."
    )
    # A single award can never exceed this; anything larger is a bug or an attack.
    max_points_per_award: int = Field(10_000, ge=1)
    achievement_bonus_points: dict[str, int] = Field(
        default_factory=dict,
        description='Optional ledger bonus per achievement key, e.g. {"first_blood": 50}.',
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    stage: str = Field("local", validation_alias="TALLY_STAGE")
    aws_lambda_function_name: str | None = Field(
        None,
        validation_alias="AWS_LAMBDA_FUNCTION_NAME",
        description="Set by Lambda: the process is one execution environment.",
    )
    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    db_secret_arn: str | None = Field(None, validation_alias="DB_SECRET_ARN")
    db_host_override: str | None = Field(
        None,
        validation_alias="DB_HOST",
        description="RDS Proxy endpoint; wins over the secret's host.",
    )
    db_name_override: str | None = Field(None, validation_alias="DB_NAME")
    db_connect_timeout_s: int = Field(5, validation_alias="DB_CONNECT_TIMEOUT")
    db_statement_timeout_ms: int = Field(30_000, validation_alias="DB_STATEMENT_TIMEOUT_MS")
    db_ping_after_idle_s: float = Field(
        10.0,
        validation_alias="DB_PING_AFTER_IDLE_SECONDS",
        ge=0,
        description="A connection idle this long is checked before it is reused.",
    )
    secret_max_age_s: int = Field(300, validation_alias="DB_SECRET_MAX_AGE")

    auth_mode: Literal["local", "apigw"] = Field("local", validation_alias="TALLY_AUTH_MODE")
    jwt_secret: SecretStr = Field(SecretStr(""), validation_alias="TALLY_JWT_SECRET")
    jwt_issuer: str = Field("tally-local", validation_alias="TALLY_JWT_ISSUER")
    jwt_audience: str = Field("tally", validation_alias="TALLY_JWT_AUDIENCE")

    award_batch_size: int = Field(5000, validation_alias="AWARD_BATCH_SIZE", ge=1, le=100_000)
    award_retry_base_s: int = Field(60, validation_alias="AWARD_RETRY_BASE_SECONDS", ge=1)
    award_max_attempts: int = Field(8, validation_alias="AWARD_MAX_ATTEMPTS", ge=1, le=100)
    award_retry_max_s: int = Field(3600, validation_alias="AWARD_RETRY_MAX_SECONDS", ge=1)
    job_safety_margin_ms: int = Field(10_000, validation_alias="JOB_SAFETY_MARGIN_MS", ge=0)

    leaderboard_tiebreak: Literal["none", "earliest", "submissions"] = Field(
        "none", validation_alias="LEADERBOARD_TIEBREAK"
    )
    leaderboard_freshness_s: float = Field(
        5.0,
        validation_alias="LEADERBOARD_FRESHNESS_SECONDS",
        ge=0,
        le=300,
        description="How long a board version is trusted in memory for If-None-Match.",
    )
    leaderboard_max_age_s: int = Field(15, validation_alias="LEADERBOARD_MAX_AGE_SECONDS", ge=0)
    export_bucket: str | None = Field(None, validation_alias="EXPORT_BUCKET")
    export_url_ttl_s: int = Field(900, validation_alias="EXPORT_URL_TTL_SECONDS", ge=60)

    reconciliation_timeout_ms: int = Field(
        240_000,
        validation_alias="RECONCILIATION_TIMEOUT_MS",
        ge=1000,
        description="Statement timeout of the reconciliation check (its function has 300 s).",
    )
    api_write_window_s: int = Field(
        60, validation_alias="API_WRITE_WINDOW_SECONDS", ge=1, le=86_400
    )
    api_max_body_bytes: int = Field(
        1_048_576,
        validation_alias="API_MAX_BODY_BYTES",
        ge=1024,
        le=6_000_000,
        description="Largest request body any route accepts (413 beyond; Lambda's own "
        "synchronous payload limit is 6 MB).",
    )
    api_writes_per_minute_user: int = Field(
        120, validation_alias="API_WRITES_PER_MINUTE_USER", ge=1
    )
    api_writes_per_minute_service: int = Field(
        12_000, validation_alias="API_WRITES_PER_MINUTE_SERVICE", ge=1
    )
    api_writes_per_minute_admin: int = Field(
        600, validation_alias="API_WRITES_PER_MINUTE_ADMIN", ge=1
    )

    leaderboard_page_max: int = Field(100, validation_alias="LEADERBOARD_PAGE_MAX", ge=1, le=1000)

    points: PointsRules = Field(default_factory=PointsRules)

    tap_batch_max: int = Field(1000, validation_alias="TAP_BATCH_MAX", ge=1, le=10_000)
    tap_future_skew_s: int = Field(
        300,
        validation_alias="TAP_FUTURE_SKEW_SECONDS",
        ge=0,
        le=3600,
        description="How far ahead of the server clock a tap's time may be.",
    )
    tap_max_age_days: int = Field(
        30,
        validation_alias="TAP_MAX_AGE_DAYS",
        ge=1,
        le=3650,
        description="Older taps are refused: late data is rolled up, ancient data is a backfill.",
    )
    community_etl_lag_s: int = Field(
        120,
        validation_alias="COMMUNITY_ETL_LAG_SECONDS",
        ge=0,
        description="Taps received this recently wait for the next run (commits in flight).",
    )
    community_chunk_hours: int = Field(
        24, validation_alias="COMMUNITY_CHUNK_HOURS", ge=1, le=24 * 31
    )
    community_stage_timeout_ms: int = Field(
        300_000, validation_alias="COMMUNITY_STAGE_TIMEOUT_MS", ge=1000
    )
    community_work_mem_mb: int = Field(
        256,
        validation_alias="COMMUNITY_WORK_MEM_MB",
        ge=4,
        le=4096,
        description="work_mem of the ETL's transactions: its sorts and hashes stay in memory.",
    )
    community_backfill_chunk_days: int = Field(
        7, validation_alias="COMMUNITY_BACKFILL_CHUNK_DAYS", ge=1, le=366
    )
    community_backfill_max_days: int = Field(
        3660, validation_alias="COMMUNITY_BACKFILL_MAX_DAYS", ge=1
    )
    community_etl_function: str | None = Field(
        None,
        validation_alias="COMMUNITY_ETL_FUNCTION",
        description="The ETL Lambda a backfill is handed to; unset locally (a thread runs it).",
    )
    match_preset: Literal["small", "medium", "large"] = Field(
        "small",
        validation_alias="MATCH_PRESET",
        description="The guide's scale presets: 50 queued / 10 voting, 200 / 50, 1000 / 200.",
    )
    match_queue_low: int | None = Field(None, validation_alias="MATCH_QUEUE_LOW", ge=0)
    match_queue_target: int | None = Field(None, validation_alias="MATCH_QUEUE_TARGET", ge=1)
    match_active_low: int | None = Field(None, validation_alias="MATCH_ACTIVE_LOW", ge=0)
    match_active_target: int | None = Field(None, validation_alias="MATCH_ACTIVE_TARGET", ge=1)
    match_voters_per_proposal: int = Field(
        10, validation_alias="MATCH_VOTERS_PER_PROPOSAL", ge=1, le=100
    )
    match_voting_minutes: int = Field(10, validation_alias="MATCH_VOTING_MINUTES", ge=1)
    match_approve_at: int = Field(5, validation_alias="MATCH_APPROVE_AT", ge=1)
    match_reject_at: int = Field(5, validation_alias="MATCH_REJECT_AT", ge=1)
    match_scorer: str = Field(
        "tally.matchmaking.scoring:SharedInterestsScorer",
        validation_alias="MATCH_SCORER",
        description="module:Class of the compatibility scorer.",
    )
    match_candidate_sample: int = Field(
        400, validation_alias="MATCH_CANDIDATE_SAMPLE", ge=2, le=5000
    )
    match_reject_cooldown_days: int = Field(30, validation_alias="MATCH_REJECT_COOLDOWN_DAYS", ge=0)
    match_stuck_minutes: int = Field(5, validation_alias="MATCH_STUCK_MINUTES", ge=1)

    pou_finalizer_enabled: bool = Field(True, validation_alias="POU_FINALIZER_ENABLED")
    pou_k: int = Field(3, validation_alias="POU_K", ge=1, le=50, description="Quorum threshold.")
    pou_m: int = Field(5, validation_alias="POU_M", ge=0, le=50, description="Committee size.")
    pou_require_signatures: bool = Field(False, validation_alias="POU_REQUIRE_SIGNATURES")
    pou_attestations_per_hour: int = Field(
        100,
        validation_alias="POU_ATTESTATIONS_PER_HOUR",
        ge=1,
        description="Attestation requests one DID may make per hour.",
    )
    pou_committee_min_stake: int = Field(
        0,
        validation_alias="POU_COMMITTEE_MIN_STAKE",
        ge=0,
        description="Atomic units an agent must have locked (and not yet unlockable) to sit on "
        "a committee; 0: any active agent.",
    )
    pou_finalizer_batch: int = Field(1000, validation_alias="POU_FINALIZER_BATCH", ge=1, le=50_000)
    pou_reputation_alpha: float = Field(0.2, validation_alias="POU_REPUTATION_ALPHA", gt=0, le=1)
    pou_latency_norm_ms: float = Field(
        5000, validation_alias="POU_LATENCY_NORM_MS", gt=0, description="t is 0 at this latency."
    )
    pou_slash_factor: float = Field(0.9, validation_alias="POU_SLASH_FACTOR", gt=0, le=1)
    pou_points_per_task: int = Field(
        0,
        validation_alias="POU_POINTS_PER_TASK",
        ge=0,
        le=10_000,
        description="Ledger points for each finalized receipt's agent (0: no ledger entry).",
    )
    usefulness_window_days: int = Field(
        30, validation_alias="USEFULNESS_WINDOW_DAYS", ge=1, le=3650
    )
    usefulness_aggregator_enabled: bool = Field(
        True, validation_alias="USEFULNESS_AGGREGATOR_ENABLED"
    )
    usefulness_reward_pool_enabled: bool = Field(
        False, validation_alias="USEFULNESS_REWARD_POOL_ENABLED"
    )
    usefulness_reward_pool_hourly: int = Field(
        1_000_000_000,
        validation_alias="USEFULNESS_REWARD_POOL_HOURLY",
        ge=0,
        le=10**30,
        description="Atomic units shared each hour among agents by that hour's useful work.",
    )
    usefulness_reward_catchup_hours: int = Field(
        24, validation_alias="USEFULNESS_REWARD_CATCHUP_HOURS", ge=1, le=24 * 31
    )
    usefulness_hour_lag_s: int = Field(
        300,
        validation_alias="USEFULNESS_HOUR_LAG_SECONDS",
        ge=0,
        le=3600,
        description="An hour is settled this long after it ends (finalizations in flight).",
    )

    @field_validator("usefulness_reward_pool_hourly", mode="before")
    @classmethod
    def _bigint_literal(cls, value: object) -> object:
        """The guide writes the pool as a JavaScript BigInt (`1000000000n`); accept that too."""
        if isinstance(value, str) and value.strip().endswith("n"):
            return value.strip()[:-1]
        return value

    community_radar_cache_s: float = Field(
        60.0,
        validation_alias="COMMUNITY_RADAR_CACHE_SECONDS",
        ge=0,
        le=3600,
        description="How long one environment reuses a radar window it computed (0: never).",
    )
    surge_factor: float = Field(2.0, validation_alias="SURGE_FACTOR", gt=1.0, le=100.0)
    surge_min_taps: int = Field(10, validation_alias="SURGE_MIN_TAPS", ge=1)


MATCH_PRESETS: dict[str, tuple[int, int, int, int]] = {
    # queue low-water mark, queue target, voting low-water mark, voting target
    "small": (50, 75, 10, 12),
    "medium": (200, 300, 50, 60),
    "large": (1000, 1500, 200, 240),
}


def match_bands(settings: Settings) -> tuple[int, int, int, int]:
    """The queue and voting bands: the preset, with any explicit setting winning."""
    queue_low, queue_target, active_low, active_target = MATCH_PRESETS[settings.match_preset]
    return (
        settings.match_queue_low if settings.match_queue_low is not None else queue_low,
        settings.match_queue_target or queue_target,
        settings.match_active_low if settings.match_active_low is not None else active_low,
        settings.match_active_target or active_target,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests and the local runtime change the environment)."""
    get_settings.cache_clear()
