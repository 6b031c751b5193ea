//! Many producers, one spool root: every producer process gets a spool of its own under the
//! root (`spool-<pid>-<nanos>/`), locked for as long as the process lives, and tagged with the
//! bus it was written for (`target`: broker list and topic). A spool whose lock can be taken
//! belongs to a process that is gone: a new producer for the same target adopts it (its
//! events go out first) and drains any further ones into its own; spools written for another
//! target are left alone and reported, never delivered to the wrong broker. A producer that
//! ends with nothing pending removes its spool. Records the broker refuses for good are moved
//! to `rejected/<spool>.jsonl` under the root.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::BusError;
use crate::spool::{Spool, SpooledRecord, sync_dir};

const TARGET: &str = "target";
const PREFIX: &str = "spool-";
const CREATING: &str = ".new-";

/// This process's spool and what it found at the root.
#[derive(Debug)]
pub struct ClaimedSpool {
    pub spool: Spool,
    /// Pending records taken over from spools of processes that are gone.
    pub adopted: u64,
    /// Spools of dead processes written for another bus: (directory, target, pending).
    pub foreign: Vec<(PathBuf, String, u64)>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BusError + '_ {
    move |e| BusError::Spool { path: path.to_owned(), reason: e.to_string() }
}

/// Claims a spool for `target` under `root`; see the module docs.
pub fn claim(root: &Path, target: &str, max_bytes: u64) -> Result<ClaimedSpool, BusError> {
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let mut orphans = Vec::new();
    let mut foreign = Vec::new();
    for dir in spool_dirs(root)? {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        // Another process may be between making its spool and locking it: only a creation
        // abandoned long ago (a crash before its rename) is cleaned up.
        let creating = name.starts_with(CREATING);
        if creating && !older_than(&dir, Duration::from_secs(3600)) {
            continue;
        }
        let spool = match Spool::open(&dir, max_bytes) {
            Ok(s) => s,
            Err(BusError::SpoolInUse { .. }) => continue,
            Err(e) => {
                warn!(error = %e, "cannot open a spool left by another process; leaving it");
                continue;
            }
        };
        if creating {
            remove(&spool);
            continue;
        }
        match std::fs::read_to_string(dir.join(TARGET)) {
            Ok(t) if t == target => orphans.push(spool),
            Ok(other) if spool.pending() > 0 => {
                warn!(dir = %dir.display(), target = %other, pending = spool.pending(),
                      "spooled events for another bus are kept; a run with that bus sends them");
                foreign.push((dir, other, spool.pending()));
            }
            _ if spool.pending() == 0 => remove(&spool),
            _ => warn!(dir = %dir.display(), "spool without a target file; leaving it"),
        }
    }
    // Adopt the fullest orphan (least copying); drain the others into it.
    orphans.sort_by_key(|s| std::cmp::Reverse(s.pending()));
    let mut orphans = orphans.into_iter();
    let mut spool = match orphans.next() {
        Some(s) => s,
        None => create(root, target, max_bytes)?,
    };
    spool.set_max_bytes(max_bytes);
    let mut adopted = spool.pending();
    if adopted > 0 {
        info!(dir = %spool.dir().display(), pending = adopted, "adopted the spool of a process that is gone");
    }
    for mut orphan in orphans {
        adopted += drain_into(&mut orphan, &mut spool)?;
        release(&orphan);
    }
    Ok(ClaimedSpool { spool, adopted, foreign })
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
}

fn spool_dirs(root: &Path) -> Result<Vec<PathBuf>, BusError> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io_err(root))?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX) || n.starts_with(CREATING)))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A fresh spool: made and tagged under a temporary name, then renamed into place, so that
/// no other process ever sees a spool without its target.
fn create(root: &Path, target: &str, max_bytes: u64) -> Result<Spool, BusError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let name = format!("{}-{nanos}", std::process::id());
    let tmp = root.join(format!("{CREATING}{name}"));
    let mut spool = Spool::open(&tmp, max_bytes)?;
    write_durably(&tmp.join(TARGET), target.as_bytes())?;
    let dir = root.join(format!("{PREFIX}{name}"));
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    sync_dir(root)?;
    spool.renamed(dir);
    Ok(spool)
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), BusError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Copies `from`'s pending records into `to` (durably) and acknowledges them in `from`.
/// A crash between the two repeats them once; consumers drop repeats by event id.
fn drain_into(from: &mut Spool, to: &mut Spool) -> Result<u64, BusError> {
    let mut moved = 0;
    loop {
        let batch = from.read(0, 1000)?;
        let Some(last) = batch.last().map(|r| r.seq) else { return Ok(moved) };
        let refs: Vec<(&[u8], &[u8])> = batch.iter().map(|r| (r.key.as_slice(), r.payload.as_slice())).collect();
        if to.append(&refs)?.is_err() {
            warn!(dir = %from.dir().display(), left = from.pending(), "own spool full; the rest stays for a later run");
            return Ok(moved);
        }
        from.ack_until(last + 1)?;
        moved += batch.len() as u64;
    }
}

