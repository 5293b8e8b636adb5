"""What each kind of inference server offers, and how to ask it for chosen-token log-probabilities.

Every server gets the prompt as token ids (built client-side with the model's tokenizer) and is
asked for the log-probabilities of exactly the candidate next tokens a strategy reads:

* **llama.cpp** (``llama-server``; ``/completion``): the candidates are pushed up by one shared
  ``logit_bias`` of +100 and the probabilities are read after sampling (``post_sampling_probs``,
  ``n_probs`` = number of candidates, temperature 1, every truncating sampler off). That is the
  softmax over the candidates alone: log-probabilities up to one constant per row, all from one
  forward pass. A candidate more than ~103 nats below the best one underflows float32 to
  probability 0; it gets the floor :data:`FLOOR_LOGPROB` and is counted (``floored_logprobs``).
* **vLLM** (``/v1/completions``): ``logprob_token_ids`` (vLLM's explicit token selection) with
  ``return_tokens_as_token_ids``, in chunks of at most ``--max-logprobs`` ids; older vLLM
  versions fall back to the generic method with ``allowed_token_ids`` as the forcing mechanism.
* **SGLang** (native ``/generate``): ``token_ids_logprob`` with ``return_logprob``.
* **any OpenAI-compatible server** (``/v1/completions``): the top ``logprobs`` (up to the
  server's cap), then one request per candidate missing from them, forcing that token with
  ``logit_bias`` (or ``allowed_token_ids``) and reading the log-probability the server reports for
  the token it produced. Construction checks that this value is the unforced one (servers that
  report log-probabilities after the bias are refused), so every candidate gets a real value.

Greedy generation (listwise generate mode, the decomposer) asks for temperature 0 with every
penalty neutral, and decodes the returned token ids with the client's tokenizer where the server
returns them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rerank_plugins.scoring.served.client import HttpClient, ServedModelError

__all__ = [
    "FLOOR_LOGPROB",
    "KINDS",
    "LlamaCppServer",
    "OpenAIServer",
    "Probe",
    "Server",
    "SglangServer",
    "VllmServer",
    "server_class",
]

#: log of the smallest positive float32 (a subnormal): what a probability that underflowed to 0 gets
FLOOR_LOGPROB = math.log(1.401298464324817e-45)
#: the logit bias that pushes candidates above every other token (OpenAI's own maximum)
PUSH = 100.0
#: ``--max-logprobs`` of a default vLLM server, and OpenAI's ``top_logprobs`` cap
DEFAULT_LOGPROB_CAP = 20


@dataclass
class Probe:
    """What the construction-time checks found out about a server."""

    kind: str
    models: list[dict[str, Any]] = field(default_factory=list)
    context: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Counts:
    """Work done for one request batch (added to the backend's stats)."""

    requests: int = 0
    forced_requests: int = 0
    floored_logprobs: int = 0


class Server:
    """One server dialect: log-probabilities of chosen next tokens, greedy generation, tokenize."""

    kind = "openai"
    #: the pip-free one-line advice for a server that returns no log-probabilities
    advice = "use vLLM, SGLang or llama.cpp's server (see the README, Served models)"

    def __init__(self, client: HttpClient, served_model: str | None) -> None:
        self.client = client
        self.served_model = served_model
        self.settings: dict[str, Any] = {}

    def _model(self) -> dict[str, Any]:
        return {"model": self.served_model} if self.served_model else {}

    # -- discovery (class-level: before a dialect is chosen) ---------------------------------
    @classmethod
    async def detect(cls, client: HttpClient) -> bool:
        return False

    async def context_length(self, probe: Probe) -> int | None:
        return None

    async def tokenize(self, text: str) -> list[int] | None:
        """The server's own token ids of ``text`` (no special tokens), or ``None`` if it cannot say."""
        return None

    async def setup(self, prompt: list[int], candidates: list[int]) -> str | None:
        """Check the log-probability method on a probe prompt; the reason it is unusable, or ``None``."""
        try:
            values, _ = await self.logprobs(prompt, candidates)
        except ServedModelError as exc:
            return str(exc)
        missing = [t for t in candidates if t not in values or not math.isfinite(values[t])]
        if missing:
            return f"no log-probability came back for token id(s) {missing}"
        return None

    # -- the primitives -------------------------------------------------------------------
    async def logprobs(self, prompt: list[int], candidates: list[int]) -> tuple[dict[int, float], Counts]:
        raise NotImplementedError

    async def generate(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int] | None, str]:
        """Greedy continuation: (token ids if the server returned them, text)."""
        body = {
            **self._model(), "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0.0,
            "presence_penalty": 0.0, "frequency_penalty": 0.0,
        }
        out = await self.client.post("/v1/completions", body, what=f"generate {max_new_tokens} tokens")
        choice = _first_choice(out, self.client, "/v1/completions")
        ids = choice.get("token_ids")
        return (list(map(int, ids)) if isinstance(ids, list) else None), str(choice.get("text") or "")


