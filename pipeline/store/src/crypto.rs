//! Envelope encryption of stored objects with AES-256-GCM.
//!
//! A master key (32 bytes from the config or the environment, never stored with the data)
//! wraps one data key per organisation; the wrapped data keys live in the database. An
//! object is a header and a run of sealed chunks, so it is written as a stream and read
//! from any offset:
//!
//! ```text
//! header: "RAIAE1\0\0" | chunk size (u32 BE) | salt (16) | nonce prefix (7) | key-id length (1) | key id
//! key:    HKDF-SHA256(data key, salt, "retail-ai object key v1"): one key per object
//! chunk:  AES-256-GCM(plaintext ≤ chunk size) | tag (16)
//! nonce:  prefix (7) | chunk index (u32 BE) | 1 on the last chunk, else 0
//! aad:    header | object name
//! ```
//!
//! Each object has its own key, so nonces need only be unique within an object (the chunk
//! index sees to that) and a data key can seal any number of objects; with random nonces
//! under one key the safe number would be a few thousand.
//!
//! The index in the nonce stops chunks being reordered, the last-chunk flag stops an object
//! being cut at a chunk boundary, and the object name in the AAD stops chunks or headers
//! being moved between objects: each of these fails decryption.

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::StoreError;

const MAGIC: &[u8; 8] = b"RAIAE1\0\0";
pub(crate) const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk: reads seek to a chunk, so smaller is cheaper to seek into;
/// each chunk costs 16 bytes of tag.
pub const CHUNK_SIZE: usize = 256 * 1024;
const PREFIX_LEN: usize = 7;
const SALT_LEN: usize = 16;
/// Bytes before the key id: magic, chunk size, salt, prefix, key-id length.
const FIXED_LEN: usize = 8 + 4 + SALT_LEN + PREFIX_LEN + 1;

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).expect("the system random source");
    bytes
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

/// The key that wraps the organisations' data keys. Debug prints only its id.
pub struct MasterKey {
    key: LessSafeKey,
    /// A fingerprint, stored beside each wrapped key, so a wrong master key is named as such.
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// Parses 32 bytes written as 64 hex digits or as base64.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .or_else(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| StoreError::Invalid("the master key must be 32 bytes as 64 hex digits or base64".into()))?;
        let mut fingerprint = b"retail-ai master key id\0".to_vec();
        fingerprint.extend_from_slice(&bytes);
        let id = hex::encode(&ring::digest::digest(&ring::digest::SHA256, &fingerprint).as_ref()[..8]);
        Ok(MasterKey { key: aes_key(&bytes), id })
    }

    /// A new random master key as 64 hex digits.
    pub fn generate() -> String {
        hex::encode(random::<32>())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals a new data key for `label` (org and key id, bound in as AAD).
    pub(crate) fn wrap(&self, dek: &[u8; 32], label: &str) -> String {
        let nonce = random::<NONCE_LEN>();
        let mut buf = dek.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(label.as_bytes()), &mut buf)
            .expect("sealing 32 bytes");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    pub(crate) fn unwrap(&self, wrapped: &str, label: &str) -> Result<DataKey, StoreError> {
        let bad = || StoreError::Crypto(format!("data key {label} does not open with this master key"));
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(wrapped).map_err(|_| bad())?;
        if bytes.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(bad());
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN]).map_err(|_| bad())?;
        let plain =
            self.key.open_in_place(nonce, Aad::from(label.as_bytes()), &mut bytes[NONCE_LEN..]).map_err(|_| bad())?;
        let bytes: [u8; 32] = plain.try_into().map_err(|_| bad())?;
        Ok(DataKey { bytes })
    }
}

/// New random material for a data key.
pub(crate) fn new_data_key_bytes() -> [u8; 32] {
    random::<32>()
}

/// An organisation's data key, unwrapped, in memory only.
pub struct DataKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub(crate) fn from_bytes(bytes: &[u8; 32]) -> Self {
        DataKey { bytes: *bytes }
    }

    /// The key of the object whose header holds `salt`.
    fn object_key(&self, salt: &[u8; SALT_LEN]) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.bytes);
        let okm = prk.expand(&[b"retail-ai object key v1"], &AES_256_GCM).expect("32 bytes from HKDF-SHA256");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// The parsed header of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub chunk_size: usize,
    salt: [u8; SALT_LEN],
    prefix: [u8; PREFIX_LEN],
    pub key_id: String,
}

impl Header {
    fn new(key_id: &str) -> Self {
        Header {
            chunk_size: CHUNK_SIZE,
            salt: random::<SALT_LEN>(),
            prefix: random::<PREFIX_LEN>(),
            key_id: key_id.to_owned(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.chunk_size as u32).to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.prefix);
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out
    }

    /// The header's length in bytes.
    pub fn byte_len(&self) -> usize {
        FIXED_LEN + self.key_id.len()
    }

    /// The longest header there is: read this much to parse one.
    pub const MAX_LEN: usize = FIXED_LEN + 255;

