"""Network architectures, their registry and the loader of ``model_store/``."""
