"""What the nodes have: the node-side probe script and its parsers, GPU<->NIC pairing from what it
finds, cluster discovery, and the `slurmserve probe` verb."""
