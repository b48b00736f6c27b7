//! Analytics over Bifrost's own records, as pure functions: the homes read
//! the store, these compute, the homes keep the results. Each number's
//! rule is written beside its code and in docs/analytics.md.
//!
//! - [`window`]: the closed time windows a run covers, and the ones a
//!   schedule missed;
//! - [`dora`]: DORA's four keys from the deployments that went live;
//! - [`cost`]: OpenCost's allocation rule over replicas' usage;
//! - [`anomaly`]: a rolling median absolute deviation per series;
//! - [`run`]: one app over one window: cost and anomalies together.

pub mod anomaly;
pub mod cost;
pub mod dora;
pub mod run;
pub mod window;

/// The `q` quantile (0–1) of `values` by nearest rank (`None` when
/// empty): the smallest value with at least `q` of them at or under it.
/// Nearest rank, not interpolation, so a reported p50 is a duration that
/// happened.
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_a_value_that_occurred() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(nearest_rank(&v, 0.5), Some(3.0));
        assert_eq!(nearest_rank(&v, 0.9), Some(5.0));
        assert_eq!(nearest_rank(&v, 0.0), Some(1.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_middle_pairs_mean() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }
}
