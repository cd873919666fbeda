# The tools image: 't2i export' (and fine-tuning) with the torch CPU wheel. The export Job runs it
# and writes the Triton model repository onto the volume Triton and the gateways read.
# It builds a wheel of the repository's distribution and installs it with the export extra (and
# those the t2i command needs to start), pinned by constraints.txt. Measured sizes: docs/deploy.md.
# Build from the repository root, with the upstream base:
#   docker build -f docker/tools.Dockerfile -t text2image-search-tools:0.1.0 .
# or here with podman, a Debian base, the host's pip settings and its local torch wheel: make images.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
# checkov:skip=CKV_DOCKER_7:the base is this argument, whose default is a pinned release tag (tests/unit/test_dockerfiles.py checks it)

# The third-party packages, from pyproject.toml, constraints.txt and requirements-nodeps.txt alone.
FROM ${BASE_IMAGE} AS deps
ARG EXTRAS=export,gateway,reindex
# torch==2.13.0 from PyPI is the CUDA build (GBs); the CPU wheel comes from PyTorch's own index,
# or (make images, TORCH_INDEX_URL empty) from the host's local wheel folders.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt requirements-nodeps.txt docker/requirements.py ./
RUN python3 requirements.py pyproject.toml "${EXTRAS}" > requirements.txt \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} -c constraints.txt -r requirements.txt \
    && /opt/venv/bin/pip install --no-deps -c constraints.txt -r requirements-nodeps.txt \
    && /opt/venv/bin/python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch: ' + torch.__version__"

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
ARG EXTRAS=export,gateway,reindex
LABEL org.opencontainers.image.title="text2image-search tools" \
      org.opencontainers.image.description="t2i export: CLIP checkpoints to a Triton model repository (torch CPU)"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --gid 10001 t2i && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin t2i
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels /wheels
# --no-index: every dependency is already in the environment (the build fails if one was missed).
RUN /opt/venv/bin/pip install --no-index --find-links /wheels -c /wheels/constraints.txt "text2image-search[${EXTRAS}]" \
    && rm -rf /wheels \
    && /opt/venv/bin/t2i export --help > /dev/null
# The committed Triton configs and python-backend model that an export copies (T2I_MODEL_TEMPLATE).
COPY model_repository /opt/t2i/model_repository
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 T2I_MODEL_TEMPLATE=/opt/t2i/model_repository HF_HOME=/home/t2i/.cache/huggingface
WORKDIR /home/t2i
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["t2i"]
CMD ["export", "--help"]
