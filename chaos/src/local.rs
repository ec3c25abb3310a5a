//! Services as local processes: the `--target local` of `lastmile chaos run`.

use lastmile_harness::target::step_service;
use lastmile_harness::{Target, TargetError};
use lastmile_platform::auth::ServiceToken;
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use lastmile_workload::Endpoints;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a starting replica may take to answer `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping replica may take to finish its work after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How the local deployment is set up.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The binary that runs a service as `<binary> service <name> ...` (the `lastmile` CLI).
    pub binary: PathBuf,
    /// The RabbitMQ the services use.
    pub amqp_url: String,
    /// Exchange and queue name prefix: unique per run, so runs never share queues.
    pub prefix: String,
    /// Journals and logs, one folder per service.
    pub work_dir: PathBuf,
    /// Run the original matching design.
    pub naive_matching: bool,
}

/// One running replica.
struct Process {
    child: Child,
    port: u16,
}

/// Services as processes of this machine.
pub struct LocalTarget {
    options: LocalOptions,
    /// The port each service's first replica listens on (peers and clients use it).
    home_ports: BTreeMap<ServiceName, u16>,
    running: BTreeMap<ServiceName, Vec<Process>>,
    /// Replicas killed and not brought back yet: (service, port).
    killed: Vec<(ServiceName, u16)>,
    /// Process ids stopped with SIGSTOP.
    paused: Vec<u32>,
    /// The run's service token, made for it: internal endpoints require it.
    token: ServiceToken,
}

fn free_port() -> Result<u16, TargetError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| TargetError::Deployment(format!("no free port: {e}")))
}

/// A file or folder of the run out of reach.
fn io_error(path: &std::path::Path, e: std::io::Error) -> TargetError {
    TargetError::Deployment(format!("{}: {e}", path.display()))
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and still own (not yet waited for).
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

impl LocalTarget {
    /// What processes on one machine can do: no network faults, no broker of the run's own.
    pub fn can(action: Action) -> bool {
        matches!(action, Action::Scale | Action::Kill | Action::Restart | Action::Pause)
    }

    /// Start every service with `replicas` each (services left out get 1), waiting until each
    /// replica is ready.
    pub async fn start(
        options: LocalOptions,
        replicas: &BTreeMap<ServiceName, usize>,
    ) -> Result<LocalTarget, TargetError> {
        std::fs::create_dir_all(&options.work_dir).map_err(|e| io_error(&options.work_dir, e))?;
        let mut home_ports = BTreeMap::new();
        for s in ServiceName::ALL {
            home_ports.insert(s, free_port()?);
        }
        let mut target = LocalTarget {
            options,
            home_ports,
            running: BTreeMap::new(),
            killed: Vec::new(),
            paused: Vec::new(),
            token: ServiceToken::random(),
        };
        for s in ServiceName::ALL {
            target.scale(s, replicas.get(&s).copied().unwrap_or(1)).await?;
        }
        Ok(target)
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    fn spawn(&self, service: ServiceName, port: u16) -> Result<Process, TargetError> {
        let dir = self.options.work_dir.join(service.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let log_error = |e| TargetError::Deployment(format!("{service} log: {e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{port}.log")))
            .map_err(log_error)?;
        let err = log.try_clone().map_err(log_error)?;
        let o = &self.options;
        let mut cmd = Command::new(&o.binary);
        cmd.arg("service")
            .arg(service.as_str())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // In the environment, not on the command line, where `ps` would show its password.
            .env("LASTMILE_AMQP_URL", &o.amqp_url)
            .env("LASTMILE_SERVICE_TOKEN", self.token.expose())
            .arg("--prefix")
            .arg(&o.prefix)
            .arg("--user-url")
            .arg(Self::url(self.home_ports[&ServiceName::User]))
            .arg("--location-url")
            .arg(Self::url(self.home_ports[&ServiceName::Location]))
            .arg("--trip-url")
            .arg(Self::url(self.home_ports[&ServiceName::Trip]))
            .arg("--data-dir")
            .arg(&dir)
            .arg("--queue-expires-secs")
            .arg("600")
            // The harness reads /export, /summary and /stats.
            .arg("--harness-routes")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if o.naive_matching {
            cmd.arg("--naive-matching");
        }
        let child = cmd
            .spawn()
            .map_err(|e| TargetError::Deployment(format!("cannot start {service} ({}): {e}", o.binary.display())))?;
        Ok(Process { child, port })
    }

    async fn wait_ready(service: ServiceName, port: u16) -> Result<(), TargetError> {
        let probe = HttpClient::new("readiness", &Self::url(port), CallPolicy { attempts: 1, ..CallPolicy::default() });
        let deadline = lastmile_platform::clock::instant_now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = probe.call_raw(Method::GET, "/ready", None).await {
                return Ok(());
            }
            if lastmile_platform::clock::instant_now() > deadline {
                return Err(TargetError::TimedOut {
                    what: format!("{service} ready on port {port}"),
                    after: READY_TIMEOUT,
                    last_error: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Start a replica on `port` and wait until it is ready.
    async fn start_on(&mut self, service: ServiceName, port: u16) -> Result<(), TargetError> {
        let process = self.spawn(service, port)?;
        self.running.entry(service).or_default().push(process);
        Self::wait_ready(service, port).await
    }

    /// Stop a replica gracefully (SIGTERM), SIGKILL after the grace period.
    async fn stop(mut process: Process) {
        signal(&process.child, libc::SIGTERM);
        let deadline = lastmile_platform::clock::instant_now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = process.child.try_wait() {
                return;
            }
            if lastmile_platform::clock::instant_now() > deadline {
                let _ = process.child.kill();
                let _ = process.child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Set `service` to `n` replicas: the first one on the service's home port (its peers and
    /// clients use it), more on ports of their own.
    pub async fn scale(&mut self, service: ServiceName, n: usize) -> Result<(), TargetError> {
        while self.running.get(&service).map_or(0, Vec::len) < n {
            let home = self.home_ports[&service];
            let home_taken = self.running.get(&service).is_some_and(|r| r.iter().any(|p| p.port == home))
                || self.killed.iter().any(|(s, p)| *s == service && *p == home);
            let port = if home_taken { free_port()? } else { home };
            self.start_on(service, port).await?;
        }
        while self.running.get(&service).map_or(0, Vec::len) > n {
            let process = self.running.get_mut(&service).expect("non-empty").pop().expect("non-empty");
            Self::stop(process).await;
        }
        Ok(())
    }

    fn chosen(&self, service: ServiceName, replica: Option<usize>, all: bool) -> Vec<usize> {
        let n = self.running.get(&service).map_or(0, Vec::len);
        match (n, replica) {
            (0, _) => Vec::new(),
            (n, Some(r)) => vec![r % n],
            (n, None) if all => (0..n).collect(),
            (n, None) => vec![n - 1],
        }
    }
}

impl Drop for LocalTarget {
    fn drop(&mut self) {
        // Whatever happens to the run, no service process outlives it.
        for processes in self.running.values_mut() {
            for p in processes.iter_mut() {
                signal(&p.child, libc::SIGCONT);
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

impl Target for LocalTarget {
    fn spawn_client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(future)
    }

    fn endpoints(&self) -> Endpoints {
        crate::endpoints(|s| Self::url(self.home_ports[&s]), Some(self.token.clone()))
    }

    fn broker(&self) -> Option<lastmile_workload::hostile::BrokerAccess> {
        Some(lastmile_workload::hostile::BrokerAccess {
            url: self.options.amqp_url.clone(),
            exchange: lastmile_platform::broker::Names::new(self.options.prefix.clone()).events_exchange(),
        })
    }

    fn replica_urls(&self, service: ServiceName) -> Vec<(String, String)> {
        self.running
            .get(&service)
            .into_iter()
            .flatten()
            .map(|p| (format!("{service}@{}", p.port), Self::url(p.port)))
            .collect()
    }

    fn supports(&self, action: Action) -> bool {
        LocalTarget::can(action)
    }

    async fn running(&self, service: ServiceName) -> Result<usize, TargetError> {
        Ok(self.running.get(&service).map_or(0, Vec::len))
    }

    fn progress(&self, line: &dyn Fn() -> String) {
        println!("  {}", line());
    }

    async fn logs(&self, service: ServiceName) -> Result<Vec<(String, String)>, TargetError> {
        let dir = self.options.work_dir.join(service.as_str());
        let entries = std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))?;
        let mut logs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "log") {
                let port = path.file_stem().map(|p| p.to_string_lossy().to_string()).unwrap_or_default();
                let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
                logs.push((format!("{service}@{port}"), text));
            }
        }
        logs.sort();
        Ok(logs)
    }

    async fn apply(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        let s = step_service(step)?;
        match step.action {
            Action::Scale => {
                let n = TargetError::required(step.replicas, "scale", "replicas")?;
                self.scale(s, n).await?;
                Ok(format!("{s} scaled to {n}"))
            }
            Action::Kill => {
                let Some(&i) = self.chosen(s, step.replica, false).first() else {
                    return Ok(format!("{s} has no replica to kill"));
                };
                let mut p = self.running.get_mut(&s).expect("chosen exists").remove(i);
                let _ = p.child.kill();
                let _ = p.child.wait();
                self.killed.push((s, p.port));
                Ok(format!("killed {s} on port {}", p.port))
            }
            Action::Restart => {
                let ports: Vec<u16> = self.running.get(&s).into_iter().flatten().map(|p| p.port).collect();
                for process in self.running.remove(&s).unwrap_or_default() {
                    Self::stop(process).await;
                }
                for port in &ports {
                    self.start_on(s, *port).await?;
                }
                Ok(format!("restarted {s} on ports {ports:?}"))
            }
            Action::Pause => {
                let chosen = self.chosen(s, step.replica, true);
                let procs = self.running.get(&s).map(Vec::as_slice).unwrap_or(&[]);
                for i in chosen {
                    signal(&procs[i].child, libc::SIGSTOP);
                    self.paused.push(procs[i].child.id());
                }
                Ok(format!("paused {s}"))
            }
            action => Err(TargetError::Unsupported { action, target: "local" }),
        }
    }

    async fn undo(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        match step.action {
            Action::Kill => {
                let s = step_service(step)?;
                let back: Vec<u16> = self.killed.iter().filter(|(x, _)| *x == s).map(|(_, p)| *p).collect();
                self.killed.retain(|(x, _)| *x != s);
                for port in &back {
                    self.start_on(s, *port).await?;
                }
                Ok(format!("restarted killed {s} on ports {back:?}"))
            }
            Action::Pause => {
                self.resume_all();
                Ok("resumed".into())
            }
            _ => Ok("nothing to undo".into()),
        }
    }

    async fn heal(&mut self, replicas: &BTreeMap<ServiceName, usize>) -> Result<String, TargetError> {
        self.resume_all();
        for (s, port) in std::mem::take(&mut self.killed) {
            self.start_on(s, port).await?;
        }
        let mut done = Vec::new();
        for (s, n) in replicas {
            self.scale(*s, *n).await?;
            done.push(format!("{s}={n}"));
        }
        Ok(format!("healed; replicas {}", done.join(" ")))
    }
}

impl LocalTarget {
    fn resume_all(&mut self) {
        for pid in std::mem::take(&mut self.paused) {
            // SAFETY: kill(2) on a pid we spawned.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGCONT);
            }
        }
    }
}
