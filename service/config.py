"""The one typed settings object, and the contract's fixed vocabularies.

Every field of :class:`Settings` is read from ``SR_<NAME>`` in the environment. Paths are taken
relative to the working directory (the repository root for ``make``; ``/app`` in the image), not
to the installed package, which may live in a read-only site-packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The contract's upscaling factors and output formats, written once.
Scale = Literal[2, 3, 4]
SCALES: tuple[int, ...] = get_args(Scale)
OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)


class Settings(BaseSettings):
    """Server settings; see the README's settings table for the why of each default."""

    model_config = SettingsConfigDict(env_prefix="SR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    backend: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="what runs the networks; auto: the faster of both, timed per model at start-up"
    )
    model_store: Path = Field(
        Path("model_store"),
        description="the models, and the measured tables beside them (gain.json, classical_quality.json)",
    )
    datasets: Path = Field(
        Path("../shared/datasets"), description="train/ and eval/ images; offline commands only"
    )

    # Batching and admission.
    max_batch_size: int = Field(4, ge=1, description="tiles per batch")
    tile_size: int = Field(128, ge=16, description="LR side of a tile's centre, in pixels")
    max_batch_delay_ms: float = Field(2.0, ge=0)
    max_queue: int = Field(64, ge=1, description="requests waiting for the model")
    request_timeout_s: float = Field(30.0, gt=0, description="from admission (the body has arrived) to the answer")
    memory_budget_bytes: int = Field(
        0, ge=0,
        description="memory admitted requests may hold at once (estimated peaks); 0: three quarters "
        "of the container's limit (or of RAM) beyond what the loaded server holds",
    )
    upload_timeout_s: float = Field(20.0, gt=0, description="for the body to arrive; 408 after it")
    header_timeout_s: float = Field(10.0, gt=0, description="for a connection's request headers")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line and headers together; 431 past it"
    )
    max_connections: int = Field(512, ge=1, description="open connections and requests; 503 beyond")
    watchdog_s: float = Field(
        60.0, gt=0, description="a batch running longer than this marks the device hung: /readyz 503"
    )
    drain_delay_s: float = Field(0.0, ge=0, description="stay up, not ready, after draining")

    # Input limits.
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_json_bytes: int = Field(64 * 1024, ge=1, description="body limit of every other endpoint (JSON)")
    max_input_pixels: int = Field(4096 * 4096, ge=1)
    max_output_pixels: int = Field(8192 * 8192, ge=1)
    max_frames: int = Field(300, ge=1, description="frames of an animated PNG, WebP or GIF")
    max_total_output_pixels: int = Field(
        8192 * 8192, ge=1, description="output pixels over all frames of an animation"
    )
    max_video_duration_s: float = Field(60.0, gt=0, description="of a video, from its header")
    max_video_frames: int = Field(1800, ge=1, description="of a video, from its header and while decoding")
    max_video_output_pixels_per_s: float = Field(
        1920 * 1080 * 30, gt=0, description="output width x height x frame rate of a video"
    )
    video_chunk_frames: int = Field(
        8, ge=1, description="video frames decoded, upscaled and encoded at a time: bounds memory"
    )

    # Jobs (POST /v1/jobs): long work, state in a database, results on disk.
    jobs: bool = Field(True, description="offer /v1/jobs")
    jobs_dir: Path = Field(
        Path("jobs"), description="job inputs and results (a shared volume for several replicas), and "
        "the SQLite database when SR_JOBS_DATABASE_URL is unset",
    )
    jobs_database_url: str = Field(
        "", description="postgresql://... for job state shared by several replicas; "
        "empty: SQLite in SR_JOBS_DIR (one replica)",
    )
    job_workers: int = Field(
        1, ge=0, description="jobs one replica runs at once; 0: it takes and answers jobs, others run them"
    )
    job_timeout_s: float = Field(3600.0, gt=0, description="from a job's start to its result")
    job_retention_s: float = Field(
        24 * 3600.0, gt=0, description="a finished job and its result are deleted this long after it ends"
    )
    job_lease_s: float = Field(
        30.0, gt=0, description="a running job not heard from for this long was interrupted (its "
        "replica died): it is run again from the start, by any replica",
    )
    job_max_attempts: int = Field(2, ge=1, description="starts of a job before an interruption fails it")
    max_queued_jobs: int = Field(100, ge=1, description="jobs queued and running, all replicas; 503 beyond")
    max_job_upload_bytes: int = Field(
        2 * 1024**3, ge=1, description="a job's upload, streamed to SR_JOBS_DIR (an image job: SR_MAX_UPLOAD_BYTES)"
    )
    max_job_video_duration_s: float = Field(900.0, gt=0, description="of a video in a job")
    max_job_video_frames: int = Field(54000, ge=1, description="of a video in a job (15 min at 60 frames/s)")

    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    docs: bool = Field(
        True,
        description="serve /openapi.json and /docs. They stay open when SR_API_KEYS is set: they hold "
        "no data, and generated clients and Swagger need the schema before they have a key",
    )

    # Encoding.
    png_encoder: Literal["fpng", "pillow"] = Field(
        "fpng", description="fpng for RGB/RGBA without an ICC profile, Pillow for the rest"
    )
    png_compress_level: int = Field(1, ge=0, le=9, description="zlib level of Pillow's PNG encoder")
    jpeg_quality: int = Field(90, ge=1, le=100)
    webp_quality: int = Field(90, ge=1, le=100)

    # Threads: inference gets ``torch_threads``; decode/encode share ``codec_threads``.
    torch_threads: int = Field(0, ge=0, description="0 = torch's default (one per physical core)")
    codec_threads: int = Field(2, ge=1)
    infer_workers: int = Field(
        0, ge=0, description="batches a device runs at once from its one queue; 0: two on a CPU where "
        "every network runs on ONNX Runtime (their batches narrow to one thread under load), else one",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    warmup: bool = True
    auto_min_gain_db: float = Field(
        0.2, description="auto: below this predicted gain over bicubic, a network is not worth it"
    )
    calibrate: bool = Field(True, description="time every method at start-up for the cost model")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # A comma-separated env var is friendlier than JSON for secrets in a manifest.
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
