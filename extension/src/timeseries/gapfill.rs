//! Gap filling: every bucket of a range, with the buckets that have no
//! value left NULL, carried forward (LOCF) or linearly interpolated. Pure
//! Rust over timestamps in PostgreSQL's representation; `mod.rs` wraps it.

use super::bucket::{self, BucketError, Plan, Width};
use std::fmt;

/// Most buckets one call may produce.
pub const MAX_BUCKETS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// missing buckets stay NULL
    None,
    /// last observation carried forward
    Locf,
    /// linear interpolation between the neighbouring known values
    Linear,
}

impl Fill {
    pub fn parse(s: &str) -> Option<Fill> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "null" => Some(Fill::None),
            "locf" => Some(Fill::Locf),
            "linear" | "interpolate" => Some(Fill::Linear),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum GapError {
    Bucket(BucketError),
    TooMany,
    /// two values fall into the bucket starting at this timestamp
    Duplicate(i64),
    /// times and values have different lengths
    Lengths(usize, usize),
    /// a point at -infinity or infinity (it has no bucket to fill from)
    NotFinite(i64),
}

impl From<BucketError> for GapError {
    fn from(e: BucketError) -> Self {
        GapError::Bucket(e)
    }
}

impl fmt::Display for GapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GapError::Bucket(e) => e.fmt(f),
            GapError::TooMany => write!(f, "too many buckets"),
            GapError::Duplicate(_) => write!(f, "more than one value for a bucket"),
            GapError::Lengths(a, b) => write!(f, "times and values differ in length ({a} and {b})"),
            GapError::NotFinite(_) => write!(f, "gap filling needs finite times"),
        }
    }
}

/// The bucket starts covering [start, finish) for `plan`: from the bucket
/// holding `start` up to the last bucket starting before `finish`.
/// `step` maps a bucket start to the next one (calendar-aware).
pub fn grid_with(start_bucket: i64, finish: i64, mut step: impl FnMut(i64) -> Result<i64, GapError>) -> Result<Vec<i64>, GapError> {
    let mut out = Vec::new();
    let mut b = start_bucket;
    while b < finish {
        if out.len() >= MAX_BUCKETS {
            return Err(GapError::TooMany);
        }
        out.push(b);
        let next = step(b)?;
        if next <= b {
            return Err(GapError::Bucket(BucketError::NonPositive));
        }
        b = next;
    }
    Ok(out)
}

/// The UTC (or timestamp) grid: fixed widths step by the period, months by
/// the calendar.
pub fn grid(plan: Plan, start: i64, finish: i64, origin: Option<i64>) -> Result<Vec<i64>, GapError> {
    if !bucket::is_finite(start) || !bucket::is_finite(finish) {
        return Err(GapError::TooMany);
    }
    let first = bucket::bucket_ts(plan, start, origin)?;
    grid_with(first, finish, |b| match plan {
        Plan::Fixed(p) => b.checked_add(p).ok_or(GapError::Bucket(BucketError::OutOfRange)),
        Plan::Months(m) => Ok(bucket::add_interval(b, Width::new(m, 0, 0))?),
    })
}

