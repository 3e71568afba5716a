# syntax=docker/dockerfile:1
# pgmux container image.
#   docker build -t pgmux .
#   docker run -p 6432:6432 -p 9930:9930 -v $PWD/docker/pooler.toml:/etc/pgmux/pooler.toml:ro pgmux

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds;
# the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pgmux \
    && install -m 0755 target/release/pgmux /usr/local/bin/pgmux

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin pgmux \
    && mkdir -p /etc/pgmux
COPY --from=builder /usr/local/bin/pgmux /usr/local/bin/pgmux
COPY docker/pooler.toml /etc/pgmux/pooler.toml
USER pgmux
EXPOSE 6432 9930
ENTRYPOINT ["pgmux", "--config", "/etc/pgmux/pooler.toml"]
