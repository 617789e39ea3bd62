"""Powertools Logger, Metrics and Tracer, created once, and the one decorator stack for handlers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

SERVICE = "tally"

logger = Logger(service=SERVICE)
metrics = Metrics(namespace="Tally", service=SERVICE)
tracer = Tracer(service=SERVICE)

Handler = Callable[[dict[str, Any], LambdaContext], Any]

API_CORRELATION = correlation_paths.API_GATEWAY_HTTP
SCHEDULE_CORRELATION = None


def dimensioned_metrics(
    name: str, value: str, figures: dict[str, tuple[MetricUnit, float]]
) -> None:
    """Figures under one extra dimension (a job's stage, say), each flushed at once as its own
    EMF blob so the function's other metrics keep their dimensions."""
    from aws_lambda_powertools.metrics import single_metric

    for metric_name, (unit, figure) in figures.items():
        with single_metric(name=metric_name, unit=unit, value=figure, namespace="Tally") as metric:
            metric.add_dimension(name="service", value=SERVICE)
            metric.add_dimension(name=name, value=value)


def lambda_handler(*, correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """The decorator stack every Tally handler wears: trace, log with context, flush metrics."""

    def decorate(fn: Handler) -> Handler:
        wrapped = tracer.capture_lambda_handler(fn, capture_response=False)
        wrapped = logger.inject_lambda_context(
            wrapped, correlation_id_path=correlation_id_path, clear_state=True
        )
        wrapped = metrics.log_metrics(wrapped, capture_cold_start_metric=True)
        return functools.wraps(fn)(wrapped)

    return decorate
