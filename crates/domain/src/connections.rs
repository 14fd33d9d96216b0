//! Connection bookkeeping rules of the listeners, as pure functions of millisecond timestamps: when an idle
//! connection is due to be closed, which connection makes room when a listener is full or file descriptors run
//! out, how long the accept loop backs off after an error, and how often that error is logged.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;

/// What a connection's idle watchdog should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleCheck {
    /// Close the connection: it has had no request in flight for the whole idle timeout.
    Close,
    /// Look again at this time (milliseconds, same clock as the inputs).
    RecheckAt(u64),
}

/// The idle verdict for a connection with `in_flight` requests that has been idle since `idle_since` (its accept
/// time, or when its last response was produced). A busy connection is looked at again one timeout later: it
/// cannot become due before its next response plus a whole timeout.
pub fn idle_check(in_flight: usize, idle_since: u64, now: u64, timeout: u64) -> IdleCheck {
    if in_flight > 0 {
        return IdleCheck::RecheckAt(now.saturating_add(timeout.max(1)));
    }
    let due = idle_since.saturating_add(timeout);
    if now >= due {
        IdleCheck::Close
    } else {
        IdleCheck::RecheckAt(due)
    }
}

/// One open connection as the room-making rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<K> {
    /// The caller's handle for the connection.
    pub key: K,
    /// The client's address (without the port), if known: connections from one address are one client's.
    pub peer: Option<IpAddr>,
    /// Requests in flight.
    pub in_flight: usize,
    /// When it last became idle (accept, or its last response).
    pub idle_since: u64,
    /// Already told to close (not a candidate again, and no longer counted against the cap).
    pub closing: bool,
}

/// The connection to close to make room: the one idle the longest among those of the client address holding the
/// most open connections, never one with a request in flight (a client waiting for an answer keeps it) nor one
/// already closing. `None` when every connection is busy.
///
/// Taking from the biggest holder first is what keeps a flood of connections from one address (an in-cluster pod
/// opening handshakes as fast as it can) from pushing out the aggregator's or the scheduler's connections: with
/// plain "idle the longest", every connection lives only as long as the flood takes to open `max-connections`
/// newer ones, and a real client still in its handshake is closed under it. Among connections of one address,
/// or when no address is known, this is plain "idle the longest".
pub fn longest_idle<K: Copy>(candidates: impl IntoIterator<Item = Candidate<K>>) -> Option<K> {
    let open: Vec<Candidate<K>> = candidates.into_iter().filter(|c| !c.closing).collect();
    let mut held: HashMap<Option<IpAddr>, usize> = HashMap::new();
    for c in &open {
        *held.entry(c.peer).or_default() += 1;
    }
    open.iter()
        .filter(|c| c.in_flight == 0)
        .min_by_key(|c| (Reverse(held[&c.peer]), c.idle_since))
        .map(|c| c.key)
}

/// Whether a listener with `open` connections (not counting those already closing) may admit one more.
pub fn has_room(open: usize, max_connections: usize) -> bool {
    open < max_connections
}

/// Exponential backoff of the accept loop after errors it cannot fix by closing a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min_millis: u64,
    max_millis: u64,
    next_millis: u64,
}

impl Backoff {
    /// Starts at `min_millis`, doubling up to `max_millis`.
    pub fn new(min_millis: u64, max_millis: u64) -> Self {
        let min_millis = min_millis.max(1);
        Backoff {
            min_millis,
            max_millis: max_millis.max(min_millis),
            next_millis: min_millis,
        }
    }

    /// The pause after one more consecutive error.
    pub fn next_delay(&mut self) -> u64 {
        let delay = self.next_millis;
        self.next_millis = self.next_millis.saturating_mul(2).min(self.max_millis);
        delay
    }

    /// A success: the next error starts again from the minimum.
    pub fn reset(&mut self) {
        self.next_millis = self.min_millis;
    }
}

/// Lets a repeated warning through at most once per interval and counts what it held back, so an error that
/// repeats a thousand times a second costs one log line per interval that says how many it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarnEvery {
    interval_millis: u64,
    last: Option<u64>,
    suppressed: u64,
}

impl WarnEvery {
    /// At most one warning per `interval_millis`.
    pub fn new(interval_millis: u64) -> Self {
        WarnEvery {
            interval_millis,
            last: None,
            suppressed: 0,
        }
    }

