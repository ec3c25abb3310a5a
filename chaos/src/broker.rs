//! A RabbitMQ node of the run's own, so a local run can kill and restart its broker
//! (`broker-restart`) without touching the RabbitMQ other runs and tests share.
//!
//! [`BrokerNode`] starts `rabbitmq-server` in the foreground as a child process, leader of a
//! process group of its own, with everything under one directory:
//!
//! | path under `dir`     | what                                                              |
//! |----------------------|-------------------------------------------------------------------|
//! | `mnesia/`            | data: definitions, durable queues, persistent messages            |
//! | `log/`               | the node's log files                                              |
//! | `server.log`         | what `rabbitmq-server` prints (appended over restarts)            |
//! | `rabbitmq.conf`      | listener on `127.0.0.1:<amqp_port>`, guest on loopback only       |
//! | `rabbitmq-env.conf`  | empty: keeps the system's (which names the shared node) out       |
//! | `enabled_plugins`    | `[].`: no management listener to clash with the shared node's     |
//! | `home/.erlang.cookie`| the node's own cookie; its `rabbitmqctl` runs with this `HOME`    |
//!
//! The node is `lastmile-<random>@localhost` on a free AMQP port and a free distribution port,
//! all three kept for [`BrokerNode::start_again`], so durable queues and persistent messages come
//! back and clients reconnect to the same URL. [`BrokerNode::kill`] is SIGKILL to the whole
//! process tree (the script, `beam.smp` and its port programs); dropping the node stops it
//! gracefully (SIGTERM, then SIGKILL if it lingers).
//!
//! [`SharedBroker`] is the other case: a node the run does not own, whose RabbitMQ application
//! may be stopped and started again (`rabbitmqctl -n <node> stop_app` / `start_app`) when the
//! person running the scenario asks for it.
//!
//! | variable                    | default                                                       |
//! |-----------------------------|---------------------------------------------------------------|
//! | `LASTMILE_RABBITMQ_SCRIPTS` | the first of `/usr/lib/rabbitmq/bin`, `/usr/local/sbin`, `/opt/homebrew/sbin`, `$PATH` holding both `rabbitmq-server` and `rabbitmqctl` |

use lastmile_harness::TargetError;
use lastmile_platform::broker::{redacted, Broker};
use lastmile_platform::clock::{instant_now, random_u64};
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a node may take to accept AMQP. A first start here takes ~10 s (creating its
/// database, enabling feature flags); two cores shared with builds can make it several times that.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a graceful stop may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the processes of a killed node may take to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one attempt to connect to a starting node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a starting or dying node is looked at.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Where the node's ports (and a local run's replicas' ports) are picked: below Linux's ephemeral
/// range (32768..), so that while the node is down no outgoing connection takes its port and
/// [`BrokerNode::start_again`] finds it free.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// The overriding directory of RabbitMQ's scripts.
const SCRIPTS_VARIABLE: &str = "LASTMILE_RABBITMQ_SCRIPTS";

/// Where packages put the scripts that run a node as the calling user. Debian's
/// `/usr/sbin/rabbitmq-server` is a wrapper that switches to the `rabbitmq` user and writes to
/// `/var/log/rabbitmq`, so its real scripts in `/usr/lib/rabbitmq/bin` come first.
const SCRIPT_DIRS: [&str; 3] = ["/usr/lib/rabbitmq/bin", "/usr/local/sbin", "/opt/homebrew/sbin"];

/// How to get RabbitMQ, for the error that says it is missing.
const INSTALL_HINT: &str = "install RabbitMQ (Debian/Ubuntu: `apt-get install rabbitmq-server`; macOS: \
                            `brew install rabbitmq`) or set LASTMILE_RABBITMQ_SCRIPTS to the directory holding \
                            `rabbitmq-server` and `rabbitmqctl`";

/// The installed RabbitMQ's scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripts {
    /// `rabbitmq-server`: runs a node in the foreground.
    pub server: PathBuf,
    /// `rabbitmqctl`: talks to a running node over Erlang distribution.
    pub ctl: PathBuf,
}

