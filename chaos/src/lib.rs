//! The real world harness (planned): the same scenario files as the simulation, run against real
//! processes with a real RabbitMQ (`--target local`) or a Kubernetes cluster (`--target kube`),
//! judged by the same checkers.
//!
//! Today the real world is exercised by the services' `real_world` integration tests (five
//! services in-process against RabbitMQ, driven over HTTP by `lastmile-workload`).
//!
//! # Layout
//! Empty for now; see the README's status section.
