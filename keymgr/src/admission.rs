//! Who may hold a connection: accepted clients in a pool of their own; every connection not yet known to be one (TCP only, in its TLS handshake, a pending, rejected or unknown certificate) in a small pool where the oldest gives way to a newcomer.
//!
//! A client is known only after its handshake, so every connection starts
//! waiting. The waiting pool is bounded in all and per source address, and
//! when it is full the oldest waiting connection (from that address first)
//! is closed to make room: idle sockets, slow handshakes and pending
//! certificates can never use up the slots of accepted clients, nor keep a
//! newcomer out. An accepted client's connection leaves the pool once its
//! handshake is done and its certificate found accepted.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// How many connections each pool holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections of accepted clients.
    pub accepted: usize,
    /// Connections not (yet) of an accepted client, in all.
    pub waiting: usize,
    /// Of those, from one source address.
    pub per_address: usize,
}

/// The admission state every connection shares.
pub struct Gate {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// Oldest first.
    waiting: VecDeque<Waiting>,
    accepted: usize,
    live: usize,
    /// Waiting connections closed to make room, since the start.
    evicted: u64,
}

struct Waiting {
    id: u64,
    ip: IpAddr,
    evict: Arc<Notify>,
}

/// One connection's place. Dropping it gives the place back.
pub struct Ticket {
    gate: Arc<Gate>,
    id: u64,
    accepted: bool,
    evict: Arc<Notify>,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection from `ip` takes a waiting place; when the pool (or
    /// that address's share) is full, the oldest waiting connection (of
    /// that address when its share is full) is told to close.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Ticket {
        let mut s = self.lock();
        let from_ip = s.waiting.iter().filter(|w| w.ip == ip).count();
        let victim = if from_ip >= self.limits.per_address {
            s.waiting.iter().position(|w| w.ip == ip)
        } else if s.waiting.len() >= self.limits.waiting {
            Some(0)
        } else {
            None
        };
        if let Some(w) = victim.and_then(|i| s.waiting.remove(i)) {
            w.evict.notify_one();
            s.evicted += 1;
            if s.evicted.is_power_of_two() {
                tracing::warn!(
                    evicted = s.evicted,
                    address = %w.ip,
                    "connections that are not of an accepted client are being closed to make room for new ones"
                );
            }
        }
        let id = s.next;
        s.next += 1;
        s.live += 1;
        let evict = Arc::new(Notify::new());
        s.waiting.push_back(Waiting {
            id,
            ip,
            evict: evict.clone(),
        });
        Ticket {
            gate: self.clone(),
            id,
            accepted: false,
            evict,
        }
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.lock().live
    }

    /// Waiting connections closed to make room since the start.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }
}

impl Ticket {
    /// The connection is an accepted client's: it moves to their pool and
    /// can no longer be told to give way. `Err` with the limit when that
    /// pool is full.
    pub fn promote(&mut self) -> Result<(), usize> {
        if self.accepted {
            return Ok(());
        }
        let gate = self.gate.clone();
        let mut s = gate.lock();
        if s.accepted >= gate.limits.accepted {
            return Err(gate.limits.accepted);
        }
        s.waiting.retain(|w| w.id != self.id);
        s.accepted += 1;
        self.accepted = true;
        // A notice sent before the move no longer applies.
        self.evict = Arc::new(Notify::new());
        Ok(())
    }

    /// Resolves when the connection is told to give way to a newer one
    /// (never, once promoted).
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.live -= 1;
        if self.accepted {
            s.accepted -= 1;
        } else {
            s.waiting.retain(|w| w.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    /// Whether `t` was told to give way (a stored notice completes at once).
    fn told(t: &Ticket) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(t.evicted());
        std::future::Future::poll(f.as_mut(), &mut cx).is_ready()
    }

    #[test]
    fn the_oldest_waiting_gives_way_and_accepted_clients_keep_their_places() {
        let g = Gate::new(Limits {
            accepted: 2,
            waiting: 4,
            per_address: 2,
        });
        let mut a = g.admit(ip(1));
        a.promote().unwrap();
        let b1 = g.admit(ip(2));
        let b2 = g.admit(ip(2));
        // A third from the same address: its oldest gives way, no other.
        let b3 = g.admit(ip(2));
        assert!(told(&b1) && !told(&b2) && !told(&b3));
        let c1 = g.admit(ip(3));
        let c2 = g.admit(ip(4));
        // The pool is full (b2, b3, c1, c2): the oldest of all gives way.
        let d = g.admit(ip(5));
        assert!(told(&b2) && !told(&c1) && !told(&d));
        assert!(!told(&a), "an accepted client is never told to go");
        // The accepted pool has its own limit.
        let mut e = g.admit(ip(6));
        e.promote().unwrap();
        let mut f = g.admit(ip(7));
        assert_eq!(f.promote(), Err(2));
        drop(e);
        f.promote().unwrap();
        assert_eq!(g.evicted(), 3);
        drop((a, b1, b2, b3, c1, c2, d, f));
        assert_eq!(g.live(), 0);
    }
}
