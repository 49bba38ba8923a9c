"""Plan -> the scripts that start it (Jinja2 templates in sbatch_templates/) and the files of a run directory."""
