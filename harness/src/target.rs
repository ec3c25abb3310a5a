//! What a scenario needs from a deployment. One implementation drives the simulated cluster;
//! the real world's drive processes or Kubernetes.
//!
//! Services are named by [`ServiceName`]; a scenario step names its service as text, and
//! [`step_service`] turns it into one at the target's edge. What fails is a [`TargetError`],
//! whose text the runner records in the history (checkers and reports read it).

use lastmile_platform::coverage::RecoveryPath;
use lastmile_platform::service::{ServiceName, UnknownService};
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::Action;
use lastmile_workload::Endpoints;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Why a target could not do what the run asked of it.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A step names no service, and its action needs one.
    #[error("{step} has no target")]
    NoTarget {
        /// The step, as the timeline shows it.
        step: String,
    },
    /// A step lacks another field its action needs (a scale without replicas, ...).
    #[error("{action} without {field}")]
    MissingField {
        /// The action (`scale`, `crash`).
        action: &'static str,
        /// What it lacks (`replicas`, `a point`).
        field: &'static str,
    },
    /// A step or the heal names no known service.
    #[error(transparent)]
    UnknownService(#[from] UnknownService),
    /// This target cannot carry out the action at all (the runner skips what
    /// [`Target::supports`] refuses, so this is a step that got through anyway).
    #[error("{action:?} is not supported by the {target} target")]
    Unsupported {
        /// The action refused.
        action: Action,
        /// Which target (`local`, `kube`).
        target: &'static str,
    },
    /// This target keeps no logs of the service.
    #[error("this target keeps no logs of {service}")]
    NoLogs {
        /// The service asked about.
        service: ServiceName,
    },
    /// The deployment refused an operation or failed at it: a process that would not start, an
    /// API call the cluster refused, a port or file out of reach. The message says which and why.
    #[error("{0}")]
    Deployment(String),
    /// A wait for the deployment to reach a state ran out of time.
    #[error("{what}: not within {after:?}{}", last_error_note(.last_error))]
    TimedOut {
        /// What was awaited (`matching-service with 2 ready pods`).
        what: String,
        /// How long it was given.
        after: Duration,
        /// The last error met while waiting (the API server may blip), if any.
        last_error: Option<String>,
    },
    /// A start failed and the recorded state was put back.
    #[error("{cause}; rolled back: {restored}")]
    RolledBack {
        /// Why the start failed.
        cause: Box<TargetError>,
        /// What the rollback restored.
        restored: String,
    },
    /// A start failed and putting the recorded state back failed too.
    #[error("{cause}; the rollback failed too: {rollback}")]
    RollbackFailed {
        /// Why the start failed.
        cause: Box<TargetError>,
        /// Why the rollback failed.
        rollback: Box<TargetError>,
    },
    /// Several operations failed (a restore goes on past a failure to restore what it can).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<TargetError>),
}

fn last_error_note(last_error: &Option<String>) -> String {
    last_error.as_ref().map(|e| format!(" (last API error: {e})")).unwrap_or_default()
}

impl TargetError {
    /// A [`TargetError::MissingField`] when `value` is absent.
    pub fn required<T>(value: Option<T>, action: &'static str, field: &'static str) -> Result<T, TargetError> {
        value.ok_or(TargetError::MissingField { action, field })
    }
}

/// The service a step targets: its `target`, parsed.
pub fn step_service(step: &TimelineStep) -> Result<ServiceName, TargetError> {
    let name = step.target.as_deref().ok_or_else(|| TargetError::NoTarget { step: step.to_string() })?;
    Ok(name.parse()?)
}

/// Go on with the `stalled` rollouts through `roll_on`, which answers a rollout back when it
/// stalls again (a rollout a fault holds up waits for the next undo; the simulated and the local
/// target keep them, Kubernetes' controller carries its own on). Answers what became of them
/// (`None` when there were none) and the rollouts still stalled.
pub async fn resume_rollouts<R>(
    stalled: Vec<R>,
    service: impl Fn(&R) -> ServiceName,
    mut roll_on: impl AsyncFnMut(R) -> Result<Option<R>, TargetError>,
) -> Result<(Option<String>, Vec<R>), TargetError> {
    if stalled.is_empty() {
        return Ok((None, stalled));
    }
    let (mut said, mut still) = (Vec::new(), Vec::new());
    for rollout in stalled {
        let s = service(&rollout);
        match roll_on(rollout).await? {
            None => said.push(format!("rollout of {s} finished")),
            Some(again) => {
                said.push(format!("rollout of {s} still stalled"));
                still.push(again);
            }
        }
    }
    Ok((Some(said.join(", ")), still))
}

/// A deployment a scenario can run against.
#[allow(async_fn_in_trait)] // used through generics only; the runner needs no Send bound
pub trait Target {
    /// Spawn a task where clients run (the simulation's client node, or the local runtime).
    fn spawn_client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Where clients reach the services.
    fn endpoints(&self) -> Endpoints;

    /// Where a client may publish to the services' broker (for the hostile client), if it can.
    fn broker(&self) -> Option<lastmile_workload::hostile::BrokerAccess> {
        None
    }

