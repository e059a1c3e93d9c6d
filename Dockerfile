# syntax=docker/dockerfile:1
# ci-slo-exporter container image (docs/full-stack.md).
#
#   docker build -t ci-slo-exporter .
#   docker run -p 9787:9787 -v ci-slo-data:/data ci-slo-exporter
#
# The default command serves a 30-day demo history; for real data override it,
# e.g. `serve --web.listen-address 0.0.0.0:9787 --db /data/ci-slo-exporter.db`
# (with CI_SLO_API_TOKEN set to accept runs on POST /api/v1/runs).

# --- build ---------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the release binary needs (the test suite and fuzz targets stay out;
# see .dockerignore): the workspace's manifests, the exporter's src/, the core,
# store and store-pg crates (crates/), and benches/ because Cargo.toml names the bench
# targets and Cargo refuses a manifest whose targets are missing. The example
# config is compiled into a unit test only, but copying it keeps `cargo build`
# independent of which module uses it.
COPY Cargo.toml Cargo.lock ci-slo-exporter.example.toml ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/ci-slo-exporter /usr/local/bin/ci-slo-exporter

# --- prometheus-init: loads the stored history into Prometheus' storage ---------
# docker-compose.yml runs it once before Prometheus starts (scripts/prometheus-init:
# backfill-openmetrics, promtool, scripts/backfill-rules). Build it alone with
#   docker build --target prometheus-init -t ci-slo-exporter-prometheus-init .
FROM prom/prometheus:v2.42.0 AS prometheus-binaries

FROM debian:bookworm-slim AS prometheus-init
# python3-yaml: scripts/backfill-rules reads the rule files.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-yaml \
    && rm -rf /var/lib/apt/lists/*
COPY --from=prometheus-binaries /bin/prometheus /bin/promtool /usr/local/bin/
COPY --from=build /usr/local/bin/ci-slo-exporter /usr/local/bin/ci-slo-exporter
COPY scripts/prometheus-init scripts/backfill-rules /usr/local/bin/
ENTRYPOINT ["prometheus-init"]

# --- runtime (the default target) ------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: HTTPS to GitHub / GitLab APIs, and PostgreSQL with
# sslrootcert=system. curl: the HEALTHCHECK only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ci-slo \
    && useradd --system --uid 10001 --gid ci-slo --home-dir /data --shell /usr/sbin/nologin ci-slo \
    && mkdir -p /data \
    && chown ci-slo:ci-slo /data
COPY --from=build /usr/local/bin/ci-slo-exporter /usr/local/bin/ci-slo-exporter
COPY ci-slo-exporter.example.toml /usr/share/doc/ci-slo-exporter/ci-slo-exporter.example.toml

USER ci-slo:ci-slo
WORKDIR /data
# The SQLite database (and its -wal/-shm files) lives here.
VOLUME ["/data"]
EXPOSE 9787
ENV CI_SLO_LOG=info

# /healthz answers as soon as the process serves HTTP (/readyz also waits for
# the first metrics snapshot). start-period covers writing the demo history.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9787/healthz || exit 1

ENTRYPOINT ["ci-slo-exporter"]
CMD ["serve", "--demo", "--web.listen-address", "0.0.0.0:9787", "--db", "/data/ci-slo-exporter.db"]