    /// Parses the start of an object; `object` names it in errors.
    pub fn parse(bytes: &[u8], object: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::Crypto(format!("{object}: {why}"));
        let fixed = FIXED_LEN;
        if bytes.len() < fixed || &bytes[..MAGIC.len()] != MAGIC {
            return Err(bad("not an encrypted object (bad header)"));
        }
        let chunk_size = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[12..12 + SALT_LEN]);
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&bytes[12 + SALT_LEN..12 + SALT_LEN + PREFIX_LEN]);
        let id_len = bytes[fixed - 1] as usize;
        let id = bytes.get(fixed..fixed + id_len).ok_or_else(|| bad("header cut short"))?;
        let key_id = std::str::from_utf8(id).map_err(|_| bad("key id is not text"))?.to_owned();
        if chunk_size == 0 || chunk_size > 64 * 1024 * 1024 {
            return Err(bad("implausible chunk size"));
        }
        Ok(Header { chunk_size, salt, prefix, key_id })
    }

    fn nonce(&self, index: u64, last: bool) -> Result<Nonce, StoreError> {
        let index = u32::try_from(index).map_err(|_| StoreError::Crypto("object has too many chunks".into()))?;
        let mut n = [0u8; NONCE_LEN];
        n[..PREFIX_LEN].copy_from_slice(&self.prefix);
        n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        n[NONCE_LEN - 1] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Ciphertext bytes of an object holding `plain` bytes.
    pub fn sealed_len(&self, plain: u64) -> u64 {
        let chunks = plain.div_ceil(self.chunk_size as u64).max(1);
        self.byte_len() as u64 + plain + chunks * TAG_LEN as u64
    }

    /// Plaintext bytes of an object of `sealed` bytes, or `None` if no plaintext has that size.
    pub fn plain_len(&self, sealed: u64) -> Option<u64> {
        let body = sealed.checked_sub(self.byte_len() as u64)?;
        let full = (self.chunk_size + TAG_LEN) as u64;
        let chunks = body.div_ceil(full).max(1);
        let plain = body.checked_sub(chunks * TAG_LEN as u64)?;
        (self.sealed_len(plain) == sealed).then_some(plain)
    }
}

/// Encrypts a stream: push plaintext in, take sealed bytes out, then `finish`.
pub struct Sealer {
    key: LessSafeKey,
    header: Header,
    aad: Vec<u8>,
    index: u64,
    pending: Vec<u8>,
}

impl Sealer {
    /// Starts an object named `object` under the data key `key_id`; `out` gets the header.
    pub fn new(key: DataKey, key_id: &str, object: &str, out: &mut Vec<u8>) -> Self {
        let header = Header::new(key_id);
        let mut aad = header.to_bytes();
        out.extend_from_slice(&aad);
        aad.extend_from_slice(object.as_bytes());
        Sealer {
            key: key.object_key(&header.salt),
            header,
            aad,
            index: 0,
            pending: Vec::with_capacity(CHUNK_SIZE + TAG_LEN),
        }
    }

    /// Adds plaintext; whole chunks are sealed into `out` once more data follows them (the
    /// last chunk is only known at `finish`).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), StoreError> {
        let size = self.header.chunk_size;
        while !data.is_empty() {
            if self.pending.len() == size {
                self.seal_pending(false, out)?;
            }
            let take = (size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the last chunk (possibly empty).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), StoreError> {
        self.seal_pending(true, out)
    }

    fn seal_pending(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let nonce = self.header.nonce(self.index, last)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&self.aad), &mut self.pending)
            .map_err(|_| StoreError::Crypto("sealing failed".into()))?;
        out.extend_from_slice(&self.pending);
        out.extend_from_slice(tag.as_ref());
        self.pending.clear();
        self.index += 1;
        Ok(())
    }
}

/// Decrypts the chunks of one object, in any order.
pub struct Opener {
    key: LessSafeKey,
    header: Header,
    aad: Vec<u8>,
    plain: u64,
    chunks: u64,
    object: String,
}

