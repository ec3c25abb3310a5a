//! The real world: the same scenario files as the simulation, run against real processes and a
//! real RabbitMQ, judged by the same checkers (`lastmile-harness`).
//!
//! `lastmile chaos run <scenario> --target local` spawns every service as a process of this
//! machine (the `lastmile` binary itself runs them: `lastmile service <name>`), one port per
//! replica, against the RabbitMQ at `--amqp-url`. Scaling starts and stops processes (SIGTERM,
//! waiting for the graceful stop), `kill` is SIGKILL, `pause` is SIGSTOP/SIGCONT; a replica
//! counts once its own `/ready` answers. Network faults (partition, latency, loss) and broker
//! restarts need a network or a broker of the run's own and are skipped locally, and recorded as
//! skipped. The Kubernetes target is not built yet.
//!
//! # Layout
//! - [`local`]: the local-processes target.

pub mod local;
