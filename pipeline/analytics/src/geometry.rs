/// A directed segment with precomputed unit normal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    a: [f32; 2],
    dir: [f32; 2],
    len: f32,
}

impl Segment {
    pub fn new(a: [f32; 2], b: [f32; 2]) -> Self {
        let d = [b[0] - a[0], b[1] - a[1]];
        let len = (d[0] * d[0] + d[1] * d[1]).sqrt();
        let dir = if len > 0.0 { [d[0] / len, d[1] / len] } else { [0.0, 0.0] };
        Segment { a, dir, len }
    }

    pub fn length(&self) -> f32 {
        self.len
    }

    /// Distance from the infinite line, positive on the left of a -> b (image axes).
    pub fn signed_distance(&self, p: [f32; 2]) -> f32 {
        let v = [p[0] - self.a[0], p[1] - self.a[1]];
        self.dir[0] * v[1] - self.dir[1] * v[0]
    }

    /// Position of p's projection along the segment: 0 at a, 1 at b.
    pub fn along(&self, p: [f32; 2]) -> f32 {
        if self.len == 0.0 {
            return 0.0;
        }
        ((p[0] - self.a[0]) * self.dir[0] + (p[1] - self.a[1]) * self.dir[1]) / self.len
    }

    /// Distance from p to the segment itself.
    pub fn distance(&self, p: [f32; 2]) -> f32 {
        let t = self.along(p).clamp(0.0, 1.0) * self.len;
        let q = [self.a[0] + self.dir[0] * t, self.a[1] + self.dir[1] * t];
        ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt()
    }
}

/// Even-odd point-in-polygon test.
pub fn point_in_polygon(p: [f32; 2], poly: &[[f32; 2]]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (pi, pj) = (poly[i], poly[j]);
        if (pi[1] > p[1]) != (pj[1] > p[1]) && p[0] < (pj[0] - pi[0]) * (p[1] - pi[1]) / (pj[1] - pi[1]) + pi[0] {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Distance from p to the polygon's boundary.
pub(crate) fn distance_to_boundary(p: [f32; 2], poly: &[[f32; 2]]) -> f32 {
    (0..poly.len()).map(|i| Segment::new(poly[i], poly[(i + 1) % poly.len()]).distance(p)).fold(f32::INFINITY, f32::min)
}

pub(crate) fn polygon_area(poly: &[[f32; 2]]) -> f32 {
    let n = poly.len();
    let twice: f32 = (0..n).map(|i| poly[i][0] * poly[(i + 1) % n][1] - poly[(i + 1) % n][0] * poly[i][1]).sum();
    twice.abs() / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polygon_tests() {
        let sq = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]];
        assert!(point_in_polygon([0.4, 0.4], &sq));
        assert!(!point_in_polygon([0.7, 0.4], &sq));
        assert!((polygon_area(&sq) - 0.16).abs() < 1e-6);
        assert!((distance_to_boundary([0.7, 0.4], &sq) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn segment_sides() {
        let s = Segment::new([0.0, 0.5], [1.0, 0.5]);
        assert!(s.signed_distance([0.5, 0.7]) > 0.0);
        assert!(s.signed_distance([0.5, 0.3]) < 0.0);
        assert!((s.along([0.25, 0.9]) - 0.25).abs() < 1e-6);
    }
}