def _first_choice(out: Any, client: HttpClient, path: str) -> dict[str, Any]:
    try:
        choice = out["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ServedModelError(f"{client.base_url}{path}: the answer has no choices: {str(out)[:300]}") from None
    if not isinstance(choice, dict):
        raise ServedModelError(f"{client.base_url}{path}: unexpected choice {str(choice)[:300]}")
    return choice


# --------------------------------------------------------------------------- OpenAI-compatible


def _token_id(key: Any, entry: Any, strings: dict[str, list[int]] | None) -> int | None:
    """The token id an OpenAI-style logprob entry stands for, or ``None`` when it cannot be told."""
    if isinstance(entry, dict) and isinstance(entry.get("id"), int):
        return int(entry["id"])
    if isinstance(key, str) and key.startswith("token_id:"):
        try:
            return int(key.removeprefix("token_id:"))
        except ValueError:
            return None
    if strings is not None and isinstance(key, str):
        ids = strings.get(key)
        if ids is not None and len(ids) == 1:
            return ids[0]
    return None


def parse_top_logprobs(
    choice: dict[str, Any], strings: dict[str, list[int]] | None = None
) -> tuple[dict[int, float], int | None, float | None]:
    """Token id -> log-probability of the first generated position, the sampled id and its log-probability.

    Reads both answer shapes: chat-style ``logprobs.content[0]`` (``id``/``token``, ``logprob``,
    ``top_logprobs``: llama.cpp) and the legacy completions shape (``tokens``, ``token_logprobs``,
    ``top_logprobs`` as token -> log-probability dicts: OpenAI, vLLM). A token given as a string is
    identified by ``token_id:N`` (vLLM's ``return_tokens_as_token_ids``) or through ``strings``
    (decoded candidate strings -> ids; ambiguous strings are skipped).
    """
    lp = choice.get("logprobs")
    out: dict[int, float] = {}
    sampled: int | None = None
    sampled_lp: float | None = None
    if not isinstance(lp, dict):
        return out, None, None
    content = lp.get("content")
    if isinstance(content, list) and content:
        first = content[0]
        sampled = _token_id(first.get("token"), first, strings)
        sampled_lp = _float(first.get("logprob"))
        for entry in first.get("top_logprobs") or []:
            tid = _token_id(entry.get("token"), entry, strings)
            value = _float(entry.get("logprob"))
            if tid is not None and value is not None:
                out[tid] = value
    else:
        tops = lp.get("top_logprobs") or []
        if tops and isinstance(tops[0], dict):
            for key, value in tops[0].items():
                tid = _token_id(key, None, strings)
                v = _float(value)
                if tid is not None and v is not None:
                    out[tid] = v
        tokens = lp.get("tokens") or []
        values = lp.get("token_logprobs") or []
        if tokens:
            sampled = _token_id(tokens[0], None, strings)
            sampled_lp = _float(values[0]) if values else None
    if sampled is not None and sampled_lp is not None:
        out.setdefault(sampled, sampled_lp)
    return out, sampled, sampled_lp


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class OpenAIServer(Server):
    """Any server with an OpenAI-style ``/v1/completions`` that takes token ids and returns logprobs."""

    kind = "openai"
    force_field = "logit_bias"
    #: fields every completions request of this dialect carries
    extra_body: ClassVar[dict[str, Any]] = {}

    def __init__(self, client: HttpClient, served_model: str | None) -> None:
        super().__init__(client, served_model)
        self.cap = DEFAULT_LOGPROB_CAP
        self.strings: dict[str, list[int]] | None = None  # set by the backend: decoded token -> ids

    def _force(self, token: int) -> dict[str, Any]:
        if self.force_field == "allowed_token_ids":
            return {"allowed_token_ids": [token]}
        return {"logit_bias": {str(token): PUSH}}

    async def _complete(self, prompt: list[int], what: str, **extra: Any) -> dict[str, Any]:
        body = {**self._model(), "prompt": prompt, "max_tokens": 1, "temperature": 0.0, **self.extra_body, **extra}
        out = await self.client.post("/v1/completions", body, what=what)
        return _first_choice(out, self.client, "/v1/completions")

    async def _top(self, prompt: list[int], n: int) -> dict[int, float]:
        choice = await self._complete(prompt, f"top-{n} log-probabilities of the next token", logprobs=n)
        return parse_top_logprobs(choice, self.strings)[0]

    async def _forced(self, prompt: list[int], token: int) -> float:
        choice = await self._complete(
            prompt, f"log-probability of token {token}, forced with {self.force_field}", logprobs=1,
            **self._force(token),
        )
        _, sampled, value = parse_top_logprobs(choice, self.strings)
        if sampled is None:
            raise ServedModelError(
                f"{self.client.base_url}/v1/completions: cannot tell which token the server produced when forcing "
                f"token {token}: it names tokens by their text, and that text is missing or shared by several tokens"
            )
        if sampled != token or value is None:
            raise ServedModelError(
                f"{self.client.base_url}/v1/completions: forcing token {token} with {self.force_field} "
                f"produced token {sampled} instead; the server ignores {self.force_field}"
            )
        return value

    async def logprobs(self, prompt: list[int], candidates: list[int]) -> tuple[dict[int, float], Counts]:
        counts = Counts(requests=1)
        top = await self._top(prompt, self.cap)
        values = {t: top[t] for t in candidates if t in top}
        for t in candidates:
            if t not in values:
                values[t] = await self._forced(prompt, t)
                counts.requests += 1
                counts.forced_requests += 1
        return values, counts

    async def setup(self, prompt: list[int], candidates: list[int]) -> str | None:
        # The largest top-logprobs count the server accepts, from OpenAI's 20 down to its legacy 5.
        top: dict[int, float] = {}
        error = ""
        for cap in (DEFAULT_LOGPROB_CAP, 5):
            try:
                top = await self._top(prompt, cap)
            except ServedModelError as exc:
                error = str(exc)
                continue
            self.cap = cap
            break
        if not top:
            return error or "the answers carry no log-probabilities (the logprobs field is missing or empty)"
        # Forcing must report the unforced (raw) log-probability: force the second-best token and compare.
        ranked = sorted(top, key=lambda t: -top[t])
        if len(ranked) < 2:
            return "the server returns only one log-probability per position"
        second = ranked[1]
        errors = []
        for field_name in dict.fromkeys((self.force_field, "logit_bias", "allowed_token_ids")):
            self.force_field = field_name
            try:
                forced = await self._forced(prompt, second)
            except ServedModelError as exc:
                errors.append(f"{field_name}: {exc}")
                continue
            if abs(forced - top[second]) <= max(0.05, 0.01 * abs(top[second])):
                self.settings = {"method": f"top-{self.cap} log-probabilities, then one request per missing candidate "
                                 f"forced with {field_name}", "logprob_cap": self.cap, "force": field_name}
                return None
            errors.append(f"{field_name}: forcing token {second} reports log-probability {forced:.3f}, not its "
                          f"unforced {top[second]:.3f} (log-probabilities after the bias), so candidates outside the "
                          f"top {self.cap} would get made-up values")
        return "; ".join(errors)


# --------------------------------------------------------------------------- vLLM


class VllmServer(OpenAIServer):
    """vLLM's OpenAI-compatible server."""

    kind = "vllm"
    force_field = "allowed_token_ids"
    extra_body: ClassVar[dict[str, Any]] = {"return_tokens_as_token_ids": True}
    advice = "start vLLM with --max-logprobs 20 or more (its default) and no --logprobs-mode other than raw_logprobs"

    def __init__(self, client: HttpClient, served_model: str | None) -> None:
        super().__init__(client, served_model)
        self.explicit = False  # logprob_token_ids works

    @classmethod
    async def detect(cls, client: HttpClient) -> bool:
        out = await client.get("/version", what="server version", missing_ok=True)
        return isinstance(out, dict) and isinstance(out.get("version"), str)

    async def context_length(self, probe: Probe) -> int | None:
        for m in probe.models:
            if m.get("id") == self.served_model and isinstance(m.get("max_model_len"), int):
                return int(m["max_model_len"])
        return None

    async def tokenize(self, text: str) -> list[int] | None:
        out = await self.client.post(
            "/tokenize", {**self._model(), "prompt": text, "add_special_tokens": False},
            what="tokenize the probe text", missing_ok=True,
        )
        tokens = out.get("tokens") if isinstance(out, dict) else None
        return [int(t) for t in tokens] if isinstance(tokens, list) else None

    async def _explicit(self, prompt: list[int], candidates: list[int]) -> dict[int, float]:
        values: dict[int, float] = {}
        for start in range(0, len(candidates), self.cap):
            chunk = candidates[start : start + self.cap]
            choice = await self._complete(
                prompt, f"log-probabilities of {len(chunk)} chosen next tokens", logprobs=1, logprob_token_ids=chunk
            )
            values.update(parse_top_logprobs(choice, None)[0])
        return values

    async def logprobs(self, prompt: list[int], candidates: list[int]) -> tuple[dict[int, float], Counts]:
        if not self.explicit:
            return await super().logprobs(prompt, candidates)
        values = await self._explicit(prompt, candidates)
        n = math.ceil(len(candidates) / self.cap)
        missing = [t for t in candidates if t not in values]
        if missing:
            raise ServedModelError(
                f"{self.client.base_url}/v1/completions: logprob_token_ids {candidates} came back without {missing}"
            )
        return values, Counts(requests=n)

    async def setup(self, prompt: list[int], candidates: list[int]) -> str | None:
        try:
            values = await self._explicit(prompt, candidates)
        except ServedModelError:
            values = {}
        if all(t in values for t in candidates):
            self.explicit = True
            self.settings = {"method": "logprob_token_ids", "ids_per_request": self.cap}
            return None
        return await super().setup(prompt, candidates)  # an older vLLM: top logprobs + allowed_token_ids

    async def generate(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int] | None, str]:
        body = {
            **self._model(), "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0.0,
            "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "return_token_ids": True, "skip_special_tokens": True,
        }
        out = await self.client.post("/v1/completions", body, what=f"generate {max_new_tokens} tokens")
        choice = _first_choice(out, self.client, "/v1/completions")
        ids = choice.get("token_ids")
        return (list(map(int, ids)) if isinstance(ids, list) else None), str(choice.get("text") or "")


