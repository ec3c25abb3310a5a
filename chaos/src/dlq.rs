//! `lastmile dlq`: the operators' view of the dead-letter queues, and the two ways out of them.
//!
//! - `list`: every LastMile work queue's `<queue>.dead` with its message count, optionally the
//!   first N messages peeked (left in place) with their id, routing key, why they died and their
//!   body — escaped, so hostile content never reaches the terminal raw.
//! - `replay <queue>`: dead letters back into their work queue, each confirmed there before it
//!   leaves the dead-letter queue (a crash in between duplicates, never loses; consumers
//!   deduplicate by message id).
//! - `purge <queue>`: drop them.
//!
//! The broker work is the platform's ([`Broker::peek`], [`Broker::replay_dead_letters`], ...);
//! this module checks what the operator typed, reads the broker URL and renders the answers.

use anyhow::{bail, Context as _};
use lastmile_platform::broker::{self, dead_letter_queue, Broker, Names, Peeked, DEAD_LETTER_MAX_LEN};
use lastmile_services::config::DEFAULT_AMQP_URL;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long reaching the broker may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a peeked body shown (before escaping); the rest is cut.
pub const BODY_CHARS_SHOWN: usize = 200;
/// Characters of a message id, routing key or death reason shown.
const FIELD_CHARS_SHOWN: usize = 80;

/// Inspect, replay or purge the dead-letter queues of a LastMile deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    /// RabbitMQ URL.
    #[arg(long, global = true, env = "LASTMILE_AMQP_URL", hide_env_values = true, default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// A file holding the RabbitMQ URL (a mounted Secret); wins over `--amqp-url`.
    #[arg(long, global = true, env = "LASTMILE_AMQP_URL_FILE")]
    pub amqp_url_file: Option<PathBuf>,
}

/// What to do with the dead letters.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Each work queue's dead-letter queue with its message count.
    List {
        /// Prefix of the deployment's exchange and queue names.
        #[arg(long, env = "LASTMILE_PREFIX", default_value = "lastmile")]
        prefix: String,
        /// Also show the first N messages of each (left in place).
        #[arg(long, default_value_t = 0)]
        peek: usize,
    },
    /// Move the messages of `<queue>.dead` back into `<queue>`, oldest first.
    Replay {
        /// The work queue (e.g. lastmile.matching-service), not its `.dead` queue.
        queue: String,
        /// Move at most this many (default: every message there when the command starts).
        #[arg(long)]
        max: Option<usize>,
    },
    /// Drop every message of `<queue>.dead`.
    Purge {
        /// The work queue (e.g. lastmile.matching-service), not its `.dead` queue.
        queue: String,
    },
}

/// Run one `lastmile dlq` command, printing its answer.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    // Check what was typed before reaching for the broker.
    match &args.command {
        DlqCommand::List { prefix, .. } => {
            checked("prefix", prefix)?;
        }
        DlqCommand::Replay { queue, .. } | DlqCommand::Purge { queue } => {
            work_queue(queue)?;
        }
    }
    let url = amqp_url(&args.amqp_url, args.amqp_url_file.as_deref())?;
    let broker = connect(&url).await?;
    let done = match args.command {
        DlqCommand::List { prefix, peek } => {
            let listing = list(&broker, &prefix, peek).await?;
            print!("dead letters at {} ", broker::redacted(&url));
            print!("{listing}");
            Ok(())
        }
        DlqCommand::Replay { queue, max } => replay(&broker, &queue, max).await.map(|moved| {
            println!("moved {moved} messages from {} back into {queue}", dead_letter_queue(&queue));
        }),
        DlqCommand::Purge { queue } => purge(&broker, &queue).await.map(|dropped| {
            println!("dropped {dropped} messages from {}", dead_letter_queue(&queue));
        }),
    };
    broker.disconnect().await;
    done
}

/// The broker URL: the file's content when a file is named (trimmed), else `url`.
pub fn amqp_url(url: &str, file: Option<&Path>) -> anyhow::Result<String> {
    match file {
        Some(file) => Ok(std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the broker URL from {}", file.display()))?
            .trim()
            .to_string()),
        None => Ok(url.to_string()),
    }
}

