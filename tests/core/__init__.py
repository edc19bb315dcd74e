"""The pure core: registry, codec, signing, keys, validation, models, protocol, errors."""
