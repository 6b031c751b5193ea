//! Drawing boxes, ids, lines and zones onto RGBx frames for the annotated video.

use retail_analytics::{LineConfig, ZoneConfig};
use retail_core::TrackedObject;

/// A mutable RGBx image.
pub struct Canvas<'a> {
    pub width: usize,
    pub height: usize,
    pub rgbx: &'a mut [u8],
}

// 3x5 digit glyphs, one row of 3 bits per entry, top row first.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

impl Canvas<'_> {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 4;
            self.rgbx[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0.max(0)..y1.min(self.height as i64) {
            for x in x0.max(0)..x1.min(self.width as i64) {
                self.put(x, y, c);
            }
        }
    }

    /// A line `thickness` pixels wide between two normalised points.
    pub fn line(&mut self, a: [f32; 2], b: [f32; 2], thickness: i64, c: [u8; 3]) {
        let (w, h) = (self.width as f32, self.height as f32);
        let (x0, y0, x1, y1) = (a[0] * w, a[1] * h, b[0] * w, b[1] * h);
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        let r = thickness / 2;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            let (x, y) = ((x0 + (x1 - x0) * t) as i64, (y0 + (y1 - y0) * t) as i64);
            self.fill(x - r, y - r, x - r + thickness, y - r + thickness, c);
        }
    }

    /// A number drawn with the digit font at `scale` pixels per font pixel, on a dark plate.
    pub fn number(&mut self, x: i64, y: i64, n: u64, scale: i64, c: [u8; 3]) {
        let text = n.to_string();
        let w = text.len() as i64 * 4 * scale + scale;
        self.fill(x, y, x + w, y + 7 * scale, [0, 0, 0]);
        for (k, ch) in text.bytes().enumerate() {
            let glyph = DIGITS[(ch - b'0') as usize];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        let px = x + scale + (k as i64 * 4 + col) * scale;
                        let py = y + scale + row as i64 * scale;
                        self.fill(px, py, px + scale, py + scale, c);
                    }
                }
            }
        }
    }
}

fn color_for(id: u64) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 6] =
        [[46, 204, 113], [52, 152, 219], [231, 76, 60], [241, 196, 15], [155, 89, 182], [26, 188, 156]];
    PALETTE[(id % PALETTE.len() as u64) as usize]
}

/// Draws zones (cyan), lines (yellow) and tracked people (box + id) onto one frame.
pub fn annotate(canvas: &mut Canvas<'_>, lines: &[LineConfig], zones: &[ZoneConfig], tracks: &[TrackedObject]) {
    let scale = (canvas.height as i64 / 240).max(1);
    for z in zones {
        for i in 0..z.polygon.len() {
            canvas.line(z.polygon[i], z.polygon[(i + 1) % z.polygon.len()], scale, [0, 220, 255]);
        }
    }
    for l in lines {
        canvas.line(l.from, l.to, 2 * scale, [255, 220, 0]);
    }
    for t in tracks {
        let c = color_for(t.track_id);
        let b = t.bbox.clamped();
        for (a, z) in [
            ([b.x1, b.y1], [b.x2, b.y1]),
            ([b.x2, b.y1], [b.x2, b.y2]),
            ([b.x2, b.y2], [b.x1, b.y2]),
            ([b.x1, b.y2], [b.x1, b.y1]),
        ] {
            canvas.line(a, z, scale, c);
        }
        let x = (b.x1 * canvas.width as f32) as i64;
        let y = (b.y1 * canvas.height as f32) as i64 - 7 * scale;
        canvas.number(x, y.max(0), t.track_id, scale, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retail_core::BBox;

    #[test]
    fn draws_box_edges_and_leaves_inside() {
        let (w, h) = (100usize, 80usize);
        let mut buf = vec![0u8; w * h * 4];
        let mut canvas = Canvas { width: w, height: h, rgbx: &mut buf };
        let t = TrackedObject { track_id: 6, bbox: BBox::new(0.2, 0.25, 0.6, 0.75), score: 0.9 };
        annotate(&mut canvas, &[], &[], &[t]);
        let px = |x: usize, y: usize| &buf[(y * w + x) * 4..(y * w + x) * 4 + 3];
        assert_eq!(px(40, 20), &color_for(6)[..], "top edge");
        assert_eq!(px(40, 40), &[0, 0, 0][..], "inside untouched");
        assert_eq!(px(90, 70), &[0, 0, 0][..], "outside untouched");
    }
}
