# One image for all five services: `lastmile-service <name>` picks the service. It also holds the
# simulator, `lastmile-sim` (built with --cfg madsim, its own target dir), which the Indexed Job
# of `lastmile sweep --kube` runs (k8s/sweep/indexed-job.yaml), and the `lastmile` CLI, whose
# `load --target endpoints` the Job of `lastmile load --target kube` runs (k8s/load/job.yaml).
# Build inside Minikube's Docker:  eval $(minikube docker-env) && docker build -t lastmile:dev .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lastmile-services --bin lastmile-service -p lastmile-chaos --bin lastmile
RUN RUSTFLAGS="--cfg madsim" cargo build --release --locked --target-dir target/sim -p lastmile-sim --bin lastmile-sim

FROM debian:bookworm-slim
RUN useradd --uid 10001 --user-group --no-create-home lastmile
COPY --from=build /src/target/release/lastmile-service /usr/local/bin/lastmile-service
COPY --from=build /src/target/release/lastmile /usr/local/bin/lastmile
COPY --from=build /src/target/sim/release/lastmile-sim /usr/local/bin/lastmile-sim
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/lastmile-service"]
