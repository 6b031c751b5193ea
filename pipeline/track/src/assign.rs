// Index loops mirror the matrix formulas they implement; iterator chains would hide them.
#![allow(clippy::needless_range_loop)]

/// Minimum-cost assignment (Hungarian algorithm, O(n^2 m)) of rows to columns, keeping only
/// pairs whose cost is at most `max_cost`. Returns (row, column) pairs.
///
/// Pairs above `max_cost` are priced prohibitively before solving, so the gate shapes the
/// optimum rather than being applied to an ungated solution afterwards.
pub fn assign(cost: &[Vec<f32>], max_cost: f32) -> Vec<(usize, usize)> {
    let rows = cost.len();
    let cols = cost.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    const GATED: f64 = 1e6;
    let transposed = rows > cols;
    let (n, m) = if transposed { (cols, rows) } else { (rows, cols) };
    let at = |i: usize, j: usize| -> f64 {
        let c = if transposed { cost[j][i] } else { cost[i][j] };
        if c <= max_cost { c as f64 } else { GATED }
    };
    let mut pairs = Vec::new();
    for (i, j) in hungarian(n, m, at) {
        let (r, c) = if transposed { (j, i) } else { (i, j) };
        if cost[r][c] <= max_cost {
            pairs.push((r, c));
        }
    }
    pairs.sort_unstable();
    pairs
}

/// The minimum-cost matching of every one of `n` rows to one of `m >= n` columns, as
/// (row, column) pairs; `cost(row, column)` must be finite.
pub fn hungarian(n: usize, m: usize, cost: impl Fn(usize, usize) -> f64) -> Vec<(usize, usize)> {
    assert!(n <= m, "hungarian: {n} rows > {m} columns; transpose first");
    debug_assert!((0..n).all(|i| (0..m).all(|j| cost(i, j).is_finite())), "hungarian: a cost is not finite");
    // e-maxx formulation, 1-based with potentials u, v; p[j] = row matched to column j.
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=m).filter(|&j| p[j] != 0).map(|j| (p[j] - 1, j - 1)).collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_global_optimum_not_greedy() {
        // Greedy would take (0,0)=0.1 then (1,1)=0.9; optimum is (0,1)+(1,0) = 0.4.
        let cost = vec![vec![0.1, 0.2], vec![0.2, 0.9]];
        assert_eq!(assign(&cost, 1.0), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn gate_drops_pairs_and_handles_rectangles() {
        let cost = vec![vec![0.9, 0.1, 0.95]];
        assert_eq!(assign(&cost, 0.5), vec![(0, 1)]);
        let tall = vec![vec![0.9], vec![0.3], vec![0.2]];
        assert_eq!(assign(&tall, 0.5), vec![(2, 0)]);
        assert!(assign(&[vec![0.9, 0.8]], 0.5).is_empty());
        assert!(assign(&[], 0.5).is_empty());
    }
}
