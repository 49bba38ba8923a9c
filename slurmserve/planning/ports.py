"""Each deployment owns a block of ports on every node it touches, chosen from its run name, so
deployments sharing nodes do not collide; submit moves a run to another block if a live run holds it.

The range ends below 32768: Dynamo 1.6.1 reads DYN_SYSTEM_PORT as a signed 16-bit number, and Linux
hands out ephemeral ports from 32768 up.
"""

from __future__ import annotations

import hashlib

from ..errors import UserError

PORT_RANGE_START = 10000
PORT_RANGE_END = 32000
PORT_BLOCK_SIZE = 32
PORT_BLOCKS = (PORT_RANGE_END - PORT_RANGE_START) // PORT_BLOCK_SIZE


def default_port_block(run_name: str) -> int:
    return int(hashlib.sha256(run_name.encode()).hexdigest(), 16) % PORT_BLOCKS


def block_ports(block: int) -> range:
    """Every port of a block."""
    base = PORT_RANGE_START + block * PORT_BLOCK_SIZE
    return range(base, base + PORT_BLOCK_SIZE)


class PortAllocator:
    """Hands out ports from the deployment's block, per node; ports the recipe fixes are kept out of it."""

    def __init__(self, block: int, reserved: set[int]):
        self.ports = block_ports(block)
        self.reserved = reserved
        self.next_offset: dict[str, int] = {}

    def take(self, node: str) -> int:
        offset = self.next_offset.get(node, 0)
        while offset < len(self.ports) and self.ports[offset] in self.reserved:
            offset += 1
        if offset >= len(self.ports):
            raise UserError(
                f"node {node}: more than {PORT_BLOCK_SIZE} ports needed on one node; use fewer, larger workers"
            )
        self.next_offset[node] = offset + 1
        return self.ports[offset]