# --------------------------------------------------------------------------- SGLang


class SglangServer(Server):
    """SGLang's native ``/generate`` endpoint."""

    kind = "sglang"
    advice = "use an SGLang version whose /generate takes token_ids_logprob"

    @classmethod
    async def detect(cls, client: HttpClient) -> bool:
        out = await client.get("/get_model_info", what="model info", missing_ok=True)
        return isinstance(out, dict) and "model_path" in out

    async def context_length(self, probe: Probe) -> int | None:
        for path in ("/get_model_info", "/get_server_info", "/server_info"):
            out = await self.client.get(path, what="context length", missing_ok=True)
            if isinstance(out, dict):
                for key in ("max_context_length", "context_length", "max_total_num_tokens"):
                    if isinstance(out.get(key), int) and key != "max_total_num_tokens":
                        return int(out[key])
        return None

    async def logprobs(self, prompt: list[int], candidates: list[int]) -> tuple[dict[int, float], Counts]:
        body = {
            "input_ids": prompt,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
            "return_logprob": True,
            "logprob_start_len": -1,
            "top_logprobs_num": 0,
            "token_ids_logprob": candidates,
        }
        what = f"log-probabilities of {len(candidates)} chosen next tokens"
        out = await self.client.post("/generate", body, what=what)
        try:
            rows = out["meta_info"]["output_token_ids_logprobs"][0]
            values = {int(row[1]): float(row[0]) for row in rows if row[0] is not None}
        except (KeyError, IndexError, TypeError, ValueError):
            raise ServedModelError(
                f"{self.client.base_url}/generate: no output_token_ids_logprobs in the answer: {str(out)[:300]}"
            ) from None
        return values, Counts(requests=1)

    async def setup(self, prompt: list[int], candidates: list[int]) -> str | None:
        self.settings = {"method": "token_ids_logprob"}
        return await super().setup(prompt, candidates)

    async def generate(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int] | None, str]:
        body = {
            "input_ids": prompt,
            "sampling_params": {
                "max_new_tokens": max_new_tokens, "temperature": 0.0, "repetition_penalty": 1.0,
                "presence_penalty": 0.0, "frequency_penalty": 0.0,
            },
        }
        out = await self.client.post("/generate", body, what=f"generate {max_new_tokens} tokens")
        if not isinstance(out, dict):
            raise ServedModelError(f"{self.client.base_url}/generate: unexpected answer {str(out)[:300]}")
        ids = out.get("output_ids")
        return (list(map(int, ids)) if isinstance(ids, list) else None), str(out.get("text") or "")


