//! What an upload is, from its first bytes, whatever its name or declared type says.

use serde::Serialize;

/// Bytes looked at.
pub const SNIFF_BYTES: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Video,
    Image,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Video => "video",
            MediaKind::Image => "image",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [MediaKind::Video, MediaKind::Image].into_iter().find(|k| k.as_str() == text)
    }
}

/// The kind and media type of a file starting with `head`, if it is a video or image
/// container this platform decodes.
pub fn sniff(head: &[u8]) -> Option<(MediaKind, &'static str)> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let video = |t| Some((MediaKind::Video, t));
    let image = |t| Some((MediaKind::Image, t));
    if at(4, b"ftyp") {
        return if at(8, b"qt  ") { video("video/quicktime") } else { video("video/mp4") };
    }
    if at(4, b"moov") || at(4, b"mdat") || at(4, b"free") || at(4, b"wide") {
        return video("video/quicktime");
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return video("video/x-matroska");
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return video("video/x-msvideo");
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return image("image/webp");
    }
    if at(0, b"FLV\x01") {
        return video("video/x-flv");
    }
    if at(0, &[0, 0, 1, 0xBA]) {
        return video("video/mpeg");
    }
    // MPEG-TS: a sync byte at the start of each 188-byte packet.
    if head.len() > 376 && [0, 188, 376].iter().all(|&i| head[i] == 0x47) {
        return video("video/mp2t");
    }
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        return image("image/jpeg");
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return image("image/png");
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return image("image/gif");
    }
    if at(0, b"BM") && head.len() >= 14 {
        return image("image/bmp");
    }
    if at(0, b"II*\0") || at(0, b"MM\0*") {
        return image("image/tiff");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_told_apart_from_other_bytes() {
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0\x02\0"), Some((MediaKind::Video, "video/mp4")));
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  "), Some((MediaKind::Video, "video/quicktime")));
        assert_eq!(sniff(&[0x1A, 0x45, 0xDF, 0xA3, 1]), Some((MediaKind::Video, "video/x-matroska")));
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Some((MediaKind::Video, "video/x-msvideo")));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some((MediaKind::Image, "image/jpeg")));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0"), Some((MediaKind::Image, "image/png")));
        for other in [&b""[..], b"hello world", b"%PDF-1.7", b"PK\x03\x04zip", b"\x7fELF\x02\x01", b"<html>"] {
            assert_eq!(sniff(other), None, "{other:?}");
        }
    }
}