/// Values for each grid bucket. `points` are (bucket start, value) pairs,
/// sorted by time; each must be a bucket start (use `bucket_ts` first);
/// points before the grid seed LOCF and anchor interpolation on the left,
/// points after it anchor interpolation on the right. NULL values count as
/// missing.
pub fn fill(grid: &[i64], points: &[(i64, Option<f64>)], how: Fill) -> Result<Vec<Option<f64>>, GapError> {
    if let Some(&(t, _)) = points.iter().find(|(t, _)| !bucket::is_finite(*t)) {
        return Err(GapError::NotFinite(t));
    }
    for w in points.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(GapError::Duplicate(w[0].0));
        }
    }
    let known: Vec<(i64, f64)> = points.iter().filter_map(|(t, v)| v.map(|v| (*t, v))).collect();
    let mut out = Vec::with_capacity(grid.len());
    // index of the first known point with time > current bucket
    let mut next = 0usize;
    for &b in grid {
        while next < known.len() && known[next].0 <= b {
            next += 1;
        }
        let here = next.checked_sub(1).map(|i| known[i]).filter(|(t, _)| *t == b);
        let v = match (here, how) {
            (Some((_, v)), _) => Some(v),
            (None, Fill::None) => None,
            (None, Fill::Locf) => next.checked_sub(1).map(|i| known[i].1),
            (None, Fill::Linear) => {
                let before = next.checked_sub(1).map(|i| known[i]);
                let after = known.get(next).copied();
                match (before, after) {
                    (Some((t0, v0)), Some((t1, v1))) => {
                        let frac = (b - t0) as f64 / (t1 - t0) as f64;
                        Some(v0 + (v1 - v0) * frac)
                    }
                    _ => None,
                }
            }
        };
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucket::USECS_PER_DAY;

    const H: i64 = 3_600_000_000;

    #[test]
    fn fills() {
        assert_eq!(Fill::parse(" LOCF "), Some(Fill::Locf));
        assert_eq!(Fill::parse("interpolate"), Some(Fill::Linear));
        assert_eq!(Fill::parse("spline"), None);
    }

    #[test]
    fn grids_cover_the_range() {
        let start = 10 * H + 5;
        let g = grid(Plan::Fixed(H), start, 14 * H, None).unwrap();
        assert_eq!(g, vec![10 * H, 11 * H, 12 * H, 13 * H]);
        assert!(grid(Plan::Fixed(H), 14 * H, 14 * H, None).unwrap().is_empty());
        // calendar months: 31, 29, 31 days
        let jan = bucket::days_from_civil(2024, 1, 15) * USECS_PER_DAY;
        let apr = bucket::days_from_civil(2024, 4, 1) * USECS_PER_DAY;
        let g = grid(Plan::Months(1), jan, apr, None).unwrap();
        let days: Vec<i64> = g.windows(2).map(|w| (w[1] - w[0]) / USECS_PER_DAY).collect();
        assert_eq!(days, vec![31, 29]);
        assert_eq!(g.len(), 3);
        assert_eq!(grid(Plan::Fixed(1), 0, 10_000_000, None), Err(GapError::TooMany));
    }

    #[test]
    fn none_locf_and_linear() {
        let g: Vec<i64> = (0..6).map(|i| i * H).collect();
        let pts = [(H, Some(10.0)), (2 * H, None), (4 * H, Some(30.0))];
        assert_eq!(fill(&g, &pts, Fill::None).unwrap(), vec![None, Some(10.0), None, None, Some(30.0), None]);
        assert_eq!(
            fill(&g, &pts, Fill::Locf).unwrap(),
            vec![None, Some(10.0), Some(10.0), Some(10.0), Some(30.0), Some(30.0)]
        );
        let lin = fill(&g, &pts, Fill::Linear).unwrap();
        let want = [None, Some(10.0), Some(10.0 + 20.0 / 3.0), Some(10.0 + 40.0 / 3.0), Some(30.0), None];
        for (a, b) in lin.iter().zip(want) {
            match (a, b) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{a} vs {b}"),
                (a, b) => assert_eq!(*a, b),
            }
        }
    }

    #[test]
    fn linear_is_proportional_to_time() {
        let g: Vec<i64> = (0..5).map(|i| i * H).collect();
        let pts = [(0, Some(0.0)), (4 * H, Some(8.0))];
        assert_eq!(fill(&g, &pts, Fill::Linear).unwrap(), vec![Some(0.0), Some(2.0), Some(4.0), Some(6.0), Some(8.0)]);
    }

    #[test]
    fn points_outside_the_grid_seed_and_anchor() {
        let g: Vec<i64> = (2..4).map(|i| i * H).collect();
        let pts = [(0, Some(1.0)), (5 * H, Some(6.0))];
        assert_eq!(fill(&g, &pts, Fill::Locf).unwrap(), vec![Some(1.0), Some(1.0)]);
        assert_eq!(fill(&g, &pts, Fill::Linear).unwrap(), vec![Some(3.0), Some(4.0)]);
        assert_eq!(fill(&g, &pts, Fill::None).unwrap(), vec![None, None]);
    }

    #[test]
    fn infinite_points_are_refused_not_overflowed() {
        let g = [0, H];
        for t in [bucket::NOBEGIN, bucket::NOEND] {
            assert_eq!(fill(&g, &[(t, Some(1.0)), (H, Some(2.0))], Fill::Linear), Err(GapError::NotFinite(t)));
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let g = [0, H];
        assert_eq!(fill(&g, &[(0, Some(1.0)), (0, Some(2.0))], Fill::None), Err(GapError::Duplicate(0)));
    }
}