/// A broker client with its connection open (or an error naming the broker, password hidden).
pub async fn connect(url: &str) -> anyhow::Result<Broker> {
    let broker = Broker::new(url);
    match tokio::time::timeout(CONNECT_TIMEOUT, broker.connect()).await {
        Ok(Ok(())) => Ok(broker),
        // `Unreachable` names the URL already, redacted.
        Ok(Err(e)) => bail!("{e}"),
        Err(_) => bail!("RabbitMQ at {} did not answer within {CONNECT_TIMEOUT:?}", broker::redacted(url)),
    }
}

/// `what` (a queue name or prefix from the command line) against the id rule of
/// [`lastmile_platform::id`]: ASCII letters, digits, `-`, `_`, `.`, `:`.
fn checked(what: &str, name: &str) -> anyhow::Result<()> {
    lastmile_platform::id::check(name)
        .with_context(|| format!("{what} {}: not a queue name", shown(name.as_bytes(), FIELD_CHARS_SHOWN)))
}

/// A work queue named on the command line, checked: a valid name, and not a `.dead` queue
/// itself (the commands add `.dead`).
pub fn work_queue(queue: &str) -> anyhow::Result<&str> {
    checked("queue", queue)?;
    if let Some(work) = queue.strip_suffix(".dead") {
        bail!("give the work queue ({work}), not its dead-letter queue: the command adds `.dead`");
    }
    Ok(queue)
}

/// One work queue's dead letters, as `list` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    /// The work queue.
    pub queue: String,
    /// Its dead-letter queue.
    pub dead_letter_queue: String,
    /// Messages in the dead-letter queue; `None` when there is no such queue (nothing declared
    /// it under this prefix).
    pub count: Option<u32>,
    /// The first messages, left in place.
    pub peeked: Vec<Peeked>,
}

/// The answer of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The prefix the queues were named with.
    pub prefix: String,
    /// One entry per LastMile work queue, in the services' order.
    pub queues: Vec<DeadLetters>,
}

/// Every LastMile work queue under `prefix` with its dead-letter count, and the first `peek`
/// messages of each (left in place).
pub async fn list(broker: &Broker, prefix: &str, peek: usize) -> anyhow::Result<Listing> {
    checked("prefix", prefix)?;
    let topology = lastmile_services::events::topology(&Names::new(prefix), None);
    let mut queues = Vec::new();
    for spec in topology.queues {
        let dead = spec.dead_letter_queue();
        let count = broker.queue_len(&dead).await.with_context(|| format!("counting {dead}"))?;
        let peeked = match count {
            Some(n) if n > 0 && peek > 0 => {
                broker.peek(&dead, peek).await.with_context(|| format!("peeking {dead}"))?
            }
            _ => Vec::new(),
        };
        queues.push(DeadLetters { queue: spec.name, dead_letter_queue: dead, count, peeked });
    }
    Ok(Listing { prefix: prefix.to_string(), queues })
}

/// Move up to `max` dead letters of `queue` (default: as many as were there at the start, so
/// messages that die again while it runs are not replayed in a loop) back into `queue`.
pub async fn replay(broker: &Broker, queue: &str, max: Option<usize>) -> anyhow::Result<usize> {
    let queue = work_queue(queue)?;
    let dead = dead_letter_queue(queue);
    let Some(waiting) = broker.queue_len(&dead).await? else {
        bail!("no queue {dead}: is {queue} a work queue of this broker? (`lastmile dlq list --prefix P` lists them)")
    };
    if broker.queue_len(queue).await?.is_none() {
        bail!("no work queue {queue} to replay into (a service declares it when it starts)");
    }
    let max = max.unwrap_or(usize::MAX).min(waiting as usize);
    let moved = broker.replay_dead_letters(queue, max).await.with_context(|| format!("replaying {dead}"))?;
    Ok(moved)
}

/// Drop every dead letter of `queue`; returns how many were dropped.
pub async fn purge(broker: &Broker, queue: &str) -> anyhow::Result<u32> {
    let queue = work_queue(queue)?;
    let dead = dead_letter_queue(queue);
    if broker.queue_len(&dead).await?.is_none() {
        bail!("no queue {dead}: is {queue} a work queue of this broker? (`lastmile dlq list --prefix P` lists them)");
    }
    broker.purge(&dead).await.with_context(|| format!("purging {dead}"))
}

