use retail_core::{EVENT_SCHEMA_VERSION, Event};

/// Why a message on the events topic is not an event this build understands.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON without a known `schema_version`.
    #[error("unknown schema_version {0} (this build reads {EVENT_SCHEMA_VERSION})")]
    UnknownVersion(String),
    /// The right version but fields missing or of the wrong type.
    #[error("invalid event: {0}")]
    Invalid(String),
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("events always serialise")
}

pub fn decode_event(payload: &[u8]) -> Result<Event, DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    match value.get("schema_version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == EVENT_SCHEMA_VERSION as u64 => {}
        other => {
            return Err(DecodeError::UnknownVersion(other.map_or_else(|| "missing".into(), |v| v.to_string())));
        }
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_core::{EventKind, TenantId};

    #[test]
    fn round_trip_and_rejections() {
        let e = Event::new(TenantId::default(), "cam".into(), 1, 5, 6, EventKind::ZoneEnter { zone: "z".into() });
        assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
        assert!(matches!(decode_event(b"\x00garbage"), Err(DecodeError::NotJson(_))));
        let v2 = String::from_utf8(encode_event(&e)).unwrap().replace("\"schema_version\":1", "\"schema_version\":2");
        assert_eq!(decode_event(v2.as_bytes()), Err(DecodeError::UnknownVersion("2".into())));
        assert!(matches!(decode_event(br#"{"schema_version":1}"#), Err(DecodeError::Invalid(_))));
    }

    /// Arbitrary bytes and damaged events (every byte flipped in turn, every truncation,
    /// random bytes) decode to an error or an event, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let e = Event::new(
            TenantId("acme".into()),
            "door".into(),
            7,
            5,
            6,
            retail_core::EventKind::ZoneExit { zone: "z".into(), dwell_s: 1.5, reason: retail_core::ExitReason::Left },
        );
        let good = encode_event(&e);
        for i in 0..good.len() {
            let _ = decode_event(&good[..i]);
            for bit in [0x01, 0x20, 0x80] {
                let mut bad = good.clone();
                bad[i] ^= bit;
                let _ = decode_event(&bad);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..20_000usize {
            let bytes: Vec<u8> = (0..n % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly JSON-ish characters, so the parser gets deep.
                    let alphabet = b"{}[]\":,0123456789.eE-+ truenullfalseschema_version";
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = decode_event(&bytes);
        }
        // Deep nesting is refused, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(decode_event(deep.as_bytes()).is_err());
    }
}
