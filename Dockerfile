# syntax=docker/dockerfile:1
# Images of Gavel's two binaries, from one Dockerfile with one target each:
#
#   docker build --target bid-api  -t ghcr.io/gavel-dev/gavel-bid-api:dev  .
#   docker build --target operator -t ghcr.io/gavel-dev/gavel-operator:dev .
#
# (`make images` runs both.) The builder compiles the workspace once for both
# targets. Dependencies are cached in their own layer with cargo-chef: the layer
# is rebuilt only when a Cargo.toml or Cargo.lock changes, not when the code does.
# The runtime images are distroless (glibc, CA certificates, no shell, no package
# manager) and run as the unprivileged user 65532 ("nonroot").

# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK - the images run on Kubernetes, whose probes call /healthz and /readyz; distroless has no shell or curl to run one
# checkov:skip=CKV_DOCKER_7: the FROM lines use the ARGs below, which name versioned tags (checkov cannot resolve ARGs)
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION=0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

# The recipe: every Cargo.toml and Cargo.lock, nothing else.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked -p gavel-bid-api -p gavel-operator \
 && mkdir -p /out \
 && cp target/release/gavel-bid-api target/release/gavel-operator /out/

FROM ${RUNTIME_IMAGE} AS operator
COPY --from=builder /out/gavel-operator /usr/local/bin/gavel-operator
USER 65532:65532
ENV GAVEL_OPERATOR_LISTEN=0.0.0.0:8081
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/gavel-operator"]

# Last, so that a plain `docker build .` gives the bid-api.
FROM ${RUNTIME_IMAGE} AS bid-api
COPY --from=builder /out/gavel-bid-api /usr/local/bin/gavel-bid-api
USER 65532:65532
ENV GAVEL_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gavel-bid-api"]
