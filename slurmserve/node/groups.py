"""`python -m slurmserve.node.groups PGID...`: print those of the process groups that still have a live
member on this host (what the SSH backend asks each host)."""

from __future__ import annotations

import sys

from ..transport.procfs import live_groups


def main(argv: list[str]) -> int:
    wanted = {int(word) for word in argv if word.isdigit()}
    print(" ".join(str(group) for group in sorted(live_groups(wanted))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
