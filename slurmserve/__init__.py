"""slurmserve: disaggregated LLM serving on Slurm clusters, SSH hosts and this machine."""

__version__ = "0.1.0"
