"""`tally dev`: every API route on 127.0.0.1 and every schedule fired, one process."""

from __future__ import annotations

import copy
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from fastapi import APIRouter, FastAPI

from tally.api.app import create_app
from tally.local.invoke import invoke, load_module
from tally.local.schedule import next_fire
from tally.local.template import Schedule, Template

logger = Logger(child=True)


def build_local_app(template: Template) -> FastAPI:
    """One app with the routers of every API function, taken from the functions' own modules."""
    routers: list[APIRouter] = []
    for fn in template.functions.values():
        if not fn.routes:
            continue
        module = load_module(fn)
        if not isinstance(getattr(module, "app", None), FastAPI):
            raise TypeError(f"{fn.logical_id} has HTTP routes but its module has no FastAPI app")
        routers.extend(module.ROUTERS)
    return create_app("Tally (local)", routers)


class Scheduler:
    """Fires each ScheduleV2 event with its Input as the whole event, like EventBridge does."""

    def __init__(self, template: Template, *, workers: int = 4) -> None:
        self.template = template
        self.stop = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="schedule")
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.started = datetime.now(UTC)
        self.jobs: list[tuple[str, Schedule]] = [
            (fn.logical_id, s) for fn in template.functions.values() for s in fn.schedules
        ]
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        for logical_id, sched in self.jobs:
            first = next_fire(sched.expression, sched.timezone, self.started, self.started)
            print(
                f"  schedule  {logical_id}/{sched.name}: {sched.expression} "
                f"({sched.timezone}), next {first:%Y-%m-%d %H:%M:%S} UTC",
                flush=True,
            )
        self.thread.start()

    def _loop(self) -> None:
        due = {
            (lid, s.name): next_fire(s.expression, s.timezone, self.started, self.started)
            for lid, s in self.jobs
        }
        while not self.stop.is_set():
            now = datetime.now(UTC)
            for logical_id, sched in self.jobs:
                key = (logical_id, sched.name)
                if due[key] <= now:
                    due[key] = next_fire(sched.expression, sched.timezone, now, self.started)
                    self.fire(logical_id, sched)
            wait = min((t - now).total_seconds() for t in due.values()) if due else 1.0
            self.stop.wait(max(0.2, min(wait, 1.0)))

    def fire(self, logical_id: str, sched: Schedule) -> None:
        key = f"{logical_id}/{sched.name}"
        with self.lock:
            if key in self.running:
                print(f"  schedule  {key}: previous run still going, skipped", flush=True)
                return
            self.running.add(key)
        self.pool.submit(self._run, key, logical_id, copy.deepcopy(sched.input))

    def _run(self, key: str, logical_id: str, event: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            result = invoke(self.template, logical_id, event)
            took = (time.perf_counter() - started) * 1000
            print(
                f"  schedule  {key}: ok in {took:.0f} ms {json.dumps(result, default=str)}",
                flush=True,
            )
        except Exception as exc:
            print(f"  schedule  {key}: FAILED {type(exc).__name__}: {exc}", flush=True)
        finally:
            with self.lock:
                self.running.discard(key)

    def shutdown(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
