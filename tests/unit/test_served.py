"""The served-model backend over a fake server (real HTTP, answers from the tiny in-process core).

Every dialect (llama.cpp, vLLM, an older vLLM, SGLang, a generic OpenAI-compatible server) must
reproduce the in-process core's scores; the failure paths (no log-probabilities, values after
the bias, timeouts, retries, hard errors, wrong names) must fail loudly with the server named.
The same backend against llama.cpp's real server: tests/integration/test_served_llamacpp.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from rerank_plugins import registry
from rerank_plugins.decomposition import Decomposer
from rerank_plugins.scoring import MissingPrimitiveError, clear_cores, get_core
from rerank_plugins.scoring.served import ServedModel, ServedModelError, is_served_name, parse_served_name
from tests.unit.served_fake import KINDS, FakeServer

pytest.importorskip("httpx")

QUERY = "what is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Berlin is in Germany.",
    "Query: capital of France. Document: Paris.",
]
STRATEGIES = [
    ("pointwise", {}),
    ("listwise", {"mode": "first", "window": 4}),
    ("pairwise", {}),
]


def served(fake: FakeServer, tiny_model, **kwargs) -> ServedModel:
    return ServedModel(f"{fake.url}/v1#{tiny_model}", **kwargs)


@pytest.fixture
def fake(tiny_core, request):
    kind = getattr(request, "param", "vllm")
    with FakeServer(tiny_core, kind) as server:
        yield server


# --------------------------------------------------------------------------- naming


def test_names_parse_into_root_tokenizer_and_settings():
    n = parse_served_name("https://gpu-1.internal:8000/v1/?model=qwen&api=vllm&max_in_flight=64#Qwen/Qwen2.5-7B")
    assert (n.root, n.tokenizer) == ("https://gpu-1.internal:8000", "Qwen/Qwen2.5-7B")
    assert n.options == {"model": "qwen", "api": "vllm", "max_in_flight": 64}
    assert parse_served_name("http://h:1/llm/v1#/abs/folder").root == "http://h:1/llm"
    assert parse_served_name("http://h:1").tokenizer is None
    assert is_served_name(" HTTP://h:1") and not is_served_name("Qwen/Qwen2.5-7B") and not is_served_name(None)


@pytest.mark.parametrize(
    "name, message",
    [
        ("http://h:1/v1?colour=red#tok", "unknown setting 'colour'"),
        ("http://h:1/v1?timeout=soon#tok", "timeout='soon' is not a float"),
        ("http:///v1#tok", "has no host"),
    ],
)
def test_bad_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        parse_served_name(name)


def test_a_name_without_tokenizer_says_how_to_name_it(fake):
    with pytest.raises(ValueError, match="name the model's tokenizer"):
        ServedModel(f"{fake.url}/v1")


def test_load_options_do_not_apply_to_a_served_model(fake, tiny_model):
    with pytest.raises(ValueError, match="device apply to a model loaded in this process"):
        get_core(f"{fake.url}/v1#{tiny_model}", device="cpu")


# --------------------------------------------------------------------------- same numbers as in-process


@pytest.mark.parametrize("fake", KINDS, indirect=True)
def test_every_dialect_reproduces_the_in_process_scores(fake, tiny_core, tiny_model):
    with served(fake, tiny_model) as model:
        assert model.server.kind == fake.kind.removesuffix("-old")
        for name, opts in STRATEGIES:
            remote = registry.create(name, model=model, **opts).rerank(QUERY, DOCS)
            local = registry.create(name, model=tiny_core, **opts).rerank(QUERY, DOCS)
            assert [h.index for h in remote] == [h.index for h in local], name
            assert [h.score for h in remote] == pytest.approx([h.score for h in local], abs=1e-4), name


@pytest.mark.parametrize("fake", ["vllm", "llamacpp", "sglang", "openai"], indirect=True)
def test_next_token_logits_match_up_to_a_constant_per_row(fake, tiny_core, tiny_model):
    rows = [tiny_core.encode_chat([f"Question {i}: yes or no?"]).input_ids for i in range(3)]
    ids = [[5, 9, 40, 5], [7, 300, 2, 11], [1, 1, 1, 4]]  # per-row candidates, a repeated id included
    with served(fake, tiny_model) as model:
        remote = model.next_token_logits(rows, ids)
    local = tiny_core.next_token_logits(rows, ids)
    assert remote.dtype == torch.float32 and remote.shape == (3, 4)
    shift = (remote - local).double()
    assert (shift - shift[:, :1]).abs().max() < 1e-4  # equal up to one constant per row


@pytest.mark.parametrize("fake", ["vllm", "llamacpp", "sglang"], indirect=True)
def test_generation_and_the_decomposer_match_in_process(fake, tiny_core, tiny_model):
    with served(fake, tiny_model) as model:
        prompts = [tiny_core.encode_chat(["Rank: [A] [B]"]).input_ids, tiny_core.encode_chat(["yes"]).input_ids]
        assert model.generate(prompts, max_new_tokens=6) == tiny_core.generate(prompts, max_new_tokens=6)
        remote = registry.create("listwise", model=model, mode="generate", window=4).rerank(QUERY, DOCS)
        local = registry.create("listwise", model=tiny_core, mode="generate", window=4).rerank(QUERY, DOCS)
        assert [h.index for h in remote] == [h.index for h in local]
    name = f"{fake.url}/v1#{tiny_model}"
    try:
        assert Decomposer(name).decompose(QUERY) == Decomposer(tiny_core).decompose(QUERY)
    finally:
        clear_cores()


def test_a_url_is_a_model_name_everywhere(fake, tiny_model):
    name = f"{fake.url}/v1#{tiny_model}"
    try:
        core = get_core(name)
        assert get_core(name) is core
        r = registry.create("pointwise", model=name)
        assert r.core is core and r.describe()["model"] == name
        assert r.core.describe()["api"] == "vllm"
    finally:
        clear_cores()
    assert core._closed


def test_attention_names_the_in_process_backend(fake, tiny_model):
    with served(fake, tiny_model) as model, pytest.raises(MissingPrimitiveError, match="in-process backend"):
        registry.create("attention", model=model)


# --------------------------------------------------------------------------- servers that cannot do it


def test_a_server_without_logprobs_still_generates_but_logit_strategies_fail_at_construction(tiny_core, tiny_model):
    with FakeServer(tiny_core, "openai", logprobs=False) as fake, served(fake, tiny_model) as model:
        assert "logits" not in model.capabilities and "generate" in model.capabilities
        with pytest.raises(MissingPrimitiveError, match="returned no usable log-probabilities"):
            registry.create("pointwise", model=model)
        assert len(registry.create("listwise", model=model, mode="generate").rerank(QUERY, DOCS)) == len(DOCS)


def test_a_server_with_neither_logprobs_nor_generation_fails_at_construction(tiny_core, tiny_model):
    with (
        FakeServer(tiny_core, "openai", logprobs=False, generation=False) as fake,
        pytest.raises(ServedModelError, match="serves neither chosen-token log-probabilities .* nor generation"),
    ):
        served(fake, tiny_model)


def test_logprobs_reported_after_the_bias_are_refused(tiny_core, tiny_model):
    # The forced token would come back with log-probability 0: candidates outside the top 5 would be made up.
    with FakeServer(tiny_core, "openai", processed=True) as fake, served(fake, tiny_model) as model:
        assert "logits" not in model.capabilities
        assert "after the bias" in model.missing_reason("logits")


def test_candidates_outside_the_top_logprobs_get_real_values(tiny_core, tiny_model):
    with FakeServer(tiny_core, "openai", cap=5) as fake, served(fake, tiny_model) as model:
        row = tiny_core.encode_chat(["Anything at all"]).input_ids
        raw = torch.log_softmax(tiny_core.next_token_logits([row], list(range(fake.vocab)))[0].double(), 0)
        # the three least likely tokens among those the server can name unambiguously by their text
        named = [int(i) for i in torch.argsort(raw) if len(model.server.strings[model.tokenizer.decode([int(i)])]) == 1]
        rare = named[:3]
        before = model.stats.forced_requests
        out = model.next_token_logits([row], rare)
        assert model.stats.forced_requests - before == 3
        assert out[0].double() == pytest.approx(raw[rare], abs=1e-4)


def test_a_name_the_server_does_not_serve_is_refused(tiny_core, tiny_model):
    with FakeServer(tiny_core, "vllm", models=("qwen-7b", "llama-8b")) as fake:
        with pytest.raises(ServedModelError, match=r"does not serve a model named 'mistral'; it serves \['qwen-7b'"):
            ServedModel(f"{fake.url}/v1?model=mistral#{tiny_model}")
        with pytest.raises(ServedModelError, match=r"serves 2 models .*name one with \?model=NAME"):
            ServedModel(f"{fake.url}/v1#{tiny_model}")
        with ServedModel(f"{fake.url}/v1?model=llama-8b#{tiny_model}") as model:
            assert model.served_model == "llama-8b"


def test_a_tokenizer_of_another_model_is_refused(tiny_core, tiny_model):
    with (
        FakeServer(tiny_core, "llamacpp", foreign_tokenizer=True) as fake,
        pytest.raises(ServedModelError, match="does not match the model served at"),
    ):
        served(fake, tiny_model)


def test_nothing_listening_is_a_clear_error(tiny_model):
    with pytest.raises(ServedModelError, match=r"cannot reach the inference server at http://127.0.0.1:9"):
        ServedModel(f"http://127.0.0.1:9/v1#{tiny_model}", max_retries=0, timeout=5)


# --------------------------------------------------------------------------- production behaviour


def test_overload_is_retried_with_backoff(fake, tiny_model):
    with served(fake, tiny_model) as model:
        model.client.backoff = 0.01
        fake.fail_next = 2
        r = registry.create("pointwise", model=model, calibrate=False)
        assert len(r.rerank(QUERY, DOCS[:2])) == 2
        assert model.client.retries == 2


def test_a_failed_request_fails_the_whole_call_naming_server_and_request(fake, tiny_model):
    with served(fake, tiny_model) as model:
        r = registry.create("pointwise", model=model)
        fake.fail_all = 500
        with pytest.raises(ServedModelError) as err:
            r.rerank(QUERY, DOCS)
        message = str(err.value)
        assert fake.url in message and "/v1/completions" in message and "HTTP 500" in message
        assert "of 4" in message and "prompt tokens" in message


def test_exhausted_retries_say_how_many_attempts(fake, tiny_model):
    with served(fake, tiny_model, max_retries=1) as model:
        model.client.backoff = 0.01
        fake.fail_all = 503
        with pytest.raises(ServedModelError, match=r"failed after 2 attempt\(s\): HTTP 503"):
            model.next_token_logits([[1, 2, 3]], [4, 5])


def test_a_slow_server_times_out(fake, tiny_model):
    with served(fake, tiny_model, timeout=0.5) as model:
        fake.delay = 3.0
        t0 = time.perf_counter()
        with pytest.raises(ServedModelError, match=r"no answer within the timeout of 0.5 s"):
            model.next_token_logits([[1, 2, 3]], [4, 5])
        assert time.perf_counter() - t0 < 2.5


async def test_concurrent_queries_share_a_bounded_number_of_requests_in_flight(fake, tiny_core, tiny_model):
    with served(fake, tiny_model, max_in_flight=4) as model:
        r = registry.create("pointwise", model=model, calibrate=False)
        expected = registry.create("pointwise", model=tiny_core, calibrate=False)
        queries = [f"{QUERY} ({i})" for i in range(16)]
        fake.delay = 0.05
        results = await asyncio.gather(*(r.arerank(q, DOCS) for q in queries))
        assert 2 <= fake.max_in_flight <= 4
        for q, hits in zip(queries, results, strict=True):
            want = expected.rerank(q, DOCS)
            assert [h.score for h in hits] == pytest.approx([h.score for h in want], abs=1e-4)


async def test_a_rerank_in_flight_leaves_the_event_loop_free(fake, tiny_model):
    with served(fake, tiny_model) as model:
        r = registry.create("pointwise", model=model, calibrate=False)
        fake.delay = 0.2
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await r.arerank(QUERY, DOCS)
        task.cancel()
        assert ticks >= 10


async def test_the_async_primitives_await_from_any_loop(fake, tiny_core, tiny_model):
    with served(fake, tiny_model) as model:
        rows = [tiny_core.encode_chat(["a yes or no question"]).input_ids]
        remote = await model.anext_token_logits(rows, [5, 6])
        assert remote.shape == (1, 2)
        assert await model.agenerate(rows, 3) == tiny_core.generate(rows, 3)


def test_the_api_key_is_sent_and_never_shown(fake, tiny_model, monkeypatch):
    monkeypatch.setenv("RERANK_PLUGINS_API_KEY", "s3cret")
    with served(fake, tiny_model) as model:
        model.next_token_logits([[1, 2, 3]], [4, 5])
        assert fake.headers[-1].get("Authorization") == "Bearer s3cret"
        assert "s3cret" not in repr(model) + str(model.describe()) + model.name
    with served(fake, tiny_model, api_key="other") as model:
        model.next_token_logits([[1, 2, 3]], [4, 5])
        assert fake.headers[-1].get("Authorization") == "Bearer other"


def test_a_prompt_longer_than_the_context_fails_before_any_request(tiny_core, tiny_model):
    with FakeServer(tiny_core, "vllm", context=64) as fake, served(fake, tiny_model) as model:
        assert model.max_length == 64
        sent = fake.requests
        with pytest.raises(ValueError, match="exceeds the served model's context of 64"):
            model.next_token_logits([list(range(1, 70))], [4, 5])
        assert fake.requests == sent


def test_vllm_asks_for_exactly_the_candidate_ids(fake, tiny_model):
    with served(fake, tiny_model) as model:
        model.next_token_logits([[1, 2, 3]], [7, 4, 7, 9])
        body = fake.bodies[-1]
        assert body["logprob_token_ids"] == [7, 4, 9] and body["prompt"] == [1, 2, 3] and body["model"] == "tiny"
        assert model.describe()["method"] == "logprob_token_ids"
