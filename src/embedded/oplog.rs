//! A collection's operation log: every write is appended here before the
//! engine applies it, and replayed at the next open.
//!
//! qdrant-edge 0.7.2 writes its own WAL but does not replay it on load, so a
//! process killed before the engine flushed its segments would lose
//! acknowledged writes. This log closes that gap. A record is
//! `len: u32 LE | crc32: u32 LE | CBOR of the operation` (Qdrant's WAL holds
//! CBOR too; JSON, which builds before 2026-12-04 wrote and which is still
//! read, spent 15% of the upstream's CPU under upserts printing floats); a
//! torn or corrupt tail (a write cut by a crash, never acknowledged) ends the
//! replay.
//!
//! As Qdrant's own WAL, a record is written before its write is answered
//! (so it outlives the process) but put on disk by a periodic sync, not by
//! each write: see [`OpLog::take_unsynced`].

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use qdrant_edge::UpdateOperation;

pub struct OpLog {
    file: Arc<File>,
    records: usize,
    bytes: u64,
    /// Records were written since the last [`OpLog::take_unsynced`].
    unsynced: bool,
}

impl OpLog {
    /// Opens the log at `path`, returning it with the operations it holds.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<UpdateOperation>)> {
        let pending = read_all(path)?;
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let log = OpLog {
            bytes: file.metadata()?.len(),
            file: Arc::new(file),
            records: pending.len(),
            unsynced: false,
        };
        Ok((log, pending))
    }

    /// Appends one operation: it is in the kernel's hands when this returns,
    /// so it outlives this process, and on disk after the next sync.
    pub fn append(&mut self, op: &UpdateOperation) -> io::Result<()> {
        let mut record = vec![0; 8];
        ciborium::into_writer(op, &mut record).map_err(io::Error::other)?;
        let body = &record[8..];
        let len = u32::try_from(body.len()).map_err(io::Error::other)?;
        let crc = crc32fast::hash(body);
        record[..4].copy_from_slice(&len.to_le_bytes());
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        (&*self.file).write_all(&record)?;
        self.records += 1;
        self.bytes += record.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// The log's file, if records were written since the last call, for the
    /// caller to sync without holding up the writes behind this log.
    pub fn take_unsynced(&mut self) -> Option<Arc<File>> {
        std::mem::take(&mut self.unsynced).then(|| self.file.clone())
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// The log's size on disk, torn tail included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Empties the log, once the engine has flushed everything it held.
    pub fn truncate(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.records = 0;
        self.bytes = 0;
        self.unsynced = false;
        Ok(())
    }
}

fn read_all(path: &Path) -> io::Result<Vec<UpdateOperation>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut reader = BufReader::new(file);
    let mut ops = Vec::new();
    loop {
        let mut header = [0u8; 8];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
            tracing::warn!(path = %path.display(), "operation log ends in a torn record; ignoring it");
            break;
        }
        ops.push(decode(&body)?);
    }
    Ok(ops)
}

/// One record's operation: CBOR, or JSON from a build before 2026-12-04
/// (a JSON operation is an object, `{`; no CBOR one starts with that byte,
/// a text string whose length would need 8 bytes).
fn decode(body: &[u8]) -> io::Result<UpdateOperation> {
    if body.first() == Some(&b'{') {
        serde_json::from_slice(body).map_err(io::Error::other)
    } else {
        ciborium::from_reader(body).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use qdrant_edge::{PointId, PointOperations};

    use super::*;

    fn delete(id: u64) -> UpdateOperation {
        UpdateOperation::PointOperation(PointOperations::DeletePoints {
            ids: vec![PointId::NumId(id)],
        })
    }

    #[test]
    fn a_write_is_handed_to_the_next_sync_once_and_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oplog.bin");
        let (mut log, pending) = OpLog::open(&path).unwrap();
        assert!(pending.is_empty());
        assert!(
            log.take_unsynced().is_none(),
            "nothing written, nothing to sync"
        );

        log.append(&delete(1)).unwrap();
        log.append(&delete(2)).unwrap();
        let file = log.take_unsynced().expect("two writes to sync");
        file.sync_data().unwrap();
        assert!(log.take_unsynced().is_none(), "synced once, not again");

        log.append(&delete(3)).unwrap();
        drop(log);
        let (mut log, pending) = OpLog::open(&path).unwrap();
        assert_eq!(
            serde_json::to_value(&pending).unwrap(),
            serde_json::to_value([delete(1), delete(2), delete(3)]).unwrap(),
            "every appended write is replayed, the unsynced one included"
        );

        log.append(&delete(4)).unwrap();
        log.truncate().unwrap();
        assert!(
            log.take_unsynced().is_none(),
            "an emptied log has nothing to sync"
        );
    }

    #[test]
    fn a_log_written_in_json_by_an_older_build_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oplog.bin");
        let json = serde_json::to_vec(&delete(7)).unwrap();
        let mut old = (json.len() as u32).to_le_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        old.extend_from_slice(&json);
        std::fs::write(&path, old).unwrap();

        let (mut log, pending) = OpLog::open(&path).unwrap();
        log.append(&delete(8)).unwrap();
        drop(log);
        let (_, pending_after) = OpLog::open(&path).unwrap();
        assert_eq!(
            serde_json::to_value(&pending).unwrap(),
            serde_json::to_value([delete(7)]).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&pending_after).unwrap(),
            serde_json::to_value([delete(7), delete(8)]).unwrap(),
            "the JSON record and the CBOR one after it"
        );
    }
}
