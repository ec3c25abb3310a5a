//! A small durable log: records are written, synced, and replayed in order on open.
//!
//! Real world: a file on a volume (`std::fs` with `sync_data`). Simulation: the node's simulated
//! disk (`madsim::fs`), which survives a kill and restart of that node. Records are one line each
//! (compact JSON never contains a raw newline).
//!
//! The storage fault model, the same in both worlds: [`Journal::write`] only buffers a record
//! (the page cache); [`Journal::sync`] puts every buffered record on disk and returns once it is
//! durable. A crash loses whatever was written and not synced — so a caller that answers before
//! `sync` returns is caught by the simulation, whose disk (unlike madsim's, where `sync_all` is a
//! no-op) holds only what was synced. A crash in the middle of a sync (the `mid-sync` crash
//! point) leaves the last record half written: a final line without its newline is a torn write
//! and is dropped on replay with a warning, which is exactly what sync-before-acknowledge
//! allows. Any other damage (a complete record that does not parse) is the owner's to refuse.

use crate::faults::{CrashPoint, Faults};
use std::io;
use std::path::{Path, PathBuf};

/// An append-only, synced record log.
pub struct Journal {
    /// Where the log lives, for error messages.
    path: PathBuf,
    /// The open file handle of the current world.
    file: imp::File,
    /// The byte offset of the next write to disk (everything before it is synced).
    len: u64,
    /// Records written but not synced yet, newline-terminated: a crash loses them.
    unsynced: Vec<u8>,
    /// Bytes of a torn last record cut off when the journal was opened.
    torn_bytes: u64,
    /// Crash points (`mid-sync`); off unless a fault plan arms them.
    faults: Faults,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).field("len", &self.len).finish()
    }
}

impl Journal {
    /// Open (or create) the journal at `path` and return it with every complete record in order.
    pub async fn open(path: impl AsRef<Path>) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let path = path.as_ref().to_path_buf();
        let (file, bytes) = imp::open(&path).await?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let records =
            bytes[..complete].split(|b| *b == b'\n').filter(|line| !line.is_empty()).map(<[u8]>::to_vec).collect();
        let torn_bytes = (bytes.len() - complete) as u64;
        // Cut a torn tail off so the next write starts on a record boundary.
        if torn_bytes > 0 {
            tracing::warn!(
                journal = %path.display(),
                torn_bytes,
                "dropping a torn last record (a crash during its sync; it was never acknowledged)"
            );
            imp::truncate(&file, complete as u64).await?;
        }
        let journal =
            Journal { path, file, len: complete as u64, unsynced: Vec::new(), torn_bytes, faults: Faults::default() };
        Ok((journal, records))
    }

    /// The same journal with crash points (`mid-sync`) a fault plan can arm.
    pub fn with_faults(mut self, faults: Faults) -> Journal {
        self.faults = faults;
        self
    }

    /// Buffer one record (which must not contain a newline). It is not durable until
    /// [`Journal::sync`] returns: a crash before that loses it.
    pub fn write(&mut self, record: &[u8]) -> io::Result<()> {
        if record.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("journal {}: a record may not contain a newline", self.path.display()),
            ));
        }
        self.unsynced.extend_from_slice(record);
        self.unsynced.push(b'\n');
        Ok(())
    }

    /// Put every written record on disk and wait until it is durable.
    pub async fn sync(&mut self) -> io::Result<()> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.unsynced);
        // With crash points on, the bytes go down in two halves with the `mid-sync` point
        // between them: a crash there leaves a torn record on disk.
        let half = if self.faults.is_on() { bytes.len() / 2 } else { 0 };
        if half > 0 {
            imp::write_at(&mut self.file, &bytes[..half], self.len).await?;
            self.faults.crash_point(CrashPoint::MidSync).await;
        }
        imp::write_at(&mut self.file, &bytes[half..], self.len + half as u64).await?;
        imp::sync(&self.file).await?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Write one record and sync it before returning.
    pub async fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.write(record)?;
        self.sync().await
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of a torn last record dropped when the journal was opened (0: none).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }
}

#[cfg(not(madsim))]
mod imp {
    use std::io::{self, Read, Seek, SeekFrom, Write};
    use std::path::Path;

    pub type File = std::fs::File;

    pub async fn open(path: &Path) -> io::Result<(File, Vec<u8>)> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // One writer per journal: a second process (an old replica still draining, a copy
        // started by mistake) would interleave records. The lock dies with the process.
        if let Err(e) = file.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("journal {} is in use by another process; stop it first", path.display()),
                ),
                std::fs::TryLockError::Error(e) => e,
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok((file, bytes))
    }

    pub async fn write_at(file: &mut File, bytes: &[u8], offset: u64) -> io::Result<()> {
        // Appends are small and rare (one per committed state change); blocking the task for
        // the write and the fsync is the honest cost of durability and keeps ordering trivial.
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    pub async fn sync(file: &File) -> io::Result<()> {
        file.sync_data()
    }

    pub async fn truncate(file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)?;
        file.sync_data()
    }
}

#[cfg(madsim)]
mod imp {
    use std::io;
    use std::path::Path;

    pub type File = madsim::fs::File;

    pub async fn open(path: &Path) -> io::Result<(File, Vec<u8>)> {
        // madsim's file system opens existing files read-only; `create` is the only writable
        // open, and it truncates, so write the contents back.
        let bytes = match madsim::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let file = File::create(path).await?;
        file.write_all_at(&bytes, 0).await?;
        file.sync_all().await?;
        Ok((file, bytes))
    }

    pub async fn truncate(file: &File, len: u64) -> io::Result<()> {
        file.set_len(len).await?;
        file.sync_all().await
    }

    /// madsim's disk has no page cache: a write lands at once. What is not synced yet lives in
    /// the journal's own buffer instead, which dies with the node.
    pub async fn write_at(file: &mut File, bytes: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(bytes, offset).await
    }

    pub async fn sync(file: &File) -> io::Result<()> {
        file.sync_all().await
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert!(records.is_empty());
        journal.append(b"{\"a\":1}").await.unwrap();
        journal.append(b"{\"b\":2}").await.unwrap();
        drop(journal);
        // Simulate a crash in the middle of a write.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"c\"").unwrap();
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        journal.append(b"{\"d\":4}").await.unwrap();
        assert_eq!(journal.torn_bytes(), 4, "the torn tail was measured");
        assert!(journal.append(b"a\nb").await.is_err());
        drop(journal);
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], b"{\"d\":4}".to_vec());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_record_written_but_never_synced_is_lost_with_the_process() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        journal.append(b"{\"a\":1}").await.unwrap();
        journal.write(b"{\"b\":2}").unwrap();
        drop(journal); // a crash before the sync
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, vec![b"{\"a\":1}".to_vec()]);
        journal.write(b"{\"c\":3}").unwrap();
        journal.sync().await.unwrap();
        drop(journal);
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_second_writer_on_a_journal_is_refused_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (first, _) = Journal::open(&path).await.unwrap();
        let Err(e) = Journal::open(&path).await else { panic!("a second writer was let in") };
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(first);
        assert!(Journal::open(&path).await.is_ok(), "the lock goes with its holder");
        std::fs::remove_dir_all(dir).unwrap();
    }

    use std::io::Write;
}
