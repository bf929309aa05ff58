# syntax=docker/dockerfile:1
# One image for everything: `draco operator` in the operator pod, `draco ps` / `draco worker` in
# the pods it creates. Build (BuildKit, the default since Docker 23):
#   docker build -t draco:0.1.0 .
# The default (last) stage carries no data set. The `fmnist` target adds Fashion-MNIST for the
# Kubernetes example (manifests/examples/fashion-mnist-k8s.yaml, scripts/e2e-kind.sh):
#   docker build --target fmnist -t draco:0.1.0-fmnist .

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
# The whole workspace, as the tests build it: building only `-p draco` unifies dependency
# features differently and would compile a second set of dependencies. protoc is vendored in a
# crate, so no system packages are needed. The cache mounts keep the registry and target
# directory between builds on the same machine.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && install -D -m 0755 target/release/draco /out/draco

# Debian's package puts the IDX files in /usr/share/datasets/fashion-mnist, the path the
# example job reads.
FROM debian:bookworm-slim AS fmnist-files
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
 && rm -rf /var/lib/apt/lists/*

# distroless/cc: glibc and libgcc for the Rust binary, no shell, no package manager; the
# :nonroot tag runs as uid/gid 65532, the user the chart's securityContext expects.
FROM gcr.io/distroless/cc-debian12:nonroot AS base
COPY --from=builder /out/draco /usr/local/bin/draco
USER 65532:65532
ENTRYPOINT ["draco"]
CMD ["--help"]

FROM base AS fmnist
COPY --from=fmnist-files /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist

# Default target: the image without any data set.
FROM base AS runtime
