"""The running server: runtime and admission, the one upscale pipeline, batching, tiling,
method choice, calibration, metrics. Never imports ``service.offline``."""
