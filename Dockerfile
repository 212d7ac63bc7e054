# syntax=docker/dockerfile:1
# Multi-stage build of the r2 gateway: wheels are built in a builder stage, the runtime stage
# has no compiler, runs as a non-root user and reports health through /healthz.
FROM python:3.11-slim AS builder
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY router_core ./router_core
COPY gateway ./gateway
RUN python -m pip wheel --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
RUN useradd --create-home --uid 10001 r2
COPY --from=builder /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY --chown=r2:r2 checkpoints ./checkpoints
COPY --chown=r2:r2 gateway.yaml ./gateway.yaml
COPY --chown=r2:r2 examples ./examples
USER r2
# Derive the local-q8 embedder's int8 model (into /home/r2/.cache/r2-gateway/models) at build
# time, so a container start does not spend ~10 s on it; also runs its probe check.
RUN python -c "from router_core import make_embedder; make_embedder({'kind': 'local-q8'}).close()"
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["r2"]
CMD ["serve", "--config", "/app/gateway.yaml", "--host", "0.0.0.0", "--port", "8080"]
