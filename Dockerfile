# subpixel: the super-resolution service, models baked in.
#
#   docker build -t subpixel .                                   # torch from pip's configured index
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t subpixel .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t subpixel:cuda .
#
# PyPI's default Linux torch wheel bundles CUDA (GBs); the CPU index gives the small CPU build.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and on its own: the largest layer, rebuilt only when its version changes.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SR_HOST=0.0.0.0 \
    SR_PORT=8000 \
    SR_MODEL_STORE=/app/model_store \
    SR_JOBS_DIR=/app/jobs
# SR_JOBS_DIR: job inputs, results and (without SR_JOBS_DATABASE_URL) the SQLite state, owned
# by the service's user. A named volume mounted there (docker-compose.yml) starts as a copy of
# this folder, owner included, so the user can write it; on Kubernetes the root filesystem is
# read-only and a volume is mounted there (deploy/k8s/components/jobs).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin subpixel \
    && install -d -o subpixel -g subpixel -m 0750 /app/jobs
COPY --from=build /opt/venv /opt/venv
COPY model_store /app/model_store
# Readable by the service user whatever the build context's file modes were.
RUN chmod -R a+rX /app/model_store
WORKDIR /app
# Results outlive the container: without a volume of its own, docker run makes one here.
VOLUME ["/app/jobs"]
USER 10001
EXPOSE 8000
# Ready means models loaded and warmed up, and not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
# SIGTERM drains: /readyz turns 503, admitted requests finish, then the process exits.
# Give it SR_REQUEST_TIMEOUT_S plus a margin (docker stop -t / compose stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
