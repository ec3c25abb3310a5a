//! A small durable log: records are appended and fsynced, and replayed in order on open.
//!
//! Real world: a file on a volume (`std::fs` with `sync_data`). Simulation: the node's simulated
//! disk (`madsim::fs`), which survives a kill and restart of that node. Records are one line each
//! (compact JSON never contains a raw newline); a final line without its newline is a torn write
//! from a crash and is dropped on replay, which is exactly what fsync-before-acknowledge allows.

use std::io;
use std::path::{Path, PathBuf};

/// An append-only, fsynced record log.
pub struct Journal {
    /// Where the log lives, for error messages.
    path: PathBuf,
    /// The open file handle of the current world.
    file: imp::File,
    /// The byte offset of the next append.
    len: u64,
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
        // Cut a torn tail off so the next append starts on a record boundary.
        if complete < bytes.len() {
            imp::truncate(&file, complete as u64).await?;
        }
        let journal = Journal { path, file, len: complete as u64 };
        Ok((journal, records))
    }

    /// Append one record (which must not contain a newline) and fsync it before returning.
    pub async fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if record.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("journal {}: a record may not contain a newline", self.path.display()),
            ));
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        imp::write_at_and_sync(&mut self.file, &line, self.len).await?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
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
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok((file, bytes))
    }

    pub async fn write_at_and_sync(file: &mut File, line: &[u8], offset: u64) -> io::Result<()> {
        // Appends are small and rare (one per committed state change); blocking the task for
        // the fsync is the honest cost of durability and keeps ordering trivial.
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(line)?;
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

    pub async fn write_at_and_sync(file: &mut File, line: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(line, offset).await?;
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
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], b"{\"d\":4}".to_vec());
        assert!(journal.append(b"a\nb").await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    use std::io::Write;
}
