"""Large exports in AWS: stream the file into S3 and hand out a short-lived link."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

from aws_lambda_powertools import Logger

from tally.settings import get_settings

logger = Logger(child=True)


class _IterStream(io.RawIOBase):
    """A read-only file over an iterator of byte chunks, so boto3 can multipart-upload it
    without the whole file ever being in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def publish(chunks: Iterator[bytes], filename: str, content_type: str, *, version: str) -> str:
    """Upload the export once per board version and return a short-lived link to it.

    The object key carries the version, so a repeat of an unchanged board reuses the file
    instead of scanning the board again. Parts are uploaded one at a time, so memory holds
    about one 8 MB part whatever the board's size.
    """
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import ClientError

    settings = get_settings()
    bucket = settings.export_bucket
    assert bucket, "EXPORT_BUCKET is not set"
    digest = hashlib.sha256(version.encode()).hexdigest()[:16]
    key = f"exports/{digest}/{filename}"
    s3 = boto3.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        reused = True
    except ClientError:
        reused = False
    if reused:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # never started: releases nothing but the generator
    else:
        s3.upload_fileobj(
            io.BufferedReader(_IterStream(chunks), buffer_size=1 << 20),
            bucket,
            key,
            ExtraArgs={
                "ContentType": content_type,
                "ContentDisposition": f'attachment; filename="{filename}"',
            },
            Config=TransferConfig(
                multipart_chunksize=8 << 20, max_concurrency=1, use_threads=False
            ),
        )
    logger.info("Export published", extra={"bucket": bucket, "key": key, "reused": reused})
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.export_url_ttl_s
    )
    return url
