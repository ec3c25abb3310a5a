//! The real world: the same scenario files as the simulation, run against real deployments and
//! judged by the same checkers (`lastmile-harness`).
//!
//! Two targets implement the harness's `Target`:
//! - [`local`]: every service as a process of this machine (the `lastmile` binary itself runs
//!   them: `lastmile service <name>`), one port per replica, against a real RabbitMQ. Scaling
//!   starts and stops processes (SIGTERM, waiting for the graceful stop), `kill` is SIGKILL,
//!   `pause` is SIGSTOP/SIGCONT, `rollout` replaces replicas one at a time; a replica counts once
//!   its own `/ready` answers. Every connection goes through [`proxy`], a fault proxy on loopback
//!   where partitions (of a replica or of one link), latency and loss happen. Broker restarts are
//!   skipped locally, and recorded as skipped.
//! - [`kubernetes`]: a deployment of `k8s/` on a cluster, driven through the API server with the
//!   `kube` crate (scale subresource, watches, pod deletion, rollouts, logs), reached through
//!   [`forward`]'s port-forwards, every replica count recorded first and restored at the end.
//!
//! Both fail with the harness's `TargetError`, down to their helpers (a process that will not
//! start, an API call refused, a wait that ran out); a step's service name is parsed once, at the
//! edge, by `lastmile_harness::target::step_service`.
//!
//! [`broker`] runs a RabbitMQ node of the run's own (its own name, ports and data directory), so
//! a local run can kill its broker and start it again without touching the shared one.
//!
//! [`chaos_mesh`] writes the Chaos Mesh objects (NetworkChaos, PodChaos) the kube target creates
//! for pauses and network faults, labelled with the run so every one is deleted at the end.
//!
//! [`jobs`] turns the original scripts' jobs (resilience, scale sequences, the demos) into
//! scenarios, so they are judged the same way. [`dlq`] is the operators' tool for dead-letter
//! queues (`lastmile dlq list|replay|purge`). [`cli`] is the `lastmile` command line (the binary
//! only parses and dispatches), [`run`] runs scenarios on either target, [`operate`] scales and
//! port-forwards the Kubernetes deployment. [`sweep`] runs a simulated sweep over many seeds as
//! an Indexed Job on the cluster (`lastmile sweep --kube`) and merges the pods' results. [`load`]
//! is `lastmile load`: one measurement ([`load::run_against`]) of a deployment of its own
//! (`--target local`), of one running at given URLs (`--target endpoints`), or from a Job inside
//! the cluster that runs the latter next to the services (`--target kube`, [`load::kube`]).

pub mod broker;
pub mod chaos_mesh;
pub mod cli;
pub mod dlq;
pub mod forward;
pub mod jobs;
pub mod kubernetes;
pub mod load;
pub mod local;
pub mod operate;
pub mod proxy;
pub mod run;
pub mod sweep;

use lastmile_platform::auth::ServiceToken;
use lastmile_services::ServiceName;
use lastmile_workload::Endpoints;

/// Where clients reach each service, from the base URL of each.
fn endpoints(url: impl Fn(ServiceName) -> String, token: Option<ServiceToken>) -> Endpoints {
    Endpoints {
        user: url(ServiceName::User),
        location: url(ServiceName::Location),
        trip: url(ServiceName::Trip),
        notification: url(ServiceName::Notification),
        token,
    }
}
