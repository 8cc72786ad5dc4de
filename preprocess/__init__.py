"""melshard's data half: an audio corpus -> log-mel WebDataset shards (`python -m preprocess`)."""
