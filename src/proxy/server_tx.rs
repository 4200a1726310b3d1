//! The server transaction (RFC 3261 17.2, with RFC 6026's Accepted state): the side of a
//! proxied request that faces the caller. It decides what goes back upstream and when: the
//! latest provisional or final again for a retransmitted request, a non-2xx final again
//! over UDP until its ACK (Timer G), and, when the downstream is reliable and will never
//! repeat it, a 2xx again over UDP until the caller's ACK passes (RFC 3261 13.3.1.4).
//!
//! No I/O and no clock: each call pushes [`ServerStep`]s (send the bytes back to the caller,
//! wake me in so long) that the response context turns into actions.

use super::timers::Timers;
use bytes::Bytes;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// No final response yet ("Trying" and "Proceeding" of non-INVITE alike).
    Proceeding,
    /// A final (non-2xx for INVITE) went upstream; retransmissions are answered with it.
    Completed,
    /// INVITE: a 2xx went upstream (RFC 6026); further 2xx pass, retransmitted INVITEs are
    /// absorbed.
    Accepted,
    /// INVITE: the ACK for the non-2xx final came.
    Confirmed,
    Terminated,
}

/// The server transaction's two timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServerTimer {
    /// G (non-2xx final over UDP), or the 2xx retransmission of a reliable-to-UDP bridge.
    Retransmit,
    /// H (Completed, no ACK), I (Confirmed), J (non-INVITE Completed), L (Accepted).
    Linger,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerStep {
    /// These bytes go back to the caller, the way its request came.
    Send(Bytes),
    Schedule(ServerTimer, Duration),
}

/// What an ACK matching this transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckFate {
    /// The ACK of our non-2xx final: hop by hop, it ends here.
    Absorbed,
    /// The ACK of a 2xx: end to end, it goes on (and stops our 2xx retransmission).
    PassOn,
}

#[derive(Debug)]
pub struct ServerTx {
    invite: bool,
    /// The caller's transport is reliable (TCP, TLS, WS, WSS): nothing is retransmitted.
    reliable: bool,
    state: ServerState,
    /// The latest response sent upstream: the answer to a retransmitted request.
    last_response: Option<Bytes>,
    interval: Duration,
    /// Retransmitting a 2xx (a reliable downstream never will).
    retransmitting_2xx: bool,
}

