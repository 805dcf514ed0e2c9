//! Login throttling: failed logins are counted per user name and per source address, and
//! past a few failures in a window every login for that name (or from that address) is
//! refused, without checking the password, for a delay that doubles with each further
//! failure.
//!
//! Kept in memory, in each control-plane process: a restart forgets the counts, and
//! replicas count separately (an attacker spread over n replicas gets n times the tries).
//! That is enough to make online guessing slow; it is not meant to survive restarts.
//! Entries are dropped once their window has passed and they are not locked, so the map
//! stays small however many names are tried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a count is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    User(String),
    Source(String),
}

/// The thresholds: how many failures are free in a window, and the delays after them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Failures allowed in `window` before logins are refused.
    pub free: u32,
    pub window: Duration,
    /// The delay after the first failure past `free`; doubled for each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

/// Per user name: a few tries, then a growing wait.
pub(crate) const PER_USER: Limits = Limits {
    free: 5,
    window: Duration::from_secs(15 * 60),
    first_delay: Duration::from_secs(30),
    max_delay: Duration::from_secs(15 * 60),
};

/// Per source address: more, since many users may share one address (a NAT, a bastion).
pub(crate) const PER_SOURCE: Limits = Limits {
    free: 20,
    window: Duration::from_secs(15 * 60),
    first_delay: Duration::from_secs(30),
    max_delay: Duration::from_secs(15 * 60),
};

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

/// The counts; shared by every request of the process.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// Past this many entries, expired ones are pruned on the next failure.
const PRUNE_AT: usize = 10_000;

impl Throttle {
    /// How long logins for `key` are still refused, if they are.
    pub fn locked_for(&self, key: &Key, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().expect("throttle lock");
        entries.get(key)?.locked_until.and_then(|until| until.checked_duration_since(now)).filter(|d| !d.is_zero())
    }

    /// Counts a failed login for `key`.
    pub fn fail(&self, key: Key, limits: &Limits, now: Instant) {
        let mut entries = self.entries.lock().expect("throttle lock");
        if entries.len() >= PRUNE_AT {
            entries.retain(|_, e| !expired(e, limits, now));
        }
        let e = entries.entry(key).or_insert(Entry { failures: 0, window_start: now, locked_until: None });
        if expired(e, limits, now) {
            *e = Entry { failures: 0, window_start: now, locked_until: None };
        }
        e.failures += 1;
        if e.failures >= limits.free {
            let doublings = (e.failures - limits.free).min(16);
            let delay = limits.first_delay.saturating_mul(1 << doublings).min(limits.max_delay);
            e.locked_until = Some(now + delay);
            // The count stays for a whole window after the lock ends, so a failure right
            // after it locks for longer still.
            e.window_start = now + delay;
        }
    }

    /// A successful login clears the count of `key`.
    pub fn succeed(&self, key: &Key) {
        self.entries.lock().expect("throttle lock").remove(key);
    }
}

/// An entry whose window has passed and that is not locked counts for nothing.
fn expired(e: &Entry, limits: &Limits, now: Instant) -> bool {
    let unlocked = e.locked_until.is_none_or(|u| u <= now);
    unlocked && now.duration_since(e.window_start) >= limits.window
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        free: 3,
        window: Duration::from_secs(60),
        first_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(35),
    };

    fn user(n: &str) -> Key {
        Key::User(n.into())
    }

    #[test]
    fn a_few_failures_are_free_then_the_delay_grows_to_its_cap() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..2 {
            t.fail(user("ann"), &LIMITS, now);
            assert_eq!(t.locked_for(&user("ann"), now), None);
        }
        t.fail(user("ann"), &LIMITS, now);
        assert_eq!(t.locked_for(&user("ann"), now), Some(Duration::from_secs(10)));
        t.fail(user("ann"), &LIMITS, now);
        assert_eq!(t.locked_for(&user("ann"), now), Some(Duration::from_secs(20)));
        t.fail(user("ann"), &LIMITS, now);
        assert_eq!(t.locked_for(&user("ann"), now), Some(Duration::from_secs(35)), "capped");
        assert_eq!(t.locked_for(&user("ann"), now + Duration::from_secs(36)), None, "the lock ends");
        assert_eq!(t.locked_for(&user("bob"), now), None, "per key");
    }

    #[test]
    fn the_count_restarts_after_the_window_and_after_a_success() {
        let t = Throttle::default();
        let now = Instant::now();
        t.fail(user("ann"), &LIMITS, now);
        t.fail(user("ann"), &LIMITS, now);
        let later = now + LIMITS.window;
        t.fail(user("ann"), &LIMITS, later);
        assert_eq!(t.locked_for(&user("ann"), later), None, "the earlier failures expired");
        t.fail(user("ann"), &LIMITS, later);
        t.succeed(&user("ann"));
        t.fail(user("ann"), &LIMITS, later);
        assert_eq!(t.locked_for(&user("ann"), later), None, "a success cleared the count");
    }

    #[test]
    fn a_lock_outlives_the_window_and_failures_keep_growing_it() {
        let t = Throttle::default();
        let long = Limits { max_delay: Duration::from_secs(600), ..LIMITS };
        let now = Instant::now();
        for _ in 0..6 {
            t.fail(user("ann"), &long, now);
        }
        // 10 s doubled three times: locked for 80 s, past the 60 s window.
        assert_eq!(t.locked_for(&user("ann"), now), Some(Duration::from_secs(80)));
        let after = now + Duration::from_secs(81);
        assert_eq!(t.locked_for(&user("ann"), after), None);
        t.fail(user("ann"), &long, after);
        assert!(t.locked_for(&user("ann"), after).is_some(), "one more failure right after the lock locks again");
    }

    #[test]
    fn many_names_do_not_grow_the_map_without_bound() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..PRUNE_AT {
            t.fail(user(&i.to_string()), &LIMITS, now);
        }
        t.fail(user("last"), &LIMITS, now + LIMITS.window);
        assert_eq!(t.entries.lock().unwrap().len(), 1, "the expired entries were pruned");
    }
}
