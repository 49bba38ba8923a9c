"""The only code that reaches another machine or another process: SSH, Slurm's commands, /proc."""
