//! Operations on the Kubernetes deployment: `scale` (with rollback) and `port-forward`.

use crate::cli::{usage, KubeArgs};
use crate::forward::Forwarder;
use crate::kubernetes::{self, Cluster, KubeWorkload};
use crate::run::{interrupted, wall_clock};
use lastmile_services::ServiceName;
use std::process::ExitCode;
use std::time::Duration;

/// `scale <service> <N>` on Kubernetes: scale, watch until N replicas are ready, and put the
/// old count back when they are not (or on Ctrl-C).
pub async fn scale(service: ServiceName, n: usize, kube: &KubeArgs) -> ExitCode {
    let options = kube.options();
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let cluster = Cluster::new(client, &options.namespace, options.ready_timeout);
    let w = KubeWorkload::Service(service);
    let before = match cluster.replicas(w).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}\n(is LastMile deployed in namespace {}? see docs/real-world.md)", options.namespace);
            return ExitCode::FAILURE;
        }
    };
    let started = wall_clock();
    println!("lastmile scale: {service} {before} -> {n} (namespace {})", options.namespace);
    let scaled = async {
        cluster.set_replicas(w, n as i32).await?;
        cluster.wait_ready(w, n as i32).await
    };
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Ok(pods) = cluster.list_pods(w).await {
                let ready = pods.iter().filter(|p| kubernetes::pod_ready(p)).count();
                println!(
                    "  [{:>4.0} s] {ready} ready of {} pods, want {n}",
                    started.elapsed().as_secs_f64(),
                    pods.len()
                );
            }
        }
    };
    let (why, status) = tokio::select! {
        biased;
        _ = interrupted() => ("interrupted".to_string(), ExitCode::from(130)),
        r = scaled => match r {
            Ok(()) => {
                println!("verdict: PASS — {service} runs {n} ready replicas ({:.0} s)", started.elapsed().as_secs_f64());
                return ExitCode::SUCCESS;
            }
            Err(e) => (e.to_string(), ExitCode::FAILURE),
        },
        _ = ticker => unreachable!("the ticker never ends"),
    };
    eprintln!("  {why}; putting {service} back to {before}");
    match cluster.scale(w, before).await {
        Ok(()) => eprintln!("  {service} is back at {before} ready replicas"),
        Err(r) => eprintln!(
            "  the rollback failed too: {r}\n  by hand: kubectl -n {} scale deployment/{service} --replicas={before}",
            options.namespace
        ),
    }
    println!("verdict: FAIL — {service} did not reach {n} ready replicas");
    status
}

/// `port-forward`: a local port per service until Ctrl-C, with a line of traffic now and then.
pub async fn port_forward(base_port: u16, kube: &KubeArgs) -> ExitCode {
    let options = kube.options();
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let cluster = Cluster::new(client, &options.namespace, options.ready_timeout);
    let base = (base_port != 0).then_some(base_port);
    let forwarder = match Forwarder::start(cluster.pods().clone(), base).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("lastmile port-forward (namespace {}); Ctrl-C to stop", options.namespace);
    for (service, addr) in forwarder.fronts() {
        let pods: Vec<String> = forwarder.ready_pods(*service).into_iter().map(|p| p.name).collect();
        println!("  http://{addr}  {service}  ({} ready: {})", pods.len(), pods.join(", "));
    }
    let report = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let (per_pod, failed) = forwarder.forwarded();
            let total: u64 = per_pod.values().sum();
            println!("  {total} connections forwarded ({} pods), {failed} found no ready pod", per_pod.len());
        }
    };
    tokio::select! {
        _ = interrupted() => {}
        _ = report => {}
    }
    let (per_pod, failed) = forwarder.forwarded();
    let total: u64 = per_pod.values().sum();
    println!("stopped: {total} connections forwarded, {failed} found no ready pod");
    for (pod, n) in per_pod {
        println!("  {pod}: {n}");
    }
    if failed == 0 {
        println!("verdict: PASS — every connection reached a ready pod");
        ExitCode::SUCCESS
    } else {
        println!("verdict: FAIL — {failed} connections found no ready pod (a service at 0, or pods not ready)");
        ExitCode::FAILURE
    }
}
