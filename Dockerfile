# syntax=docker/dockerfile:1
# EquiRecon images. Two targets from one build:
#   cpu (default, last stage): slim Python, onnxruntime on CPU: the API, or a CPU worker.
#   gpu: CUDA 12 + cuDNN runtime with onnxruntime-gpu: `equirecon worker`, one per GPU.
#     docker build -t equirecon:cpu .
#     docker build -t equirecon:gpu --target gpu .
# Neither image holds torch: service/ runs on onnxruntime + numpy + fastapi (+ celery/redis).

# ---- build: a venv with the runtime dependencies and the package -------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY service ./service
COPY models/__init__.py ./models/__init__.py
RUN pip install .

# ---- gpu: CUDA runtime base, onnxruntime-gpu in place of the CPU wheel ---------------------
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY models/__init__.py ./models/__init__.py
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install onnxruntime-gpu==1.31.1 \
    && rm -rf service models pyproject.toml README.md
COPY models/zoo /app/models/zoo
RUN useradd --system --uid 10001 --home-dir /app equirecon
USER 10001
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    EQUIRECON_MODEL_DIR=/app/models/zoo EQUIRECON_DEVICE=cuda
# Ready once the worker has loaded and warmed up its models and beats in Redis.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["equirecon", "worker-health"]
CMD ["equirecon", "worker", "--pool", "threads"]

# ---- cpu (default): slim image for the API (and CPU workers) --------------------------------
FROM python:3.11-slim AS cpu
COPY --from=build /opt/venv /opt/venv
COPY models/zoo /app/models/zoo
RUN useradd --system --uid 10001 --home-dir /app equirecon
USER 10001
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 EQUIRECON_MODEL_DIR=/app/models/zoo
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["equirecon", "serve", "--host", "0.0.0.0", "--port", "8000"]
