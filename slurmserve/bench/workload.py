"""What a benchmark sends: the recipe's bench profile with the command line's changes, its concurrency
points, and aiperf's command line for one point."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..config.recipe import BenchSpec
from ..errors import UserError
from ..planning.plan import Plan

AIPERF_ENDPOINT = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
REPLAY_ANNOTATION = "output_replay_id:osl-{osl}"  # a row of the mocker's replay trace (see its planner)
REPLAY_FLAG = "--response-replay-trace-path"
# The default sample of a point. 200 requests: a p99 from at least two requests beyond it, not the maximum
# (10 requests, perf.yaml's "10x concurrency" at c1, make the p99 the slowest request). 30 s: longer than a
# burst, a GC pause or a scheduler's tick, so the point is not the weather of one second.
MIN_REQUESTS = 200
MIN_MEASURING_S = 30.0


def replayed_chat(model: str, tokens: int) -> dict[str, object]:
    """A streamed chat completion the mock engine answers with its replay trace's row of `tokens` tokens:
    exactly that long, however it would end on its own (the streams the scaling tests and benchmark send)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "stream": True,
        "max_tokens": tokens,
        "nvext": {"annotations": [REPLAY_ANNOTATION.format(osl=tokens)]},
    }


@dataclass(frozen=True)
class Point:
    """One aiperf run: a concurrency, and the requests it sends (after its warm-up)."""

    concurrency: int
    requests: int
    warmup: int
    min_measuring_s: float = 0.0  # measured again for this long when its requests took less
    duration_s: float | None = None  # sent until this many seconds passed (or `requests` were sent)

    @property
    def label(self) -> str:
        return f"c{self.concurrency}"


@dataclass(frozen=True)
class Tokenizer:
    """How aiperf finds the model's tokenizer offline: a name in the Hugging Face cache at `hf_home`."""

    name: str
    hf_home: str
    revision: str | None = None
    offline: bool = True  # found in that cache (a staged snapshot, a local folder), not on the hub


@dataclass(frozen=True)
class Workload:
    spec: BenchSpec
    gpus: int  # the deployment's, for per-GPU concurrency and throughput
    replay: bool  # a mocker with a replay trace: requests carry the annotation that makes it answer text

    def points(self, requests: int | None = None, quick: bool = False) -> list[Point]:
        """A point per concurrency. By default each measures at least MIN_REQUESTS requests (the recipe's
        count when larger) and for at least MIN_MEASURING_S; `quick`: the recipe's count alone (smoke
        runs, tests); `requests`: exactly that many per point."""
        found = []
        for c in self.spec.concurrencies(self.gpus):
            count, floor_s = c * self.spec.requests_per_concurrency, 0.0
            if requests:
                count = requests
            elif not quick:
                count, floor_s = max(count, MIN_REQUESTS), MIN_MEASURING_S
            warmup = c if self.spec.warmup_requests is None else self.spec.warmup_requests
            found.append(Point(c, count, warmup, min_measuring_s=floor_s))
        return found

    def extra_inputs(self) -> list[str]:
        """aiperf's --extra-inputs: exact output lengths (max = min = OSL, ignore_eos) as Dynamo's perf
        jobs send them, the recipe's own fields, and the mocker's replay annotation."""
        spec = self.spec
        inputs = [f"max_tokens:{spec.osl}"]
        if spec.ignore_eos:
            inputs += [f"min_tokens:{spec.osl}", "ignore_eos:true"]
        inputs += [f"{key}:{json.dumps(value)}" for key, value in spec.extra_inputs.items()]
        if self.replay:
            inputs.append(json.dumps({"nvext": {"annotations": [REPLAY_ANNOTATION.format(osl=spec.osl)]}}))
        return inputs

    def aiperf_argv(self, aiperf: str, plan: Plan, point: Point, tokenizer: Tokenizer, out: Path) -> list[str]:
        spec = self.spec
        argv = [
            aiperf,
            "profile",
            "--model",
            plan.model,
            "--tokenizer",
            tokenizer.name,
            *(["--tokenizer-revision", tokenizer.revision] if tokenizer.revision else []),
            "--url",
            plan.endpoint,
            "--endpoint-type",
            spec.endpoint_type,
            "--endpoint",
            AIPERF_ENDPOINT[spec.endpoint_type],
            "--streaming",
            "--synthetic-input-tokens-mean",
            str(spec.isl),
            "--synthetic-input-tokens-stddev",
            "0",
            "--output-tokens-mean",
            str(spec.osl),
            "--output-tokens-stddev",
            "0",
            *[word for value in self.extra_inputs() for word in ("--extra-inputs", value)],
            "--concurrency",
            str(point.concurrency),
            "--request-count",
            str(point.requests),
            "--warmup-request-count",
            str(point.warmup),
            *self.duration_argv(point),
            "--random-seed",
            str(spec.seed),
            "--no-gpu-telemetry",
            "--use-server-token-count",  # the engine's count of what it generated, not a re-tokenized text's
            "--artifact-dir",
            str(out),
            "--ui",
            "simple",
        ]
        if spec.goodput:
            argv += ["--goodput", " ".join(f"{metric}:{ms:g}" for metric, ms in spec.goodput.items())]
        return argv

    @staticmethod
    def duration_argv(point: Point) -> list[str]:
        """A duration-bound point: aiperf stops sending after it, and waits for every answer in flight (a
        request cut at the end would count as an error)."""
        if point.duration_s is None:
            return []
        return ["--benchmark-duration", f"{point.duration_s:g}", "--benchmark-grace-period", "inf"]


def replay_trace_of(plan: Plan) -> str | None:
    """The replay trace the plan's mock workers answer from (None: not a mocker, or none)."""
    for process in plan.processes:
        if process.is_worker and REPLAY_FLAG in process.command:
            return process.command[process.command.index(REPLAY_FLAG) + 1]
    return None


def check_replay_covers(trace: str, osl: int) -> None:
    """A mocker answers text only for output lengths its trace has a row for: refuse another at once."""
    try:
        rows = [json.loads(line)["request_id"] for line in Path(trace).read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"mocker.replay_trace {trace}: cannot read it ({error})") from None
    lengths = sorted(int(row.removeprefix("osl-")) for row in rows if row.startswith("osl-"))
    if osl not in lengths:
        nearest = sorted(lengths, key=lambda length: abs(length - osl))[:3]
        raise UserError(
            f"--osl {osl}: the mock engine's replay trace {trace} has no answer of that length "
            f"(nearest: {', '.join(map(str, sorted(nearest)))})"
        )


# Words of the tiny model's vocabulary (scripts/tiny_mock_words.txt): each a token or a few.
PROMPT_WORDS = ["health", "combine", "flower", "say", "praise", "tower", "note", "seven", "square", "rose", "run"]


def shared_prefix_prompts(groups: int, per_group: int, prefix_words: int, seed: int) -> list[tuple[int, str]]:
    """KV-aware routing's workload: (group, prompt), the prompts of a group sharing a long prefix of
    `prefix_words` words and differing at the end; round after round, one prompt of every group a round."""
    rng = random.Random(seed)
    prefixes = [" ".join(rng.choice(PROMPT_WORDS) for _ in range(prefix_words)) for _ in range(groups)]
    return [
        (group, f"{prefixes[group]} question {n}: {rng.choice(PROMPT_WORDS)}?")
        for n in range(per_group)
        for group in range(groups)
    ]
