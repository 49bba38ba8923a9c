"""The only code that reaches another machine or another process: SSH, Slurm's commands, HTTP probes
of the deployment's endpoints, /proc."""
