FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vumi_like ./vumi_like
COPY config ./config
RUN pip install --no-cache-dir . && useradd --system --no-create-home vumi
USER vumi

# One worker per container: `vumi-like worker dotted.path.Class [--config FILE]`.
ENTRYPOINT ["vumi-like"]
CMD ["--help"]
