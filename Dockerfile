# syntax=docker/dockerfile:1
# runyard: one static binary serving `webhook`, `controller` and `launcher`,
# and the small exec shim `runyard-exec` that `launcher init` copies into run
# pods whose workers get tools first on PATH.
#
# Multi-platform: `docker buildx build --platform linux/amd64,linux/arm64 .`
# (or `docker build --platform linux/arm64 .`). The build stage runs on the
# target platform (natively, or emulated by QEMU/binfmt) and compiles for that
# platform's musl target, x86_64-unknown-linux-musl or
# aarch64-unknown-linux-musl: a static binary either way.

# Build: Rust's musl targets link statically; building on Alpine makes the
# host target musl on every architecture.
FROM rust:1.89-alpine AS build
# Set by BuildKit from --platform (amd64, arm64); empty with the legacy
# builder, which builds for the machine's own architecture.
ARG TARGETARCH
# musl-dev: C runtime headers for ring and mimalloc. Versions follow the
# pinned base image.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN arch="${TARGETARCH:-$(uname -m)}" \
    && case "$arch" in \
         amd64|x86_64) target=x86_64-unknown-linux-musl ;; \
         arm64|aarch64) target=aarch64-unknown-linux-musl ;; \
         *) echo "unsupported platform architecture $arch: build for linux/amd64 or linux/arm64" >&2; exit 1 ;; \
       esac \
    && rustup target add "$target" \
    && cargo build --release --locked --bin runyard --bin runyard-exec --target "$target" \
    && install -D -m 0755 "target/$target/release/runyard" /out/usr/local/bin/runyard \
    && install -D -m 0755 "target/$target/release/runyard-exec" /out/usr/local/bin/runyard-exec

# Runtime: nothing but the binary; no shell, no package manager.
FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="runyard" \
      org.opencontainers.image.description="Plain Kubernetes Jobs and Pods as managed runs on a worker pool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/runyard/runyard"
COPY --from=build /out/ /
ENV PATH=/usr/local/bin
USER 1983:1983
ENTRYPOINT ["/usr/local/bin/runyard"]
CMD ["--help"]