impl Scripts {
    /// The scripts in `LASTMILE_RABBITMQ_SCRIPTS`, else in the first of the usual places (then
    /// `$PATH`) that holds both. Fails, saying how to install RabbitMQ, when none does.
    pub fn find() -> Result<Scripts, TargetError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let usual = SCRIPT_DIRS.iter().map(PathBuf::from).chain(std::env::split_paths(&path));
        let searched = format!("{} or $PATH", SCRIPT_DIRS.join(", "));
        Scripts::find_in(std::env::var_os(SCRIPTS_VARIABLE).map(PathBuf::from), usual, &searched)
    }

    /// The scripts in `chosen` if given, else in the first of `usual` holding both; `searched`
    /// says where that looked, for the error.
    fn find_in(
        chosen: Option<PathBuf>,
        mut usual: impl Iterator<Item = PathBuf>,
        searched: &str,
    ) -> Result<Scripts, TargetError> {
        if let Some(dir) = chosen {
            return Scripts::in_dir(&dir).ok_or_else(|| {
                TargetError::Deployment(format!(
                    "{SCRIPTS_VARIABLE}={} holds no `rabbitmq-server` and `rabbitmqctl`: {INSTALL_HINT}",
                    dir.display()
                ))
            });
        }
        usual.find_map(|d| Scripts::in_dir(&d)).ok_or_else(|| {
            TargetError::Deployment(format!(
                "RabbitMQ is not installed: no `rabbitmq-server` with `rabbitmqctl` in {searched}; {INSTALL_HINT}"
            ))
        })
    }

    /// Both scripts in `dir`, if they are there.
    fn in_dir(dir: &Path) -> Option<Scripts> {
        let scripts = Scripts { server: dir.join("rabbitmq-server"), ctl: dir.join("rabbitmqctl") };
        (scripts.server.is_file() && scripts.ctl.is_file()).then_some(scripts)
    }
}

/// A RabbitMQ node this run owns: started, killed, started again and stopped by it.
pub struct BrokerNode {
    /// Where the installed scripts are.
    scripts: Scripts,
    /// `lastmile-<random>@localhost`: how epmd and `rabbitmqctl` know the node; its data
    /// directory is named after it, so it stays the same over restarts.
    node_name: String,
    /// The AMQP port on 127.0.0.1, the same over restarts so clients' URLs stay valid.
    amqp_port: u16,
    /// The Erlang distribution port (`rabbitmqctl` reaches the node there), fixed rather than
    /// left to epmd so two nodes never race for one.
    dist_port: u16,
    /// The directory of everything the node writes (see the module docs).
    dir: PathBuf,
    /// The running `rabbitmq-server` script, leader of the node's process group; `None` while
    /// the node is down.
    process: Option<Child>,
}

impl fmt::Debug for BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerNode")
            .field("node_name", &self.node_name)
            .field("url", &redacted(&self.url()))
            .field("dir", &self.dir)
            .field("pid", &self.process.as_ref().map(Child::id))
            .finish()
    }
}

impl BrokerNode {
    /// Start a fresh node with its data under `dir` (created if missing) and wait until it
    /// accepts AMQP. Fails when RabbitMQ is not installed (saying how to install it), when the
    /// node exits while starting (with the end of its output), or after [`START_TIMEOUT`].
    pub async fn start(dir: &Path) -> Result<BrokerNode, TargetError> {
        let scripts = Scripts::find()?;
        let amqp_port = free_port()?;
        let dist_port = loop {
            let port = free_port()?;
            if port != amqp_port {
                break port;
            }
        };
        let mut node = BrokerNode {
            scripts,
            node_name: format!("lastmile-{:08x}@localhost", random_u64() as u32),
            amqp_port,
            dist_port,
            dir: dir.to_path_buf(),
            process: None,
        };
        node.write_files()?;
        node.start_again().await?;
        Ok(node)
    }

