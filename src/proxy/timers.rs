//! RFC 3261 timer values (section 17, table 4) and the one timer queue a Router shard keeps.
//!
//! The machines never read a clock: they are handed `now` and answer with "wake me at
//! `now + x` for timer T"; the shard's [`TimerQueue`] holds those and [`TimerQueue::due`]
//! gives them back when the actor's periodic tick passes their time.

use super::client_tx::ClientTimer;
use super::server_tx::ServerTimer;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The timer values one shard runs with. `Default` is RFC 3261's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: first retransmission interval.
    pub t1: Duration,
    /// Longest retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// How long the network may still hold a message (Timers I, K).
    pub t4: Duration,
    /// 64*T1: Timers B, F, H, L, M, and the wait for a response to a CANCEL that Timer C sent.
    pub transaction: Duration,
    /// Timer C: a proxied INVITE with provisional answers but no final one (> 3 min).
    pub ringing: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            transaction: Duration::from_secs(32),
            ringing: Duration::from_secs(181),
        }
    }
}

impl Timers {
    /// From the command line's -transaction-timeout and -ringing-timeout.
    pub fn from_limits(l: &crate::limits::Limits) -> Timers {
        Timers {
            transaction: l.transaction_timeout,
            ringing: l.ringing_timeout,
            ..Timers::default()
        }
    }

    /// The next interval of a doubling retransmission, capped at T2.
    pub fn doubled_capped(&self, interval: Duration) -> Duration {
        (interval * 2).min(self.t2)
    }
}

/// The id of one transaction in a shard's table.
pub type TxId = u64;

/// Every timer a shard runs: each machine's own, and the response context's Timer C.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The forwarded request's client transaction.
    Client(ClientTimer),
    /// The client transaction of the CANCEL Roundabout sent for it.
    Cancel(ClientTimer),
    /// The server transaction facing the caller.
    Server(ServerTimer),
    /// Timer C: a ringing INVITE lasts too long (RFC 3261 16.6 step 11, 16.8).
    Ringing,
}

/// All timers of a Router shard in one heap, served by one periodic tick: far cheaper than
/// a runtime timer (and a boxed closure) per transaction and timer. A timer that no longer
/// applies when it fires is ignored by its machine, so nothing is ever cancelled here.
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, TxId, TimerKind)>>,
}

impl TimerQueue {
    pub fn schedule(&mut self, at: Instant, tx: TxId, kind: TimerKind) {
        self.heap.push(Reverse((at, tx, kind)));
    }

    /// Removes and returns the timers due at `now`, earliest first.
    pub fn due(&mut self, now: Instant) -> Vec<(TxId, TimerKind)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, tx, kind))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            out.push((tx, kind));
        }
        out
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_queue_pops_due_timers_in_order() {
        let t = Timers::default();
        let mut q = TimerQueue::default();
        let t0 = Instant::now();
        q.schedule(t0 + t.t2, 1, TimerKind::Ringing);
        q.schedule(t0 + t.t1, 2, TimerKind::Client(ClientTimer::Retransmit));
        q.schedule(t0, 3, TimerKind::Server(ServerTimer::Linger));
        assert_eq!(q.due(t0), vec![(3, TimerKind::Server(ServerTimer::Linger))]);
        assert_eq!(
            q.due(t0 + t.t2),
            vec![
                (2, TimerKind::Client(ClientTimer::Retransmit)),
                (1, TimerKind::Ringing)
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn rfc_values() {
        let t = Timers::default();
        assert_eq!(t.transaction, 64 * t.t1);
        assert!(
            t.ringing > Duration::from_secs(180),
            "RFC 3261 16.6 step 11"
        );
        assert_eq!(t.doubled_capped(t.t1), 2 * t.t1);
        assert_eq!(t.doubled_capped(t.t2), t.t2);
    }
}
