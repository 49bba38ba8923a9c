"""Whether a port can be had on this machine."""

from __future__ import annotations

import socket


def port_free(address: str, port: int) -> bool:
    """Whether a process could listen on the port now (SO_REUSEADDR, as Dynamo's servers bind: a socket
    of a run that just ended, in TIME_WAIT, does not hold it; a listener does). node/node_check.py has
    its own copy: it runs as a plain script on nodes where slurmserve is not installed."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