/// Deletes a spool's directory while its lock is still held, so that nobody adopts it
/// meanwhile; for spools with nothing pending (or half-made ones).
fn remove(spool: &Spool) {
    // The target goes first: a scanner that still gets in sees an untagged, empty spool.
    let _ = std::fs::remove_file(spool.dir().join(TARGET));
    if let Err(e) = std::fs::remove_dir_all(spool.dir()) {
        warn!(dir = %spool.dir().display(), error = %e, "could not remove an empty spool");
    }
}

/// Removes a spool (this process's, at a clean end) if nothing is pending in it.
pub fn release(spool: &Spool) {
    if spool.pending() == 0 {
        remove(spool);
    }
}

/// Moves a record the broker refuses for good out of the way (`rejected/<spool>.jsonl`
/// under the root, fsynced), so that it neither blocks the records after it nor fills the
/// spool by being resent forever.
pub fn reject(spool: &Spool, record: &SpooledRecord, reason: &str) -> Result<PathBuf, BusError> {
    let root = spool.dir().parent().unwrap_or(Path::new("."));
    let dir = root.join("rejected");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let name = spool.dir().file_name().and_then(|n| n.to_str()).unwrap_or("spool");
    let path = dir.join(format!("{name}.jsonl"));
    let line = serde_json::json!({
        "rejected_at_unix_s": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
        "reason": reason,
        "seq": record.seq,
        "key": String::from_utf8_lossy(&record.key),
        "payload": String::from_utf8_lossy(&record.payload),
    });
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
    let mut bytes = serde_json::to_vec(&line).expect("json values serialise");
    bytes.push(b'\n');
    f.write_all(&bytes).and_then(|()| f.sync_data()).map_err(io_err(&path))?;
    sync_dir(&dir)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(s: &mut Spool, n: usize, tag: &str) {
        for i in 0..n {
            let p = format!("{tag}-{i}");
            s.append(&[(b"k", p.as_bytes())]).unwrap().unwrap();
        }
    }

    fn payloads(s: &mut Spool) -> Vec<String> {
        s.read(0, 10_000).unwrap().into_iter().map(|r| String::from_utf8(r.payload).unwrap()).collect()
    }

    #[test]
    fn live_spools_are_not_shared_and_dead_ones_are_adopted_per_target() {
        let root = tempfile::tempdir().unwrap();
        let mut a = claim(root.path(), "kafka://b:1 topic=t", 1 << 20).unwrap();
        let mut b = claim(root.path(), "kafka://b:1 topic=t", 1 << 20).unwrap();
        assert_ne!(a.spool.dir(), b.spool.dir(), "two live producers never share a spool");
        append(&mut a.spool, 3, "a");
        append(&mut b.spool, 2, "b");
        let mut other = claim(root.path(), "kafka://elsewhere:1 topic=t", 1 << 20).unwrap();
        append(&mut other.spool, 4, "x");
        drop((a, b, other)); // processes gone, events pending
        let mut c = claim(root.path(), "kafka://b:1 topic=t", 1 << 20).unwrap();
        assert_eq!(c.adopted, 5);
        let mut got = payloads(&mut c.spool);
        got.sort();
        assert_eq!(got, ["a-0", "a-1", "a-2", "b-0", "b-1"]);
        assert_eq!(c.foreign.len(), 1, "the other bus's events are reported, not taken");
        assert_eq!((c.foreign[0].1.as_str(), c.foreign[0].2), ("kafka://elsewhere:1 topic=t", 4));
        let dirs = spool_dirs(root.path()).unwrap();
        assert_eq!(dirs.len(), 2, "the drained spool is gone: {dirs:?}");
        let pending = c.spool.next_seq();
        c.spool.ack_until(pending).unwrap();
        release(&c.spool);
        assert_eq!(spool_dirs(root.path()).unwrap().len(), 1, "an empty spool is removed at the end");
    }

    #[test]
    fn rejected_records_are_kept_aside() {
        let root = tempfile::tempdir().unwrap();
        let mut c = claim(root.path(), "t", 1 << 20).unwrap();
        append(&mut c.spool, 1, "big");
        let rec = c.spool.read(0, 1).unwrap().remove(0);
        let path = reject(&c.spool, &rec, "Broker: Message size too large").unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("\"payload\":\"big-0\"") && text.contains("too large"), "{text}");
    }
}
