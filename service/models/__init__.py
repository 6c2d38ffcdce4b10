"""Network architectures, their registry, the model store, the resident set, the device."""
