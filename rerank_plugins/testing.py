"""Test doubles for users' own tests (and ours): a tiny random model and a fake reranker.

``tiny_model_dir()`` writes a few-hundred-kilobyte random-weight causal LM with a locally
trained tokenizer and a ChatML chat template to a folder, so the whole loading and scoring path
runs with no download. ``KeywordReranker`` is a deterministic, model-free reranker.

Example:
    >>> from rerank_plugins.testing import KeywordReranker
    >>> [h.index for h in KeywordReranker().rerank("red apple", ["blue sky", "red apple pie"])]
    [1, 0]
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Literal

from rerank_plugins.types import BaseReranker

__all__ = ["CHATML_TEMPLATE", "KeywordReranker", "tiny_cross_encoder_dir", "tiny_model_dir"]

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Passage A is more relevant. Passage B is more relevant. Answer Yes or No.",
    "Query: what is the capital of France? Document: Paris is the capital of France.",
    "[A] [B] [C] [D] [E] [F] [G] [H] [I] [J] [K] [L] [M] [N] [O] [P] [Q] [R] [S] [T] [U] [V] [W] [X] [Y] [Z]",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 > , . ; : ! ? ( ) \" ' - _ / N/A",
    "Rank the passages by relevance to the search query. Output the identifiers in order.",
    "The quick brown fox jumps over the lazy dog. Unicode: café naïve 東京 Привет ✓",
    "the a an of in on for with is are was were be been to from by and or not yes no",
]
_lock = threading.Lock()


def _train_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(out)


def tiny_model_dir(
    arch: Literal["llama", "qwen2", "mistral"] = "llama",
    path: str | os.PathLike[str] | None = None,
    *,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write (once) and return a folder holding a tiny random causal LM and its tokenizer.

    The folder is cached under the system temp dir by its settings, so repeated calls in one
    machine reuse it. The weights are random: useful for plumbing, shapes and determinism only.

    Example:
        >>> folder = tiny_model_dir()  # doctest: +SKIP
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    # The key names the transformers version: a folder saved by one major version may not load
    # in another (transformers 5 writes tokenizer classes that 4.x does not have).
    settings = [arch, num_layers, seed, _CORPUS, transformers.__version__]
    key = hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]
    out = Path(path) if path is not None else Path(tempfile.gettempdir()) / f"rerank-plugins-tiny-{arch}-{key}"
    with _lock:
        if (out / ".complete").exists():
            return out
        out.mkdir(parents=True, exist_ok=True)
        _train_tokenizer(out)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(out)
        config = AutoConfig.for_model(
            arch,
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        )
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Scale weights up a little so random logits are not all near-ties (clear orderings in tests).
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.2)
        model.save_pretrained(out)
        (out / ".complete").write_text("ok\n")
    return out


class KeywordReranker(BaseReranker):
    """Deterministic model-free reranker: score = query words found in the document.

    A stand-in for real rerankers in application tests (like httpx's MockTransport).
    """

    name = "keyword"
    per_document = True

    def score(self, query: str, documents: list[str]) -> list[float]:
        words = set(re.findall(r"\w+", query.lower()))
        return [float(len(words & set(re.findall(r"\w+", d.lower())))) for d in documents]


def tiny_cross_encoder_dir(path: str | os.PathLike[str] | None = None, *, seed: int = 0) -> Path:
    """Write (once) and return a folder with a tiny random BERT cross-encoder (1 label).

    Loads with sentence-transformers' ``CrossEncoder``; weights are random (plumbing only).

    Example:
        >>> folder = tiny_cross_encoder_dir()  # doctest: +SKIP
    """
    import string

    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    words = sorted({w for line in _CORPUS for w in re.findall(r"\w+", line.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits]
    vocab += [p for p in string.punctuation] + [w for w in words if w not in vocab]
    # the key names the vocabulary and the transformers version, so a folder written with another
    # vocabulary, or by a transformers version that saves another format, is never reused
    key = hashlib.sha1(json.dumps([vocab, transformers.__version__]).encode()).hexdigest()[:10]
    out = Path(path) if path is not None else Path(tempfile.gettempdir()) / f"rerank-plugins-tiny-ce-{seed}-{key}"
    with _lock:
        if (out / ".complete").exists():
            return out
        out.mkdir(parents=True, exist_ok=True)
        (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
        # transformers 5 takes the vocabulary as `vocab`; 4.x as `vocab_file`
        fast = transformers.BertTokenizerFast  # type: ignore[attr-defined]
        keyword = "vocab_file" if "vocab_file" in inspect.signature(fast.__init__).parameters else "vocab"
        tokenizer = fast(**{keyword: str(out / "vocab.txt")}, do_lower_case=True)
        tokenizer.save_pretrained(out)
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            num_labels=1,  # type: ignore[call-arg]
        )
        torch.manual_seed(seed)
        BertForSequenceClassification(config).save_pretrained(out)
        (out / ".complete").write_text("ok\n")
    return out
