//! A bounded, crash-safe, on-disk FIFO of keyed records: the Kafka producer's outage buffer.
//!
//! One spool is one directory owned by one process, which holds an exclusive lock on its
//! `lock` file for as long as it uses it; [`crate::spool_dir`] gives every producer its own
//! spool under a shared root and lets a later process adopt the spools of dead ones.
//!
//! Records are appended to segment files (`<first seq>.seg`, each record
//! `[len u32][crc32 u32][seq u64][key len u32][key][payload]`, CRC over everything after it,
//! fsynced per append, the directory fsynced when a segment is created) and acknowledged in
//! order; the `cursor` file holds the first unacknowledged sequence number and is replaced
//! atomically (temp file, fsync, rename, directory fsync). Fully acknowledged segments are
//! deleted. Every record carries its own sequence number, so a damaged record is skipped on
//! open (counted and logged) without renumbering or losing the valid records after it; only a
//! torn record at the very end of the last segment (a crash mid-write) is cut off.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::BusError;

/// Largest key + payload the spool stores; larger records are refused at append.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// `len` and `crc`.
const FRAME: usize = 8;
/// `seq` and `key len`.
const BODY_HEAD: usize = 12;
/// A sequence number further than this past the previous one is taken for garbage.
const MAX_SEQ_JUMP: u64 = 1 << 40;

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// (seq, byte offset) of every readable record, in seq order.
    records: Vec<(u64, u64)>,
}

impl Segment {
    /// Index of the first record with a seq of at least `seq`.
    fn index_of(&self, seq: u64) -> usize {
        self.records.partition_point(|(s, _)| *s < seq)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    next_seq: u64,
    acked: u64,
    /// A segment this large takes no more appends.
    segment_bytes: u64,
    /// The last segment takes no more appends: a failed write there could not be undone.
    sealed: bool,
    /// Held for the spool's lifetime; the OS releases it when the process dies.
    _lock: File,
}

/// One spooled record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledRecord {
    pub seq: u64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BusError + '_ {
    move |e| BusError::Spool { path: path.to_owned(), reason: e.to_string() }
}

