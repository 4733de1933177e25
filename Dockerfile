# syntax=docker/dockerfile:1.7
# One multi-stage build for every Beacon image. Build one with its target:
#   docker build --target api -t beacon/api:dev .
# Targets: pipeline, analytics, api, dashboard, db (the Kubernetes bootstrap/migrate Jobs).
#
# - cargo-chef caches the dependency build in its own layer: changing Beacon's code
#   rebuilds only Beacon's crates. BuildKit cache mounts keep the registry between builds.
# - No protoc: crates/proto compiles .proto files with protox (pure Rust).
# - No live database at build time: the queries are runtime-checked (SQLX_OFFLINE=true
#   is set so a future query! macro cannot silently need one).
# - Runtime: distroless `cc` (glibc, CA certificates, nothing else: no shell, no package
#   manager), numeric non-root user 65532:65532. Tilt rebuilds through the cached layers;
#   it does not live-update into the image (that would need a shell and tar).

ARG RUST_VERSION=1.95
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY --from=planner /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo chef cook --release --locked --recipe-path recipe.json \
      -p pipeline -p analytics -p api -p dashboard -p db
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    cargo build --release --locked --bins \
      -p pipeline -p analytics -p api -p dashboard -p db \
 && mkdir -p /out \
 && cp target/release/pipeline target/release/analytics target/release/api \
       target/release/dashboard target/release/beacon-db /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
USER 65532:65532
WORKDIR /

FROM runtime AS pipeline
COPY --from=builder --chown=0:0 --chmod=0555 /out/pipeline /usr/local/bin/pipeline
ENTRYPOINT ["/usr/local/bin/pipeline"]

FROM runtime AS analytics
COPY --from=builder --chown=0:0 --chmod=0555 /out/analytics /usr/local/bin/analytics
ENTRYPOINT ["/usr/local/bin/analytics"]

FROM runtime AS api
COPY --from=builder --chown=0:0 --chmod=0555 /out/api /usr/local/bin/api
ENTRYPOINT ["/usr/local/bin/api"]

FROM runtime AS db
COPY --from=builder --chown=0:0 --chmod=0555 /out/beacon-db /usr/local/bin/beacon-db
ENTRYPOINT ["/usr/local/bin/beacon-db"]

FROM runtime AS dashboard
COPY --from=builder --chown=0:0 --chmod=0555 /out/dashboard /usr/local/bin/dashboard
ENTRYPOINT ["/usr/local/bin/dashboard"]
