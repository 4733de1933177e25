# syntax=docker/dockerfile:1.7
# One multi-stage build for every Beacon image. The images are [images] in
# security/access-model.toml (generated into security/images.txt: image, package, binary);
# build one with the one runtime stage and its binary:
#   docker build --target service --build-arg BINARY=api -t beacon/api:dev .
# The builder compiles every image's crate once; the Tiltfile loops over the same list.
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
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=planner /src/recipe.json recipe.json
COPY security/images.txt images.txt
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    grep -v '^#' images.txt | awk '{ print "-p " $2 }' \
      | xargs cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    grep -v '^#' images.txt | awk '{ print "-p " $2 }' \
      | xargs cargo build --release --locked --bins \
 && mkdir -p /out \
 && grep -v '^#' images.txt | awk '{ print "target/release/" $3 }' | xargs cp -t /out/

# Every image: distroless, one binary at a fixed path, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot AS service
# Without --build-arg BINARY the COPY fails, naming this placeholder.
ARG BINARY=set-build-arg-BINARY
USER 65532:65532
WORKDIR /
COPY --from=builder --chown=0:0 --chmod=0555 /out/${BINARY} /usr/local/bin/service
ENTRYPOINT ["/usr/local/bin/service"]
