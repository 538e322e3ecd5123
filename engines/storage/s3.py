"""A repository on any S3-compatible endpoint through boto3 (imported lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from engines.errors import DriverMissingError, ObjectMissing, StorageError
from engines.secrets import scrub
from engines.storage.base import ObjectInfo, Storage, check_key


def _code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (None for other exceptions)."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return str(code) if code is not None else None


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, ``some/prefix/``)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise StorageError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``. S3 PUTs are atomic, so ``put`` is one request."""

    scheme = "s3"

    def __init__(self, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 max_connections: int = 16) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.endpoint_url = endpoint_url
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError:
            raise DriverMissingError("boto3", "s3") from None
        kwargs: dict[str, Any] = {"endpoint_url": endpoint_url, "region_name": region or "us-east-1",
                                  "config": BotoConfig(max_pool_connections=max_connections,
                                                       retries={"mode": "standard", "max_attempts": 5},
                                                       connect_timeout=10, read_timeout=120)}
        if access_key and secret_key:
            kwargs |= {"aws_access_key_id": access_key, "aws_secret_access_key": secret_key}
        self.client = boto3.session.Session().client("s3", **kwargs)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, what: str, exc: Exception) -> StorageError:
        code = _code(exc) or type(exc).__name__
        return StorageError(f"{self.describe()}: {what}: {code}: {scrub(str(exc))[:300]}")

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._error(f"cannot write {key}", exc) from None

    def put_new(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except Exception as exc:
            code = _code(exc)
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise self._error(f"cannot write {key}", exc) from None

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            return body
        except Exception as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404"):
                raise ObjectMissing(f"{self.describe()}: object {key} is missing") from None
            raise self._error(f"cannot read {key}", exc) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._error(f"cannot stat {key}", exc) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][len(self.prefix):], int(obj["Size"]))
        except Exception as exc:
            raise self._error(f"cannot list {prefix or '/'}", exc) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._error(f"cannot delete {key}", exc) from None

    def prepare(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            code = _code(exc)
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise self._error("cannot reach the bucket", exc) from None
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except Exception as create_exc:
                raise self._error("bucket missing and cannot be created", create_exc) from None

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def close(self) -> None:
        self.client.close()