# --------------------------------------------------------------------------- llama.cpp


class LlamaCppServer(Server):
    """llama.cpp's ``llama-server`` (also what the ``xllamacpp`` wheel runs in-process)."""

    kind = "llamacpp"
    advice = "use a recent llama-server, whose /completion takes logit_bias, n_probs and post_sampling_probs"

    #: sampling settings that leave the distribution as it is: post-sampling probabilities = softmax(logits + bias)
    NEUTRAL: ClassVar[dict[str, Any]] = {
        "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "top_n_sigma": -1.0,
        "xtc_probability": 0.0, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "dry_multiplier": 0.0, "mirostat": 0, "dynatemp_range": 0.0, "seed": 0,
    }

    @classmethod
    async def detect(cls, client: HttpClient) -> bool:
        out = await client.get("/props", what="server properties", missing_ok=True)
        return isinstance(out, dict) and "default_generation_settings" in out

    async def context_length(self, probe: Probe) -> int | None:
        out = await self.client.get("/props", what="context length", missing_ok=True)
        try:
            return int(out["default_generation_settings"]["n_ctx"])
        except (KeyError, TypeError, ValueError):
            pass
        for m in probe.models:
            meta = m.get("meta") if isinstance(m, dict) else None
            if isinstance(meta, dict) and isinstance(meta.get("n_ctx"), int):
                return int(meta["n_ctx"])
        return None

    async def tokenize(self, text: str) -> list[int] | None:
        out = await self.client.post(
            "/tokenize", {"content": text, "add_special": False}, what="tokenize the probe text", missing_ok=True
        )
        tokens = out.get("tokens") if isinstance(out, dict) else None
        if not isinstance(tokens, list):
            return None
        return [int(t["id"]) if isinstance(t, dict) else int(t) for t in tokens]

    async def logprobs(self, prompt: list[int], candidates: list[int]) -> tuple[dict[int, float], Counts]:
        body = {
            "prompt": prompt, "n_predict": 1, "n_probs": len(candidates), "post_sampling_probs": True,
            "logit_bias": [[t, PUSH] for t in candidates], "cache_prompt": True, **self.NEUTRAL,
        }
        out = await self.client.post("/completion", body, what=f"probabilities of {len(candidates)} chosen next tokens")
        try:
            first = out["completion_probabilities"][0]
        except (KeyError, IndexError, TypeError):
            raise ServedModelError(
                f"{self.client.base_url}/completion: no completion_probabilities in the answer: {str(out)[:300]}"
            ) from None
        entries = first.get("top_probs") or first.get("top_logprobs") or []
        values: dict[int, float] = {}
        counts = Counts(requests=1)
        for e in entries:
            tid = e.get("id")
            if not isinstance(tid, int) or tid not in candidates:
                continue
            if "logprob" in e:
                values[tid] = float(e["logprob"])
            else:
                p = float(e.get("prob", 0.0))
                if p > 0:
                    values[tid] = math.log(p)
                else:
                    values[tid] = FLOOR_LOGPROB
                    counts.floored_logprobs += 1
        for t in candidates:
            if t not in values:  # below every pushed candidate by more than float32 can hold
                values[t] = FLOOR_LOGPROB
                counts.floored_logprobs += 1
        return values, counts

    async def setup(self, prompt: list[int], candidates: list[int]) -> str | None:
        body = {
            "prompt": prompt, "n_predict": 1, "n_probs": len(candidates), "post_sampling_probs": True,
            "logit_bias": [[t, PUSH] for t in candidates], **self.NEUTRAL,
        }
        try:
            out = await self.client.post("/completion", body, what="probe the chosen-token probabilities")
            entries = out["completion_probabilities"][0]
            entries = entries.get("top_probs") or entries.get("top_logprobs") or []
        except (ServedModelError, KeyError, IndexError, TypeError) as exc:
            return f"{exc}"
        got = {e.get("id") for e in entries if isinstance(e, dict)}
        if not set(candidates) <= got:
            return (f"the post-sampling probabilities hold token ids {sorted(i for i in got if isinstance(i, int))}, "
                    f"not the pushed candidates {candidates} (logit_bias or post_sampling_probs ignored)")
        self.settings = {"method": "logit_bias push + post_sampling_probs", "floor_logprob": FLOOR_LOGPROB}
        return None

    async def generate(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int] | None, str]:
        body = {
            "prompt": prompt, "n_predict": max_new_tokens, "temperature": 0.0, "return_tokens": True,
            "cache_prompt": True, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "dry_multiplier": 0.0, "seed": 0,
        }
        out = await self.client.post("/completion", body, what=f"generate {max_new_tokens} tokens")
        if not isinstance(out, dict):
            raise ServedModelError(f"{self.client.base_url}/completion: unexpected answer {str(out)[:300]}")
        ids = out.get("tokens")
        return (list(map(int, ids)) if isinstance(ids, list) and ids else None), str(out.get("content") or "")


KINDS: dict[str, type[Server]] = {
    "llamacpp": LlamaCppServer,
    "vllm": VllmServer,
    "sglang": SglangServer,
    "openai": OpenAIServer,
}


def server_class(kind: str) -> type[Server]:
    """The dialect class for ``kind`` (one of :data:`KINDS`)."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"api must be 'auto' or one of {sorted(KINDS)}, got {kind!r}") from None


def owned_by_kind(models: Sequence[dict[str, Any]]) -> str | None:
    """The server kind named by ``owned_by`` in a ``/v1/models`` answer (llama.cpp, vLLM, SGLang)."""
    for m in models:
        owner = str(m.get("owned_by", "")).lower().replace(".", "").replace("-", "")
        if "llamacpp" in owner:
            return "llamacpp"
        if "vllm" in owner:
            return "vllm"
        if "sglang" in owner:
            return "sglang"
    return None
