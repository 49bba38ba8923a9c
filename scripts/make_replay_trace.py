#!/usr/bin/env python3
"""Write the tiny-mock model's response replay trace: what the mock engine answers when benchmarked.

The mocker's own output is random token ids (Dynamo 1.6.1: 1000-1999; tiny-mock decodes each to a word, a
model with fewer ids to no text at all, which aiperf rejects), of no length a benchmark chose. Started
with `--response-replay-trace-path replay.jsonl`, a mocker answers a request annotated
`output_replay_id:osl-N` with this trace's row `osl-N`: N whole words of the tokenizer's vocabulary. One
row per output length a benchmark may ask for (OUTPUT_LENGTHS); Mooncake rows, which the mocker
validates (output_length must equal the number of token ids).

    python scripts/make_replay_trace.py [MODEL_DIR]     (default slurmserve/models/tiny-mock)

Deterministic, standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Every length up to 256, then every multiple of 64 up to 2048 and Dynamo's gpt-oss agg OSL (1000).
OUTPUT_LENGTHS = sorted({*range(1, 257), *range(320, 2049, 64), 1000})


def word_ids(tokenizer: dict) -> list[int]:
    """Ids of whole lowercase words with their leading space (byte-level BPE's 'Ġ'): printable text."""
    vocab = tokenizer["model"]["vocab"]
    return sorted(i for token, i in vocab.items() if token.startswith("Ġ") and token[1:].isalpha() and len(token) > 2)


def main(argv: list[str]) -> int:
    model = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "slurmserve/models/tiny-mock"
    words = word_ids(json.loads((model / "tokenizer.json").read_text()))
    lines = []
    for length in OUTPUT_LENGTHS:
        ids = [words[i % len(words)] for i in range(length)]
        row = {"request_id": f"osl-{length}", "timestamp": 0, "input_length": 1, "output_length": length}
        lines.append(json.dumps({**row, "hash_ids": [0], "output_token_ids": ids}, separators=(",", ":")))
    (model / "replay.jsonl").write_text("\n".join(lines) + "\n")
    print(f"{model / 'replay.jsonl'}: {len(OUTPUT_LENGTHS)} rows, {(model / 'replay.jsonl').stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
