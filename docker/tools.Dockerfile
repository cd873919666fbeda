# The tools image: 't2i export' (and fine-tuning) with the torch CPU wheel. The export Job runs it
# and writes the Triton model repository onto the volume Triton and the gateways read.
# Build from the repository root:  docker build -f docker/tools.Dockerfile -t text2image-search-tools:0.1.0 .
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# torch==2.13.0 from PyPI is the CUDA build (GBs); the CPU wheel comes from PyTorch's own index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml constraints.txt requirements-nodeps.txt README.md ./
COPY protos protos
COPY core core
COPY inference inference
COPY devstack devstack
COPY search search
COPY gateway gateway
COPY reindex reindex
COPY export export
COPY t2i t2i
COPY web web
COPY model_repository model_repository
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" -c constraints.txt grpcio-tools ".[export,reindex]" \
    && /opt/venv/bin/pip install --no-deps -r requirements-nodeps.txt \
    && /opt/venv/bin/python -m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos --pyi_out=protos protos/text2image/v1/text2image.proto \
    && /opt/venv/bin/pip install --no-deps .

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="text2image-search tools" \
      org.opencontainers.image.description="t2i export: CLIP checkpoints to a Triton model repository (torch CPU)"
RUN groupadd --gid 10001 t2i && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin t2i
COPY --from=build /opt/venv /opt/venv
# The committed Triton configs and python-backend model that an export copies (T2I_MODEL_TEMPLATE).
COPY --from=build /src/model_repository /opt/t2i/model_repository
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 T2I_MODEL_TEMPLATE=/opt/t2i/model_repository HF_HOME=/home/t2i/.cache/huggingface
WORKDIR /home/t2i
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["t2i"]
CMD ["export", "--help"]
