//! A camera's RTSP address. Its user name and password are secrets: they are kept apart
//! from the address GStreamer is given (they travel as `rtspsrc` properties, so no GStreamer
//! message can carry them), and every way of printing the URL masks them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An `rtsp://` or `rtsps://` URL whose credentials never reach a log, error, metric or event.
#[derive(Clone, PartialEq, Eq)]
pub struct CameraUrl {
    /// The URL without user name and password, as handed to GStreamer.
    location: String,
    user: Option<String>,
    password: Option<String>,
}

impl CameraUrl {
    /// Parses and checks a camera URL. The error never repeats the text (it may hold a
    /// password).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "rtsp" | "rtsps" | "rtspt") {
            return Err(format!("a camera URL starts with rtsp://, rtsps:// or rtspt://, not {}://", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the camera URL has no host".into());
        }
        let user = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(percent_decode);
        // Cannot fail for a URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(CameraUrl { location: url.to_string(), user, password })
    }

    /// The address without credentials (safe to show).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// User name and password, for the RTSP client only. Never log them.
    pub fn credentials(&self) -> (Option<&str>, Option<&str>) {
        (self.user.as_deref(), self.password.as_deref())
    }

    /// Whether the URL carries a user name or password.
    pub fn has_credentials(&self) -> bool {
        self.user.is_some() || self.password.is_some()
    }

    /// Everything in the URL that may be a secret: the password and the query (many
    /// recorders take `?user=…&password=…`).
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self.password.iter().cloned().collect();
        if let Some((_, query)) = self.location.split_once('?') {
            out.push(query.to_owned());
        }
        out
    }
}

impl fmt::Display for CameraUrl {
    /// `rtsp://…@host/path?…`: credentials and the query (which may hold them) masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (base, query) = match self.location.split_once('?') {
            Some((base, _)) => (base, "?…"),
            None => (self.location.as_str(), ""),
        };
        match base.split_once("://") {
            Some((scheme, rest)) if self.has_credentials() => write!(f, "{scheme}://…@{rest}{query}"),
            _ => write!(f, "{base}{query}"),
        }
    }
}

impl fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CameraUrl({self})")
    }
}

impl Serialize for CameraUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CameraUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CameraUrl::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// `%XX` escapes in a URL's user or password, decoded (invalid escapes are kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_off_and_masked() {
        let url = CameraUrl::parse("rtsp://admin:s%40cret@10.1.2.3:554/Streaming/101").unwrap();
        assert_eq!(url.location(), "rtsp://10.1.2.3:554/Streaming/101");
        assert_eq!(url.credentials(), (Some("admin"), Some("s@cret")));
        for shown in [url.to_string(), format!("{url:?}"), serde_json::to_string(&url).unwrap()] {
            assert!(!shown.contains("admin") && !shown.contains("cret"), "{shown}");
            assert!(shown.contains("rtsp://…@10.1.2.3:554/Streaming/101"), "{shown}");
        }
    }

    #[test]
    fn credentials_in_the_query_are_masked_too() {
        let url = CameraUrl::parse("rtsp://10.1.2.3/live?user=admin&password=hunter2").unwrap();
        assert_eq!(url.to_string(), "rtsp://10.1.2.3/live?…");
        assert_eq!(url.location(), "rtsp://10.1.2.3/live?user=admin&password=hunter2");
        assert_eq!(url.secrets(), vec!["user=admin&password=hunter2".to_owned()]);
    }

    #[test]
    fn url_without_credentials_is_shown_as_is() {
        let url = CameraUrl::parse("rtsp://127.0.0.1:8554/cam").unwrap();
        assert_eq!(url.to_string(), "rtsp://127.0.0.1:8554/cam");
        assert!(!url.has_credentials());
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        let err = CameraUrl::parse("http://user:hunter2@cam/x").unwrap_err();
        assert!(err.contains("http://") && !err.contains("hunter2"), "{err}");
        let err = CameraUrl::parse("rtsp//user:hunter2@cam").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
