"""Served models: the scoring protocol over vLLM, SGLang, llama.cpp or an OpenAI-compatible server.

Importing this package needs no HTTP library; building a :class:`ServedModel` needs ``httpx``
(``pip install "rerank-plugins[served]"``).

Example:
    >>> from rerank_plugins.scoring.served import is_served_name
    >>> is_served_name("http://127.0.0.1:8000/v1#Qwen/Qwen2.5-7B-Instruct")
    True
"""

from __future__ import annotations

from rerank_plugins.scoring.served.backend import (
    API_KEY_ENV,
    ServedModel,
    ServedStats,
    clear_served,
    get_served,
    is_served_name,
    parse_served_name,
)
from rerank_plugins.scoring.served.client import ServedModelError

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
