//! The checkpoint: how far the commitlog is known durable and how far it is dispatched.
//!
//! Written as a whole new file, synced, then renamed over the old one, so a reader sees
//! either the previous checkpoint or the new one, never a mix. A CRC32C guards the content;
//! a checkpoint that fails it is treated as absent (recovery then scans the whole log).
//!
//! ```text
//! off size field
//!  0   4   magic
//!  4   4   version (1)
//!  8   8   commitlog_flushed   every record below is on disk
//! 16   8   dispatched          consume queues and index are on disk for every record below
//! 24   8   written_at_ms
//! 32   4   crc32c of bytes [0, 32)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

const MAGIC: u32 = 0xC0E7_C4E7;
const LEN: usize = 36;
const FILE: &str = "checkpoint";

/// Durable progress markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub commitlog_flushed: i64,
    pub dispatched: i64,
    pub written_at_ms: i64,
}

impl Checkpoint {
    pub(crate) fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.commitlog_flushed.to_le_bytes());
        b[16..24].copy_from_slice(&self.dispatched.to_le_bytes());
        b[24..32].copy_from_slice(&self.written_at_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != LEN {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let i64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            i64::from_le_bytes(x)
        };
        if u32_at(0) != MAGIC || u32_at(4) != 1 || u32_at(32) != crc32c::crc32c(&b[..32]) {
            return None;
        }
        Some(Self {
            commitlog_flushed: i64_at(8),
            dispatched: i64_at(16),
            written_at_ms: i64_at(24),
        })
    }
}

/// Reads and writes the checkpoint file of a data directory.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    dir: PathBuf,
}

impl CheckpointFile {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The stored checkpoint, or `None` if there is none or it fails verification.
    pub(crate) fn load(&self) -> Result<Option<Checkpoint>> {
        let path = self.dir.join(FILE);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open checkpoint", &path)(e)),
        };
        let mut buf = Vec::with_capacity(LEN);
        f.read_to_end(&mut buf)
            .map_err(StoreError::io("read checkpoint", &path))?;
        let cp = Checkpoint::decode(&buf);
        if cp.is_none() {
            tracing::warn!(path = %path.display(), "checkpoint fails verification; ignoring it");
        }
        Ok(cp)
    }

    /// Replaces the checkpoint atomically and durably.
    pub(crate) fn store(&self, cp: &Checkpoint) -> Result<()> {
        let tmp = self.dir.join("checkpoint.tmp");
        let path = self.dir.join(FILE);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(StoreError::io("create checkpoint", &tmp))?;
        f.write_all(&cp.encode())
            .map_err(StoreError::io("write checkpoint", &tmp))?;
        f.sync_all()
            .map_err(StoreError::io("sync checkpoint", &tmp))?;
        fs::rename(&tmp, &path).map_err(StoreError::io("rename checkpoint", &path))?;
        sync_dir(&self.dir)
    }
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_checkpoint_when_stored_should_load_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = CheckpointFile::new(dir.path());
        assert_eq!(f.load().expect("load"), None);
        let cp = Checkpoint {
            commitlog_flushed: 123,
            dispatched: 100,
            written_at_ms: 9,
        };
        f.store(&cp).expect("store");
        assert_eq!(f.load().expect("load"), Some(cp));
    }

    #[test]
    fn given_corrupt_checkpoint_when_loaded_should_be_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = CheckpointFile::new(dir.path());
        f.store(&Checkpoint::default()).expect("store");
        let path = dir.path().join(FILE);
        let mut b = fs::read(&path).expect("read");
        b[10] ^= 0x40;
        fs::write(&path, &b).expect("write");
        assert_eq!(f.load().expect("load"), None);
        fs::write(&path, &b[..5]).expect("truncate");
        assert_eq!(f.load().expect("load"), None);
    }
}
