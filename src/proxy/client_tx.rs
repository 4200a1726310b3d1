//! The client transaction (RFC 3261 17.1, with RFC 6026's Accepted state): the side of a
//! proxied request that faces the next hop. It retransmits the request over UDP (Timers A,
//! E), gives up when no answer comes (B, F), tells which responses go upstream, ACKs non-2xx
//! finals hop by hop (never a 2xx: that ACK is the caller's), and lingers to absorb
//! retransmitted responses (D, K, M). The CANCEL Roundabout sends is one of these too.
//!
//! No I/O and no clock: each call pushes [`ClientStep`]s for the response context.

use super::timers::Timers;
use bytes::Bytes;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Sent, nothing back yet ("Calling" for INVITE, "Trying" otherwise).
    Calling,
    /// A provisional response came.
    Proceeding,
    /// A final (non-2xx for INVITE) came; its retransmissions are absorbed (re-ACKed).
    Completed,
    /// INVITE: a 2xx came (RFC 6026); further 2xx go upstream too.
    Accepted,
    Terminated,
}

/// The client transaction's three timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientTimer {
    /// A (INVITE) or E (non-INVITE): retransmit over UDP.
    Retransmit,
    /// B (INVITE) or F (non-INVITE).
    Timeout,
    /// D, K or M; also the end of an abandoned INVITE (see [`ClientTx::abandon`]).
    Linger,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientStep {
    /// These bytes go (again) to the next hop.
    Send(Bytes),
    /// The ACK for the non-2xx final just received goes to the next hop.
    Ack,
    Schedule(ClientTimer, Duration),
}

/// What becomes of a response from the next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFate {
    /// Goes on to the response context (and upstream unless it is a 100).
    Forward,
    /// A retransmission or a stray: ends here.
    Absorb,
}

#[derive(Debug)]
pub struct ClientTx {
    invite: bool,
    /// The next hop's transport is reliable: no retransmission, no linger.
    reliable: bool,
    state: ClientState,
    /// The request as sent, for retransmission over UDP; dropped when no longer needed.
    request: Option<Bytes>,
    interval: Duration,
}

impl ClientTx {
    /// Sends `request` and starts the timers.
    pub fn start(
        invite: bool,
        reliable: bool,
        request: Bytes,
        t: &Timers,
        out: &mut Vec<ClientStep>,
    ) -> ClientTx {
        out.push(ClientStep::Send(request.clone()));
        if !reliable {
            out.push(ClientStep::Schedule(ClientTimer::Retransmit, t.t1));
        }
        out.push(ClientStep::Schedule(ClientTimer::Timeout, t.transaction));
        ClientTx {
            invite,
            reliable,
            state: ClientState::Calling,
            request: (!reliable).then_some(request),
            interval: t.t1,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }

    /// Whether any response (even a 100) came: only then may a CANCEL go (RFC 3261 9.1).
    pub fn heard_back(&self) -> bool {
        self.state != ClientState::Calling
    }

    pub fn on_response(
        &mut self,
        status: u16,
        t: &Timers,
        out: &mut Vec<ClientStep>,
    ) -> ResponseFate {
        let provisional = status < 200;
        let success = (200..300).contains(&status);
        let linger = |reliable: bool, unreliable: Duration| {
            if reliable {
                Duration::ZERO
            } else {
                unreliable
            }
        };
        match (self.state, self.invite) {
            (ClientState::Calling | ClientState::Proceeding, _) if provisional => {
                self.state = ClientState::Proceeding;
                ResponseFate::Forward
            }
            (ClientState::Calling | ClientState::Proceeding, true) => {
                self.request = None;
                if success {
                    // Timer M: 2xx retransmissions and other branches' 2xx still pass.
                    self.state = ClientState::Accepted;
                    out.push(ClientStep::Schedule(ClientTimer::Linger, t.transaction));
                } else {
                    self.state = ClientState::Completed;
                    out.push(ClientStep::Ack);
                    // Timer D: > 32 s over UDP, 0 over a reliable transport.
                    out.push(ClientStep::Schedule(
                        ClientTimer::Linger,
                        linger(self.reliable, t.transaction),
                    ));
                }
                ResponseFate::Forward
            }
            (ClientState::Calling | ClientState::Proceeding, false) => {
                self.request = None;
                self.state = ClientState::Completed;
                // Timer K.
                out.push(ClientStep::Schedule(
                    ClientTimer::Linger,
                    linger(self.reliable, t.t4),
                ));
                ResponseFate::Forward
            }
            (ClientState::Accepted, _) if success => ResponseFate::Forward,
            (ClientState::Completed, true) if status >= 300 => {
                out.push(ClientStep::Ack);
                ResponseFate::Absorb
            }
            _ => ResponseFate::Absorb,
        }
    }

    /// A timer fired. Returns true when the transaction timed out (Timer B or F): the
    /// response context then answers upstream itself.
    pub fn on_timer(&mut self, timer: ClientTimer, t: &Timers, out: &mut Vec<ClientStep>) -> bool {
        match timer {
            ClientTimer::Retransmit => {
                let next = match (self.state, self.invite) {
                    (ClientState::Calling, true) => self.interval * 2,
                    (ClientState::Calling, false) => t.doubled_capped(self.interval),
                    // 17.1.2.2: in Proceeding a non-INVITE is retransmitted every T2.
                    (ClientState::Proceeding, false) => t.t2,
                    _ => return false,
                };
                if let Some(r) = &self.request {
                    out.push(ClientStep::Send(r.clone()));
                    self.interval = next;
                    out.push(ClientStep::Schedule(ClientTimer::Retransmit, next));
                }
                false
            }
            ClientTimer::Timeout => {
                // Timer B applies in Calling only; Timer F in Trying and Proceeding.
                let timed_out = match self.state {
                    ClientState::Calling => true,
                    ClientState::Proceeding => !self.invite,
                    _ => false,
                };
                if timed_out {
                    self.terminate();
                }
                timed_out
            }
            ClientTimer::Linger => {
                if self.state != ClientState::Calling {
                    self.terminate();
                }
                false
            }
        }
    }

    /// The response context gave up on this INVITE (Timer C with no answer to its CANCEL):
    /// it stays open for 64*T1 so that a late 2xx still reaches the caller, then ends.
    pub fn abandon(&mut self, t: &Timers, out: &mut Vec<ClientStep>) {
        if matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
            self.state = ClientState::Proceeding;
            self.request = None;
            out.push(ClientStep::Schedule(ClientTimer::Linger, t.transaction));
        }
    }

