// Index loops mirror the matrix formulas they implement; iterator chains would hide them.
#![allow(clippy::needless_range_loop)]

use retail_core::BBox;

// Noise relative to box height, as in SORT/ByteTrack: uncertainty scales with apparent size.
const STD_POSITION: f64 = 1.0 / 20.0;
const STD_VELOCITY: f64 = 1.0 / 160.0;

type Mat8 = [[f64; 8]; 8];

/// Constant-velocity Kalman filter on (cx, cy, aspect = w/h, h) and their velocities.
#[derive(Clone, Debug)]
pub struct KalmanBox {
    mean: [f64; 8],
    cov: Mat8,
}

fn xyah(b: &BBox) -> [f64; 4] {
    let (w, h) = (b.width() as f64, (b.height() as f64).max(1e-6));
    let c = b.center();
    [c.x as f64, c.y as f64, w / h, h]
}

impl KalmanBox {
    pub fn new(b: &BBox) -> Self {
        let z = xyah(b);
        let h = z[3];
        let std = [
            2.0 * STD_POSITION * h,
            2.0 * STD_POSITION * h,
            1e-2,
            2.0 * STD_POSITION * h,
            10.0 * STD_VELOCITY * h,
            10.0 * STD_VELOCITY * h,
            1e-5,
            10.0 * STD_VELOCITY * h,
        ];
        let mut cov = [[0.0; 8]; 8];
        for i in 0..8 {
            cov[i][i] = std[i] * std[i];
        }
        KalmanBox { mean: [z[0], z[1], z[2], z[3], 0.0, 0.0, 0.0, 0.0], cov }
    }

    /// Advances one frame.
    pub fn predict(&mut self) {
        let h = self.mean[3];
        for i in 0..4 {
            self.mean[i] += self.mean[i + 4];
        }
        // P = F P F^T + Q with F = [[I, I], [0, I]]: add velocity rows, then columns.
        for i in 0..4 {
            for j in 0..8 {
                self.cov[i][j] += self.cov[i + 4][j];
            }
        }
        for row in &mut self.cov {
            for j in 0..4 {
                row[j] += row[j + 4];
            }
        }
        let q = [
            STD_POSITION * h,
            STD_POSITION * h,
            1e-2,
            STD_POSITION * h,
            STD_VELOCITY * h,
            STD_VELOCITY * h,
            1e-5,
            STD_VELOCITY * h,
        ];
        for i in 0..8 {
            self.cov[i][i] += q[i] * q[i];
        }
    }

    /// Corrects the state with a measured box.
    pub fn update(&mut self, b: &BBox) {
        let z = xyah(b);
        let h = self.mean[3];
        let r = [STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h];
        // S = H P H^T + R (top-left 4x4 block).
        let mut s = [[0.0; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                s[i][j] = self.cov[i][j];
            }
            s[i][i] += r[i] * r[i];
        }
        let Some(s_inv) = invert4(&s) else { return };
        // K = P H^T S^-1 (8x4).
        let mut k = [[0.0; 4]; 8];
        for i in 0..8 {
            for j in 0..4 {
                k[i][j] = (0..4).map(|l| self.cov[i][l] * s_inv[l][j]).sum();
            }
        }
        let y: Vec<f64> = (0..4).map(|i| z[i] - self.mean[i]).collect();
        for i in 0..8 {
            self.mean[i] += (0..4).map(|j| k[i][j] * y[j]).sum::<f64>();
        }
        // P = P - K H P, where H P is the top four rows of P.
        let hp: Vec<[f64; 8]> = (0..4).map(|i| self.cov[i]).collect();
        for i in 0..8 {
            for j in 0..8 {
                self.cov[i][j] -= (0..4).map(|l| k[i][l] * hp[l][j]).sum::<f64>();
            }
        }
    }

    /// The current box estimate.
    pub fn bbox(&self) -> BBox {
        let [cx, cy, a, h] = [self.mean[0], self.mean[1], self.mean[2], self.mean[3]];
        let w = a * h;
        BBox::new((cx - w / 2.0) as f32, (cy - h / 2.0) as f32, (cx + w / 2.0) as f32, (cy + h / 2.0) as f32)
    }
}

/// Gauss-Jordan inverse with partial pivoting; `None` if singular.
fn invert4(m: &[[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
    let mut a = *m;
    let mut inv = [[0.0; 4]; 4];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..4 {
        let pivot = (col..4).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-18 {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let d = a[col][col];
        for j in 0..4 {
            a[col][j] /= d;
            inv[col][j] /= d;
        }
        for r in 0..4 {
            if r != col {
                let f = a[r][col];
                for j in 0..4 {
                    a[r][j] -= f * a[col][j];
                    inv[r][j] -= f * inv[col][j];
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_constant_velocity() {
        let mut k = KalmanBox::new(&BBox::new(0.1, 0.2, 0.2, 0.5));
        for t in 1..20 {
            k.predict();
            let dx = 0.01 * t as f32;
            k.update(&BBox::new(0.1 + dx, 0.2, 0.2 + dx, 0.5));
        }
        k.predict();
        let b = k.bbox();
        assert!((b.x1 - 0.30).abs() < 0.01, "{b:?}");
        assert!((b.height() - 0.3).abs() < 0.01, "{b:?}");
    }

    #[test]
    fn inverse_of_diagonal() {
        let m = [[2.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0]];
        let inv = invert4(&m).unwrap();
        assert_eq!(inv[0][0], 0.5);
        assert_eq!(inv[2][2], 2.0);
        assert!(invert4(&[[0.0; 4]; 4]).is_none());
    }
}
