//! The local target's fault proxy with real TCP clients: line echo servers behind routes, each
//! answering `<its name> <the line>`, so a reply says which backend served it.

use lastmile_chaos::proxy::{Cut, Endpoint, FaultProxy, Route};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for an answer that must come.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test listens for an answer that must not come while a cut holds it.
const HELD_WINDOW: Duration = Duration::from_millis(400);

/// A line echo server answering `<name> <line>`, served until the test ends.
async fn echo_server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the echo server");
    let addr = listener.local_addr().expect("echo server address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write.write_all(format!("{name} {line}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A client connection through a route.
struct Client {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Client {
    async fn connect(route: &Route) -> Client {
        let stream = TcpStream::connect(route.addr()).await.expect("connect to the route");
        let (read, write) = stream.into_split();
        Client { lines: BufReader::new(read).lines(), write }
    }

    async fn send(&mut self, line: &str) -> io::Result<()> {
        self.write.write_all(format!("{line}\n").as_bytes()).await
    }

    /// The next answer, `None` if none came within `within`.
    async fn answer(&mut self, within: Duration) -> Option<io::Result<String>> {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Err(_) => None,
            Ok(Ok(Some(line))) => Some(Ok(line)),
            Ok(Ok(None)) => Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"))),
            Ok(Err(e)) => Some(Err(e)),
        }
    }

    /// Send `line` and wait for its answer.
    async fn ask(&mut self, line: &str) -> io::Result<String> {
        self.send(line).await?;
        self.answer(ANSWER_TIMEOUT).await.expect("an answer within the timeout")
    }
}

/// A proxy with a route `from` → `to` and one echo backend per name, joined in order.
async fn routed(from: Endpoint, to: &str, backends: &[(&'static str, u16)]) -> (FaultProxy, Route) {
    let proxy = FaultProxy::new(7);
    for (name, port) in backends {
        proxy.join(Endpoint::replica(to, *port), echo_server(name).await);
    }
    let route = proxy.route(from, to).await.expect("open the route");
    (proxy, route)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
}

mod partition {
    use super::*;

    #[tokio::test]
    async fn cut_service_holds_bytes_and_new_connections_until_heal() {
        let (proxy, route) = routed(Endpoint::client(), "trip-service", &[("a", 1)]).await;
        let mut open = Client::connect(&route).await;
        assert_eq!(open.ask("before").await.expect("answer before the cut"), "a before");

        proxy.cut(Cut::node(Endpoint::service("trip-service")));
        open.send("during").await.expect("the proxy accepts bytes while cut");
        let mut fresh = Client::connect(&route).await;
        fresh.send("fresh").await.expect("a new connection is accepted while cut");
        assert!(open.answer(HELD_WINDOW).await.is_none(), "an open connection answered through a cut");
        assert!(fresh.answer(HELD_WINDOW).await.is_none(), "a new connection answered through a cut");

        proxy.heal();
        let held = open.answer(ANSWER_TIMEOUT).await.expect("held bytes arrive after the heal");
        assert_eq!(held.expect("held answer"), "a during");
        assert_eq!(fresh.answer(ANSWER_TIMEOUT).await.expect("held connection served").expect("answer"), "a fresh");
    }

    #[tokio::test]
    async fn replica_cut_leaves_the_other_backend_serving() {
        let (proxy, route) = routed(Endpoint::client(), "location-service", &[("a", 1), ("b", 2)]).await;
        proxy.cut(Cut::node(Endpoint::replica("location-service", 1)));
        // Round robin: the connections alternate a, b, a, b.
        let mut clients = Vec::new();
        for i in 0..4 {
            let mut c = Client::connect(&route).await;
            c.send(&format!("q{i}")).await.expect("send");
            clients.push(c);
        }
        let mut served = Vec::new();
        let mut held = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            match c.answer(HELD_WINDOW).await {
                Some(answer) => served.push(answer.expect("answer from the uncut replica")),
                None => held.push(i),
            }
        }
        assert_eq!(served, ["b q1", "b q3"], "the uncut replica serves its share");
        assert_eq!(held, [0, 2], "the cut replica's connections are held");

        proxy.heal();
        for i in held {
            let answer = clients[i].answer(ANSWER_TIMEOUT).await.expect("served after the heal");
            assert_eq!(answer.expect("answer"), format!("a q{i}"));
        }
    }

    #[tokio::test]
    async fn link_cut_to_a_peer_leaves_other_routes_working() {
        let proxy = FaultProxy::new(11);
        proxy.join(Endpoint::replica("trip-service", 1), echo_server("trip").await);
        proxy.join(Endpoint::replica("user-service", 2), echo_server("user").await);
        let matching = Endpoint::replica("matching-service", 9);
        let to_trip = proxy.route(matching.clone(), "trip-service").await.expect("route");
        let to_user = proxy.route(matching.clone(), "user-service").await.expect("route");
        let client_to_trip = proxy.route(Endpoint::client(), "trip-service").await.expect("route");

        proxy.cut(Cut::link(matching.clone(), "trip-service"));
        let mut cut = Client::connect(&to_trip).await;
        cut.send("held").await.expect("send");
        assert_eq!(Client::connect(&to_user).await.ask("x").await.expect("other peer"), "user x");
        assert_eq!(Client::connect(&client_to_trip).await.ask("y").await.expect("other dialer"), "trip y");
        assert!(cut.answer(HELD_WINDOW).await.is_none(), "the cut link answered");

        // A node partition of the dialer holds every route it dials.
        proxy.clear_cuts();
        assert_eq!(cut.answer(ANSWER_TIMEOUT).await.expect("healed link").expect("answer"), "trip held");
        proxy.cut(Cut::node(matching));
        let mut user = Client::connect(&to_user).await;
        user.send("z").await.expect("send");
        assert!(user.answer(HELD_WINDOW).await.is_none(), "a partitioned dialer reached a peer");
        assert_eq!(Client::connect(&client_to_trip).await.ask("w").await.expect("others unaffected"), "trip w");
        proxy.heal();
        assert_eq!(user.answer(ANSWER_TIMEOUT).await.expect("healed node").expect("answer"), "user z");
    }
}

mod latency {
    use super::*;

    #[tokio::test]
    async fn latency_delays_each_direction_and_keeps_order() {
        let (proxy, route) = routed(Endpoint::client(), "user-service", &[("a", 1)]).await;
        let mut client = Client::connect(&route).await;
        assert_eq!(client.ask("warm").await.expect("answer"), "a warm");

        let latency_ms = 150;
        proxy.set_latency_ms(Some(latency_ms));
        let started = tokio::time::Instant::now();
        assert_eq!(client.ask("slow").await.expect("answer"), "a slow");
        let round_trip = started.elapsed();
        assert!(
            round_trip >= Duration::from_millis(2 * latency_ms),
            "round trip {round_trip:?} is under twice the injected {latency_ms} ms"
        );

        for i in 0..20 {
            client.send(&format!("m{i}")).await.expect("send");
        }
        for i in 0..20 {
            let answer = client.answer(ANSWER_TIMEOUT).await.expect("answer").expect("answer");
            assert_eq!(answer, format!("a m{i}"), "order kept under jitter");
        }
    }
}

mod loss {
    use super::*;

    /// Connect, send a line and wait for its answer: `Err` when the connection was reset.
    async fn exchange(route: &Route) -> io::Result<String> {
        let mut client = Client::connect(route).await;
        client.send("hello").await?;
        client.answer(ANSWER_TIMEOUT).await.expect("an answer or a reset within the timeout")
    }

    #[tokio::test]
    async fn full_loss_resets_every_new_connection_and_delays_open_ones() {
        let (proxy, route) = routed(Endpoint::client(), "trip-service", &[("a", 1)]).await;
        let mut open = Client::connect(&route).await;
        assert_eq!(open.ask("warm").await.expect("answer"), "a warm");

        proxy.set_loss(1.0);
        for _ in 0..10 {
            let e = exchange(&route).await.expect_err("a connection got through full loss");
            assert!(is_reset(&e), "not a reset: {e}");
        }
        let started = tokio::time::Instant::now();
        assert_eq!(open.ask("late").await.expect("an open connection still answers"), "a late");
        let round_trip = started.elapsed();
        assert!(round_trip >= 2 * lastmile_chaos::proxy::RETRANSMIT_TIMEOUT, "no retransmission delay: {round_trip:?}");

        proxy.heal();
        assert_eq!(exchange(&route).await.expect("served after the heal"), "a hello");
    }

    #[tokio::test]
    async fn half_loss_resets_some_connections_and_not_others() {
        let (proxy, route) = routed(Endpoint::client(), "trip-service", &[("a", 1)]).await;
        proxy.set_loss(0.5);
        let (mut reset, mut served) = (0, 0);
        for _ in 0..40 {
            match exchange(&route).await {
                Ok(answer) => {
                    assert_eq!(answer, "a hello");
                    served += 1;
                }
                Err(e) => {
                    assert!(is_reset(&e), "not a reset: {e}");
                    reset += 1;
                }
            }
        }
        assert!(reset > 0 && served > 0, "loss 0.5 over 40 connections: {reset} reset, {served} served");
    }
}

mod backends {
    use super::*;

    #[tokio::test]
    async fn backends_join_and_leave_the_round_robin() {
        let proxy = FaultProxy::new(3);
        let route = proxy.route(Endpoint::client(), "location-service").await.expect("route");
        let e = Client::connect(&route).await.ask("nobody").await.expect_err("served with no backend");
        assert!(is_reset(&e), "not a refusal: {e}");

        let a = Endpoint::replica("location-service", 1);
        let b = Endpoint::replica("location-service", 2);
        proxy.join(a.clone(), echo_server("a").await);
        assert_eq!(Client::connect(&route).await.ask("1").await.expect("answer"), "a 1");
        proxy.join(b.clone(), echo_server("b").await);
        assert_eq!(proxy.backends("location-service"), [a.clone(), b.clone()]);
        let mut seen = Vec::new();
        for i in 0..4 {
            let answer = Client::connect(&route).await.ask(&i.to_string()).await.expect("answer");
            seen.push(answer.split(' ').next().expect("name").to_string());
        }
        seen.sort();
        assert_eq!(seen, ["a", "a", "b", "b"], "round robin over both");

        // An open connection to a leaving backend stays; new ones go to the others.
        let mut kept = Client::connect(&route).await;
        let kept_name = kept.ask("k").await.expect("answer");
        proxy.leave(&a);
        for i in 0..3 {
            assert_eq!(Client::connect(&route).await.ask(&i.to_string()).await.expect("answer"), format!("b {i}"));
        }
        let again = kept.ask("k").await.expect("the open connection still answers");
        assert_eq!(again, kept_name);
        assert_eq!(proxy.backends("location-service"), [b]);
    }
}

/// The local target behind the proxy: a short scenario of every network fault and two rollouts,
/// run by the `lastmile` binary against RabbitMQ (`LASTMILE_TEST_AMQP_URL`, default
/// `amqp://guest:guest@127.0.0.1:5672/%2f`, like the other real-world tests).
mod local_target {
    use std::process::Command;

    const SCENARIO: &str = r#"
[scenario]
name = "local-network-faults"
duration_s = 36
settle_s = 90

[deployment]
matching-service = 2

[workload]
kind = "load"
drivers = 8
seats = 3
riders_per_minute = 24

[[step]]
at_s = 4
action = "latency"
latency_ms = 50
for_s = 3

[[step]]
at_s = 8
action = "loss"
loss = 0.05
for_s = 3

[[step]]
at_s = 12
action = "partition"
target = "matching-service"
replica = 0
peer = "broker"
for_s = 3

[[step]]
at_s = 17
action = "rollout"
target = "matching-service"

[[step]]
at_s = 24
action = "rollout"
target = "trip-service"
"#;

    fn amqp_url() -> String {
        std::env::var("LASTMILE_TEST_AMQP_URL")
            .unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string())
    }

    #[test]
    fn local_run_carries_out_network_faults_and_rollouts_and_passes() {
        let dir = std::env::temp_dir().join(format!("lastmile-proxy-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test folder");
        let scenario = dir.join("local-network-faults.toml");
        std::fs::write(&scenario, SCENARIO).expect("write the scenario");
        let out = Command::new(env!("CARGO_BIN_EXE_lastmile"))
            .args(["chaos", "run", scenario.to_str().expect("utf-8 path"), "--target", "local", "--no-random-faults"])
            .args(["--time-scale", "0.5", "--amqp-url", &amqp_url(), "--work-dir"])
            .arg(dir.join("work"))
            .output()
            .expect("run lastmile");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the run failed ({}); it needs RabbitMQ at {}:\n{stdout}\n{stderr}",
            out.status,
            amqp_url()
        );
        assert!(!stdout.contains("skipped"), "a step was skipped:\n{stdout}");
        for done in [
            "latency 50 ms on every link",
            "packet loss 0.05 on every link",
            "cut the links of matching-service",
            "to broker",
            "rolled out matching-service: ports",
            "rolled out trip-service: stopped and started again",
            "verdict: PASS",
        ] {
            assert!(stdout.contains(done), "no `{done}` in the run's output:\n{stdout}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