    /// The next hop cannot be reached (connection refused, flow gone).
    pub fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.request = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientStep::*;

    fn t() -> Timers {
        Timers::default()
    }

    fn start(invite: bool, reliable: bool) -> (ClientTx, Vec<ClientStep>) {
        let mut out = Vec::new();
        let tx = ClientTx::start(invite, reliable, Bytes::from_static(b"REQ"), &t(), &mut out);
        (tx, out)
    }

    /// Fires Retransmit `n` times; returns the intervals scheduled, in ms.
    fn retransmit_intervals(tx: &mut ClientTx, n: usize) -> Vec<u128> {
        let mut v = Vec::new();
        for _ in 0..n {
            let mut out = Vec::new();
            tx.on_timer(ClientTimer::Retransmit, &t(), &mut out);
            if out.is_empty() {
                break;
            }
            assert_eq!(out[0], Send(Bytes::from_static(b"REQ")));
            let Schedule(ClientTimer::Retransmit, d) = out[1] else {
                panic!("{out:?}")
            };
            v.push(d.as_millis());
        }
        v
    }

    #[test]
    fn invite_over_udp_timer_a_doubles_without_cap_until_b() {
        let (mut tx, out) = start(true, false);
        let t = t();
        assert_eq!(
            out,
            vec![
                Send(Bytes::from_static(b"REQ")),
                Schedule(ClientTimer::Retransmit, t.t1),
                Schedule(ClientTimer::Timeout, 64 * t.t1)
            ]
        );
        assert_eq!(
            retransmit_intervals(&mut tx, 6),
            [1000, 2000, 4000, 8000, 16000, 32000]
        );
        assert!(
            tx.on_timer(ClientTimer::Timeout, &t, &mut Vec::new()),
            "Timer B"
        );
        assert!(tx.is_terminated());
        assert!(retransmit_intervals(&mut tx, 1).is_empty());
    }

    #[test]
    fn reliable_next_hop_is_never_retransmitted() {
        let (mut tx, out) = start(true, true);
        assert_eq!(
            out,
            vec![
                Send(Bytes::from_static(b"REQ")),
                Schedule(ClientTimer::Timeout, 64 * t().t1)
            ]
        );
        assert!(retransmit_intervals(&mut tx, 1).is_empty());
    }