/// `bytes` fit for a terminal: at most `max_chars` characters, control and other invisible
/// characters escaped (`\u{1b}`, `\n`, `\u{202e}`), bytes that are not UTF-8 as `\xNN`, quotes
/// around, and the cut marked with `…`.
pub fn shown(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::from("\"");
    let mut left = max_chars;
    'chunks: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if left == 0 {
                break 'chunks;
            }
            left -= 1;
            out.extend(c.escape_debug());
        }
        for b in chunk.invalid() {
            if left == 0 {
                break 'chunks;
            }
            left -= 1;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    if left == 0 && shown_len(bytes) > max_chars {
        out.push('…');
    }
    out
}

/// Characters [`shown`] counts in `bytes` (each invalid byte is one).
fn shown_len(bytes: &[u8]) -> usize {
    bytes.utf8_chunks().map(|c| c.valid().chars().count() + c.invalid().len()).sum()
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "(prefix {}; each keeps the newest {DEAD_LETTER_MAX_LEN} by default):", self.prefix)?;
        for q in &self.queues {
            match q.count {
                Some(n) => writeln!(f, "  {:<48} {n}", q.dead_letter_queue)?,
                None => writeln!(f, "  {:<48} no such queue (nothing declared it)", q.dead_letter_queue)?,
            }
            for (i, p) in q.peeked.iter().enumerate() {
                let m = &p.message;
                write!(
                    f,
                    "    #{} id {} key {}",
                    i + 1,
                    shown(m.message_id.as_bytes(), FIELD_CHARS_SHOWN),
                    shown(m.routing_key.as_bytes(), FIELD_CHARS_SHOWN)
                )?;
                if let Some(d) = &p.death {
                    write!(
                        f,
                        " died {} x{} in {}",
                        shown(d.reason.as_bytes(), FIELD_CHARS_SHOWN),
                        d.count,
                        shown(d.queue.as_bytes(), FIELD_CHARS_SHOWN)
                    )?;
                }
                writeln!(f)?;
                writeln!(f, "       body ({} bytes) {}", m.body.len(), shown(&m.body, BODY_CHARS_SHOWN))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_bodies_are_escaped_and_cut() {
        assert_eq!(shown(b"{\"ok\":1}", 200), r#""{\"ok\":1}""#);
        let hostile = "\u{1b}[2J\u{7}bell\r\nnext\0nul\u{202e}rtl".as_bytes();
        let s = shown(hostile, 200);
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(s.contains(r"\u{1b}[2J") && s.contains(r"\r\n") && s.contains(r"\u{202e}"), "{s}");
        assert_eq!(shown(&[b'a', 0xff, b'b'], 200), r#""a\xffb""#);
        assert_eq!(shown(b"abcdef", 3), "\"abc\"…");
        assert_eq!(shown(b"abc", 3), "\"abc\"");
        assert_eq!(shown("ééé".as_bytes(), 2), "\"éé\"…");
    }

    #[test]
    fn queue_names_follow_the_id_rule() {
        assert_eq!(work_queue("lastmile.matching-service").unwrap(), "lastmile.matching-service");
        for bad in ["", "a b", "q\u{1b}[31m", "a/b", &"q".repeat(65)] {
            let e = work_queue(bad).unwrap_err();
            assert!(format!("{e:#}").contains("not a queue name"), "{e:#}");
            assert!(!format!("{e:#}").chars().any(|c| c.is_control()), "{e:#}");
        }
        let e = work_queue("lastmile.matching-service.dead").unwrap_err();
        assert!(e.to_string().contains("(lastmile.matching-service)"), "{e}");
    }

    #[test]
    fn the_url_file_wins_and_is_trimmed() {
        let file = std::env::temp_dir().join(format!("lastmile-dlq-url-{}", std::process::id()));
        std::fs::write(&file, "amqp://u:secret@h:5672/%2f\n").unwrap();
        assert_eq!(amqp_url("amqp://x", Some(&file)).unwrap(), "amqp://u:secret@h:5672/%2f");
        assert_eq!(amqp_url("amqp://x", None).unwrap(), "amqp://x");
        let _ = std::fs::remove_file(&file);
        let e = amqp_url("amqp://x", Some(&file)).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read the broker URL from"), "{e:#}");
    }
}
