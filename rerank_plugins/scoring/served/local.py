"""A llama.cpp server on this machine, from a ``.gguf`` file: for tests, benchmarks and trying things out.

It runs llama.cpp's own HTTP server (the one ``llama-server`` runs) in this process through the
``xllamacpp`` binary wheel (``pip install xllamacpp``; no compiler needed), on a local port, with
its OpenAI-compatible and native endpoints. From a shell::

    python -m rerank_plugins.scoring.served.local "$RERANK_QUALITY_GGUF" --port 8080 --threads 2 --parallel 16

prints ``listening http://127.0.0.1:8080`` and serves until interrupted. A model served this way
is named ``http://127.0.0.1:8080/v1#<tokenizer folder or hub id>``.

:func:`dequantize_gguf` writes a float32 copy of a quantised ``.gguf`` (``gguf`` package, the
``gguf`` extra): served with ``f32_kv=True``, llama.cpp then computes with exactly the weights
the in-process core dequantises from the original file, which is how the tests check that the
served backend and the in-process core give the same numbers.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["LocalServer", "dequantize_gguf", "main", "serve_gguf"]

_INSTALL = "pip install xllamacpp"


def _xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise ImportError(f"a local llama.cpp server needs the xllamacpp wheel: {_INSTALL}") from exc
    return xllamacpp


class LocalServer:
    """A running llama.cpp server; :attr:`url` is its root (``http://127.0.0.1:PORT``)."""

    def __init__(self, server: Any, url: str, gguf: str) -> None:
        self._server = server
        self.url = url
        self.gguf = gguf

    def name(self, tokenizer: str | os.PathLike[str]) -> str:
        """The served-model name for ``model=``: ``<url>/v1#<tokenizer>``."""
        return f"{self.url}/v1#{os.fspath(tokenizer)}"

    def close(self) -> None:
        """Stop the server (its slots and HTTP thread)."""
        server, self._server = self._server, None
        del server

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_gguf(
    gguf: str | os.PathLike[str],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    threads: int = 2,
    parallel: int = 4,
    ctx: int = 8192,
    f32_kv: bool = False,
    api_key: str | None = None,
) -> LocalServer:
    """Start llama.cpp's server on ``gguf`` in this process and return it once it listens.

    Args:
        gguf: the model file.
        port: the TCP port (0: a free one).
        host: the address to listen on.
        threads: CPU threads for prompt processing and generation.
        parallel: slots, i.e. requests decoded together (continuous batching).
        ctx: context tokens, shared by the slots (unified KV cache: each request may use all of it).
        f32_kv: keep the KV cache in float32 and turn flash attention off (bit-for-bit closer to
            a float32 model in PyTorch; slower).
        api_key: require this bearer token.
    """
    xlc = _xllamacpp()
    path = Path(gguf).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no .gguf file at {path}")
    p = xlc.CommonParams()
    p.model.path = str(path)
    p.n_ctx = ctx
    p.n_parallel = parallel
    p.kv_unified = True
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.hostnames = [host]
    p.port = port
    p.endpoint_props = True
    if api_key:
        p.api_keys = [api_key]
    if f32_kv:
        p.cache_type_k = xlc.ggml_type.GGML_TYPE_F32
        p.cache_type_v = xlc.ggml_type.GGML_TYPE_F32
        p.flash_attn_type = xlc.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    server = xlc.Server(p)
    url = str(server.listening_address).rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return LocalServer(server, url, str(path))


def dequantize_gguf(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write ``dst``: ``src`` with every tensor dequantised to float32 (metadata copied, file type F32)."""
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        raise ImportError('dequantize_gguf needs the gguf package: pip install "rerank-plugins[gguf]"') from exc
    reader = gguf.GGUFReader(os.fspath(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    out = Path(dst)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(os.fspath(tmp), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.ALL_F32)
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, data, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Serve a ``.gguf`` until interrupted (or, with ``--until-stdin-closes``, until stdin closes)."""
    parser = argparse.ArgumentParser(
        prog="python -m rerank_plugins.scoring.served.local",
        description="Serve a .gguf with llama.cpp's server (xllamacpp) on a local port.",
    )
    parser.add_argument("gguf", help="the model file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    parser.add_argument("--parallel", type=int, default=4, help="slots decoded together (default: %(default)s)")
    parser.add_argument("--ctx", type=int, default=8192,
                        help="context tokens, shared by the slots (default: %(default)s)")
    parser.add_argument("--f32-kv", action="store_true", help="float32 KV cache, no flash attention")
    parser.add_argument("--until-stdin-closes", action="store_true", help="stop when stdin reaches end of file")
    args = parser.parse_args(argv)
    server = serve_gguf(args.gguf, port=args.port, host=args.host, threads=args.threads, parallel=args.parallel,
                        ctx=args.ctx, f32_kv=args.f32_kv, api_key=os.environ.get("RERANK_PLUGINS_API_KEY") or None)
    print(f"listening {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.until_stdin_closes:

        def wait_for_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=wait_for_eof, daemon=True).start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
