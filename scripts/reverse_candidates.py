"""Write a copy of a RankGPT-style candidates file with each query's top-``depth`` hits reversed.

The robustness check of PRP (Qin et al., 2023): rerank the same candidates given in the
inverted first-stage order. First-stage scores and ranks are dropped, so the file order is
the input order the rerankers see.

Usage:
    python scripts/reverse_candidates.py IN.jsonl OUT.jsonl --depth 10
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--depth", type=int, required=True, help="how many top hits to reverse")
    args = parser.parse_args()
    with open(args.source, encoding="utf-8") as src, open(args.target, "w", encoding="utf-8") as out:
        for line in src:
            if not line.strip():
                continue
            obj = json.loads(line)
            hits = [{k: v for k, v in h.items() if k not in ("score", "rank")} for h in obj["hits"]]
            obj["hits"] = hits[: args.depth][::-1] + hits[args.depth :]
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
