"""KV-aware routing against round-robin on the same shared-prefix workload, side by side.

Deploys mocker-agg with two (or --workers) mock workers on the local backend, once with
frontend.router_mode kv and once with round-robin (each in a fresh home, cancelled after), and sends both the
same workload: --groups groups of --per-group requests, the requests of a group sharing a long prompt prefix
(--prefix-words words, about 3.7 tokens each of the tiny model), --concurrency streams at a time, in a
shuffled order. A small httpx client streams each request and times its first chunk carrying a token (TTFT).
Prints per router mode:

    TTFT p50/p99      from the client's own clock
    KV hit rate       of the prompt tokens, the share the workers found cached: the frontend's
                      dynamo_frontend_cached_tokens_sum / dynamo_frontend_input_sequence_tokens_sum
    same worker       per group, the share of its requests its busiest worker served (workers' own
                      dynamo_component_requests_total), averaged over the groups
    busiest           the share of the timed requests the busiest worker served (1/N: an even spread)

    .venv/bin/python benchmarks/kv_routing.py [--workers 2] [--groups 8] [--per-group 8] [--prefix-words 3000]
        [--concurrency 4] [--speedup-ratio 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from slurmserve.bench.workload import shared_prefix_prompts
from slurmserve.observability.live import CACHED_TOKENS, INPUT_TOKENS
from slurmserve.observability.metrics import requests_served, samples, total
from slurmserve.runs import open_run


def first_token_s(endpoint: str, model: str, prompt: str) -> float:
    """Seconds to the first streamed chunk that carries a token (the rest of the stream read to its end)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "stream": True}
    started = time.perf_counter()
    with httpx.stream("POST", f"{endpoint}/v1/chat/completions", json=body, timeout=60) as response:
        response.raise_for_status()
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: {") and json.loads(line[6:]).get("choices"):
                ttft = time.perf_counter() - started
                for _ in lines:
                    pass
                return ttft
    raise RuntimeError("the stream ended without a token")


def measure(run: str, args: argparse.Namespace) -> dict[str, float]:
    plan = open_run(run).plan()
    shape = (args.groups, args.per_group, args.prefix_words)
    sent = shared_prefix_prompts(*shape, seed=args.seed)
    # The routing share is measured group by group on its own (sequentially), before the timed run.
    shares = []
    for group in range(args.groups):
        before = requests_served(plan, "agg")
        for _, prompt in (item for item in sent if item[0] == group):
            first_token_s(plan.endpoint, plan.model, prompt)
        counts = [count - before[name] for name, count in requests_served(plan, "agg").items()]
        shares.append(max(counts) / max(sum(counts), 1))
    # The timed run: fresh prompts (another seed), the same shape, in a shuffled order: sent round after
    # round, group g's requests would all be the (g mod N)-th of a round, and round-robin would keep each
    # group on one worker by accident whenever N divides the number of groups.
    timed = shared_prefix_prompts(*shape, seed=args.seed + 1)
    random.Random(args.seed).shuffle(timed)
    front_before, served_before = samples(f"{plan.endpoint}/metrics"), requests_served(plan, "agg")
    with ThreadPoolExecutor(args.concurrency) as pool:
        ttfts = sorted(pool.map(lambda item: first_token_s(plan.endpoint, plan.model, item[1]), timed))
    front_after = samples(f"{plan.endpoint}/metrics")
    timed_counts = [count - served_before[name] for name, count in requests_served(plan, "agg").items()]
    cached = total(front_after, CACHED_TOKENS) - total(front_before, CACHED_TOKENS)
    prompted = total(front_after, INPUT_TOKENS) - total(front_before, INPUT_TOKENS)
    return {
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p99_ms": ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))] * 1000,
        "kv_hit_rate": cached / prompted if prompted else float("nan"),
        "same_worker": statistics.mean(shares),
        "busiest": max(timed_counts) / max(sum(timed_counts), 1),
        "requests": len(ttfts),
    }


def deployed(router_mode: str, args: argparse.Namespace) -> dict[str, float]:
    home = tempfile.mkdtemp(prefix=f"slurmserve-kv-routing-{router_mode}-")
    os.environ.update(SLURMSERVE_HOME=home, HOME=home)  # open_run reads this registry too
    run = f"kv-bench-{router_mode}"
    sets = [f"agg.replicas={args.workers}", f"frontend.router_mode={router_mode}"]
    sets += [f"mocker.speedup_ratio={args.speedup_ratio:g}", "agg.tensor_parallel=1", "agg.expert_parallel=1"]
    submit = [sys.executable, "-m", "slurmserve", "submit", "--recipe", "mocker-agg", "--name", run, "--timeout", "120"]
    subprocess.run([*submit, *(word for s in sets for word in ("--set", s))], check=True, capture_output=True)
    try:
        return measure(run, args)
    finally:
        subprocess.run([sys.executable, "-m", "slurmserve", "cancel", run], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--per-group", type=int, default=8)
    parser.add_argument("--prefix-words", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--speedup-ratio", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    results = {mode: deployed(mode, args) for mode in ("kv", "round-robin")}
    print(
        f"{args.workers} mock workers (speedup {args.speedup_ratio:g}), {args.groups} groups x {args.per_group} "
        f"requests sharing a {args.prefix_words}-word prefix, concurrency {args.concurrency}, 8 output tokens"
    )
    columns = ("requests", "TTFT p50", "TTFT p99", "KV hit rate", "same worker", "busiest")
    print(f"{'router':<12} " + " ".join(f"{name:>12}" for name in columns))
    for mode, got in results.items():
        print(
            f"{mode:<12} {got['requests']:>12} {got['ttft_p50_ms']:>10.1f}ms {got['ttft_p99_ms']:>10.1f}ms "
            f"{got['kv_hit_rate']:>12.0%} {got['same_worker']:>12.0%} {got['busiest']:>12.0%}"
        )


if __name__ == "__main__":
    main()