impl ServerTx {
    pub fn new(invite: bool, reliable: bool) -> ServerTx {
        ServerTx {
            invite,
            reliable,
            state: ServerState::Proceeding,
            last_response: None,
            interval: Duration::ZERO,
            retransmitting_2xx: false,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether a final response went upstream.
    pub fn has_final(&self) -> bool {
        self.state != ServerState::Proceeding
    }

    pub fn is_retransmitting_2xx(&self) -> bool {
        self.retransmitting_2xx
    }

    /// A provisional response (our 100 or one from downstream) goes upstream and becomes
    /// the answer to retransmissions (RFC 3261 17.2.1).
    pub fn provisional(&mut self, bytes: Bytes, out: &mut Vec<ServerStep>) {
        if self.state == ServerState::Proceeding {
            self.last_response = Some(bytes.clone());
            out.push(ServerStep::Send(bytes));
        }
    }

    /// A final response for upstream. `retransmit_2xx`: the downstream is reliable, so
    /// nobody else will repeat a 2xx. Returns whether it was sent.
    pub fn final_response(
        &mut self,
        status: u16,
        bytes: Bytes,
        retransmit_2xx: bool,
        t: &Timers,
        out: &mut Vec<ServerStep>,
    ) -> bool {
        let success = (200..300).contains(&status);
        match self.state {
            ServerState::Proceeding => {
                self.last_response = Some(bytes.clone());
                out.push(ServerStep::Send(bytes));
                if self.invite && success {
                    self.state = ServerState::Accepted;
                    out.push(ServerStep::Schedule(ServerTimer::Linger, t.transaction));
                    if retransmit_2xx && !self.reliable {
                        self.retransmitting_2xx = true;
                        self.interval = t.t1;
                        out.push(ServerStep::Schedule(ServerTimer::Retransmit, t.t1));
                    }
                } else if self.invite {
                    self.state = ServerState::Completed;
                    if !self.reliable {
                        self.interval = t.t1;
                        out.push(ServerStep::Schedule(ServerTimer::Retransmit, t.t1));
                    }
                    out.push(ServerStep::Schedule(ServerTimer::Linger, t.transaction));
                } else {
                    self.state = ServerState::Completed;
                    let j = if self.reliable {
                        Duration::ZERO
                    } else {
                        t.transaction
                    };
                    out.push(ServerStep::Schedule(ServerTimer::Linger, j));
                }
                true
            }
            // Another 2xx (a retransmission from downstream, or another branch's) passes on
            // the very flow the INVITE came from (RFC 6026 7.1).
            ServerState::Accepted if success => {
                self.last_response = Some(bytes.clone());
                out.push(ServerStep::Send(bytes));
                true
            }
            _ => false,
        }
    }

    /// The caller retransmitted its request: answer with what we last sent (17.2.1, 17.2.2);
    /// in Accepted and Confirmed retransmissions are absorbed silently.
    pub fn request_retransmission(&mut self, out: &mut Vec<ServerStep>) {
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some(b) = &self.last_response {
                out.push(ServerStep::Send(b.clone()));
            }
        }
    }

    /// An ACK matching this transaction arrived.
    pub fn ack(&mut self, t: &Timers, out: &mut Vec<ServerStep>) -> AckFate {
        match self.state {
            ServerState::Completed if self.invite => {
                self.state = ServerState::Confirmed;
                let i = if self.reliable { Duration::ZERO } else { t.t4 };
                out.push(ServerStep::Schedule(ServerTimer::Linger, i));
                AckFate::Absorbed
            }
            ServerState::Confirmed => AckFate::Absorbed,
            _ => {
                self.retransmitting_2xx = false;
                AckFate::PassOn
            }
        }
    }

    pub fn on_timer(&mut self, timer: ServerTimer, t: &Timers, out: &mut Vec<ServerStep>) {
        match timer {
            ServerTimer::Retransmit => {
                let again = match self.state {
                    ServerState::Completed => true,
                    ServerState::Accepted => self.retransmitting_2xx,
                    _ => false,
                };
                if let (true, Some(b)) = (again, &self.last_response) {
                    out.push(ServerStep::Send(b.clone()));
                    self.interval = t.doubled_capped(self.interval);
                    out.push(ServerStep::Schedule(ServerTimer::Retransmit, self.interval));
                }
            }
            ServerTimer::Linger => {
                if self.state != ServerState::Proceeding {
                    self.state = ServerState::Terminated;
                    self.retransmitting_2xx = false;
                    self.last_response = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerStep::*;

    fn t() -> Timers {
        Timers::default()
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn run(
        tx: &mut ServerTx,
        f: impl FnOnce(&mut ServerTx, &mut Vec<ServerStep>),
    ) -> Vec<ServerStep> {
        let mut out = Vec::new();
        f(tx, &mut out);
        out
    }

    #[test]
    fn retransmitted_invite_gets_the_latest_provisional() {
        let mut tx = ServerTx::new(true, false);
        run(&mut tx, |tx, o| tx.provisional(b("100"), o));
        assert_eq!(
            run(&mut tx, |tx, o| tx.request_retransmission(o)),
            vec![Send(b("100"))]
        );
        run(&mut tx, |tx, o| tx.provisional(b("180"), o));
        assert_eq!(
            run(&mut tx, |tx, o| tx.request_retransmission(o)),
            vec![Send(b("180"))]
        );
    }

    #[test]
    fn non_2xx_final_over_udp_is_retransmitted_until_ack_timer_g_and_h() {
        let t = t();
        let mut tx = ServerTx::new(true, false);
        let out = run(&mut tx, |tx, o| {
            tx.final_response(486, b("486"), false, &t, o);
        });
        assert_eq!(
            out,
            vec![
                Send(b("486")),
                Schedule(ServerTimer::Retransmit, t.t1),
                Schedule(ServerTimer::Linger, 64 * t.t1)
            ]
        );
        assert_eq!(tx.state(), ServerState::Completed);
        // G doubles up to T2.
        let mut intervals = Vec::new();
        for _ in 0..5 {
            let out = run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Retransmit, &t, o));
            assert_eq!(out[0], Send(b("486")));
            let Schedule(_, d) = out[1] else { panic!() };
            intervals.push(d.as_millis());
        }
        assert_eq!(intervals, [1000, 2000, 4000, 4000, 4000]);
        // A retransmitted INVITE gets the final again.
        assert_eq!(
            run(&mut tx, |tx, o| tx.request_retransmission(o)),
            vec![Send(b("486"))]
        );
        // The ACK: Confirmed, Timer I = T4; no more retransmissions.
        let mut out = Vec::new();
        assert_eq!(tx.ack(&t, &mut out), AckFate::Absorbed);
        assert_eq!(out, vec![Schedule(ServerTimer::Linger, t.t4)]);
        assert!(run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Retransmit, &t, o)).is_empty());
        assert_eq!(
            tx.ack(&t, &mut Vec::new()),
            AckFate::Absorbed,
            "ACK retransmission"
        );
        run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Linger, &t, o));
        assert_eq!(tx.state(), ServerState::Terminated);
    }