    #[test]
    fn provisional_stops_timer_a_and_disarms_timer_b() {
        let (mut tx, _) = start(true, false);
        let t = t();
        assert!(!tx.heard_back());
        assert_eq!(
            tx.on_response(100, &t, &mut Vec::new()),
            ResponseFate::Forward
        );
        assert!(tx.heard_back());
        assert!(retransmit_intervals(&mut tx, 1).is_empty());
        assert!(
            !tx.on_timer(ClientTimer::Timeout, &t, &mut Vec::new()),
            "B only in Calling"
        );
        assert_eq!(tx.state(), ClientState::Proceeding);
    }

    #[test]
    fn non_2xx_final_is_acked_and_its_retransmissions_absorbed_timer_d() {
        let t = t();
        for (reliable, d) in [(false, 64 * t.t1), (true, Duration::ZERO)] {
            let (mut tx, _) = start(true, reliable);
            let mut out = Vec::new();
            assert_eq!(tx.on_response(486, &t, &mut out), ResponseFate::Forward);
            assert_eq!(out, vec![Ack, Schedule(ClientTimer::Linger, d)]);
            let mut out = Vec::new();
            assert_eq!(tx.on_response(486, &t, &mut out), ResponseFate::Absorb);
            assert_eq!(out, vec![Ack], "a retransmitted final is ACKed again");
            tx.on_timer(ClientTimer::Linger, &t, &mut Vec::new());
            assert!(tx.is_terminated());
        }
    }

    #[test]
    fn a_2xx_is_never_acked_here_and_later_2xx_pass_timer_m() {
        let t = t();
        let (mut tx, _) = start(true, false);
        let mut out = Vec::new();
        assert_eq!(tx.on_response(200, &t, &mut out), ResponseFate::Forward);
        assert_eq!(out, vec![Schedule(ClientTimer::Linger, 64 * t.t1)]);
        assert_eq!(tx.state(), ClientState::Accepted);
        let mut out = Vec::new();
        assert_eq!(tx.on_response(200, &t, &mut out), ResponseFate::Forward);
        assert!(out.is_empty(), "no ACK for a 2xx");
        assert_eq!(
            tx.on_response(180, &t, &mut Vec::new()),
            ResponseFate::Absorb
        );
        assert_eq!(
            tx.on_response(486, &t, &mut Vec::new()),
            ResponseFate::Absorb
        );
        tx.on_timer(ClientTimer::Linger, &t, &mut Vec::new());
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_goes_to_t2_in_proceeding_then_f() {
        let t = t();
        let (mut tx, _) = start(false, false);
        assert_eq!(
            retransmit_intervals(&mut tx, 5),
            [1000, 2000, 4000, 4000, 4000]
        );
        let (mut tx, _) = start(false, false);
        tx.on_response(100, &t, &mut Vec::new());
        assert_eq!(retransmit_intervals(&mut tx, 2), [4000, 4000]);
        assert!(
            tx.on_timer(ClientTimer::Timeout, &t, &mut Vec::new()),
            "F in Proceeding"
        );
    }

    #[test]
    fn non_invite_final_timer_k() {
        let t = t();
        for (reliable, k) in [(false, t.t4), (true, Duration::ZERO)] {
            let (mut tx, _) = start(false, reliable);
            let mut out = Vec::new();
            assert_eq!(tx.on_response(200, &t, &mut out), ResponseFate::Forward);
            assert_eq!(out, vec![Schedule(ClientTimer::Linger, k)]);
            assert_eq!(
                tx.on_response(200, &t, &mut Vec::new()),
                ResponseFate::Absorb
            );
            assert!(!tx.on_timer(ClientTimer::Timeout, &t, &mut Vec::new()));
            tx.on_timer(ClientTimer::Linger, &t, &mut Vec::new());
            assert!(tx.is_terminated());
        }
    }

    #[test]
    fn abandoned_invite_still_passes_a_late_2xx_then_ends() {
        let t = t();
        let (mut tx, _) = start(true, false);
        tx.on_response(180, &t, &mut Vec::new());
        let mut out = Vec::new();
        tx.abandon(&t, &mut out);
        assert_eq!(out, vec![Schedule(ClientTimer::Linger, 64 * t.t1)]);
        assert_eq!(
            tx.on_response(200, &t, &mut Vec::new()),
            ResponseFate::Forward
        );
        let (mut tx, _) = start(true, false);
        tx.on_response(180, &t, &mut Vec::new());
        tx.abandon(&t, &mut Vec::new());
        tx.on_timer(ClientTimer::Linger, &t, &mut Vec::new());
        assert!(tx.is_terminated());
    }
}
