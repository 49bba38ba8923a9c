"""What users write: recipes, hosts files and `--set` overrides. Schemas and validation only; no I/O
beyond reading the files."""