    /// One occurrence at `now`: `Some(n)` when it should be logged, `n` being the occurrences held back since the
    /// last one logged; `None` when it is held back.
    pub fn hit(&mut self, now: u64) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_sub(last) < self.interval_millis => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_closes_once_the_timeout_has_passed_since_it_went_idle() {
        assert_eq!(
            idle_check(0, 1_000, 1_000, 500),
            IdleCheck::RecheckAt(1_500)
        );
        assert_eq!(
            idle_check(0, 1_000, 1_499, 500),
            IdleCheck::RecheckAt(1_500)
        );
        assert_eq!(idle_check(0, 1_000, 1_500, 500), IdleCheck::Close);
        assert_eq!(idle_check(0, 1_000, 9_000, 500), IdleCheck::Close);
    }

    #[test]
    fn busy_connection_is_never_idle_and_is_looked_at_again_a_timeout_later() {
        assert_eq!(idle_check(1, 0, 9_000, 500), IdleCheck::RecheckAt(9_500));
        assert_eq!(
            idle_check(3, 0, u64::MAX, 500),
            IdleCheck::RecheckAt(u64::MAX)
        );
        // A zero timeout must not spin.
        assert_eq!(idle_check(1, 0, 10, 0), IdleCheck::RecheckAt(11));
    }

    fn c(key: u32, in_flight: usize, idle_since: u64, closing: bool) -> Candidate<u32> {
        Candidate {
            key,
            peer: None,
            in_flight,
            idle_since,
            closing,
        }
    }

    #[test]
    fn room_is_made_by_the_connection_idle_the_longest() {
        let all = [
            c(1, 0, 300, false),
            c(2, 0, 100, false),
            c(3, 0, 200, false),
        ];
        assert_eq!(longest_idle(all), Some(2));
    }

    #[test]
    fn busy_and_closing_connections_never_make_room() {
        let all = [
            c(1, 1, 0, false),
            c(2, 0, 10, true),
            c(3, 0, 500, false),
            c(4, 2, 5, false),
        ];
        assert_eq!(longest_idle(all), Some(3));
        assert_eq!(longest_idle([c(1, 1, 0, false), c(2, 0, 0, true)]), None);
        assert_eq!(longest_idle(Vec::<Candidate<u32>>::new()), None);
    }

    fn from(peer: u8, key: u32, in_flight: usize, idle_since: u64) -> Candidate<u32> {
        Candidate {
            peer: Some(IpAddr::from([10, 0, 0, peer])),
            ..c(key, in_flight, idle_since, false)
        }
    }

    #[test]
    fn room_is_made_by_the_address_holding_the_most() {
        // Address 1 (a flood) holds three, address 2 (a real client, idle longer) one: the flood gives one up, its
        // idle the longest.
        let all = [
            from(2, 1, 0, 100),
            from(1, 2, 0, 300),
            from(1, 3, 0, 200),
            from(1, 4, 0, 400),
        ];
        assert_eq!(longest_idle(all), Some(3));
        // Busy connections count towards what an address holds, but are never closed: the biggest holder's idle
        // one goes even if it is its only idle one.
        let all = [
            from(2, 1, 0, 100),
            from(1, 2, 1, 0),
            from(1, 3, 1, 0),
            from(1, 4, 0, 500),
        ];
        assert_eq!(longest_idle(all), Some(4));
        // When the biggest holder has nothing idle, the next one gives up its idle the longest.
        let all = [
            from(2, 1, 0, 100),
            from(3, 5, 0, 50),
            from(1, 2, 1, 0),
            from(1, 3, 1, 0),
        ];
        assert_eq!(longest_idle(all), Some(5));
        // Connections already closing count for nobody.
        let mut closing = from(1, 2, 0, 10);
        closing.closing = true;
        assert_eq!(
            longest_idle([closing, from(1, 3, 0, 20), from(2, 4, 0, 5)]),
            Some(4)
        );
    }

    #[test]
    fn room_until_the_cap() {
        assert!(has_room(0, 1));
        assert!(has_room(255, 256));
        assert!(!has_room(256, 256));
        assert!(!has_room(300, 256));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(10, 1_000);
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1_000, 1_000]);
        b.reset();
        assert_eq!(b.next_delay(), 10);
        let mut zero = Backoff::new(0, 0);
        assert_eq!(zero.next_delay(), 1);
    }

    #[test]
    fn a_warning_per_interval_with_the_count_held_back() {
        let mut w = WarnEvery::new(10_000);
        assert_eq!(w.hit(0), Some(0));
        for t in 1..=500 {
            assert_eq!(w.hit(t), None);
        }
        assert_eq!(w.hit(9_999), None);
        assert_eq!(w.hit(10_000), Some(501));
        assert_eq!(w.hit(10_001), None);
        assert_eq!(w.hit(30_000), Some(1));
        assert_eq!(w.hit(50_000), Some(0));
    }
}
