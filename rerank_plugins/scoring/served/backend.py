"""The scoring protocol over a model served by vLLM, SGLang, llama.cpp or an OpenAI-compatible server.

Name a served model wherever a model is named today (``registry.create``, every strategy, every
adapter class, ``rerank-plugins bench --model``) with its URL, and the model's tokenizer (hub id
or local folder) after ``#``::

    model="http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct"

or build the backend yourself and pass it as ``model=``::

    ServedModel("http://127.0.0.1:8000/v1", tokenizer="Qwen/Qwen2.5-7B-Instruct", api_key="...")

Settings go in the URL's query (``?model=NAME&api=vllm&timeout=60&max_in_flight=64``) or as
keyword arguments. Prompts are built here, with the tokenizer, exactly as the in-process core
builds them, and sent as token ids; the server only runs the model.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import torch

from rerank_plugins.scoring.model import check_bool, loading
from rerank_plugins.scoring.prompts import ChatPrompts, Document, EncodedPrompt
from rerank_plugins.scoring.protocol import checked_logits_request
from rerank_plugins.scoring.served.client import HttpClient, ServedModelError, gather_all
from rerank_plugins.scoring.served.servers import KINDS, Counts, Probe, Server, owned_by_kind, server_class
from rerank_plugins.scoring.stats import CoreStats

__all__ = [
    "API_KEY_ENV",
    "ServedModel",
    "ServedModelError",
    "ServedStats",
    "clear_served",
    "get_served",
    "is_served_name",
    "parse_served_name",
]

logger = logging.getLogger(__name__)

#: the environment variable read for the API key when none is given
API_KEY_ENV = "RERANK_PLUGINS_API_KEY"
_SCHEMES = ("http://", "https://")
_PROBE_TEXT = "Is the sky blue on a clear day? Answer Yes or No."
_OPTIONS = {"model": str, "api": str, "timeout": float, "max_in_flight": int, "max_retries": int, "max_length": int}


def is_served_name(model: object) -> bool:
    """Whether ``model`` names a served model (an ``http://`` or ``https://`` URL).

    Example:
        >>> is_served_name("http://127.0.0.1:8080/v1#HuggingFaceTB/SmolLM2-135M-Instruct")
        True
        >>> is_served_name("HuggingFaceTB/SmolLM2-135M-Instruct")
        False
    """
    return isinstance(model, str) and model.strip().lower().startswith(_SCHEMES)


@dataclass(frozen=True)
class ServedName:
    """A served-model name taken apart: the server root, the tokenizer and the URL's settings."""

    root: str
    tokenizer: str | None
    options: dict[str, Any]


def parse_served_name(name: str) -> ServedName:
    """Split ``http://host:port[/v1][?settings]#tokenizer`` into its parts.

    The root drops a trailing ``/v1`` (native endpoints such as llama.cpp's ``/completion`` and
    SGLang's ``/generate`` live at the root). Settings: ``model`` (the served model's name),
    ``api``, ``timeout``, ``max_in_flight``, ``max_retries``, ``max_length``.

    Example:
        >>> n = parse_served_name("http://gpu-1:8000/v1?model=qwen&timeout=30#Qwen/Qwen2.5-7B-Instruct")
        >>> n.root, n.tokenizer, n.options
        ('http://gpu-1:8000', 'Qwen/Qwen2.5-7B-Instruct', {'model': 'qwen', 'timeout': 30.0})
    """
    if not is_served_name(name):
        raise ValueError(f"a served model name starts with http:// or https://, got {name!r}")
    parts = urlsplit(name.strip())
    if not parts.netloc:
        raise ValueError(f"served model {name!r} has no host")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    root = urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ValueError(f"served model {name!r}: unknown setting {key!r}; known: {', '.join(_OPTIONS)}")
        try:
            options[key] = _OPTIONS[key](value)
        except ValueError:
            raise ValueError(f"served model {name!r}: {key}={value!r} is not a {_OPTIONS[key].__name__}") from None
    return ServedName(root, parts.fragment or None, options)


@dataclass
class ServedStats(CoreStats):
    """:class:`CoreStats` plus the HTTP side: requests sent, forced per-token requests, floored values.

    ``forward_passes`` counts requests that ran the model once (one per scored row, one per
    generated token); ``prompt_tokens`` counts prompt tokens sent (the server's prefix cache may
    compute fewer).
    """

    requests: int = 0
    forced_requests: int = 0
    floored_logprobs: int = 0
    retries: int = 0

    def snapshot(self) -> dict[str, int]:
        out = super().snapshot()
        with self._lock:
            out.update(requests=self.requests, forced_requests=self.forced_requests,
                       floored_logprobs=self.floored_logprobs, retries=self.retries)
        return out


class ServedModel:
    """The LLM primitives of the scoring protocol over HTTP: log-probabilities, generation, prompts.

    Args:
        url: the server (``http://host:port`` or ``.../v1``); may carry ``?settings`` and
            ``#tokenizer`` as in :func:`parse_served_name`.
        tokenizer: the model's tokenizer, a hub id or local folder (instead of ``#...``).
        served_model: the name the server serves the model under (``?model=``); default: the only
            model the server lists, or the one named like ``tokenizer``.
        api: ``"auto"`` (detect), ``"vllm"``, ``"sglang"``, ``"llamacpp"`` or ``"openai"`` (any
            OpenAI-compatible ``/v1/completions`` that takes token ids and returns logprobs).
        api_key: sent as a bearer token; default: the ``RERANK_PLUGINS_API_KEY`` environment variable.
        timeout: seconds one request may take before it fails.
        max_in_flight: requests on the wire at once (shared by every strategy using this backend).
        max_retries: retries of one request on HTTP 429/502/503/504 and connection errors.
        max_length: the context size prompts must fit; default: what the server reports (else 4096).
        trust_remote_code: run the tokenizer repository's own code.
        transport: an ``httpx.AsyncBaseTransport`` instead of the network (tests).

    Construction talks to the server once: it lists the served models, detects the server kind,
    compares the server's tokenization of a probe sentence with the tokenizer's (when the server
    has a tokenize endpoint), and checks that chosen-token log-probabilities and generation work.
    A server without usable log-probabilities still serves generation; strategies that need
    log-probabilities then fail at construction with the reason.

    Example:
        >>> from rerank_plugins.rerankers.pointwise import PointwiseReranker
        >>> served = ServedModel("http://127.0.0.1:8080#HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> PointwiseReranker(served).rerank("capital of France", ["Berlin.", "Paris."])  # doctest: +SKIP
        [Hit(index=1, score=2.1), Hit(index=0, score=-0.4)]
    """

    def __init__(
        self,
        url: str,
        *,
        tokenizer: str | os.PathLike[str] | None = None,
        served_model: str | None = None,
        api: str = "auto",
        api_key: str | None = None,
        timeout: float = 600.0,
        max_in_flight: int = 32,
        max_retries: int = 3,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        transport: Any = None,
    ) -> None:
        check_bool("trust_remote_code", trust_remote_code)
        parsed = parse_served_name(url)
        opts = parsed.options
        tok_source = parsed.tokenizer if parsed.tokenizer is not None else tokenizer
        if parsed.tokenizer is not None and tokenizer is not None and str(tokenizer) != parsed.tokenizer:
            raise ValueError(
                f"the tokenizer is named twice: #{parsed.tokenizer} in the URL and tokenizer={tokenizer!r}"
            )
        if tok_source is None:
            raise ValueError(
                f"served model {url!r}: name the model's tokenizer (hub id or local folder), e.g. "
                f"{parsed.root}/v1#Qwen/Qwen2.5-7B-Instruct or tokenizer=...; prompts are tokenized here"
            )
        api = str(opts.get("api", api))
        if api != "auto":
            server_class(api)  # a bad name fails before any request
        self.root = parsed.root
        self.tokenizer_source = os.path.expanduser(str(tok_source))
        max_length = opts.get("max_length", max_length)
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        self.stats = ServedStats()
        self._closed = False
        with loading("tokenizer", self.tokenizer_source):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.tokenizer_source, trust_remote_code=trust_remote_code)
        self.tokenizer = tok
        self.prompts = ChatPrompts(tok, self.stats)
        self.vocab_size = len(tok)
        self.client = HttpClient(
            self.root,
            api_key=api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None),
            timeout=float(opts.get("timeout", timeout)),
            max_in_flight=int(opts.get("max_in_flight", max_in_flight)),
            max_retries=int(opts.get("max_retries", max_retries)),
            transport=transport,
        )
        try:
            self.server, self.probe, self._logits_reason = self.client.run(
                self._connect(api, opts.get("model", served_model))
            )
        except BaseException:
            self.client.close()
            raise
        self.served_model = self.server.served_model
        reported = self.probe.context
        self.max_length: int = max_length or reported or 4096
        if max_length and reported and max_length > reported:
            raise ValueError(f"max_length={max_length} exceeds the server's context of {reported} tokens")
        chosen = f"?model={opts['model']}" if "model" in opts else ""
        self.name = f"{self.root}/v1{chosen}#{parsed.tokenizer or tok_source}"
        if self._logits_reason:
            logger.warning("%s: no chosen-token log-probabilities: %s", self.root, self._logits_reason)

    # ------------------------------------------------------------------ construction
    async def _connect(self, api: str, served_model: str | None) -> tuple[Server, Probe, str | None]:
        where = self.root
        try:
            listing = await self.client.get("/v1/models", what="list the served models", missing_ok=True)
        except ServedModelError as exc:
            raise ServedModelError(f"cannot reach the inference server at {where}: {exc}") from exc
        data = listing.get("data") if isinstance(listing, dict) else None
        models = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        kind = api if api != "auto" else await self._detect(models)
        probe = Probe(kind, models)
        ids = [str(m.get("id")) for m in models if m.get("id") is not None]
        name = self._served_name(served_model, ids)
        server = server_class(kind)(self.client, name)
        if kind == "openai":  # a generic server may name tokens only by their text
            server.strings = self._decoded_strings()  # type: ignore[attr-defined]
        probe.context = await server.context_length(probe)
        await self._check_tokenizer(server)
        prompt = self.prompts.encode_chat([_PROBE_TEXT]).input_ids
        candidates = self._probe_candidates()
        reason = await server.setup(prompt, candidates)
        try:
            await server.generate(prompt, 1)
        except ServedModelError as exc:
            if reason:
                raise ServedModelError(
                    f"the server at {where} ({kind}) serves neither chosen-token log-probabilities ({reason}) nor "
                    f"generation ({exc}); {server.advice}"
                ) from exc
            probe.notes["generate"] = str(exc)
        return server, probe, reason

    async def _detect(self, models: list[dict[str, Any]]) -> str:
        kind = owned_by_kind(models)
        if kind:
            return kind
        for name in ("llamacpp", "sglang", "vllm"):
            if await KINDS[name].detect(self.client):
                return name
        return "openai"

    def _served_name(self, wanted: str | None, ids: list[str]) -> str | None:
        if wanted is not None:
            if ids and wanted not in ids:
                raise ServedModelError(
                    f"the server at {self.root} does not serve a model named {wanted!r}; it serves {ids}"
                )
            return wanted
        if len(ids) == 1:
            return ids[0]
        if self.tokenizer_source in ids:
            return self.tokenizer_source
        if ids:
            raise ServedModelError(
                f"the server at {self.root} serves {len(ids)} models {ids}; name one with ?model=NAME "
                "(or served_model=)"
            )
        return None

    def _probe_candidates(self) -> list[int]:
        out: list[int] = []
        for word in ("Yes", "No", " Yes", " No", "A", "B"):
            ids = self.prompts.tokenize(word)
            if ids and ids[0] not in out:
                out.append(ids[0])
            if len(out) == 2:
                break
        return out

    def _decoded_strings(self) -> dict[str, list[int]]:
        """Decoded text of every token -> ids (to read servers that name tokens only by their text)."""
        table: dict[str, list[int]] = {}
        for tid in range(self.vocab_size):
            table.setdefault(str(self.tokenizer.decode([tid])), []).append(tid)
        return table

    async def _check_tokenizer(self, server: Server) -> None:
        try:
            theirs = await server.tokenize(_PROBE_TEXT)
        except ServedModelError as exc:
            logger.info("%s: tokenizer check skipped (%s)", self.root, exc)
            return
        if theirs is None:
            return
        ours = self.prompts.tokenize(_PROBE_TEXT)
        if theirs != ours:
            raise ServedModelError(
                f"the tokenizer {self.tokenizer_source!r} does not match the model served at {self.root}"
                f"{f' ({server.served_model})' if server.served_model else ''}: it tokenizes {_PROBE_TEXT!r} as "
                f"{ours[:12]}..., the server as {theirs[:12]}...; name the served model's own tokenizer after '#'"
            )

    # ------------------------------------------------------------------ the protocol: description
    @property
    def capabilities(self) -> frozenset[str]:
        """``prompts``, ``generate``, ``forward`` and (when the server returns them) ``logits``; never ``attention``."""
        caps = {"prompts", "generate", "forward"}
        if not self._logits_reason:
            caps.add("logits")
        return frozenset(caps)

    def missing_reason(self, capability: str) -> str | None:
        """Why ``capability`` is missing, or ``None`` when this backend has it."""
        if capability == "attention":
            return (
                f"attention weights do not come back from a model served over HTTP ({self.root}); build the "
                "attention strategy on the in-process backend: model=<hub id or local folder> "
                "(rerank_plugins.scoring.get_core)"
            )
        if capability == "logits" and self._logits_reason:
            return f"the server at {self.root} ({self.server.kind}) returned no usable log-probabilities: " \
                   f"{self._logits_reason}; {self.server.advice}"
        if capability in self.capabilities:
            return None
        return f"a served model has no {capability!r} primitive"

    def describe(self) -> dict[str, Any]:
        """The backend's settings, for reports (never the API key)."""
        return {
            "backend": "served", "server": self.root, "api": self.server.kind, "served_model": self.served_model,
            "tokenizer": self.tokenizer_source, "max_length": self.max_length, "timeout": self.client.timeout,
            "max_in_flight": self.client.max_in_flight, "max_retries": self.client.max_retries,
            **self.server.settings,
        }

    def __repr__(self) -> str:
        return f"ServedModel({self.root!r}, api={self.server.kind!r}, model={self.served_model!r})"

    # ------------------------------------------------------------------ the protocol: prompts
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text (see :meth:`ChatPrompts.tokenize`)."""
        return self.prompts.tokenize(text)

    def token_ids(self, words: Sequence[str]) -> list[int]:
        """The single token id of each word; ``ValueError`` if a word is not one token."""
        return self.prompts.token_ids(words)

    def encode_chat(
        self,
        parts: Sequence[str | Document | Sequence[int]],
        *,
        system: str | None = None,
        assistant_prefix: str | Sequence[int] = "",
        doc_max_tokens: int | None = None,
    ) -> EncodedPrompt:
        """A chat prompt holding ``parts`` (see :meth:`ChatPrompts.encode_chat`)."""
        return self.prompts.encode_chat(parts, system=system, assistant_prefix=assistant_prefix,
                                        doc_max_tokens=doc_max_tokens)

    def encode_documents(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Each text as plain-text token ids, cut to ``max_tokens`` (see :meth:`ChatPrompts.encode_documents`)."""
        return self.prompts.encode_documents(texts, max_tokens)

    def _check_length(self, n: int, extra: int = 0) -> None:
        if n + extra > self.max_length:
            raise ValueError(
                f"prompt of {n} tokens{f' + {extra} to generate' if extra else ''} exceeds the served model's "
                f"context of {self.max_length}; lower the per-document token budget or the window size"
            )

    # ------------------------------------------------------------------ the protocol: primitives
    def next_token_logits(
        self,
        prompts: Sequence[Sequence[int]],
        token_ids: Sequence[int] | Sequence[Sequence[int]],
        *,
        prefix: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Log-probabilities of ``token_ids`` as the next token after each prompt, float32 ``[B, K]``.

        Each row is one request (prefix + row as token ids); the requests run concurrently up to
        ``max_in_flight``. Values are log-probabilities up to one constant per row (llama.cpp
        normalises over the candidates), which every strategy cancels. A failed request fails
        the call (:class:`ServedModelError`); no row is dropped or filled in.
        """
        return self.client.run(self._next_token_logits(prompts, token_ids, prefix))

    async def anext_token_logits(
        self,
        prompts: Sequence[Sequence[int]],
        token_ids: Sequence[int] | Sequence[Sequence[int]],
        *,
        prefix: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Async :meth:`next_token_logits`, awaitable from any event loop (the requests run on the client's)."""
        return await self.client.wrap(self._next_token_logits(prompts, token_ids, prefix))

    async def _next_token_logits(
        self,
        prompts: Sequence[Sequence[int]],
        token_ids: Sequence[int] | Sequence[Sequence[int]],
        prefix: Sequence[int] | None,
    ) -> torch.Tensor:
        rows, per_row = self._logits_rows(prompts, token_ids, prefix)
        if not rows:
            return torch.empty(0, 0)
        n = len(rows)

        def call(i: int) -> Any:
            async def one() -> list[float]:
                uniq = list(dict.fromkeys(per_row[i]))
                try:
                    values, counts = await self.server.logprobs(rows[i], uniq)
                except ServedModelError as exc:
                    raise ServedModelError(
                        f"served model {self.root}: next-token request for row {i + 1} of {n} "
                        f"({len(rows[i])} prompt tokens) failed: {exc}"
                    ) from exc
                self._count(counts, len(rows[i]))
                bad = [t for t in uniq if t not in values or math.isnan(values[t])]
                if bad:
                    raise ServedModelError(
                        f"served model {self.root}: row {i + 1} of {n} came back without log-probabilities for {bad}"
                    )
                return [values[t] for t in per_row[i]]

            return one

        out = await gather_all([call(i) for i in range(n)])
        return torch.tensor(out, dtype=torch.float32)

    def _logits_rows(
        self,
        prompts: Sequence[Sequence[int]],
        token_ids: Sequence[int] | Sequence[Sequence[int]],
        prefix: Sequence[int] | None,
    ) -> tuple[list[list[int]], list[list[int]]]:
        if not self.capabilities >= {"logits"}:
            raise ServedModelError(str(self.missing_reason("logits")))
        rows, per_row = checked_logits_request(prompts, token_ids, prefix, self.vocab_size)
        if not rows:
            return [], []
        pre = [int(t) for t in prefix] if prefix is not None else []
        rows = [pre + r for r in rows]
        for r in rows:
            self._check_length(len(r))
        return rows, per_row

    def _count(self, counts: Counts, prompt_tokens: int) -> None:
        self.stats.add(
            forward_passes=1, prompt_tokens=prompt_tokens, requests=counts.requests,
            forced_requests=counts.forced_requests, floored_logprobs=counts.floored_logprobs,
        )
        if counts.floored_logprobs:
            logger.warning(
                "%s: %d candidate(s) underflowed to probability 0 and got the floor log-probability",
                self.root, counts.floored_logprobs,
            )

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64) -> list[str]:
        """Greedy continuations (decoded here, special tokens skipped), one concurrent request per prompt."""
        return self.client.run(self._generate(prompts, max_new_tokens))

    async def agenerate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64) -> list[str]:
        """Async :meth:`generate`, awaitable from any event loop (the requests run on the client's)."""
        return await self.client.wrap(self._generate(prompts, max_new_tokens))

    async def _generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        rows = [list(map(int, p)) for p in prompts]
        if any(not r for r in rows):
            raise ValueError("prompts must not be empty token lists")
        for r in rows:
            self._check_length(len(r), max_new_tokens)
        n = len(rows)

        def call(i: int) -> Any:
            async def one() -> str:
                try:
                    ids, text = await self.server.generate(rows[i], max_new_tokens)
                except ServedModelError as exc:
                    raise ServedModelError(
                        f"served model {self.root}: generation request for prompt {i + 1} of {n} "
                        f"({len(rows[i])} prompt tokens) failed: {exc}"
                    ) from exc
                if ids is not None:
                    ids = ids[:max_new_tokens]
                    text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
                new = len(ids) if ids is not None else len(self.prompts.tokenize(text))
                self.stats.add(forward_passes=max(new, 1), prompt_tokens=len(rows[i]), generated_tokens=new, requests=1)
                return text

            return one

        return await gather_all([call(i) for i in range(n)])

    def forward(self, input_ids: Sequence[int]) -> None:
        """One request that runs the prompt and one generated token: the benchmarks' bare reference."""
        ids = list(map(int, input_ids))
        if not ids:
            raise ValueError("input_ids must not be empty")
        self._check_length(len(ids), 1)
        self.client.run(self.server.generate(ids, 1))
        self.stats.add(forward_passes=1, prompt_tokens=len(ids), requests=1)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the HTTP client (its connections and its loop thread)."""
        self._closed = True
        self.client.close()

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the shared backends

_served: dict[tuple[Any, ...], ServedModel] = {}
_served_lock = threading.Lock()


def get_served(
    name: str, *, tokenizer: str | os.PathLike[str] | None = None, trust_remote_code: bool = False
) -> ServedModel:
    """The process-wide :class:`ServedModel` for a served-model name (connected once, then shared).

    Example:
        >>> m = get_served("http://127.0.0.1:8080/v1#HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        >>> m is get_served("http://127.0.0.1:8080/v1#HuggingFaceTB/SmolLM2-135M-Instruct")  # doctest: +SKIP
        True
    """
    key = (name.strip(), None if tokenizer is None else str(tokenizer), trust_remote_code, os.environ.get(API_KEY_ENV))
    with _served_lock:
        found = _served.get(key)
        if found is not None and not found._closed:
            return found
        model = ServedModel(name, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
        _served[key] = model
        return model


def clear_served() -> None:
    """Close and forget every shared served model."""
    with _served_lock:
        models = list(_served.values())
        _served.clear()
    for m in models:
        m.close()

