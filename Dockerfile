# syntax=docker/dockerfile:1
# The build stage makes wheels of the project and of its dependencies exactly as pyproject.toml declares them;
# the runtime stage installs only those wheels, without an index, and runs as an unprivileged user.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cbi_service ./cbi_service
COPY ledger ./ledger
COPY adapters ./adapters
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --gid 10001 cbi && useradd --create-home --uid 10001 --gid 10001 cbi
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels cbi-service && rm -rf /wheels
# Numeric, so an orchestrator can tell without starting it that the container does not run as root.
USER 10001:10001
WORKDIR /home/cbi
# Production: no embedded database, no provider simulator, no default secrets (DATABASE_URL is required).
ENV CBI_ENV=production \
    CBI_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
EXPOSE 8000
# Ready means the database answers and its schema is at the current migration, not merely that the process is up.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["cbi-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