    #[test]
    fn timer_h_ends_a_completed_invite_without_ack() {
        let t = t();
        let mut tx = ServerTx::new(true, false);
        run(&mut tx, |tx, o| {
            tx.final_response(408, b("408"), false, &t, o);
        });
        run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Linger, &t, o));
        assert_eq!(tx.state(), ServerState::Terminated);
        assert!(run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Retransmit, &t, o)).is_empty());
    }

    #[test]
    fn reliable_caller_gets_no_retransmissions() {
        let t = t();
        let mut tx = ServerTx::new(true, true);
        let out = run(&mut tx, |tx, o| {
            tx.final_response(486, b("486"), false, &t, o);
        });
        assert_eq!(
            out,
            vec![Send(b("486")), Schedule(ServerTimer::Linger, 64 * t.t1)]
        );
        let mut out = Vec::new();
        tx.ack(&t, &mut out);
        assert_eq!(
            out,
            vec![Schedule(ServerTimer::Linger, Duration::ZERO)],
            "Timer I = 0"
        );
        // A 2xx on a reliable caller: Accepted, no retransmission even if asked.
        let mut tx = ServerTx::new(true, true);
        let out = run(&mut tx, |tx, o| {
            tx.final_response(200, b("200"), true, &t, o);
        });
        assert_eq!(
            out,
            vec![Send(b("200")), Schedule(ServerTimer::Linger, 64 * t.t1)]
        );
    }

    #[test]
    fn accepted_passes_further_2xx_and_absorbs_the_rest() {
        let t = t();
        let mut tx = ServerTx::new(true, false);
        run(&mut tx, |tx, o| {
            tx.final_response(200, b("200"), false, &t, o);
        });
        assert_eq!(tx.state(), ServerState::Accepted);
        assert!(
            !tx.is_retransmitting_2xx(),
            "UDP downstream retransmits by itself"
        );
        let mut out = Vec::new();
        assert!(tx.final_response(200, b("200'"), false, &t, &mut out));
        assert_eq!(out, vec![Send(b("200'"))]);
        assert!(!tx.final_response(486, b("486"), false, &t, &mut Vec::new()));
        assert!(
            run(&mut tx, |tx, o| tx.request_retransmission(o)).is_empty(),
            "absorbed"
        );
        assert!(run(&mut tx, |tx, o| tx.provisional(b("180"), o)).is_empty());
        // Timer L.
        run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Linger, &t, o));
        assert_eq!(tx.state(), ServerState::Terminated);
    }

    #[test]
    fn bridged_2xx_is_retransmitted_on_udp_until_the_ack() {
        let t = t();
        let mut tx = ServerTx::new(true, false);
        let out = run(&mut tx, |tx, o| {
            tx.final_response(200, b("200"), true, &t, o);
        });
        assert_eq!(
            out,
            vec![
                Send(b("200")),
                Schedule(ServerTimer::Linger, 64 * t.t1),
                Schedule(ServerTimer::Retransmit, t.t1)
            ]
        );
        let mut intervals = Vec::new();
        for _ in 0..4 {
            let out = run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Retransmit, &t, o));
            assert_eq!(out[0], Send(b("200")));
            let Schedule(_, d) = out[1] else { panic!() };
            intervals.push(d.as_millis());
        }
        assert_eq!(intervals, [1000, 2000, 4000, 4000], "T1 doubling to T2");
        assert_eq!(tx.ack(&t, &mut Vec::new()), AckFate::PassOn);
        assert!(run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Retransmit, &t, o)).is_empty());
        // Or, without an ACK, 64*T1 (Timer L) ends it.
        let mut tx = ServerTx::new(true, false);
        run(&mut tx, |tx, o| {
            tx.final_response(200, b("200"), true, &t, o);
        });
        run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Linger, &t, o));
        assert!(run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Retransmit, &t, o)).is_empty());
    }

    #[test]
    fn non_invite_timer_j() {
        let t = t();
        for (reliable, j) in [(false, 64 * t.t1), (true, Duration::ZERO)] {
            let mut tx = ServerTx::new(false, reliable);
            let out = run(&mut tx, |tx, o| {
                tx.final_response(200, b("200"), false, &t, o);
            });
            assert_eq!(out, vec![Send(b("200")), Schedule(ServerTimer::Linger, j)]);
            assert_eq!(tx.state(), ServerState::Completed);
            assert_eq!(
                run(&mut tx, |tx, o| tx.request_retransmission(o)),
                vec![Send(b("200"))]
            );
            assert!(!tx.final_response(500, b("500"), false, &t, &mut Vec::new()));
            run(&mut tx, |tx, o| tx.on_timer(ServerTimer::Linger, &t, o));
            assert_eq!(tx.state(), ServerState::Terminated);
        }
    }
}
