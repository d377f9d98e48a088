# syntax=docker/dockerfile:1
# migrate in a container (docs/kubernetes.md): built with the Rust toolchain image, run on
# debian:12-slim as a non-root user. The runtime needs no MariaDB client and no system CA
# bundle (TLS is rustls with built-in roots; a private CA is given with ssl-ca= in the URL);
# it keeps /bin/sh because `cutover --switch-command` and `--rollback-command` run through it.
#
#   docker build -t migrate:$(git describe --always) .
#   docker run --rm migrate:TAG --help
#
# Both stages are Debian 12 (bookworm), so the binary and the runtime share glibc 2.36. For a
# host with an older glibc (an Amazon Linux 2 bastion: 2.26), use scripts/build-static.sh (musl)
# or scripts/build-old-glibc.sh (glibc 2.17 symbol versions, linked by zig).

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# the image's binary without the line tables the release profile keeps (≈110 MiB -> ≈14 MiB);
# panics still name their functions
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
# the dependencies first, built in their own layer with a stub main: a change to src/ does
# not rebuild them
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/migrate target/release/deps/migrate-* \
       target/release/.fingerprint/migrate-*
COPY src ./src
COPY migrations ./migrations
# touch: COPY keeps the files' times, which may be older than the stub's build
RUN touch src/main.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/migrate /usr/local/bin/migrate \
    && /usr/local/bin/migrate --version

FROM debian:12-slim
# a fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can check it
RUN groupadd --system --gid 10001 migrate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/migrate --no-create-home \
       --shell /usr/sbin/nologin migrate \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/migrate
COPY --from=build /usr/local/bin/migrate /usr/local/bin/migrate
USER 10001:10001
# the state file lands here by default (./migrate-state.sqlite): mount a volume on it
WORKDIR /var/lib/migrate
# --metrics-addr 0.0.0.0:9187 serves /metrics, /healthz and /readyz
EXPOSE 9187
ENTRYPOINT ["migrate"]
CMD ["--help"]