    /// The node's name (`lastmile-…@localhost`), for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The AMQP port on 127.0.0.1.
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// The directory the node keeps its data, logs and configuration in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`. It holds a password: log [`redacted`] of it.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// Whether the node's process is up (started and neither killed nor exited).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| matches!(p.try_wait(), Ok(None)))
    }

    /// Kill the node hard: SIGKILL to its process group and to every process descended from one
    /// of the group (Erlang's port programs put themselves in sessions of their own), then wait
    /// until they are
    /// gone, so its ports and its name are free for [`BrokerNode::start_again`]. A node that is
    /// down already is left as it is.
    pub fn kill(&mut self) -> Result<(), TargetError> {
        let Some(mut process) = self.process.take() else { return Ok(()) };
        let group = process.id() as libc::pid_t;
        let processes = node_processes(group);
        signal(-group, libc::SIGKILL);
        for &pid in &processes {
            signal(pid, libc::SIGKILL);
        }
        process.wait().map_err(|e| self.error(format!("waiting for the killed node: {e}")))?;
        if wait_gone(group, &processes, KILL_TIMEOUT) {
            return Ok(());
        }
        Err(TargetError::TimedOut {
            what: format!("the processes of RabbitMQ node {} to die", self.node_name),
            after: KILL_TIMEOUT,
            last_error: None,
        })
    }

    /// Start the node again (after [`BrokerNode::kill`]) with the same name, ports and data, and
    /// wait until it accepts AMQP: durable queues and persistent messages are back. A node that
    /// is running is left as it is.
    pub async fn start_again(&mut self) -> Result<(), TargetError> {
        if self.is_running() {
            return Ok(());
        }
        let output = self.dir.join("server.log");
        let open_error = |e| self.error(format!("{}: {e}", output.display()));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&output).map_err(open_error)?;
        let err = out.try_clone().map_err(open_error)?;
        let mut command = Command::new(&self.scripts.server);
        self.environment(&mut command);
        command
            .env("RABBITMQ_NODENAME", &self.node_name)
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", self.dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            // Distribution on loopback only, as the node serves this machine only.
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // A group of its own: `kill` reaches the script and `beam.smp` at once, and a
            // Ctrl-C meant for the run does not stop the broker behind its back.
            .process_group(0);
        let process = command
            .spawn()
            .map_err(|e| self.error(format!("cannot run {}: {e}; {INSTALL_HINT}", self.scripts.server.display())))?;
        self.process = Some(process);
        self.wait_accepting().await
    }

    /// Stop and start the RabbitMQ application inside the running node (`rabbitmqctl stop_app`
    /// / `start_app`): connections drop, the Erlang node and its data stay.
    pub async fn restart_app(&self) -> Result<(), TargetError> {
        let control = self.control();
        control.stop_app().await?;
        control.start_app().await
    }

    /// `rabbitmqctl` for this node, with its cookie.
    pub fn control(&self) -> SharedBroker {
        let mut env = vec![(OsString::from("HOME"), self.dir.join("home").into_os_string())];
        env.push(("RABBITMQ_CONF_ENV_FILE".into(), self.dir.join("rabbitmq-env.conf").into_os_string()));
        SharedBroker { rabbitmqctl: self.scripts.ctl.clone(), node_name: self.node_name.clone(), env }
    }

    /// The environment both scripts run in: none of the caller's RabbitMQ settings (they may
    /// name the shared node), the node's own cookie (through `HOME`) and env file.
    fn environment(&self, command: &mut Command) {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RABBITMQ_") {
                command.env_remove(name);
            }
        }
        for (name, value) in self.control().env {
            command.env(name, value);
        }
    }

    /// The configuration files, the cookie and the directories, written once before the first
    /// start.
    fn write_files(&self) -> Result<(), TargetError> {
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).map_err(|e| self.error(format!("{}: {e}", home.display())))?;
        let config = format!("listeners.tcp.1 = 127.0.0.1:{}\nloopback_users.guest = true\n", self.amqp_port);
        let cookie = format!("{:016X}{:016X}", random_u64(), random_u64());
        let files = [
            (self.dir.join("rabbitmq.conf"), config),
            (self.dir.join("rabbitmq-env.conf"), String::new()),
            (self.dir.join("enabled_plugins"), "[].\n".to_string()),
            (home.join(".erlang.cookie"), cookie),
        ];
        for (path, text) in files {
            std::fs::write(&path, text).map_err(|e| self.error(format!("{}: {e}", path.display())))?;
        }
        // Erlang refuses a cookie others can read.
        use std::os::unix::fs::PermissionsExt;
        let cookie = home.join(".erlang.cookie");
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))
            .map_err(|e| self.error(format!("{}: {e}", cookie.display())))
    }

    /// Wait until the node accepts an AMQP connection; fail early if its process exits.
    async fn wait_accepting(&mut self) -> Result<(), TargetError> {
        let client = Broker::new(self.url());
        let deadline = instant_now() + START_TIMEOUT;
        loop {
            let exited = match self.process.as_mut().map(Child::try_wait) {
                Some(Ok(exited)) => exited,
                Some(Err(e)) => return Err(self.error(format!("watching the node: {e}"))),
                None => return Err(self.error("not started".into())),
            };
            if let Some(status) = exited {
                self.process = None;
                return Err(self.error(format!("exited while starting ({status}): {}", self.output_tail())));
            }
            // Bounded: a listener that accepts but does not answer must not stall the wait.
            let refused = match tokio::time::timeout(CONNECT_TIMEOUT, client.connect()).await {
                Ok(Ok(())) => {
                    client.disconnect().await;
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no AMQP handshake within {CONNECT_TIMEOUT:?}"),
            };
            if instant_now() >= deadline {
                return Err(TargetError::TimedOut {
                    what: format!("RabbitMQ node {} accepting AMQP on 127.0.0.1:{}", self.node_name, self.amqp_port),
                    after: START_TIMEOUT,
                    last_error: Some(refused),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last lines `rabbitmq-server` printed, for an error.
    fn output_tail(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(self.dir.join("server.log")).and_then(|mut f| f.read_to_string(&mut text));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n");
        format!("last output in {}:\n{tail}", self.dir.join("server.log").display())
    }

    /// An error naming the node.
    fn error(&self, what: String) -> TargetError {
        TargetError::Deployment(format!("RabbitMQ node {} ({}): {what}", self.node_name, self.dir.display()))
    }
}

impl Drop for BrokerNode {
    /// Stop the node gracefully (SIGTERM: the script has RabbitMQ stop cleanly), killing it if
    /// it takes longer than [`STOP_TIMEOUT`].
    fn drop(&mut self) {
        let Some(process) = self.process.as_mut() else { return };
        let group = process.id() as libc::pid_t;
        let processes = node_processes(group);
        signal(-group, libc::SIGTERM);
        let deadline = instant_now() + STOP_TIMEOUT;
        // The script exits once `beam.smp` has; the port programs follow it.
        while matches!(process.try_wait(), Ok(None)) && instant_now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
        wait_gone(group, &processes, deadline.saturating_duration_since(instant_now()));
        if let Err(e) = self.kill() {
            tracing::warn!(node = %self.node_name, error = %e, "RabbitMQ node did not stop");
        }
    }
}

/// A RabbitMQ node the run does not own (the shared one), whose application can be stopped and
/// started again through `rabbitmqctl` — only when the person running the scenario asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBroker {
    /// `rabbitmqctl`, as installed (Debian's wrapper in `/usr/sbin` uses the `rabbitmq` user's
    /// cookie, the one the system's node has).
    rabbitmqctl: PathBuf,
    /// The node, for `-n` (`rabbit@localhost` for a package's default node).
    node_name: String,
    /// Variables `rabbitmqctl` needs beyond the caller's (a node of our own's cookie).
    env: Vec<(OsString, OsString)>,
}

/// What [`SharedBroker`] asks of the node's application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAction {
    /// `stop_app`: close every connection and stop RabbitMQ, leaving the Erlang node up.
    Stop,
    /// `start_app`: start RabbitMQ again; durable queues and persistent messages come back.
    Start,
}

impl AppAction {
    fn as_str(self) -> &'static str {
        match self {
            AppAction::Stop => "stop_app",
            AppAction::Start => "start_app",
        }
    }
}

impl SharedBroker {
    /// The node `node_name`, reached with the `rabbitmqctl` on `$PATH`.
    pub fn new(node_name: impl Into<String>) -> SharedBroker {
        SharedBroker { rabbitmqctl: PathBuf::from("rabbitmqctl"), node_name: node_name.into(), env: Vec::new() }
    }

    /// The node's name, as given to `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The command that carries out `action`: `rabbitmqctl -n <node> stop_app|start_app`.
    pub fn command(&self, action: AppAction) -> Command {
        let mut command = Command::new(&self.rabbitmqctl);
        command.arg("-n").arg(&self.node_name).arg(action.as_str()).stdin(Stdio::null());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Stop the node's RabbitMQ application (its clients lose their connections).
    pub async fn stop_app(&self) -> Result<(), TargetError> {
        self.run(AppAction::Stop).await
    }

    /// Start the node's RabbitMQ application again; returns once it runs.
    pub async fn start_app(&self) -> Result<(), TargetError> {
        self.run(AppAction::Start).await
    }

    async fn run(&self, action: AppAction) -> Result<(), TargetError> {
        let mut command = self.command(action);
        let shown = format!("{} -n {} {}", self.rabbitmqctl.display(), self.node_name, action.as_str());
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| TargetError::Deployment(format!("`{shown}`: {e}")))?
            .map_err(|e| TargetError::Deployment(format!("cannot run `{shown}`: {e}; {INSTALL_HINT}")))?;
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr);
        let said = if said.trim().is_empty() { String::from_utf8_lossy(&output.stdout) } else { said };
        Err(TargetError::Deployment(format!("`{shown}` failed ({}): {}", output.status, said.trim())))
    }
}

/// A port of [`PORT_RANGE`] free on 127.0.0.1 right now: for the node and for a local run's
/// replicas, which a killed replica comes back on. Below the ephemeral range, no outgoing
/// connection takes it between this check and the process's bind.
pub(crate) fn free_port() -> Result<u16, TargetError> {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..200 {
        let port = PORT_RANGE.start + (random_u64() % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(TargetError::Deployment(format!("no free port in {PORT_RANGE:?} on 127.0.0.1")))
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) on our node's process group or one of its processes; a pid that is gone
    // already only makes it fail with ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The processes of the node started as leader of process group `group`: the group's members
/// (the script, `beam.smp`, also once the script is gone) and every process descended from one
/// (Erlang's port programs put themselves in sessions of their own), from `/proc`.
fn node_processes(group: libc::pid_t) -> Vec<libc::pid_t> {
    let all: Vec<(libc::pid_t, Stat)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            Some((pid, proc_stat(pid)?))
        })
        .collect();
    let mut found: Vec<libc::pid_t> = all.iter().filter(|(_, s)| s.group == group).map(|&(pid, _)| pid).collect();
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        let children: Vec<libc::pid_t> =
            all.iter().filter(|(pid, s)| s.parent == parent && !found.contains(pid)).map(|&(pid, _)| pid).collect();
        found.extend(children);
        next += 1;
    }
    found
}