/// Fsyncs a directory, so that entries created or renamed in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), BusError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// Takes the exclusive lock of a spool directory without waiting.
fn lock(dir: &Path) -> Result<File, BusError> {
    let path = dir.join("lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BusError::SpoolInUse { dir: dir.to_owned() }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

impl Spool {
    /// Opens (creating if needed) and locks a spool directory. Fails with
    /// [`BusError::SpoolInUse`] while another process or handle holds it.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock(dir)?;
        let mut firsts: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(std::result::Result::ok)
            .filter_map(|e| {
                let first = e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok()?;
                Some((first, e.path()))
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let count = firsts.len();
        let mut next_seq = 0;
        for (i, (_, path)) in firsts.into_iter().enumerate() {
            let seg = open_segment(path, i + 1 == count)?;
            if let Some((last, _)) = seg.records.last() {
                next_seq = next_seq.max(last + 1);
            }
            segments.push_back(seg);
        }
        let cursor = dir.join("cursor");
        let acked = match std::fs::read_to_string(&cursor) {
            Ok(t) => {
                t.trim().parse::<u64>().map_err(|e| BusError::Spool { path: cursor.clone(), reason: e.to_string() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&cursor)(e)),
        };
        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segments,
            next_seq: next_seq.max(acked),
            acked,
            segment_bytes: SEGMENT_BYTES,
            sealed: false,
            _lock: lock,
        };
        spool.drop_acked_segments()?;
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Points the spool at its directory's new name after the caller renamed it (only while
    /// it has no segment, so no path goes stale).
    pub(crate) fn renamed(&mut self, dir: PathBuf) {
        debug_assert!(self.segments.is_empty());
        self.dir = dir;
    }

    #[cfg(test)]
    fn set_segment_bytes(&mut self, bytes: u64) {
        self.segment_bytes = bytes;
    }

    pub(crate) fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
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
        self.segments.iter().map(|s| (s.records.len() - s.index_of(self.acked)) as u64).sum()
    }

    /// First unacknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first record at or after `seq` that is still in the spool, or [`next_seq`]
    /// (Self::next_seq) if there is none: sequence numbers of skipped records leave gaps.
    pub fn next_present(&self, seq: u64) -> u64 {
        self.segments
            .iter()
            .find_map(|s| s.records.get(s.index_of(seq)).map(|(s, _)| *s))
            .unwrap_or(self.next_seq.max(seq))
    }

    /// Appends records durably, all or none. `Ok(Err(bytes))` means full (the caller adds
    /// context); a record over [`MAX_RECORD_BYTES`] is refused whole with an error.
    pub fn append(&mut self, records: &[(&[u8], &[u8])]) -> Result<Result<(), u64>, BusError> {
        if let Some((key, payload)) = records.iter().find(|(k, p)| k.len() + p.len() > MAX_RECORD_BYTES) {
            return Err(BusError::RecordTooLarge {
                key: String::from_utf8_lossy(key).into_owned(),
                bytes: key.len() + payload.len(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let size: u64 = records.iter().map(|(k, p)| (FRAME + BODY_HEAD + k.len() + p.len()) as u64).sum();
        if self.bytes() + size > self.max_bytes {
            return Ok(Err(self.bytes()));
        }
        if self.sealed || self.segments.back().is_none_or(|s| s.bytes >= self.segment_bytes) {
            self.new_segment()?;
        }
        let seg = self.segments.back_mut().expect("just ensured");
        let mut buf = Vec::with_capacity(size as usize);
        let mut index = Vec::with_capacity(records.len());
        for (i, (key, payload)) in records.iter().enumerate() {
            let seq = self.next_seq + i as u64;
            index.push((seq, seg.bytes + buf.len() as u64));
            encode_record(&mut buf, seq, key, payload);
        }
        if let Err(e) = append_durably(&seg.path, &buf) {
            // Leave no bytes the index does not account for: cut back to the last good end,
            // or, if even that fails, append to a fresh segment from now on.
            let undone = OpenOptions::new().write(true).open(&seg.path).and_then(|f| {
                f.set_len(seg.bytes)?;
                f.sync_all()
            });
            if undone.is_err() {
                // The bytes may hold whole, valid records: their seqs are never used again,
                // so nothing acknowledged later can be mistaken for them.
                self.sealed = true;
                self.next_seq += records.len() as u64;
            }
            return Err(io_err(&seg.path)(e));
        }
        seg.bytes += buf.len() as u64;
        seg.records.extend(index);
        self.next_seq += records.len() as u64;
        Ok(Ok(()))
    }

    /// Starts a segment: the file exists and its directory entry is durable before any
    /// record is written to it.
    fn new_segment(&mut self) -> Result<(), BusError> {
        let path = self.dir.join(format!("{:020}.seg", self.next_seq));
        if self.segments.back().is_some_and(|s| s.path == path) {
            // An empty last segment (its only write failed) is reused from scratch.
            self.segments.pop_back();
        }
        File::create(&path).and_then(|f| f.sync_all()).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { path, bytes: 0, records: Vec::new() });
        self.sealed = false;
        Ok(())
    }

    /// Up to `max` records starting at `from` (clamped to the first unacknowledged one). A
    /// record found damaged since the spool was opened is dropped from it, counted and logged,
    /// so that it cannot stall delivery.
    pub fn read(&mut self, from: u64, max: usize) -> Result<Vec<SpooledRecord>, BusError> {
        let mut out = Vec::new();
        let from = from.max(self.acked);
        for seg in &mut self.segments {
            let mut i = seg.index_of(from);
            if i >= seg.records.len() || out.len() >= max {
                continue;
            }
            let mut reader = std::io::BufReader::new(File::open(&seg.path).map_err(io_err(&seg.path))?);
            let mut at = None;
            while i < seg.records.len() && out.len() < max {
                let (seq, offset) = seg.records[i];
                // Records need not be contiguous: damaged bytes between them were skipped.
                if at != Some(offset) {
                    reader.seek(SeekFrom::Start(offset)).map_err(io_err(&seg.path))?;
                }
                let frame = read_frame(&mut reader).map_err(io_err(&seg.path))?;
                at = frame.as_ref().map(|b| offset + (FRAME + b.len()) as u64);
                match frame.as_deref().and_then(parse_body) {
                    Some(rec) if rec.seq == seq => {
                        out.push(rec);
                        i += 1;
                    }
                    _ => {
                        tracing::error!(path = %seg.path.display(), seq, offset, "spooled record damaged on disk; dropped");
                        metrics::counter!("retail_bus_spool_damaged_records_total").increment(1);
                        seg.records.remove(i);
                    }
                }
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
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(seq.to_string().as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &cursor).map_err(io_err(&cursor))?;
        sync_dir(&self.dir)?;
        self.acked = seq;
        self.drop_acked_segments()
    }

    fn drop_acked_segments(&mut self) -> Result<(), BusError> {
        while let Some(seg) = self.segments.front() {
            if seg.records.last().is_some_and(|(s, _)| *s >= self.acked) {
                break;
            }
            // An empty last segment is the one appends go to; keep it.
            if seg.records.is_empty() && self.segments.len() == 1 {
                break;
            }
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            self.segments.pop_front();
        }
        Ok(())
    }
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, key: &[u8], payload: &[u8]) {
    let len = BODY_HEAD + key.len() + payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + FRAME..]);
    buf[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
}

fn append_durably(path: &Path, buf: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().append(true).open(path)?;
    f.write_all(buf)?;
    f.sync_data()
}

fn le_u32(b: &[u8]) -> usize {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// A record body, if it is well formed: the key length fits.
fn parse_body(body: &[u8]) -> Option<SpooledRecord> {
    if body.len() < BODY_HEAD {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    let klen = le_u32(&body[8..12]);
    let rest = &body[BODY_HEAD..];
    (klen <= rest.len()).then(|| SpooledRecord { seq, key: rest[..klen].to_vec(), payload: rest[klen..].to_vec() })
}

/// Reads one framed body with a matching CRC; `Ok(None)` at the end or on damage.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; FRAME];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = le_u32(&head[..4]);
    if !(BODY_HEAD..=BODY_HEAD + MAX_RECORD_BYTES).contains(&len) {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    match r.read_exact(&mut body) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok((crc32fast::hash(&body) == le_u32(&head[4..]) as u32).then_some(body))
}

/// A valid record at `pos` whose seq follows `prev`: (seq, frame length).
fn record_at(bytes: &[u8], pos: usize, prev: Option<u64>) -> Option<(u64, usize)> {
    let head = bytes.get(pos..pos + FRAME + BODY_HEAD)?;
    let len = le_u32(&head[..4]);
    let seq = u64::from_le_bytes(head[8..16].try_into().ok()?);
    // Cheap checks first: a scan for the next record tries every byte offset.
    let follows = prev.is_none_or(|p| seq > p && seq - p <= MAX_SEQ_JUMP);
    if !follows || !(BODY_HEAD..=BODY_HEAD + MAX_RECORD_BYTES).contains(&len) || le_u32(&head[12..16]) > len {
        return None;
    }
    let body = bytes.get(pos + FRAME..pos + FRAME + len)?;
    (crc32fast::hash(body) == le_u32(&head[4..8]) as u32).then_some((seq, FRAME + len))
}

/// Indexes a segment. Damaged bytes followed by valid records are skipped (logged); a torn
/// tail of the last segment is cut off.
fn open_segment(path: PathBuf, is_last: bool) -> Result<Segment, BusError> {
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let mut records = Vec::new();
    let (mut pos, mut end) = (0usize, 0usize);
    while pos < bytes.len() {
        let prev = records.last().map(|(s, _)| *s);
        if let Some((seq, len)) = record_at(&bytes, pos, prev) {
            records.push((seq, pos as u64));
            pos += len;
            end = pos;
            continue;
        }
        match (pos + 1..bytes.len()).find(|&p| record_at(&bytes, p, prev).is_some()) {
            Some(next) => {
                tracing::error!(path = %path.display(), from = pos, to = next, "damaged bytes in the spool skipped");
                metrics::counter!("retail_bus_spool_damaged_bytes_total").increment((next - pos) as u64);
                pos = next;
            }
            None => break,
        }
    }
    if end < bytes.len() && is_last {
        tracing::warn!(path = %path.display(), kept = end, dropped = bytes.len() - end, "cutting torn record off spool");
        let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
        f.set_len(end as u64).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
    }
    let bytes = if is_last { end as u64 } else { bytes.len() as u64 };
    Ok(Segment { path, bytes, records })
}

#[cfg(test)]
mod tests;
