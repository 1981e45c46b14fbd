# One image for the four fedstack services; the command picks what runs:
#   fedstack serve transaction|pdu|transport|messaging     (docker-compose.yml)
#   fedstack init --server-name NAME --data-dir /keys      (signing key, TLS certificate, secret)
# BASE_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtual environment: works on python:*-slim and on Debian's python3 (PEP 668) alike.
RUN python3 -m venv /opt/fedstack
ENV PATH=/opt/fedstack/bin:$PATH

# Dependencies first (a layer that survives code changes), then the project itself.
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" >/tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY shared /src/shared
COPY services /src/services
COPY fedstack /src/fedstack
RUN pip install --no-deps /src && rm -rf /src

# A fixed UID/GID so that host directories can be prepared for it (chown 10001:10001).
# /data: the transaction service's database volume; /keys: key, certificate and secret.
RUN groupadd --gid 10001 fedstack \
 && useradd --uid 10001 --gid fedstack --home-dir /data --no-create-home --shell /usr/sbin/nologin fedstack \
 && mkdir -p /data /keys && chown fedstack:fedstack /data /keys
USER fedstack
WORKDIR /data
ENV FEDSTACK_DATA_DIR=/data FEDSTACK_BIND_HOST=0.0.0.0
ENTRYPOINT ["fedstack"]
CMD ["--help"]
