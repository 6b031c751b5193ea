//! A bounded, crash-safe, on-disk FIFO of keyed records: the Kafka producer's outage buffer.
//!
//! Records are appended to segment files (`<first seq>.seg`, each record
//! `[len u32][crc32 u32][key len u32][key][payload]`, fsynced per append) and acknowledged in
//! order; the `cursor` file holds the first unacknowledged sequence number and is replaced
//! atomically. Fully acknowledged segments are deleted. On open, a torn record at the end of
//! the last segment (a crash mid-write) is cut off; everything before it is kept.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::BusError;

const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
const HEADER: u64 = 12;

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// (seq, byte offset) of every record, for reads from the middle.
    offsets: Vec<u64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    next_seq: u64,
    acked: u64,
}

/// One spooled record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledRecord {
    pub seq: u64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Spool {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, BusError> {
        let err = |path: &Path, e: std::io::Error| BusError::Spool { path: path.to_owned(), reason: e.to_string() };
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)
            .map_err(|e| err(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let count = firsts.len();
        for (i, first_seq) in firsts.into_iter().enumerate() {
            let path = dir.join(format!("{first_seq:020}.seg"));
            let (offsets, good) = scan(&path).map_err(|e| err(&path, e))?;
            let len = std::fs::metadata(&path).map_err(|e| err(&path, e))?.len();
            if good < len {
                if i + 1 < count {
                    return Err(BusError::Spool {
                        path,
                        reason: format!("corrupt record at byte {good} in a sealed segment"),
                    });
                }
                tracing::warn!(path = %path.display(), kept = good, dropped = len - good, "cutting torn record off spool");
                let f = OpenOptions::new().write(true).open(&path).map_err(|e| err(&path, e))?;
                f.set_len(good).map_err(|e| err(&path, e))?;
                f.sync_all().map_err(|e| err(&path, e))?;
            }
            segments.push_back(Segment { first_seq, path, bytes: good, offsets });
        }
        let next_seq = segments.back().map(|s| s.first_seq + s.offsets.len() as u64).unwrap_or(0);
        let cursor = dir.join("cursor");
        let acked = match std::fs::read_to_string(&cursor) {
            Ok(t) => {
                t.trim().parse::<u64>().map_err(|e| BusError::Spool { path: cursor.clone(), reason: e.to_string() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => segments.front().map(|s| s.first_seq).unwrap_or(0),
            Err(e) => return Err(err(&cursor, e)),
        };
        let mut spool = Spool { dir: dir.to_owned(), max_bytes, segments, next_seq: next_seq.max(acked), acked };
        spool.drop_acked_segments()?;
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Records appended but not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.next_seq - self.acked
    }

    /// First unacknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends records durably, all or none. `Err(None)` means full; the caller adds context.
    pub fn append(&mut self, records: &[(&[u8], &[u8])]) -> Result<Result<(), u64>, BusError> {
        let size: u64 = records.iter().map(|(k, p)| HEADER + k.len() as u64 + p.len() as u64).sum();
        if self.bytes() + size > self.max_bytes {
            return Ok(Err(self.bytes()));
        }
        let need_new = self.segments.back().is_none_or(|s| s.bytes >= SEGMENT_BYTES);
        if need_new {
            let path = self.dir.join(format!("{:020}.seg", self.next_seq));
            self.segments.push_back(Segment { first_seq: self.next_seq, path, bytes: 0, offsets: Vec::new() });
        }
        let seg = self.segments.back_mut().expect("just ensured");
        let err = |e: std::io::Error| BusError::Spool { path: seg.path.clone(), reason: e.to_string() };
        let mut buf = Vec::with_capacity(size as usize);
        let mut offsets = Vec::with_capacity(records.len());
        for (key, payload) in records {
            offsets.push(seg.bytes + buf.len() as u64);
            let mut body = Vec::with_capacity(4 + key.len() + payload.len());
            body.extend_from_slice(&(key.len() as u32).to_le_bytes());
            body.extend_from_slice(key);
            body.extend_from_slice(payload);
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            buf.extend_from_slice(&body);
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&seg.path).map_err(err)?;
        f.write_all(&buf).map_err(err)?;
        f.sync_data().map_err(err)?;
        if need_new {
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(err)?;
        }
        seg.bytes += buf.len() as u64;
        seg.offsets.extend(offsets);
        self.next_seq += records.len() as u64;
        Ok(Ok(()))
    }

    /// Up to `max` records starting at `from` (clamped to the first unacknowledged one).
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<SpooledRecord>, BusError> {
        let mut out = Vec::new();
        let mut seq = from.max(self.acked);
        for seg in &self.segments {
            let end = seg.first_seq + seg.offsets.len() as u64;
            if seq >= end || out.len() >= max {
                continue;
            }
            let err = |e: std::io::Error| BusError::Spool { path: seg.path.clone(), reason: e.to_string() };
            let mut f = File::open(&seg.path).map_err(err)?;
            f.seek(SeekFrom::Start(seg.offsets[(seq - seg.first_seq) as usize])).map_err(err)?;
            let mut reader = std::io::BufReader::new(f);
            while seq < end && out.len() < max {
                let body = read_record(&mut reader).map_err(err)?.ok_or_else(|| BusError::Spool {
                    path: seg.path.clone(),
                    reason: format!("record {seq} unreadable"),
                })?;
                let klen = u32::from_le_bytes(body[..4].try_into().expect("4 bytes")) as usize;
                out.push(SpooledRecord { seq, key: body[4..4 + klen].to_vec(), payload: body[4 + klen..].to_vec() });
                seq += 1;
            }
        }
        Ok(out)
    }

    /// Marks every record before `seq` as delivered (persisted), freeing whole segments.
    pub fn ack_until(&mut self, seq: u64) -> Result<(), BusError> {
        let seq = seq.min(self.next_seq);
        if seq <= self.acked {
            return Ok(());
        }
        let cursor = self.dir.join("cursor");
        let tmp = self.dir.join("cursor.tmp");
        let err = |p: &Path, e: std::io::Error| BusError::Spool { path: p.to_owned(), reason: e.to_string() };
        let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
        f.write_all(seq.to_string().as_bytes()).map_err(|e| err(&tmp, e))?;
        f.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &cursor).map_err(|e| err(&cursor, e))?;
        self.acked = seq;
        self.drop_acked_segments()
    }

    fn drop_acked_segments(&mut self) -> Result<(), BusError> {
        while let Some(seg) = self.segments.front() {
            let end = seg.first_seq + seg.offsets.len() as u64;
            // Keep the last segment open for appends unless it is fully acknowledged and full.
            let is_last = self.segments.len() == 1;
            if end <= self.acked && (!is_last || seg.bytes >= SEGMENT_BYTES || end == self.next_seq) {
                std::fs::remove_file(&seg.path)
                    .map_err(|e| BusError::Spool { path: seg.path.clone(), reason: e.to_string() })?;
                self.segments.pop_front();
            } else {
                break;
            }
        }
        Ok(())
    }
}

/// Reads one record body; `Ok(None)` at a clean end or a torn/corrupt tail.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if !(4..=64 * 1024 * 1024).contains(&len) {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    match r.read_exact(&mut body) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok((crc32fast::hash(&body) == crc).then_some(body))
}

/// Offsets of the intact records and the length of the intact prefix.
fn scan(path: &Path) -> std::io::Result<(Vec<u64>, u64)> {
    let mut r = std::io::BufReader::new(File::open(path)?);
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    while let Some(body) = read_record(&mut r)? {
        offsets.push(pos);
        pos += 8 + body.len() as u64;
    }
    Ok((offsets, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(spool: &Spool) -> Vec<String> {
        spool.read(0, 1000).unwrap().into_iter().map(|r| String::from_utf8(r.payload).unwrap()).collect()
    }

    #[test]
    fn survives_reopen_and_acks_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.append(&[(b"cam1", b"a"), (b"cam2", b"b")]).unwrap().unwrap();
            s.append(&[(b"cam1", b"c")]).unwrap().unwrap();
            s.ack_until(1).unwrap();
        }
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.pending(), 2);
        assert_eq!(payloads(&s), vec!["b", "c"]);
        assert_eq!(s.read(0, 10).unwrap()[0].key, b"cam2");
        assert_eq!(s.read(2, 10).unwrap().len(), 1);
    }

    #[test]
    fn full_spool_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        let big = [7u8; 60];
        assert_eq!(s.append(&[(b"k", &big)]).unwrap(), Ok(()));
        assert!(s.append(&[(b"k", &big)]).unwrap().is_err());
        assert_eq!(s.pending(), 1);
        s.ack_until(1).unwrap();
        assert_eq!(s.append(&[(b"k", &big)]).unwrap(), Ok(()), "acknowledged space is reused");
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.append(&[(b"k", b"first"), (b"k", b"second")]).unwrap().unwrap();
        }
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(payloads(&s), vec!["first"]);
        s.append(&[(b"k", b"third")]).unwrap().unwrap();
        assert_eq!(payloads(&Spool::open(dir.path(), 1 << 20).unwrap()), vec!["first", "third"]);
    }
}
