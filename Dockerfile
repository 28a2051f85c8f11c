# syntax=docker/dockerfile:1
# runyard: one static binary serving `webhook`, `controller` and `launcher`.

# Build: Rust's musl targets link statically; building on Alpine makes the
# host target musl on every architecture.
FROM rust:1.89-alpine AS build
# musl-dev: C runtime headers for ring and mimalloc. Versions follow the
# pinned base image.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin runyard \
    && install -D -m 0755 target/release/runyard /out/usr/local/bin/runyard

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
