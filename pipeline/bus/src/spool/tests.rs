use super::*;

fn payloads(spool: &mut Spool) -> Vec<String> {
    spool.read(0, 100_000).unwrap().into_iter().map(|r| String::from_utf8(r.payload).unwrap()).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
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
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(s.pending(), 2);
    assert_eq!(payloads(&mut s), vec!["b", "c"]);
    assert_eq!(s.read(0, 10).unwrap()[0].key, b"cam2");
    assert_eq!(s.read(2, 10).unwrap().len(), 1);
}

#[test]
fn a_locked_spool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Spool::open(dir.path(), 1 << 20).unwrap();
    let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, BusError::SpoolInUse { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"), "{err}");
}

#[test]
fn full_spool_refuses_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), 120).unwrap();
    let big = [7u8; 60];
    assert_eq!(s.append(&[(b"k", &big)]).unwrap(), Ok(()));
    assert!(s.append(&[(b"k", &big)]).unwrap().is_err());
    assert_eq!(s.pending(), 1);
    s.ack_until(1).unwrap();
    assert_eq!(s.append(&[(b"k", &big)]).unwrap(), Ok(()), "acknowledged space is reused");
}

#[test]
fn oversize_record_is_refused_whole_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), u64::MAX).unwrap();
    let huge = vec![b'x'; MAX_RECORD_BYTES + 1];
    let err = s.append(&[(b"small", b"ok"), (b"cam-9", &huge)]).unwrap_err().to_string();
    assert!(err.contains("cam-9") && err.contains(&MAX_RECORD_BYTES.to_string()), "{err}");
    assert_eq!(s.pending(), 0, "all or none");
    drop(s);
    assert_eq!(Spool::open(dir.path(), u64::MAX).unwrap().pending(), 0);
}

#[test]
fn torn_tail_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(&[(b"k", b"first"), (b"k", b"second")]).unwrap().unwrap();
    }
    let seg = segments(dir.path()).remove(0);
    let len = std::fs::metadata(&seg).unwrap().len();
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
    let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(payloads(&mut s), vec!["first"]);
    s.append(&[(b"k", b"third")]).unwrap().unwrap();
    drop(s);
    assert_eq!(payloads(&mut Spool::open(dir.path(), 1 << 20).unwrap()), vec!["first", "third"]);
}

/// A damaged record (a flipped bit, a length field gone wrong) costs that record only.
#[test]
fn damaged_record_does_not_cost_the_ones_after_it() {
    for damage in [Damage::Payload, Damage::Length] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.append(&[(b"k", b"one"), (b"k", b"two"), (b"k", b"three")]).unwrap().unwrap();
        }
        let seg = segments(dir.path()).remove(0);
        let mut bytes = std::fs::read(&seg).unwrap();
        let second = FRAME + BODY_HEAD + 1 + 3;
        match damage {
            Damage::Payload => bytes[second + FRAME + BODY_HEAD + 1] ^= 0x40,
            Damage::Length => bytes[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes()),
        }
        std::fs::write(&seg, &bytes).unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(payloads(&mut s), vec!["one", "three"], "{damage:?}");
        assert_eq!(s.pending(), 2);
        // The gap left by the damaged record does not stall acknowledgement.
        assert_eq!(s.next_present(1), 2);
        s.append(&[(b"k", b"four")]).unwrap().unwrap();
        s.ack_until(3).unwrap();
        assert_eq!(payloads(&mut s), vec!["four"]);
        drop(s);
        assert_eq!(payloads(&mut Spool::open(dir.path(), 1 << 20).unwrap()), vec!["four"], "{damage:?}");
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Payload,
    Length,
}

/// xorshift64*: a reproducible stream of random numbers, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Random appends, reads, acknowledgements, clean restarts and crashes in the middle of an
/// append (the append's bytes cut anywhere, as a power loss would): after every step the
/// spool holds exactly the records whose append returned, minus those acknowledged, in order.
#[test]
fn property_nothing_acknowledged_comes_back_nothing_appended_is_lost() {
    for seed in 1..=16u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dir = tempfile::tempdir().unwrap();
        let mut spool = reopen(None, dir.path());
        let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
        for step in 0..150 {
            match rng.below(10) {
                0..=4 => {
                    let n = 1 + rng.below(20) as usize;
                    let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
                        .map(|_| {
                            let big = rng.below(20) == 0;
                            let len = rng.below(if big { 100_000 } else { 200 }) as usize;
                            (format!("cam{}", rng.below(4)).into_bytes(), vec![rng.below(256) as u8; len])
                        })
                        .collect();
                    let refs: Vec<(&[u8], &[u8])> = recs.iter().map(|(k, p)| (k.as_slice(), p.as_slice())).collect();
                    let first = spool.next_seq();
                    if spool.append(&refs).unwrap().is_ok() {
                        model.extend(recs.into_iter().enumerate().map(|(i, (_, p))| (first + i as u64, p)));
                    }
                }
                5..=6 => {
                    let n = rng.below(30) as usize;
                    let got = spool.read(0, n).unwrap();
                    let want: Vec<u64> = model.iter().take(n).map(|(s, _)| *s).collect();
                    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), want, "seed {seed} step {step}");
                    if let Some(last) = got.last() {
                        let upto = last.seq + 1 - rng.below(2);
                        spool.ack_until(upto).unwrap();
                        model.retain(|(s, _)| *s >= upto);
                    }
                }
                7 => spool = reopen(Some(spool), dir.path()),
                _ => {
                    // A crash mid-append: the append's bytes reach the disk only in part.
                    let before: Vec<(PathBuf, u64)> =
                        segments(dir.path()).into_iter().map(|p| (p.clone(), p.metadata().unwrap().len())).collect();
                    let payload = vec![9u8; 1 + rng.below(5000) as usize];
                    spool.append(&[(b"torn", &payload)]).unwrap().unwrap();
                    drop(spool);
                    let last = segments(dir.path()).pop().unwrap();
                    let old = before.iter().find(|(p, _)| *p == last).map_or(0, |(_, l)| *l);
                    let new = last.metadata().unwrap().len();
                    let cut = old + rng.below(new - old);
                    OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();
                    spool = reopen(None, dir.path());
                }
            }
            let got = spool.read(0, usize::MAX).unwrap();
            assert_eq!(got.len() as u64, spool.pending(), "seed {seed} step {step}");
            assert_eq!(got.len(), model.len(), "seed {seed} step {step}");
            for (r, (seq, p)) in got.iter().zip(&model) {
                assert_eq!((r.seq, &r.payload), (*seq, p), "seed {seed} step {step}");
            }
        }
    }
}

/// (Re)opens with small segments, so that appends, acknowledgements and crashes meet
/// segment boundaries often.
fn reopen(old: Option<Spool>, dir: &Path) -> Spool {
    drop(old);
    let mut s = Spool::open(dir, 1 << 21).unwrap();
    s.set_segment_bytes(64 * 1024);
    s
}
