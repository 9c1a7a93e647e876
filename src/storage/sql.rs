//! Helpers shared by the SQL backends (SQLite and Postgres): how times, leases and limits are
//! written as signed 64-bit integers.

use std::time::Duration;

use super::Lease;
use crate::clock::{ms, now_ms};

/// Milliseconds as stored (SQL integers are signed).
pub(super) fn sql_ms(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// The expiry column for a time to live from now.
pub(super) fn expiry(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| sql_ms(now_ms().saturating_add(ms(t))))
}

/// A lease's row and token (`"seq:token"`).
pub(super) fn parse_lease(l: &Lease) -> Option<(i64, i64)> {
    let (a, b) = l.0.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A fresh, non-negative lease token.
pub(super) fn new_token() -> i64 {
    (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64
}

/// A row count as a SQL limit.
pub(super) fn limit(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}
