"""The model cache on a shared filesystem: a model fetched once, whoever asks and however many at once."""
