# One image for all five services: `lastmile-service <name>` picks the service.
# Build inside Minikube's Docker:  eval $(minikube docker-env) && docker build -t lastmile:dev .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lastmile-services --bin lastmile-service

FROM debian:bookworm-slim
RUN useradd --uid 10001 --user-group --no-create-home lastmile
COPY --from=build /src/target/release/lastmile-service /usr/local/bin/lastmile-service
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/lastmile-service"]
