# cutover's image, built from source on the project's toolchain.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The `production` profile: link-time optimized (Cargo.toml).
RUN cargo build --profile production --locked --bin cutover

FROM debian:bookworm-slim
# CA certificates for https:// upstreams.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/production/cutover /usr/local/bin/cutover
COPY config/compose.toml /etc/cutover/cutover.toml
VOLUME /var/lib/cutover
EXPOSE 6333 6334 9900
ENTRYPOINT ["cutover"]
CMD ["serve", "--config", "/etc/cutover/cutover.toml"]
