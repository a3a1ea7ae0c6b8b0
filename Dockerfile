# One image with every binary; docker-compose.yml picks the command.
# (No Docker engine runs on our build machines: this file is checked with
# `docker-compose config`, not built, in CI.)
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gateway /src/target/release/admin-api \
     /src/target/release/ingress-sync /src/target/release/echo-backend /usr/local/bin/
USER 65534
EXPOSE 9080 9443 9090 9180
CMD ["gateway"]
