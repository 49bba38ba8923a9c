"""From recipe and hosts to a plan: placement, topology, ports, env, commands. Pure functions and values."""
