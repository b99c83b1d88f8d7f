"""Chat completions from any OpenAI-compatible endpoint (OpenAI, a vLLM server, a proxy).

`EndpointClient` does the requests: a concurrency limit, a timeout per request, retries
with exponential back-off on connection/timeout/rate-limit/server errors, and an on-disk
cache of judgements (JSONL, one fsynced line per judgement, so whatever finished before a
failure is kept and a rerun asks only for the rest). Any other HTTP error status is one
HarmcoreError naming the endpoint, the status and the server's message. The API key comes
from the environment only and is never logged or cached.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from tqdm.auto import tqdm

from harmcore.errors import HarmcoreError


def one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


class JudgementCache:
    """Append-only JSONL of {"key": ..., "value": ...}; a torn last line (a crash mid-write) is ignored."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self.values: dict[str, dict] = {}
        if self.path and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self.values[rec["key"]] = rec["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> dict | None:
        return self.values.get(key)

    def put(self, key: str, value: dict) -> None:
        line = (json.dumps({"key": key, "value": value}, sort_keys=True) + "\n").encode()
        with self._lock:
            self.values[key] = value
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other processes append to the same file
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # end a line torn by a crash, so this one stays whole
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


class EndpointClient:
    """Chat completions from an OpenAI-compatible endpoint, cached, retried and rate-limited."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 1000,
        timeout_s: float = 60.0,
        retries: int = 3,
        concurrency: int = 8,
        cache_path: str | os.PathLike | None = None,
        backoff_s: float = 0.5,
        extra_body: dict | None = None,
    ):
        import openai

        self.base_url, self.model = base_url, model
        self.temperature, self.max_tokens = temperature, max_tokens
        self.retries, self.concurrency, self.backoff_s = retries, concurrency, backoff_s
        self.extra_body = dict(extra_body or {})
        # Local servers accept any key; hosted endpoints read theirs from the environment.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        self.cache = JudgementCache(cache_path)
        self.stats = {"requests": 0, "cached": 0, "retries": 0}

    def _key(self, messages, extra: dict) -> str:
        blob = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature,
             "max_tokens": self.max_tokens, "extra_body": self.extra_body, **extra},
            sort_keys=True,
        )  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()

    def _request(self, messages, logprobs: int | None) -> dict:
        import openai

        kwargs = dict(model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=logprobs, max_tokens=1)
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        retryable = (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        )
        for attempt in range(self.retries + 1):
            try:
                return _answer(self._client.chat.completions.create(**kwargs), logprobs)
            except retryable as err:
                if attempt == self.retries:
                    raise HarmcoreError(
                        f"judge endpoint {self.base_url} failed after {attempt + 1} attempts "
                        f"({type(err).__name__}): check that it is up, or raise eval.endpoint.retries/timeout_s"
                    ) from err
                self.stats["retries"] += 1
                time.sleep(self.backoff_s * 2**attempt)
            except (openai.APIResponseValidationError, MalformedAnswer, ValueError) as err:
                # HTML, truncated JSON, {} or no choices: maybe a proxy's hiccup, so retried, then one line
                if attempt == self.retries:
                    raise HarmcoreError(
                        f"judge endpoint {self.base_url} did not answer with a chat completion "
                        f"({one_line(err, 160)}) after {attempt + 1} attempts: check that eval.endpoint.base_url "
                        "is an OpenAI-compatible /v1 URL"
                    ) from None
                self.stats["retries"] += 1
                time.sleep(self.backoff_s * 2**attempt)
            except openai.AuthenticationError as err:
                raise HarmcoreError(
                    f"judge endpoint {self.base_url} rejected the API key: set the environment variable "
                    "named by eval.endpoint.api_key_env"
                ) from err
            except (openai.NotFoundError, openai.BadRequestError) as err:
                raise HarmcoreError(
                    f"judge endpoint {self.base_url} refused the request for model {self.model!r} "
                    f"(HTTP {err.status_code} {type(err).__name__}: {one_line(err, 160)}): check eval.endpoint.model"
                ) from err
            except openai.APIStatusError as err:  # any other status that is not retried (403, 409, 422, ...)
                raise HarmcoreError(
                    f"judge endpoint {self.base_url} answered HTTP {err.status_code} ({type(err).__name__}) "
                    f"for model {self.model!r}: {one_line(err.message)}"
                ) from err
        raise AssertionError("unreachable: every attempt returns or raises")

    def probe(self) -> None:
        """One uncached request, before any work that will need the endpoint: a wrong URL, model or
        key is found in seconds, not after the generations it would judge."""
        self._request([{"role": "user", "content": "Reply with the word OK."}], None)

    def complete(self, message_lists: Sequence[list[dict]], logprobs: int | None = None) -> list[dict]:
        """One completion per message list ({"text", ["top_logprobs"]}), in order.

        Cached judgements are not requested again. On a failure, what finished is already in
        the cache and the error is raised once the requests in flight have ended.
        """
        extra = {"top_logprobs": logprobs} if logprobs else {}
        keys = [self._key(m, extra) for m in message_lists]
        out: list[dict | None] = [self.cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        self.stats["cached"] += len(out) - len(todo)

        bar = tqdm(total=len(todo), desc=f"judge {self.model}", unit="answer", disable=len(todo) < 2)

        def one(i: int) -> None:
            value = self._request(message_lists[i], logprobs)
            self.cache.put(keys[i], value)
            out[i] = value
            bar.update()

        if todo:
            with bar, ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                futures = [pool.submit(one, i) for i in todo]
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                for f in pending:
                    f.cancel()
                self.stats["requests"] += sum(1 for f in futures if f.done() and not f.cancelled())
                for f in futures:
                    if f.done() and not f.cancelled() and f.exception():
                        raise f.exception()
        return out  # type: ignore[return-value]


class MalformedAnswer(ValueError):
    """A response that parsed but is not a chat completion."""


def _answer(resp, logprobs: int | None) -> dict:
    """{"text", ["top_logprobs"]} of a chat completion, checked field by field."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise MalformedAnswer(f"no choices in {one_line(resp, 120)}")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        raise MalformedAnswer(f"message content {one_line(content, 80)} is not text")
    out = {"text": content or ""}
    lp = getattr(choices[0], "logprobs", None)
    if logprobs and lp is not None and getattr(lp, "content", None):
        try:
            out["top_logprobs"] = [[str(t.token), float(t.logprob)] for t in lp.content[0].top_logprobs]
        except (AttributeError, TypeError, ValueError, IndexError) as err:
            raise MalformedAnswer(f"logprobs are not token/logprob pairs ({type(err).__name__})") from None
    return out


def client_from(cfg, cache_dir: str | os.PathLike) -> EndpointClient:
    """The `EndpointClient` of `eval.endpoint` (an EndpointJudgeConfig with a base_url)."""
    if not cfg.base_url:
        raise HarmcoreError("no judge endpoint: set eval.endpoint.base_url (e.g. http://127.0.0.1:8000/v1)")
    safe = re.sub(r"[^\w.-]+", "_", cfg.model)
    return EndpointClient(
        cfg.base_url,
        cfg.model,
        api_key_env=cfg.api_key_env,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        concurrency=cfg.concurrency,
        cache_path=cfg.cache_path or Path(cache_dir) / "judgements" / f"{safe}.jsonl",
        extra_body=cfg.extra_body,
    )