/// Wait until none of `processes`, nor any process of `group`, runs; whether that happened
/// within `timeout`.
fn wait_gone(group: libc::pid_t, processes: &[libc::pid_t], timeout: Duration) -> bool {
    let deadline = instant_now() + timeout;
    loop {
        let running = |pid: &libc::pid_t| is_alive(*pid);
        if !processes.iter().any(running) && !node_processes(group).iter().any(running) {
            return true;
        }
        if instant_now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL / 10);
    }
}

/// What `/proc/<pid>/stat` says of a process.
struct Stat {
    /// The parent's pid.
    parent: libc::pid_t,
    /// The process group's id.
    group: libc::pid_t,
}

fn proc_stat(pid: libc::pid_t) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(1);
    Some(Stat { parent: fields.next()?.parse().ok()?, group: fields.next()?.parse().ok()? })
}

/// Whether `pid` still runs: one of its threads is neither a zombie nor dead. The main thread
/// of a killed `beam.smp` turns zombie before its other threads are gone, and the last of them
/// is what closes its sockets.
fn is_alive(pid: libc::pid_t) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    threads.flatten().any(|thread| {
        let stat = std::fs::read_to_string(thread.path().join("stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
        state.is_some_and(|s| s != "Z" && s != "X")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_broker_stops_and_starts_the_app_of_the_named_node() {
        let shared = SharedBroker::new("rabbit@localhost");
        for (action, word) in [(AppAction::Stop, "stop_app"), (AppAction::Start, "start_app")] {
            let command = shared.command(action);
            assert_eq!(command.get_program(), "rabbitmqctl");
            let args: Vec<_> = command.get_args().collect();
            assert_eq!(args, ["-n", "rabbit@localhost", word]);
            assert_eq!(command.get_envs().count(), 0, "the shared node's rabbitmqctl runs in the caller's environment");
        }
    }

    #[test]
    fn missing_rabbitmq_is_an_error_that_says_how_to_install_it() {
        let empty = std::env::temp_dir().join(format!("lastmile-no-rabbitmq-{:x}", random_u64()));
        std::fs::create_dir_all(&empty).unwrap();
        let none = Scripts::find_in(None, [empty.clone()].into_iter(), "an empty directory").unwrap_err().to_string();
        assert!(none.contains("RabbitMQ is not installed"), "{none}");
        assert!(none.contains("in an empty directory"), "{none}");
        assert!(none.contains("apt-get install rabbitmq-server"), "{none}");
        assert!(none.contains("LASTMILE_RABBITMQ_SCRIPTS"), "{none}");
        let chosen = Scripts::find_in(Some(empty.clone()), std::iter::empty(), "-").unwrap_err().to_string();
        assert!(chosen.contains(&empty.display().to_string()), "{chosen}");
        assert!(chosen.contains("apt-get install rabbitmq-server"), "{chosen}");
        std::fs::remove_dir(&empty).unwrap();
    }

    #[test]
    fn proc_stat_reads_this_process_parent_and_group() {
        let me = std::process::id() as libc::pid_t;
        let stat = proc_stat(me).expect("this process has a /proc entry");
        assert!(is_alive(me));
        // SAFETY: getppid(2) and getpgrp(2) have no preconditions.
        let (parent, group) = unsafe { (libc::getppid(), libc::getpgrp()) };
        assert_eq!((stat.parent, stat.group), (parent, group));
        assert!(node_processes(group).contains(&me));
    }
}
