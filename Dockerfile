# syntax=docker/dockerfile:1
# Serving image of the speech-emotion-recognition service: FastAPI + ONNX Runtime, no torch.
#
#   CPU (the default, last target):  docker build -t ser-service:cpu .
#   GPU (CUDA 13 + cuDNN 9):         docker build --target runtime-gpu -t ser-service:gpu .
#
# The Python environment is built with the same two steps that `make serve`, `make test` and CI
# run (tests/deploy/test_dockerfile.py checks this):
#   pip install -r requirements/serve.txt     (serve-gpu.txt in the GPU image)
#   pip install --no-deps .
# Settings come from SER_* variables at run time (docs/deployment.md, docs/api.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# onnxruntime-gpu 1.31.1 is built against CUDA 13.x and cuDNN 9.x.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU: build the environment
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements/serve.txt requirements/serve.txt
RUN pip install -r requirements/serve.txt
COPY pyproject.toml README.md ./
COPY app/ app/
RUN pip install --no-deps .

# ---------------------------------------------------------------- GPU: build the environment
FROM ${CUDA_IMAGE} AS builder-gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Ubuntu's python3 (3.12 on 24.04); the venv below links to it, so the runtime stage installs
# the same package. Versions are not pinned: the base tag pins the release, and apt serves only
# the current security update of each package.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY requirements/serve-gpu.txt requirements/serve-gpu.txt
RUN pip install -r requirements/serve-gpu.txt
COPY pyproject.toml README.md ./
COPY app/ app/
RUN pip install --no-deps .

# ---------------------------------------------------------------- GPU: runtime
FROM ${CUDA_IMAGE} AS runtime-gpu
# Unpinned for the same reason as in builder-gpu.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ser \
    && useradd --system --uid 10001 --gid ser --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ser
COPY --from=builder-gpu /opt/venv /opt/venv
COPY models/ /srv/ser/models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SER_HOST=0.0.0.0 \
    SER_PORT=8000 \
    SER_WORKERS=1 \
    SER_INTRA_OP_THREADS=2 \
    SER_MODELS_DIR=/srv/ser/models \
    SER_PROVIDERS=cuda \
    SER_LOG_JSON=true \
    FORWARDED_ALLOW_IPS=127.0.0.1
WORKDIR /srv/ser
USER 10001:10001
EXPOSE 8000
# Readiness, not liveness: a replica whose CUDA did not start (SER_PROVIDERS=cuda) or whose
# GPU failed since is unready, and shows as unhealthy instead of healthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SER_PORT', '8000') + '/readyz', timeout=2)"]
CMD ["python", "-m", "app"]

# ---------------------------------------------------------------- CPU: runtime (default)
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 ser \
    && useradd --system --uid 10001 --gid ser --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin ser
COPY --from=builder /opt/venv /opt/venv
COPY models/ /srv/ser/models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SER_HOST=0.0.0.0 \
    SER_PORT=8000 \
    SER_WORKERS=1 \
    SER_INTRA_OP_THREADS=1 \
    SER_MODELS_DIR=/srv/ser/models \
    SER_PROVIDERS=cpu \
    SER_LOG_JSON=true \
    FORWARDED_ALLOW_IPS=127.0.0.1
WORKDIR /srv/ser
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SER_PORT', '8000') + '/healthz', timeout=2)"]
CMD ["python", "-m", "app"]
