"""Large exports in AWS: stream the file into S3 and hand out a short-lived link."""

from __future__ import annotations

import io
import uuid
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


def publish(chunks: Iterator[bytes], filename: str, content_type: str) -> str:
    import boto3

    settings = get_settings()
    bucket = settings.export_bucket
    assert bucket, "EXPORT_BUCKET is not set"
    key = f"exports/{uuid.uuid4()}/{filename}"
    s3 = boto3.client("s3")
    s3.upload_fileobj(
        io.BufferedReader(_IterStream(chunks), buffer_size=1 << 20),
        bucket,
        key,
        ExtraArgs={
            "ContentType": content_type,
            "ContentDisposition": f'attachment; filename="{filename}"',
        },
    )
    logger.info("Export published", extra={"bucket": bucket, "key": key})
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.export_url_ttl_s
    )
    return url
