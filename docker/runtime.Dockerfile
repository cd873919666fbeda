# The runtime image: the gRPC gateway, the reindex and finalize Jobs, and the search page (no torch).
# It builds a wheel of the repository's distribution and installs it with the gateway, reindex and
# web extras, pinned by constraints.txt (pyproject.toml is the only list of packages), and runs as
# user 10001. Measured sizes: docs/deploy.md, "Images".
# Build from the repository root, with the upstream base:
#   docker build -f docker/runtime.Dockerfile -t text2image-search:0.1.0 .
# or here with podman, a Debian base and the host's pip settings: make images (docker/build.py).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7:the base is this argument, whose default is a pinned release tag (tests/unit/test_dockerfiles.py checks it)

# The third-party packages, from pyproject.toml and constraints.txt alone: a code change keeps this layer.
FROM ${BASE_IMAGE} AS deps
ARG EXTRAS=gateway,reindex,web
# The host's pip settings (make images passes them; unset, pip uses PyPI).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt docker/requirements.py ./
RUN python3 requirements.py pyproject.toml "${EXTRAS}" > requirements.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt -r requirements.txt

# What builds the wheel: the proto compiler and the build backend (never in the final image).
FROM ${BASE_IMAGE} AS buildtools
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt ./
RUN python3 -m venv /opt/build && /opt/build/bin/pip install -c constraints.txt grpcio-tools "setuptools>=64" wheel

# The wheel of the repository's distribution: the whole context (.dockerignore), stubs made as make install makes them.
FROM buildtools AS wheel
COPY . .
RUN /opt/build/bin/python protos/build_stubs.py \
    && /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
    && cp constraints.txt /wheels/

# The image: the dependencies' environment (a layer that only a dependency change rebuilds), then the wheel.
FROM ${BASE_IMAGE}
ARG EXTRAS=gateway,reindex,web
LABEL org.opencontainers.image.title="text2image-search runtime" \
      org.opencontainers.image.description="gRPC gateway, reindex jobs and search page of text2image-search (no torch)"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 10001 t2i && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin t2i
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels /wheels
# --no-index: every dependency is already in the environment (the build fails if one was missed).
RUN /opt/venv/bin/pip install --no-index --find-links /wheels -c /wheels/constraints.txt "text2image-search[${EXTRAS}]" \
    && rm -rf /wheels \
    && /opt/venv/bin/python -c "import gateway.server, reindex.main, web.server" \
    && /opt/venv/bin/t2i --help > /dev/null
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 10001:10001
# gRPC and Prometheus metrics of the gateway (T2I_LISTEN, T2I_METRICS_PORT); the page uses 8080.
EXPOSE 50051 9464 8080
# Kubernetes probes the gateway over grpc.health.v1; the Jobs exit. No Docker HEALTHCHECK.
HEALTHCHECK NONE
ENTRYPOINT ["t2i"]
CMD ["serve"]
