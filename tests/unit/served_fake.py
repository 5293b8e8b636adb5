"""A fake inference server for the served-model unit tests: real HTTP, answers from the tiny in-process core.

It speaks the dialect named by ``kind`` (llama.cpp, vLLM, an older vLLM without
``logprob_token_ids``, SGLang, a generic OpenAI-compatible server), as their documentation
describes, and computes every log-probability from the tiny model's full next-token
distribution, so the served backend over it must reproduce the in-process core's numbers.
Switches turn on the failures the tests need: no log-probabilities, log-probabilities reported
after the bias, slow answers, retryable errors, hard errors, a foreign tokenizer.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

KINDS = ("llamacpp", "vllm", "vllm-old", "sglang", "openai")


class FakeServer:
    def __init__(self, core: Any, kind: str = "vllm", *, models: tuple[str, ...] = ("tiny",), context: int = 2048,
                 logprobs: bool = True, generation: bool = True, processed: bool = False, cap: int | None = None,
                 foreign_tokenizer: bool = False) -> None:
        assert kind in KINDS, kind
        self.core, self.kind, self.models, self.context = core, kind, models, context
        self.logprobs, self.generation, self.processed = logprobs, generation, processed
        self.cap = cap if cap is not None else (5 if kind == "openai" else 20)
        self.foreign_tokenizer = foreign_tokenizer
        self.vocab = len(core.tokenizer)
        self.delay = 0.0  # seconds every scoring or generation request waits
        self.fail_next = 0  # that many scoring requests answer fail_status
        self.fail_status = 503
        self.fail_all: int | None = None  # every scoring request answers this status
        self.requests = 0
        self.active = 0  # requests being handled (delay and model included)
        self.in_flight = 0
        self.max_in_flight = 0
        self.headers: list[dict[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.headers.append(dict(self.headers))
                status, payload = fake.get(self.path)
                self._send(status, payload)

            def do_POST(self) -> None:
                with fake._lock:
                    fake.active += 1
                try:
                    fake.headers.append(dict(self.headers))
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    fake.bodies.append(body)
                    status, payload = fake.post(self.path, body)
                    self._send(status, payload)
                finally:
                    with fake._lock:
                        fake.active -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (the timeout test) closed the socket before the answer

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.delay = 0.0
        self.httpd.shutdown()
        self.httpd.server_close()
        # Let handlers still running (a request whose client timed out) finish their torch work:
        # a daemon thread inside torch when the interpreter exits aborts the process.
        deadline = time.monotonic() + 30
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)

    # ------------------------------------------------------------------ the model
    def full(self, ids: list[int]) -> torch.Tensor:
        key = tuple(ids)
        with self._lock:
            if key not in self._cache:
                logits = self.core.next_token_logits([ids], list(range(self.vocab)))[0].double()
                self._cache[key] = torch.log_softmax(logits, 0)
            return self._cache[key]

    def tokens(self, text: str) -> list[int]:
        ids = self.core.tokenize(text)
        return [(t + 1) % self.vocab for t in ids] if self.foreign_tokenizer else ids

    def generate(self, ids: list[int], n: int) -> tuple[list[int], str]:
        """Greedy token ids up to the end-of-sequence token (not included), and their text."""
        with torch.inference_mode(), self.core.loaded.lock:
            out = self.core.model.generate(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=n, do_sample=False, pad_token_id=self.core.pad_id,
            )
        tokens = out[0, len(ids):].tolist()
        eos = self.core.tokenizer.eos_token_id
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        return tokens, self.core.tokenizer.decode(tokens, skip_special_tokens=True)

    # ------------------------------------------------------------------ endpoints
    def get(self, path: str) -> tuple[int, Any]:
        owner = {"llamacpp": "llamacpp", "vllm": "vllm", "vllm-old": "vllm", "sglang": "sglang"}.get(self.kind, "acme")
        if path == "/v1/models":
            return 200, {"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": owner, "max_model_len": self.context} for m in self.models
            ]}
        if path == "/props" and self.kind == "llamacpp":
            return 200, {"default_generation_settings": {"n_ctx": self.context}}
        if path == "/get_model_info" and self.kind == "sglang":
            return 200, {"model_path": self.models[0], "is_generation": True}
        if path == "/version" and self.kind.startswith("vllm"):
            return 200, {"version": "0.99.0"}
        return 404, {"error": "not found"}

    def _gate(self) -> tuple[int, Any] | None:
        """Delay and injected failures of a scoring or generation request."""
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
        finally:
            with self._lock:
                self.in_flight -= 1
        if self.fail_all is not None:
            return self.fail_all, {"error": {"message": "injected failure"}}
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status, {"error": {"message": "overloaded, try again"}}
        return None

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/tokenize" and self.kind in ("llamacpp", "vllm", "vllm-old"):
            text = body.get("content", body.get("prompt"))
            return 200, {"tokens": self.tokens(text)}
        if path == "/completion" and self.kind == "llamacpp":
            return self._gate() or self._llamacpp(body)
        if path == "/v1/completions" and self.kind != "sglang":
            return self._gate() or self._openai(body)
        if path == "/generate" and self.kind == "sglang":
            return self._gate() or self._sglang(body)
        return 404, {"error": "not found"}

    def _llamacpp(self, body: dict[str, Any]) -> tuple[int, Any]:
        ids = list(body["prompt"])
        if body.get("n_predict", 1) > 1 or not body.get("n_probs"):
            if not self.generation:
                return 500, {"error": "generation disabled"}
            tokens, text = self.generate(ids, int(body["n_predict"]))
            return 200, {"content": text, "tokens": tokens if body.get("return_tokens") else []}
        lp = self.full(ids).clone()
        if body.get("post_sampling_probs"):
            for tid, bias in body.get("logit_bias", []):
                lp[tid] += bias
            probs = torch.softmax(lp, 0).float()
            top = torch.topk(probs, int(body["n_probs"]))
            entries = [{"id": int(i), "prob": float(p)} for p, i in zip(top.values, top.indices, strict=True)]
            return 200, {"content": "", "completion_probabilities": [{"id": entries[0]["id"], "top_probs": entries}]}
        top = torch.topk(lp, int(body["n_probs"]))
        entries = [{"id": int(i), "logprob": float(v)} for v, i in zip(top.values, top.indices, strict=True)]
        return 200, {"content": "", "completion_probabilities": [{"id": entries[0]["id"], "top_logprobs": entries}]}

    def _name(self, tid: int, body: dict[str, Any]) -> str:
        if body.get("return_tokens_as_token_ids") and self.kind.startswith("vllm"):
            return f"token_id:{tid}"
        return self.core.tokenizer.decode([tid])

    def _openai(self, body: dict[str, Any]) -> tuple[int, Any]:
        ids = list(body["prompt"])
        n = int(body.get("max_tokens", 16))
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"The model {body.get('model')} does not exist."}}
        if n > 1 or body.get("logprobs") is None:
            if not self.generation:
                return 500, {"error": "generation disabled"}
            tokens, text = self.generate(ids, n)
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "length"}
            if body.get("return_token_ids") and self.kind == "vllm":
                choice["token_ids"] = tokens
            return 200, {"choices": [choice]}
        k = int(body["logprobs"])
        if k > self.cap:
            return 400, {"error": {"message": f"logprobs {k} exceeds the maximum {self.cap}"}}
        raw = self.full(ids)
        lp = raw.clone()
        explicit = body.get("logprob_token_ids") if self.kind == "vllm" else None
        forced = None
        if body.get("allowed_token_ids") and self.kind.startswith("vllm"):
            allowed = body["allowed_token_ids"]
            mask = torch.full_like(lp, -math.inf)
            mask[allowed] = 0
            lp = lp + mask
            forced = allowed[0] if len(allowed) == 1 else None
        for tid, bias in (body.get("logit_bias") or {}).items():
            lp[int(tid)] += bias
        sampled = int(torch.argmax(lp))
        if forced is not None or body.get("logit_bias"):
            sampled_lp = 0.0 if self.processed else float(raw[sampled])
        else:
            sampled_lp = float(raw[sampled])
        if not self.logprobs:
            return 200, {"choices": [{"index": 0, "text": self.core.tokenizer.decode([sampled]), "logprobs": None}]}
        if explicit:
            top = {self._name(int(t), body): float(raw[int(t)]) for t in explicit}
        else:
            values, idx = torch.topk(raw, k)
            top = {self._name(int(i), body): float(v) for v, i in zip(values, idx, strict=True)}
        top.setdefault(self._name(sampled, body), sampled_lp)
        logprobs = {"tokens": [self._name(sampled, body)], "token_logprobs": [sampled_lp], "top_logprobs": [top],
                    "text_offset": [0]}
        return 200, {"choices": [{"index": 0, "text": "", "logprobs": logprobs}]}

    def _sglang(self, body: dict[str, Any]) -> tuple[int, Any]:
        ids = list(body["input_ids"])
        params = body.get("sampling_params", {})
        n = int(params.get("max_new_tokens", 128))
        if not body.get("return_logprob"):
            if not self.generation:
                return 500, {"error": "generation disabled"}
            tokens, text = self.generate(ids, n)
            return 200, {"text": text, "output_ids": tokens, "meta_info": {}}
        raw = self.full(ids)
        rows = [[float(raw[t]), int(t), None] for t in body.get("token_ids_logprob", [])] if self.logprobs else []
        return 200, {"text": "", "meta_info": {"output_token_ids_logprobs": [rows] if rows else []}}
