#!/usr/bin/env python3
"""Generate the weightless tiny-mock model directory used by the Dynamo mocker in tests.

Writes exactly three files into ``slurmserve/models/tiny-mock/`` (or the directory given as the
first argument):

* ``config.json``            a small llama-like config (no weights exist; only the shape is read)
* ``tokenizer.json``         a byte-level BPE (~760 tokens) trained on generated English text, then whole
                             everyday words (``tiny_mock_words.txt``) up to 2,000 ids: see MOCKER_TOKEN_IDS
* ``tokenizer_config.json``  bos/eos tokens and a ChatML-like ``chat_template``

The output is deterministic: the corpus comes from a seeded PRNG and training runs single-threaded.
The ``tokenizers`` package is needed only to run this script (``pip install tokenizers``); the
generated files are committed and slurmserve never imports ``tokenizers`` at run time.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

# Single-threaded training so merges are identical on every run and machine.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SEED = 20240601
VOCAB_SIZE = 768  # what BPE training may learn (it stops at 762); whole words fill the ids after it
# Dynamo 1.6.1's mock engine answers token ids drawn uniformly from 1000-1999, whatever the model's vocabulary
# (30 completions of 300 tokens: 9,000 ids, all in that range). With a BPE of 762 tokens every one of them was
# out of range and a plain chat completion came back as `"content": null`. Every id from the end of the BPE to
# 1999 is a whole word with its leading space, so the demo answers in words; prompts still encode byte-level.
MOCKER_TOKEN_IDS = range(1000, 2000)
WORDS = Path(__file__).resolve().parent / "tiny_mock_words.txt"
NUM_SENTENCES = 4000

BOS = "<s>"
EOS = "<|im_end|>"
SPECIAL_TOKENS = [BOS, "</s>", "<|im_start|>", EOS, "<|endoftext|>"]  # ids 0..4

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SUBJECTS = [
    "the model",
    "a user",
    "the server",
    "our cluster",
    "the scheduler",
    "every worker",
    "the frontend",
    "a request",
    "the decoder",
    "the planner",
    "this node",
    "the team",
    "my friend",
    "the teacher",
    "a small cat",
    "the old man",
    "she",
    "he",
    "they",
    "we",
    "you",
    "I",
]
VERBS = [
    "reads",
    "writes",
    "sends",
    "receives",
    "builds",
    "starts",
    "stops",
    "checks",
    "serves",
    "answers",
    "waits for",
    "looks at",
    "talks about",
    "remembers",
    "finds",
    "keeps",
    "loads",
    "moves",
    "likes",
    "needs",
    "wants",
    "opens",
    "closes",
    "measures",
    "returns",
]
OBJECTS = [
    "a message",
    "the tokens",
    "some text",
    "the weather",
    "a long story",
    "the answer",
    "every question",
    "the results",
    "a new job",
    "the logs",
    "two numbers",
    "the door",
    "a cup of tea",
    "the green house",
    "this morning",
    "the river",
    "a good book",
    "the city",
    "the memory",
    "a quick reply",
    "the first line",
    "many people",
    "the evening news",
]
ADVERBS = [
    "quickly",
    "slowly",
    "today",
    "again",
    "together",
    "carefully",
    "at night",
    "in the morning",
    "before lunch",
    "after work",
    "every day",
    "without delay",
    "on time",
    "very well",
    "",
]
CONNECTORS = ["and", "but", "because", "so", "while", "when", "although", "then"]
QUESTIONS = [
    "What is the capital of France?",
    "How are you today?",
    "Can you help me?",
    "Why is the sky blue?",
    "Where does the river go?",
    "Who wrote this book?",
    "Is it going to rain tomorrow?",
    "How many tokens per second?",
    "What time is it?",
]


def _clause(rng: random.Random) -> str:
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    adv = rng.choice(ADVERBS)
    if adv:
        words.append(adv)
    return " ".join(words)


def make_corpus(seed: int = SEED, n: int = NUM_SENTENCES) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        kind = rng.random()
        if kind < 0.15:
            line = rng.choice(QUESTIONS)
        else:
            line = _clause(rng)
            if kind < 0.55:
                line += f" {rng.choice(CONNECTORS)} {_clause(rng)}"
            line = line[0].upper() + line[1:] + rng.choice([".", ".", ".", "!", "?"])
        if i % 17 == 0:
            line += f" It took {rng.randint(1, 999)} ms and {rng.randint(1, 64)} GPUs."
        lines.append(line)
    return lines


def build_tokenizer(corpus: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def add_words(tok_json: dict, words: list[str], size: int) -> None:
    """Give every id after the trained BPE, up to `size`, a whole word (byte-level: 'Ġ' is the space).

    The BPE never produces them (no merge leads there), so encoding is unchanged; they only decode."""
    vocab = tok_json["model"]["vocab"]
    new = [f"Ġ{word}" for word in words if f"Ġ{word}" not in vocab]
    if len(vocab) + len(new) < size:
        raise SystemExit(f"{WORDS}: {len(new)} new words, {size - len(vocab)} needed")
    vocab.update({token: len(vocab) + i for i, token in enumerate(new[: size - len(vocab)])})


def make_config(vocab_size: int, bos_id: int, eos_id: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }


def make_tokenizer_config(tok: Tokenizer) -> dict:
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    repo = Path(__file__).resolve().parent.parent
    out = Path(argv[1]) if len(argv) > 1 else repo / "slurmserve" / "models" / "tiny-mock"
    out.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer(make_corpus())
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    # Compact JSON (no indentation) keeps tokenizer.json small; key order is stable.
    tok_json = json.loads(tok.to_str())
    add_words(tok_json, WORDS.read_text().split(), MOCKER_TOKEN_IDS.stop)
    tok = Tokenizer.from_str(json.dumps(tok_json))
    (out / "tokenizer.json").write_text(
        json.dumps(tok_json, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )
    _write_json(out / "config.json", make_config(tok.get_vocab_size(with_added_tokens=True), bos_id, eos_id))
    _write_json(out / "tokenizer_config.json", make_tokenizer_config(tok))

    sample = "Hello world, the scheduler serves the tokens quickly."
    ids = tok.encode(sample).ids
    assert tok.decode(ids) == sample, "byte-level round trip failed"
    assert all(tok.decode([i]).strip().isalpha() for i in MOCKER_TOKEN_IDS), "a mocker token id decodes to no word"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        print(f"{out / name}: {(out / name).stat().st_size} bytes")
    print(f"vocab_size={tok.get_vocab_size(with_added_tokens=True)} bos={bos_id} eos={eos_id} sample={len(ids)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