    /// Each running replica of `service` as (name, base URL), for per-replica probes.
    fn replica_urls(&self, service: ServiceName) -> Vec<(String, String)>;

    /// Whether this target can carry out `action` at all (a local run cannot partition a
    /// process, for instance). Steps it cannot do are skipped and recorded as skipped.
    fn supports(&self, action: Action) -> bool {
        let _ = action;
        true
    }

    /// How many replicas of `service` run now (started and not killed; on Kubernetes, ready
    /// pods). Read after the heal to show every count was restored.
    async fn running(&self, service: ServiceName) -> Result<usize, TargetError>;

    /// Tell the person running a long real-world run what just happened (a step carried out,
    /// the counters so far). The simulation stays quiet.
    /// `line` is only built when the target shows progress.
    fn progress(&self, line: &dyn Fn() -> String) {
        let _ = line;
    }

    /// The logs of every replica of `service`: (replica, text).
    async fn logs(&self, service: ServiceName) -> Result<Vec<(String, String)>, TargetError> {
        Err(TargetError::NoLogs { service })
    }

    /// How often each recovery path ran in the services so far (`None`: this target does not
    /// collect them; the simulation does).
    fn coverage(&self) -> Option<BTreeMap<RecoveryPath, u64>> {
        None
    }

    /// Every message in a dead-letter queue now, by queue, as `message id (routing key)`
    /// (`None`: this target cannot look).
    async fn dead_letters(&self) -> Option<BTreeMap<String, Vec<String>>> {
        None
    }

    /// The messages waiting in `service`'s work queue now (ready, not yet delivered): its
    /// backlog. `None`: this target cannot look. By default a passive declare at
    /// [`Target::broker`], the way RabbitMQ reports a queue's message count.
    async fn backlog(&self, service: ServiceName) -> Option<u64> {
        let access = self.broker()?;
        lastmile_platform::broker::ready_messages(&access.url, &access.queue(service.as_str())).await
    }

    /// Carry out one step of the timeline; the answer says what was done.
    async fn apply(&mut self, step: &TimelineStep) -> Result<String, TargetError>;

    /// Undo a step whose `for_s` ran out (restart the killed, unclog the partitioned, ...).
    async fn undo(&mut self, step: &TimelineStep) -> Result<String, TargetError>;

    /// Undo every fault still in force and set each service to `replicas` (the rollback).
    async fn heal(&mut self, replicas: &BTreeMap<ServiceName, usize>) -> Result<String, TargetError>;
}

#[cfg(test)]
mod tests {
    use super::{step_service, TargetError};
    use lastmile_platform::service::ServiceName;
    use lastmile_scenarios::faults::{Origin, TimelineStep};
    use lastmile_scenarios::Action;
    use std::time::Duration;

    fn step(target: Option<&str>) -> TimelineStep {
        TimelineStep { target: target.map(String::from), ..TimelineStep::new(5.0, Action::Kill, Origin::Scenario) }
    }

    #[test]
    fn a_step_names_its_service_by_either_name_and_nothing_else_passes() {
        assert_eq!(step_service(&step(Some("trip-service"))).unwrap(), ServiceName::Trip);
        assert_eq!(step_service(&step(Some("trip"))).unwrap(), ServiceName::Trip);
        let none = step(None);
        let e = step_service(&none).unwrap_err();
        assert!(matches!(&e, TargetError::NoTarget { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("{none} has no target"));
        let e = step_service(&step(Some("tirp-service"))).unwrap_err();
        assert!(matches!(&e, TargetError::UnknownService(u) if u.name == "tirp-service"), "{e:?}");
        assert_eq!(
            e.to_string(),
            "unknown service \"tirp-service\"; expected one of user, location, trip, matching, notification"
        );
    }

    #[test]
    fn the_messages_the_history_records_keep_their_wording() {
        let missing = TargetError::required(None::<usize>, "scale", "replicas").unwrap_err();
        assert_eq!(missing.to_string(), "scale without replicas");
        assert_eq!(TargetError::required(Some(3), "scale", "replicas").unwrap(), 3);
        let waited = |last_error| TargetError::TimedOut {
            what: "x with 2 ready pods".into(),
            after: Duration::from_secs(2),
            last_error,
        };
        assert_eq!(waited(None).to_string(), "x with 2 ready pods: not within 2s");
        assert_eq!(
            waited(Some("connection refused".into())).to_string(),
            "x with 2 ready pods: not within 2s (last API error: connection refused)"
        );
        let unsupported = TargetError::Unsupported { action: Action::Partition, target: "local" };
        assert_eq!(unsupported.to_string(), "Partition is not supported by the local target");
        let no_logs = TargetError::NoLogs { service: ServiceName::Trip };
        assert_eq!(no_logs.to_string(), "this target keeps no logs of trip-service");
        let several = TargetError::Several(vec![TargetError::Deployment("a".into()), waited(None)]);
        assert_eq!(several.to_string(), "a; x with 2 ready pods: not within 2s");
        let back = TargetError::RolledBack { cause: Box::new(waited(None)), restored: "replicas restored".into() };
        assert_eq!(back.to_string(), "x with 2 ready pods: not within 2s; rolled back: replicas restored");
    }
}
