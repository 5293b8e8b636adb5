"""The shared scoring core on a tiny random model: exact numbers against plain forward passes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from rerank_plugins.scoring import Document, ModelSpec, get_core, load_count, resolve_device, resolve_dtype


def full_logits(core, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return core.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def test_next_token_logits_match_unpadded_forward(tiny_core):
    rows = [tiny_core.tokenize(t) for t in ["Paris is the capital", "a", "the lazy dog jumps over it"]]
    wanted = [5, 17, 42, 100]
    got = tiny_core.next_token_logits(rows, wanted)
    assert got.shape == (3, 4)
    for i, ids in enumerate(rows):
        torch.testing.assert_close(got[i], full_logits(tiny_core, ids)[wanted], rtol=1e-4, atol=1e-5)


def test_per_row_token_ids(tiny_core):
    rows = [tiny_core.tokenize("Paris is"), tiny_core.tokenize("the quick brown fox")]
    got = tiny_core.next_token_logits(rows, [[1, 2], [3, 4]])
    torch.testing.assert_close(got[0], full_logits(tiny_core, rows[0])[[1, 2]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], full_logits(tiny_core, rows[1])[[3, 4]], rtol=1e-4, atol=1e-5)


def test_prefix_kv_reuse_gives_same_logits(tiny_core):
    prefix = tiny_core.tokenize("Query: what is the capital of France? Document:")
    suffixes = [tiny_core.tokenize(" Paris is the capital."), tiny_core.tokenize(" blue")]
    before = tiny_core.stats.snapshot()
    got = tiny_core.next_token_logits(suffixes, [7, 8, 9], prefix=prefix)
    after = tiny_core.stats.snapshot()
    for i, s in enumerate(suffixes):
        torch.testing.assert_close(got[i], full_logits(tiny_core, prefix + s)[[7, 8, 9]], rtol=1e-4, atol=1e-5)
    # the prefix is processed once, not once per row
    assert after["prompt_tokens"] - before["prompt_tokens"] == len(prefix) + sum(map(len, suffixes))


def test_small_batch_budget_splits_into_several_passes(tiny_model):
    from rerank_plugins.scoring.core import ScoringCore

    big = get_core(tiny_model)
    small = ScoringCore(big.loaded, max_batch_tokens=8)
    rows = [big.tokenize("the quick brown fox") for _ in range(4)]
    assert len(rows[0]) == 4  # so 2 rows x 4 tokens fill the 8-token budget: 2 passes of 2 rows
    torch.testing.assert_close(small.next_token_logits(rows, [3, 4]), big.next_token_logits(rows, [3, 4]))
    assert small.stats.forward_passes == 2


def test_concurrent_requests_are_micro_batched(tiny_core):
    rows = [tiny_core.tokenize(t) for t in ["one two", "three four five", "six", "seven eight"]]
    expected = [tiny_core.next_token_logits([r], [1, 2, 3]) for r in rows]
    results: dict[int, torch.Tensor] = {}
    lock = tiny_core.loaded.lock
    lock.acquire()  # hold the model so every request queues up behind one forward pass
    try:
        before = tiny_core.stats.forward_passes
        def ask(i: int) -> None:
            results[i] = tiny_core.next_token_logits([rows[i]], [1, 2, 3])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while len(tiny_core._pending) < 4 and time.time() < deadline:
            time.sleep(0.01)
        assert len(tiny_core._pending) == 4
    finally:
        lock.release()
    for t in threads:
        t.join()
    assert tiny_core.stats.forward_passes - before == 1
    for i in range(4):
        torch.testing.assert_close(results[i], expected[i], rtol=1e-4, atol=1e-5)


def test_generate_is_greedy_and_batch_independent(tiny_core):
    rows = [tiny_core.tokenize("the quick brown"), tiny_core.tokenize("Paris is the capital of")]
    batch = tiny_core.generate(rows, max_new_tokens=6)
    single = [tiny_core.generate([r], max_new_tokens=6)[0] for r in rows]
    assert batch == single
    assert all(isinstance(t, str) for t in batch)
    ids = torch.tensor([rows[0]])
    ref = tiny_core.model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert batch[0] == tiny_core.tokenizer.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)


def test_encode_chat_spans_and_truncation(tiny_core):
    before = tiny_core.stats.truncated_documents
    long_doc = "the quick brown fox jumps over the lazy dog " * 50
    enc = tiny_core.encode_chat(
        ["Instruction: rank.\n", Document("Paris is the capital"), "\n", Document(long_doc), "\nEnd."],
        assistant_prefix="[",
        doc_max_tokens=16,
    )
    assert enc.truncated == 1
    assert tiny_core.stats.truncated_documents - before == 1
    (s0, e0), (s1, e1) = enc.spans
    assert enc.input_ids[s0:e0] == tiny_core.tokenize("Paris is the capital")
    assert e1 - s1 == 16
    assert enc.input_ids[s1:e1] == tiny_core.tokenize(long_doc)[:16]
    text = tiny_core.tokenizer.decode(enc.input_ids)
    # the instruction, the text after the documents and the assistant prefix are never cut
    assert text.startswith("<|im_start|>user\nInstruction: rank.\n")
    assert text.endswith("\nEnd.<|im_end|>\n<|im_start|>assistant\n[")


def test_encode_chat_raw_ids_and_system(tiny_core):
    enc = tiny_core.encode_chat([[5, 6, 7]], system="Be brief.")
    head = tiny_core.tokenize("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert enc.input_ids[len(head) : len(head) + 3] == [5, 6, 7]


def test_context_overflow_is_a_clear_error(tiny_core):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        tiny_core.next_token_logits([[5] * (tiny_core.max_length + 1)], [1])


def test_bad_token_ids(tiny_core):
    with pytest.raises(ValueError, match="token_ids"):
        tiny_core.next_token_logits([[5, 6]], [10**7])
    with pytest.raises(ValueError, match="token_ids"):
        tiny_core.next_token_logits([[5, 6]], [])
    with pytest.raises(ValueError, match="not one token|expected one"):
        tiny_core.token_ids(["definitely not one token at all"])


def test_one_instance_per_model(tiny_model):
    from rerank_plugins.rerankers.pointwise import PointwiseReranker

    core = get_core(tiny_model)
    loads = load_count()
    a = PointwiseReranker(str(tiny_model))
    b = PointwiseReranker(tiny_model)
    assert a.core is b.core is core
    assert load_count() == loads


def test_concurrent_first_load_loads_once(tmp_path):
    from rerank_plugins.testing import tiny_model_dir

    folder = tiny_model_dir(path=tmp_path / "m", seed=3)
    loads = load_count()
    cores = []
    threads = [threading.Thread(target=lambda: cores.append(get_core(folder))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert load_count() == loads + 1
    assert all(c is cores[0] for c in cores)


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu:9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_model_spec_parsing(tmp_path):
    assert ModelSpec.parse("Qwen/Qwen2.5-0.5B-Instruct").source == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        ModelSpec.parse(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        ModelSpec.parse(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        ModelSpec.parse(tmp_path / "empty")
    with pytest.raises(ValueError, match="model"):
        ModelSpec.parse("")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert ModelSpec.parse(gguf) == ModelSpec(source=str(tmp_path.resolve()), gguf_file="m.gguf")


def test_pointwise_score_is_yes_minus_no_logit(tiny_core, monkeypatch):
    from rerank_plugins.rerankers.pointwise import DEFAULT_INSTRUCTION, PointwiseReranker

    r = PointwiseReranker(tiny_core)
    seen: list[list[int]] = []
    real = tiny_core.next_token_logits

    def spy(rows, wanted, prefix=None):
        seen.extend([*(prefix or []), *row] for row in rows)
        return real(rows, wanted, prefix=prefix)

    monkeypatch.setattr(tiny_core, "next_token_logits", spy)
    docs = ["Paris is the capital of France.", "blue"]
    scores = r.score("capital of France", docs)
    # the ids scored are the documented prompt in the tokenizer's own chat template, and the
    # score is the pooled Yes-minus-No log-odds of a plain forward pass over them
    tok = tiny_core.tokenizer
    encodings = {w: tok.encode(w, add_special_tokens=False) for w in ("Yes", " Yes", "No", " No")}
    yes = sorted({e[0] for w, e in encodings.items() if "Yes" in w and len(e) == 1})
    no = sorted({e[0] for w, e in encodings.items() if "No" in w and len(e) == 1})
    assert yes and no
    for doc, ids, s in zip(docs, seen, scores, strict=True):
        text = (
            f"{DEFAULT_INSTRUCTION}\n\nQuery: capital of France\n\nDocument: {doc}"
            "\n\nIs the document relevant to the query? Answer Yes or No."
        )
        chat = [{"role": "user", "content": text}]
        assert tok.decode(ids) == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        logits = full_logits(tiny_core, ids)
        expected = torch.logsumexp(logits[yes], 0) - torch.logsumexp(logits[no], 0)
        assert s == pytest.approx(float(expected), abs=1e-4)


def test_tokenizer_override(tmp_path, tiny_model):
    import shutil

    from rerank_plugins.testing import tiny_model_dir

    folder = tiny_model_dir(path=tmp_path / "m", seed=5)
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    for f in folder.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, tok_dir / f.name)
    plain = get_core(folder)
    other = get_core(folder, tokenizer=tok_dir)
    assert other is not plain and other.model is not plain.model
    assert other.encode_chat(["hello"]).input_ids == plain.encode_chat(["hello"]).input_ids
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        get_core(folder, tokenizer=tmp_path / "missing")
