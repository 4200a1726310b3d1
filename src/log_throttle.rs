//! Log lines that peers cause must not let a peer fill the disk or drown every other line:
//! 500 unparseable datagrams in a second are one line, not 500.
//!
//! [`LogThrottle`] lets one line through per interval and counts the ones it holds back; the
//! next line that goes through says how many were held back ([`Suppressed`]).
//! [`LogThrottles`] keeps one throttle per kind of line. The connection layer keeps one set
//! for everything a peer's messages can make it log (unparseable or oversized messages,
//! floods, refused connections, connections that do not read; see
//! `actors/connection/guard.rs`); a kind is a fixed text chosen in the code (a reason, a
//! transport), never something a peer sends, so the set stays small.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The interval of the throttles of peer-caused log lines: one line per kind per second.
pub const PEER_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One line per `interval` at most; the others are counted.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub const fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some` with the count of the lines held back
    /// since the last one that went through (then the count starts again), or `None` (the
    /// line is counted).
    pub fn admit(&mut self, now: Instant) -> Option<Suppressed> {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(Suppressed(std::mem::take(&mut self.suppressed)))
    }
}

/// How many lines of a kind were held back before the one being logged. Shown at the end of
/// that line: nothing when none were, ` (and 37 more like it)` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Suppressed(pub u64);

impl fmt::Display for Suppressed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " (and {n} more like it, not logged)"),
        }
    }
}

/// One [`LogThrottle`] per kind of line. The kinds must come from a small fixed set (texts of
/// the code), so that the map stays small whatever peers send.
#[derive(Debug)]
pub struct LogThrottles<K> {
    interval: Duration,
    kinds: HashMap<K, LogThrottle>,
}

impl<K: Hash + Eq> LogThrottles<K> {
    pub fn new(interval: Duration) -> LogThrottles<K> {
        LogThrottles {
            interval,
            kinds: HashMap::new(),
        }
    }

    /// [`LogThrottle::admit`] for a line of `kind`.
    pub fn admit(&mut self, kind: K, now: Instant) -> Option<Suppressed> {
        let interval = self.interval;
        self.kinds
            .entry(kind)
            .or_insert_with(|| LogThrottle::new(interval))
            .admit(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count() {
        let mut t = LogThrottle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.admit(t0), Some(Suppressed(0)));
        let held = (1..=499)
            .filter(|i| t.admit(t0 + Duration::from_millis(*i * 2)).is_none())
            .count();
        assert_eq!(held, 499, "500 lines within a second: one goes through");
        let next = t
            .admit(t0 + Duration::from_secs(1))
            .expect("a second later");
        assert_eq!(next, Suppressed(499));
        assert_eq!(
            next.to_string(),
            " (and 499 more like it, not logged)",
            "the count is in the next line"
        );
        assert_eq!(t.admit(t0 + Duration::from_secs(5)), Some(Suppressed(0)));
        assert_eq!(Suppressed(0).to_string(), "");
    }

    #[test]
    fn kinds_are_throttled_apart() {
        let mut t = LogThrottles::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(t.admit("unparseable", t0).is_some());
        assert!(t.admit("oversized", t0).is_some(), "another kind");
        assert!(t.admit("unparseable", t0).is_none());
        assert!(t.admit("oversized", t0).is_none());
        assert_eq!(
            t.admit("unparseable", t0 + Duration::from_secs(1)),
            Some(Suppressed(1))
        );
    }
}
