"""melshard's training half: shards -> a streaming, resumable trainer (`python -m trainer`)."""
