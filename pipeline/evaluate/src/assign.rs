//! Minimum-cost assignment with forbidden pairs, the role scipy's `linear_sum_assignment`
//! plays in motmetrics, on the tracker's Hungarian solver.

use retail_track::hungarian;

/// A cost that marks a pair that must not be matched.
pub type Cost = Option<f64>;

/// Pairs `(row, column)` of a minimum-cost matching of `costs` (rows × columns) that first
/// matches as many allowed pairs as possible, then minimises their summed cost. Forbidden
/// pairs (`None`) are never returned.
pub fn assign(costs: &[Vec<Cost>]) -> Vec<(usize, usize)> {
    let rows = costs.len();
    let cols = costs.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // A forbidden pair costs more than any set of allowed ones, as motmetrics' own
    // `add_expensive_edges` does, so fewer forbidden pairs always wins.
    let worst = costs.iter().flatten().flatten().filter(|c| c.is_finite()).fold(0.0_f64, |m, c| m.max(c.abs())) + 1.0;
    let forbidden = 2.0 * rows.min(cols) as f64 * worst + 1.0;
    // A NaN cost would never settle the solver: it is a forbidden pair.
    let dense = |r: usize, c: usize| costs[r][c].filter(|c| c.is_finite()).unwrap_or(forbidden);
    let pairs = if rows <= cols {
        hungarian(rows, cols, dense)
    } else {
        hungarian(cols, rows, |r, c| dense(c, r)).into_iter().map(|(c, r)| (r, c)).collect()
    };
    pairs.into_iter().filter(|&(r, c)| costs[r][c].is_some_and(f64::is_finite)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every matching by brute force: the most allowed pairs, then the least cost.
    fn brute(costs: &[Vec<Cost>]) -> (usize, f64) {
        fn go(costs: &[Vec<Cost>], r: usize, used: &mut Vec<bool>) -> (usize, f64) {
            if r == costs.len() {
                return (0, 0.0);
            }
            let mut best = go(costs, r + 1, used);
            for c in 0..used.len() {
                if let (false, Some(x)) = (used[c], costs[r][c]) {
                    used[c] = true;
                    let (n, s) = go(costs, r + 1, used);
                    used[c] = false;
                    if n + 1 > best.0 || (n + 1 == best.0 && s + x < best.1 - 1e-12) {
                        best = (n + 1, s + x);
                    }
                }
            }
            best
        }
        go(costs, 0, &mut vec![false; costs[0].len()])
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f64 / 10_000.0
        };
        for round in 0..300 {
            let (rows, cols) = (1 + round % 5, 1 + (round / 5) % 6);
            let costs: Vec<Vec<Cost>> =
                (0..rows).map(|_| (0..cols).map(|_| Some(next()).filter(|c| *c < 0.6)).collect()).collect();
            let pairs = assign(&costs);
            let mut seen_r = std::collections::HashSet::new();
            let mut seen_c = std::collections::HashSet::new();
            assert!(pairs.iter().all(|(r, c)| seen_r.insert(*r) && seen_c.insert(*c)), "not one-to-one");
            let total: f64 = pairs.iter().map(|&(r, c)| costs[r][c].unwrap()).sum();
            let (n, best) = brute(&costs);
            assert_eq!(pairs.len(), n, "{costs:?}");
            assert!((total - best).abs() < 1e-9, "{total} vs {best} for {costs:?}");
        }
    }
}
