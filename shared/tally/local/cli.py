"""The `tally` command: run Tally on one machine with no AWS account and no Docker."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from datetime import date
from pathlib import Path
from typing import Any

from tally.local import template as template_mod

DEFAULT_PORT = 3000


def ensure_dev_secret(data_dir: Path) -> None:
    """The local signing key for `tally token`, kept in .tally/ so tokens survive restarts."""
    if os.environ.get("TALLY_JWT_SECRET"):
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "dev-jwt-secret"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(48))
        key_file.chmod(0o600)
    os.environ["TALLY_JWT_SECRET"] = key_file.read_text().strip()


def data_dir_for(root: Path) -> Path:
    """Where local state lives: TALLY_HOME, else .tally/ in the project (git-ignored)."""
    return Path(os.environ.get("TALLY_HOME") or root / ".tally")


def prepare_environment(root: Path) -> str:
    """Point Tally at a database (DATABASE_URL, else the embedded one) and a dev signing key."""
    data_dir = data_dir_for(root)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("DATABASE_URL"):
        from tally.local.embedded import start

        os.environ["DATABASE_URL"] = start(data_dir / "pgdata")
    ensure_dev_secret(data_dir)
    os.environ.setdefault("TALLY_AUTH_MODE", "local")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tally")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tally")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO")
    from tally.settings import reset_settings

    reset_settings()
    return os.environ["DATABASE_URL"]


def _migrate() -> list[str]:
    from tally.db.connection import get_connection
    from tally.db.migrate import migrate

    return migrate(get_connection())


def cmd_dev(args: argparse.Namespace, root: Path) -> int:
    import uvicorn

    from tally.local.runtime import Scheduler, build_local_app

    url = prepare_environment(root)
    applied = _migrate()
    template = template_mod.load(root)
    print(f"Tally dev: database {url}", flush=True)
    print(f"  migrations applied: {len(applied)}", flush=True)
    if args.seed:
        from tally.local.seed import (
            ensure_demo_season,
            has_data,
            seed,
            seed_community,
            seed_pou,
        )

        if has_data():
            print("  seed      skipped: the database has users already (`tally seed` adds more)")
        else:
            seed(users=args.seed)
            ensure_demo_season()
            seed_community()
            seed_pou()
    app = build_local_app(template)
    scheduler = Scheduler(template)
    if not args.no_schedules:
        scheduler.start()
    for fn in template.functions.values():
        for route in fn.routes:
            print(f"  route     {route.method:6} {route.path}  -> {fn.logical_id}", flush=True)
    print(f"Serving http://{args.host}:{args.port}  (docs at /docs; Ctrl-C stops)", flush=True)
    try:
        # No lifespan: the app keeps its connections at module scope, as in Lambda.
        uvicorn.run(
            app, host=args.host, port=args.port, log_level="info", access_log=True, lifespan="off"
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C is how `tally dev` is stopped
    finally:
        print("Stopping schedules...", flush=True)
        scheduler.shutdown()
    print("Stopped.", flush=True)
    return 0


def cmd_invoke(args: argparse.Namespace, root: Path) -> int:
    from tally.local.invoke import invoke, load_event

    # Events are what API Gateway delivers after its JWT authorizer, so trust their claims.
    os.environ["TALLY_AUTH_MODE"] = "apigw"
    prepare_environment(root)
    template = template_mod.load(root)
    event: dict[str, Any] = load_event(Path(args.event)) if args.event else {}
    result = invoke(template, args.function, event)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_migrate(args: argparse.Namespace, root: Path) -> int:
    prepare_environment(root)
    applied = _migrate()
    print(f"Applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


def cmd_seed(args: argparse.Namespace, root: Path) -> int:
    from tally.local.seed import ensure_demo_season, seed, seed_community, seed_pou

    prepare_environment(root)
    _migrate()
    seed(users=args.users, pending=args.pending, random_seed=args.random_seed)
    ensure_demo_season()
    seed_community(random_seed=args.random_seed)
    seed_pou()
    return 0


def cmd_recompute(args: argparse.Namespace, root: Path) -> int:
    from tally.points.recompute import recompute

    prepare_environment(root)
    _migrate()
    report = recompute(apply=args.apply)
    print(report.model_dump_json(indent=2))
    return 0


def cmd_community(args: argparse.Namespace, root: Path) -> int:
    """The community ETL now: the nightly run, or a backfill of a date range."""
    from tally.community import etl

    prepare_environment(root)
    _migrate()
    if args.rebuild:
        result = etl.rebuild_all(requested_by="tally command")
    elif args.from_day or args.to_day:
        if not (args.from_day and args.to_day):
            print("--from and --to go together", file=sys.stderr)
            return 2
        if args.to_day < args.from_day:
            print("--to is before --from", file=sys.stderr)
            return 2
        result = etl.backfill_now(args.from_day, args.to_day, requested_by="tally command")
    else:
        result = etl.run_nightly()
    print(result.model_dump_json(indent=2))
    return 0 if result.complete else 1


def cmd_token(args: argparse.Namespace, root: Path) -> int:
    from tally.auth import Role, issue_token

    ensure_dev_secret(data_dir_for(root))
    from tally.settings import reset_settings

    reset_settings()
    roles = [Role(r) for r in args.role]
    print(issue_token(args.sub, roles, ttl_s=args.ttl))
    return 0


def cmd_db_url(args: argparse.Namespace, root: Path) -> int:
    print(prepare_environment(root))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tally", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="serve every route and fire every schedule locally")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=DEFAULT_PORT)
    dev.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="USERS",
        help="seed demo data for this many users first",
    )
    dev.add_argument("--no-schedules", action="store_true")
    dev.set_defaults(run=cmd_dev)

    inv = sub.add_parser("invoke", help="invoke one function's handler, like sam local invoke")
    inv.add_argument("function", help="the function's logical id in template.yaml")
    inv.add_argument("-e", "--event", help="a JSON event file (default: {})")
    inv.set_defaults(run=cmd_invoke)

    mig = sub.add_parser("migrate", help="apply pending schema migrations")
    mig.set_defaults(run=cmd_migrate)

    seed = sub.add_parser("seed", help="load realistic demo data")
    seed.add_argument("--users", type=int, default=1000)
    seed.add_argument(
        "--pending",
        type=int,
        default=25,
        help="approved sessions left for the award job to pick up",
    )
    seed.add_argument("--random-seed", type=int, default=42)
    seed.set_defaults(run=cmd_seed)

    rec = sub.add_parser("recompute", help="replay awards under today's rules (dry run)")
    rec.add_argument("--apply", action="store_true", help="write the adjustments")
    rec.set_defaults(run=cmd_recompute)

    com = sub.add_parser(
        "community", help="run the community ETL now, or backfill a date range (--from/--to)"
    )
    com.add_argument("--from", dest="from_day", type=date.fromisoformat, metavar="YYYY-MM-DD")
    com.add_argument("--to", dest="to_day", type=date.fromisoformat, metavar="YYYY-MM-DD")
    com.add_argument("--rebuild", action="store_true", help="derive every rollup from all the taps")
    com.set_defaults(run=cmd_community)

    tok = sub.add_parser("token", help="print a locally signed bearer token")
    tok.add_argument("--sub", default="dev-user")
    tok.add_argument(
        "--role",
        action="append",
        choices=["user", "service", "admin"],
        default=None,
        help="repeatable; default: user",
    )
    tok.add_argument("--ttl", type=int, default=3600)
    tok.set_defaults(run=cmd_token)

    url = sub.add_parser("db-url", help="print the database URL (starts the embedded server)")
    url.set_defaults(run=cmd_db_url)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "role", "unset") is None:
        args.role = ["user"]
    try:
        root = template_mod.find_root()
    except FileNotFoundError as exc:
        print(f"tally: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args, root))
    except KeyboardInterrupt:
        return 130
    except (KeyError, FileNotFoundError, ValueError) as exc:
        print(f"tally: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