impl Opener {
    /// For the object `object` of `sealed_len` bytes whose header is `header`.
    pub fn new(key: DataKey, header: Header, object: &str, sealed_len: u64) -> Result<Self, StoreError> {
        let plain = header
            .plain_len(sealed_len)
            .ok_or_else(|| StoreError::Crypto(format!("{object}: {sealed_len} bytes is not a whole object")))?;
        let chunks = plain.div_ceil(header.chunk_size as u64).max(1);
        let mut aad = header.to_bytes();
        aad.extend_from_slice(object.as_bytes());
        Ok(Opener { key: key.object_key(&header.salt), header, aad, plain, chunks, object: object.to_owned() })
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    pub fn plain_len(&self) -> u64 {
        self.plain
    }

    pub fn chunk_size(&self) -> u64 {
        self.header.chunk_size as u64
    }

    /// Byte range of chunk `index` in the sealed object.
    pub fn chunk_range(&self, index: u64) -> std::ops::Range<u64> {
        let full = (self.header.chunk_size + TAG_LEN) as u64;
        let start = self.header.byte_len() as u64 + index * full;
        start..(start + full).min(self.header.sealed_len(self.plain))
    }

    /// Decrypts chunk `index` in place; `sealed` is exactly its [`chunk_range`](Self::chunk_range).
    pub fn open<'a>(&self, index: u64, sealed: &'a mut [u8]) -> Result<&'a mut [u8], StoreError> {
        let expected = self.chunk_range(index);
        if index >= self.chunks || sealed.len() as u64 != expected.end - expected.start {
            return Err(StoreError::Crypto(format!("{}: chunk {index} is cut short", self.object)));
        }
        let nonce = self.header.nonce(index, index + 1 == self.chunks)?;
        self.key.open_in_place(nonce, Aad::from(&self.aad), sealed).map_err(|_| {
            StoreError::Crypto(format!("{}: chunk {index} fails authentication (tampered or damaged)", self.object))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(key: &[u8; 32], object: &str, plain: &[u8], pieces: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = Sealer::new(DataKey::from_bytes(key), "dek_1", object, &mut out);
        for piece in plain.chunks(pieces.max(1)) {
            s.push(piece, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out
    }

    fn open_all(key: &[u8; 32], object: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let header = Header::parse(sealed, object)?;
        let o = Opener::new(DataKey::from_bytes(key), header, object, sealed.len() as u64)?;
        let mut plain = Vec::new();
        for i in 0..o.chunks() {
            let r = o.chunk_range(i);
            let mut chunk = sealed[r.start as usize..r.end as usize].to_vec();
            plain.extend_from_slice(o.open(i, &mut chunk)?);
        }
        Ok(plain)
    }

    #[test]
    fn round_trips_at_every_size_around_chunk_edges() {
        let key = [7u8; 32];
        for len in [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, 3 * CHUNK_SIZE + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for pieces in [1000, CHUNK_SIZE, len + 1] {
                let sealed = seal(&key, "o", &plain, pieces);
                let header = Header::parse(&sealed, "o").unwrap();
                assert_eq!(header.sealed_len(len as u64), sealed.len() as u64, "len {len}");
                assert_eq!(header.plain_len(sealed.len() as u64), Some(len as u64));
                assert_eq!(open_all(&key, "o", &sealed).unwrap(), plain, "len {len} pieces {pieces}");
            }
        }
    }

    #[test]
    fn tampering_cutting_moving_or_a_wrong_key_fail() {
        let key = [7u8; 32];
        let plain: Vec<u8> = b"store footage ".iter().copied().cycle().take(2 * CHUNK_SIZE + 100).collect();
        let sealed = seal(&key, "a", &plain, 4096);
        assert!(!sealed.windows(14).any(|w| w == b"store footage "), "plaintext visible in ciphertext");
        for at in [0, 20, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(open_all(&key, "a", &bad).is_err(), "flipped byte {at} went unnoticed");
        }
        // Cut at a chunk boundary: the new last chunk was not sealed as the last.
        let header = Header::parse(&sealed, "a").unwrap();
        let cut = header.byte_len() + 2 * (CHUNK_SIZE + TAG_LEN);
        let err = open_all(&key, "a", &sealed[..cut]).unwrap_err();
        assert!(err.to_string().contains("fails authentication"), "{err}");
        assert!(open_all(&key, "b", &sealed).is_err(), "an object renamed still opened");
        assert!(open_all(&[8u8; 32], "a", &sealed).is_err(), "a wrong key opened it");
        let err = open_all(&key, "a", &sealed[..10]).unwrap_err();
        assert!(err.to_string().contains("bad header"), "{err}");
    }

    #[test]
    fn data_keys_are_wrapped_and_bound_to_their_label() {
        let master = MasterKey::parse(&MasterKey::generate()).unwrap();
        let other = MasterKey::parse(&MasterKey::generate()).unwrap();
        assert_ne!(master.id(), other.id());
        let dek = new_data_key_bytes();
        let wrapped = master.wrap(&dek, "org_a/dek_1");
        assert!(!wrapped.contains(&hex::encode(dek)));
        let opened = master.unwrap(&wrapped, "org_a/dek_1").unwrap();
        let sealed = seal(&dek, "x", b"hello", 10);
        let header = Header::parse(&sealed, "x").unwrap();
        let o = Opener::new(opened, header, "x", sealed.len() as u64).unwrap();
        let mut c = sealed[o.chunk_range(0).start as usize..].to_vec();
        assert_eq!(o.open(0, &mut c).unwrap(), b"hello");
        assert!(master.unwrap(&wrapped, "org_b/dek_1").is_err(), "a key moved to another org opened");
        let err = other.unwrap(&wrapped, "org_a/dek_1").unwrap_err();
        assert!(err.to_string().contains("master key"), "{err}");
        assert!(MasterKey::parse("abc").is_err());
        let text = MasterKey::generate();
        let debug = format!("{:?}", MasterKey::parse(&text).unwrap());
        assert!(debug.starts_with("MasterKey(") && !debug.contains(&text[..16]), "{debug}");
    }
}
