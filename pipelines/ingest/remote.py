"""Input files opened for reading, with retries for remote ones (https://, hf://, any fsspec URL).

fsspec and huggingface_hub open and range-read remote files, but one HTTP 503, one 429 or one
connection dropped mid-body raises out of `read()` and would kill the run. `RetryingInput` is the
missing part: a seekable binary file that keeps its own position, and on a transient failure
(HTTP 408/429/5xx, timeouts, connection resets, a body cut short) closes the remote file, waits
(exponential backoff with full jitter, or the server's `Retry-After`), reopens it and reads again
from the same byte offset (fsspec turns that into a `Range` request). Bytes are handed to the
caller only once a read succeeded, so nothing is emitted twice or skipped. After
`network.retries` failed attempts in a row it raises `RemoteReadError` naming the URL; the run
stops (exit 2) and `--resume` continues with the files not yet done.

Backoff: attempt k waits uniform(0, min(max_backoff_s, backoff_s * 2**k)) ("full jitter",
AWS Architecture Blog, "Exponential Backoff And Jitter", 2015), or `Retry-After` seconds when the
server sends it (RFC 9110 §10.2.3; seconds or an HTTP date, at most MAX_RETRY_AFTER_S).
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import fsspec

READ_BLOCK = 1 << 20  # bytes per remote range request
MAX_RETRY_AFTER_S = 600.0  # a longer Retry-After counts as one more failed attempt's wait of this length
_sleep = time.sleep  # tests replace it to record the waits


class SourceAccessError(RuntimeError):
    """A source's files cannot be listed or opened (credentials, network)."""


class RemoteReadError(SourceAccessError):
    """A remote input could not be read after the configured retries (or not at all: 404, 403)."""


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 8             # failed attempts in a row before giving up
    backoff_s: float = 0.5       # first backoff ceiling; doubles per attempt
    max_backoff_s: float = 30.0  # ceiling of one backoff wait (Retry-After is honoured as sent)
    timeout_s: float = 60.0      # connect / between-bytes timeout of one request


RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _status_and_retry_after(exc: BaseException) -> tuple[int | None, float | None]:
    """HTTP status and Retry-After seconds of an error from aiohttp, requests/httpx (huggingface_hub)
    or fsspec, looking through the chain of causes (fsspec wraps some errors in FileNotFoundError)."""
    seen = set()
    e = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        response = getattr(e, "response", None)
        status = getattr(e, "status", None) or getattr(e, "status_code", None) \
            or getattr(response, "status_code", None)
        if isinstance(status, int):
            headers = getattr(e, "headers", None) or getattr(response, "headers", None) or {}
            return status, _retry_after(headers.get("Retry-After") if hasattr(headers, "get") else None)
        e = e.__cause__ or e.__context__
    return None, None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _transient(exc: BaseException) -> bool:
    status, _ = _status_and_retry_after(exc)
    if status is not None:
        return status in RETRYABLE_STATUS
    e, seen = exc, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError)) or name in (
                "ClientPayloadError", "ClientConnectionError", "ClientOSError", "ServerDisconnectedError",
                "ServerTimeoutError", "ClientConnectorError", "ContentLengthError", "TransferEncodingError",
                "FSTimeoutError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError", "ReadError",
                "ChunkedEncodingError", "IncompleteRead", "ProtocolError"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def with_retries(fn, policy: RetryPolicy, url: str, cleanup=None, rng: random.Random | None = None,
                 wrap_permanent: bool = True):
    """`fn()`, retried on transient failures as the module says; `cleanup()` runs after each failure.
    Raises `RemoteReadError` (one line naming `url`) when the failure persists, and when it is not
    transient (404, 403, ...) unless `wrap_permanent` is False (then the error itself is raised)."""
    rng = rng or random.Random()  # jitter only: never affects what is read
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:  # classified below: transient -> retry, anything else -> one line
            if cleanup is not None:
                cleanup()
            status, after = _status_and_retry_after(e)
            what = f"HTTP {status}" if status else _first_line(e)
            if status in (401, 403) and ("huggingface.co" in url or url.startswith("hf://")):
                what += "; log in with `huggingface-cli login` or set HF_TOKEN (gated or private dataset)"
            if not _transient(e):
                if not wrap_permanent:
                    raise
                raise RemoteReadError(f"cannot read {url}: {what}") from None
            attempt += 1
            if attempt > policy.retries:
                raise RemoteReadError(f"cannot read {url} after {policy.retries} retries (last: {what}); "
                                      "check the network, then rerun with --resume") from None
            ceiling = min(policy.max_backoff_s, policy.backoff_s * 2 ** (attempt - 1))
            _sleep(min(MAX_RETRY_AFTER_S, after) if after is not None else rng.uniform(0, ceiling))


class RetryingInput(io.RawIOBase):
    """A remote file as a seekable binary stream that survives transient network failures.

    A server that ignores `Range` or gives no size is read as a stream instead: a resume then
    re-reads from the start and skips to the offset (slower, still exact)."""

    def __init__(self, url: str, policy: RetryPolicy, rng: random.Random | None = None):
        super().__init__()
        self.url, self.policy, self.rng = url, policy, rng or random.Random()
        options = {}
        self.http = url.startswith(("http://", "https://"))
        if self.http:
            import aiohttp
            # identity: the bytes of the file itself (a server's on-the-fly gzip would break ranges)
            options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
                total=None, sock_connect=policy.timeout_s, sock_read=policy.timeout_s), "auto_decompress": False,
                "headers": {"Accept-Encoding": "identity"}}
        self.fs, self.path = fsspec.core.url_to_fs(url, **options)
        self.pos = 0
        self.f = None
        self.f_pos = 0       # where the open stream is (stream mode)
        self.stream = False  # the server cannot serve ranges: read sequentially
        self.size = None
        self.size = self._call(lambda: self._file().size)
        if self.size is None:
            self.stream = True

    def _file(self):
        if self.stream:
            if self.f is None or self.f_pos > self.pos:
                self._drop()
                self.f, self.f_pos = self.fs.open(self.path, "rb", block_size=0), 0
            while self.f_pos < self.pos:  # skip to the offset
                chunk = self.f.read(min(self.pos - self.f_pos, READ_BLOCK))
                if not chunk:
                    raise ConnectionError(f"stream ended at byte {self.f_pos}, before offset {self.pos}")
                self.f_pos += len(chunk)
            return self.f
        if self.f is None:
            known = {"size": self.size} if self.size is not None and self.http else {}
            self.f = self.fs.open(self.path, "rb", block_size=READ_BLOCK, cache_type="none", **known)
        self.f.seek(self.pos)
        return self.f

    def _drop(self):
        if self.f is not None:
            try:
                self.f.close()
            except Exception:  # a broken connection may fail to close; the file is discarded anyway
                pass
            self.f = None

    def _call(self, fn):
        def attempt():
            try:
                return fn()
            except ValueError as e:
                if "range requests" not in str(e) or self.stream:
                    raise
                self._drop()
                self.stream = True  # fsspec: "The HTTP server doesn't appear to support range requests"
                return fn()
        return with_retries(attempt, self.policy, self.url, self._drop, self.rng)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size or 0}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, b):
        n = len(b)
        if self.size is not None:
            n = max(0, min(n, self.size - self.pos))
        if n == 0:
            return 0
        data = self._call(lambda: self._read_exact(n))
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def _read_exact(self, n: int) -> bytes:
        """`n` bytes from `pos`: a short read before the known end is a cut body, not the end."""
        f = self._file()
        data = f.read(n)
        if self.stream:
            while len(data) < n and (more := f.read(n - len(data))):
                data += more
            self.f_pos += len(data)
        if self.size is not None and len(data) < n:
            raise ConnectionError(f"short read: {len(data)} of {n} bytes at offset {self.pos}")
        return data

    def read(self, n=-1):
        if n is None or n < 0:
            if self.size is None:  # to the end, in blocks
                return b"".join(iter(lambda: self.read(READ_BLOCK), b""))
            n = self.size - self.pos
        buf = bytearray(n)
        got = self.readinto(buf)
        return bytes(buf[:got])

    def close(self):
        self._drop()
        super().close()


class LocalInput(io.FileIO):
    """A local file with `.size` (as the remote one has)."""

    def __init__(self, path: str):
        super().__init__(path, "rb")
        self.size = os.fstat(self.fileno()).st_size


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def host_of(url: str) -> str | None:
    """The host a remote URL reads from (hf:// -> huggingface.co); None for local files."""
    if not is_remote(url):
        return None
    protocol, rest = url.split("://", 1)
    return "huggingface.co" if protocol == "hf" else rest.split("/", 1)[0].lower()


def open_input(url: str, policy: RetryPolicy | None = None):
    """A binary, seekable file object with `.size` for a local path or a remote URL."""
    if not is_remote(url):
        return LocalInput(url[len("file://"):] if url.startswith("file://") else url)
    return RetryingInput(url, policy or RetryPolicy())
