# One image for the four fedstack services; the command picks the service.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY fedstack ./fedstack
RUN python3 -m pip install --no-cache-dir . \
 && useradd --system --home /data fedstack && mkdir -p /data && chown fedstack /data
USER fedstack
ENV FEDSTACK_DATA_DIR=/data FEDSTACK_BIND_HOST=0.0.0.0
ENTRYPOINT ["fedstack", "serve"]
