# syntax=docker/dockerfile:1.7
# One multi-stage build for every Beacon image. The images are [images] in
# security/access-model.toml (generated into security/images.txt: image, package, binary);
# build one with the one runtime stage and its binary:
#   docker build --target service --build-arg BINARY=api -t localhost:5001/beacon/api:dev .
# The builder compiles every image's crate once; the Tiltfile loops over the same list.
#
# - BuildKit cache mounts keep the cargo registry, git checkouts and the target
#   directory between builds: an edit recompiles Beacon's changed crates, not every
#   dependency (Tilt's loop). The binaries are copied out of the cached target in the
#   same step, so the image never depends on what the cache holds.
# - No protoc: crates/proto compiles .proto files with protox (pure Rust).
# - `cargo auditable build`: every binary carries its dependency list (crate names,
#   versions, sources) in a linker section, so `cargo audit bin`, syft and trivy can
#   find vulnerable crates in a running image without the source tree. The tool is
#   installed in its own layer, before the sources are copied, so an edit does not
#   reinstall it.
# - No live database at build time: the queries are runtime-checked (SQLX_OFFLINE=true
#   is set so a future query! macro cannot silently need one).
# - Runtime: distroless `cc` on Debian 13, the builder's release (glibc, CA
#   certificates, nothing else: no shell, no package manager), numeric non-root user
#   65532:65532. Tilt rebuilds through the cache; it does not live-update into the
#   image (that would need a shell and tar).
# - Base images are pinned by tag and digest (the digests' sources: README, "Third-party
#   image pins, honestly"); Renovate (renovate.json, docker:pinDigests) keeps both
#   current. The release workflow builds each architecture on a native runner
#   (.github/workflows/release.yml), so nothing here cross-compiles.

# renovate: datasource=crate depName=cargo-auditable
ARG CARGO_AUDITABLE_VERSION=0.7.7

# The toolchain of the workspace's rust-version (Cargo.toml) and ci.yml.
FROM rust:1.95-slim-trixie@sha256:e14e87345b4d5964ddcc3491d27ee046a0f23820f340c3c1e24da6880141f7c0 AS builder
ARG CARGO_AUDITABLE_VERSION
# The commit in `beacon_build_info` (the release workflow passes the tag's SHA).
ARG BEACON_COMMIT=unknown
ENV BEACON_COMMIT=${BEACON_COMMIT} \
    SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never \
    CARGO_TARGET_DIR=/cache/target
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN --mount=type=cache,id=beacon-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    cargo install --locked --target-dir /tmp/cargo-auditable "cargo-auditable@${CARGO_AUDITABLE_VERSION}" \
 && rm -rf /tmp/cargo-auditable
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=beacon-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=beacon-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=beacon-target,target=/cache/target,sharing=locked \
    grep -v '^#' security/images.txt | awk '{ print "-p " $2 }' \
      | xargs cargo auditable build --release --locked --bins \
 && mkdir -p /out \
 && grep -v '^#' security/images.txt | awk '{ print "/cache/target/release/" $3 }' | xargs cp -t /out/

# Every image: distroless, one binary at a fixed path, non-root.
FROM gcr.io/distroless/cc-debian13:nonroot@sha256:d97bc0a941b8d4be647dc0ee75b264ddbb772f1ac5ba690a4309c00723b23775 AS service
# Without --build-arg BINARY the COPY fails, naming this placeholder.
ARG BINARY=set-build-arg-BINARY
USER 65532:65532
WORKDIR /
COPY --from=builder --chown=0:0 --chmod=0555 /out/${BINARY} /usr/local/bin/service
ENTRYPOINT ["/usr/local/bin/service"]
