# One image for every agentmem command: `agentmem operator`, `agentmem node`, ...
# The builders run the containers with args only (e.g. ["node"]); the entrypoint
# is the agentmem console script.

# Base image pinned to one CPython patch release on Debian bookworm.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Build the agentmem wheel and the wheels of its dependencies.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[semantic,tracing]"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentmem" \
      org.opencontainers.image.description="Shared, event-sourced memory for fleets of AI agents"
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin agentmem
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "agentmem[semantic,tracing]" \
    && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The same numeric user the pod security context asks for.
USER 10001:10001
ENTRYPOINT ["agentmem"]
CMD ["--help"]
