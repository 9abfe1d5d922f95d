# syntax=docker/dockerfile:1
#
# simplebank: a release build in a Rust image, then only the binary in a distroless runtime
# (glibc, no shell, no package manager; runs as an unprivileged user). Nothing secret is baked
# in: configuration comes from the environment at run time.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /app

# Dependencies first, in a layer that is rebuilt only when the manifest or the lock file change:
# build them against placeholder sources, then drop what was built of simplebank itself.
# (build.rs compiles proto/ with protox, a crate: no protoc needed.)
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src tests/integration \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/integration/main.rs \
    && cargo build --release --locked \
    && rm -rf src tests target/release/simplebank target/release/deps/simplebank* \
              target/release/deps/libsimplebank* target/release/.fingerprint/simplebank-*

# The real sources. Migrations are embedded in the binary at compile time.
COPY src ./src
COPY migrations ./migrations
RUN mkdir -p tests/integration && touch tests/integration/main.rs \
    && cargo build --release --locked --bin simplebank

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /app/target/release/simplebank /usr/local/bin/simplebank
# 65532 is distroless's `nonroot`.
USER 65532:65532
ENV ENVIRONMENT=production \
    HTTP_SERVER_ADDRESS=0.0.0.0:8080 \
    GRPC_SERVER_ADDRESS=0.0.0.0:9090
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/simplebank"]
CMD ["serve"]
