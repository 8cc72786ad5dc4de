"""Code both halves of melshard import: configs, the audio -> mel function, manifest, labels."""
