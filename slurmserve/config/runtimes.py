"""The Dynamo versions slurmserve plans for, and the engine version each one runs: one table, in one place.

Engine YAMLs are read by the TensorRT-LLM that the nodes' Dynamo pins, so that is the version they are
checked against: this venv's Dynamo unless the hosts file says the nodes or the image hold another
(`runtime: {dynamo: VERSION}`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import metadata

from ..errors import UserError


@dataclass(frozen=True)
class Runtime:
    dynamo: str
    tensorrt_llm: str  # what ai-dynamo's `trtllm` extra pins: the engine that reads the engine YAMLs
    schema: str  # the TensorRT-LLM version whose shipped schema (engine_configs/schema/) checks them

    @property
    def stand_in(self) -> bool:
        """The engine's own schema is not shipped, and an older one's checks its YAMLs meanwhile."""
        return self.schema != self.tensorrt_llm

    def checked_against(self) -> str:
        """Which TensorRT-LLM's arguments a check used, said so that a stand-in is never mistaken for the real one."""
        if not self.stand_in:
            return f"TensorRT-LLM {self.schema}"
        return (
            f"TensorRT-LLM {self.schema} (Dynamo {self.dynamo} runs TensorRT-LLM {self.tensorrt_llm}, "
            "whose schema is not shipped yet)"
        )


RUNTIMES = {
    # ai-dynamo 1.6.1's `trtllm` extra pins tensorrt-llm==1.3.0rc29. That tag's source could not be read
    # where this table was last updated, so its schema is not generated (engine_configs/schema/generate.py
    # makes it in one command where GitHub is reachable): 1.1.0rc5's checks engine YAMLs until then, and
    # every message names both versions.
    "1.6.1": Runtime(dynamo="1.6.1", tensorrt_llm="1.3.0rc29", schema="1.1.0rc5")
}
# Without ai-dynamo in this venv (slurmserve installed without its `dynamo` extra), the nodes are taken to
# run the Dynamo this slurmserve is made for.
DEFAULT_DYNAMO = "1.6.1"


def supported_dynamo(version: str) -> str:
    """`version` if slurmserve supports that Dynamo; else ValueError naming the supported ones."""
    if version in RUNTIMES:
        return version
    raise ValueError(f"Dynamo {version} is not supported (supported: {', '.join(RUNTIMES)})")


@functools.cache
def venv_dynamo() -> str:
    """The version of ai-dynamo installed beside slurmserve."""
    try:
        return metadata.version("ai-dynamo")
    except metadata.PackageNotFoundError:
        return DEFAULT_DYNAMO


def runtime_for(dynamo: str | None = None) -> Runtime:
    """The runtime of a hosts file's `runtime.dynamo`, or of this venv's Dynamo when it names none."""
    if dynamo is not None:
        return RUNTIMES[supported_dynamo(dynamo)]  # the hosts file was checked when read: this cannot fail
    try:
        return RUNTIMES[supported_dynamo(venv_dynamo())]
    except ValueError as error:
        raise UserError(
            f"this venv's ai-dynamo: {error}; install a supported one, or name the nodes' Dynamo in the hosts "
            "file's runtime.dynamo"
        ) from None
