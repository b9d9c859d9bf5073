//! `Escrow`: this instance's credit reservations and the Prepares held against them, in memory.
//!
//! Per sender with a credit limit, the database holds a durable *reservation* of this
//! instance (`balance_reservations`, summed in `balances.reserved` under the CHECK
//! `balance - reserved >= -credit_limit`). A Prepare is held here, against that reservation,
//! with no database round trip; when the reservation runs short, the writer asks for a
//! top-up in its next batch. A Fulfill's post consumes the reservation by its amount in the
//! same transaction that moves the balance; a Reject only ends the hold here.
//!
//! The one rule that makes this safe: the `reserved` figure kept here is never more than what
//! the database has committed for this instance. It rises only after a commit reports the
//! new figure, and falls before a give-back is sent; after any failure the writer reads the
//! committed figures again ([`Escrow::resync`]).
//!
//! Accounts without a credit limit need no reservation: their Prepares are only counted, and
//! whether an account is limited is re-read from the database every [`UNLIMITED_RECHECK`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use schema::models::balance_batch::AccountState;
use tokio::time::Instant;

/// How much traffic a reservation should cover: top-ups ask for this much of the account's
/// recent flow beyond what the waiting Prepares need.
pub const RESERVATION_WINDOW: Duration = Duration::from_millis(500);
/// A reservation unused this long is given back whole, so other replicas can use the credit.
pub const IDLE_GIVE_BACK: Duration = Duration::from_secs(1);
/// How often an account known to have no credit limit is checked again.
pub const UNLIMITED_RECHECK: Duration = Duration::from_secs(5);
/// An account with nothing reserved or in flight is forgotten after this long.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);

/// A Prepare's amount, held on its sender until the packet is fulfilled or rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The sender.
    pub account: i64,
    /// The amount held, base units.
    pub amount: i64,
    /// True when a reservation covers it (the sender has a credit limit): its post consumes
    /// that much of the reservation.
    pub reserved: bool,
}

/// What a Prepare met in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryHold {
    /// Held.
    Held(Hold),
    /// The reservation does not cover it: ask the writer for a top-up.
    NeedsTopUp,
    /// No amount of credit can cover it (it does not fit a 64-bit balance).
    Never,
}

#[derive(Debug)]
struct Slot {
    /// This instance's committed reservation (never more than the database's figure).
    reserved: i64,
    /// Prepares held, base units, and how many.
    in_flight: i64,
    packets: i64,
    /// When the database last said whether the account is limited, and what it said.
    checked_at: Option<Instant>,
    unlimited: bool,
    /// The balance at the last batch that touched it.
    balance: i64,
    /// Amount held since the last tick, and the smoothed flow in base units per second.
    recent: i64,
    flow: f64,
    last_used: Instant,
}

impl Slot {
    fn new(now: Instant) -> Slot {
        Slot {
            reserved: 0,
            in_flight: 0,
            packets: 0,
            checked_at: None,
            unlimited: false,
            balance: 0,
            recent: 0,
            flow: 0.0,
            last_used: now,
        }
    }

    fn known_unlimited(&self, now: Instant) -> bool {
        self.unlimited
            && self
                .checked_at
                .is_some_and(|at| now.duration_since(at) < UNLIMITED_RECHECK)
    }

    /// Holds `amount` if the reservation (or, unlimited, the 64-bit balance) allows it.
    fn try_hold(&mut self, account: i64, amount: i64, now: Instant) -> TryHold {
        let Some(in_flight) = self.in_flight.checked_add(amount) else {
            return TryHold::Never;
        };
        let reserved = if self.known_unlimited(now) {
            // No credit limit, but the balance must still fit a bigint once posted.
            if self.balance.checked_sub(in_flight).is_none() {
                return TryHold::Never;
            }
            false
        } else if self.checked_at.is_some() && in_flight <= self.reserved {
            true
        } else {
            return TryHold::NeedsTopUp;
        };
        self.in_flight = in_flight;
        self.packets += 1;
        self.recent = self.recent.saturating_add(amount);
        self.last_used = now;
        TryHold::Held(Hold {
            account,
            amount,
            reserved,
        })
    }

    fn end(&mut self, amount: i64) {
        self.in_flight = (self.in_flight - amount).max(0);
        self.packets = (self.packets - 1).max(0);
    }
}

/// A top-up to ask for on one account: at least `short`, ideally `want`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopUp {
    /// Needed for the Prepares waiting now.
    pub short: i64,
    /// Needed plus the account's flow over [`RESERVATION_WINDOW`].
    pub want: i64,
}

/// This instance's reservations and holds, shared by the packet path and the writer.
#[derive(Debug)]
pub struct Escrow {
    slots: Mutex<HashMap<i64, Slot>>,
    up: AtomicBool,
}

impl Default for Escrow {
    fn default() -> Self {
        Escrow {
            slots: Mutex::new(HashMap::new()),
            up: AtomicBool::new(true),
        }
    }
}

impl Escrow {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        // A panic while holding this lock leaves plain numbers behind, still consistent
        // enough to serve: take them rather than fail every packet.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// False while the database cannot commit: new Prepares get T00 and are not forwarded.
    pub fn database_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records whether the database commits.
    pub fn set_database_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Holds `amount` on `account` if this instance's reservation covers it.
    pub fn try_hold(&self, account: i64, amount: i64) -> TryHold {
        let now = Instant::now();
        self.slots()
            .entry(account)
            .or_insert_with(|| Slot::new(now))
            .try_hold(account, amount, now)
    }

    /// Ends a hold: its packet was rejected, or its post committed (or was given up).
    pub fn end(&self, hold: Hold) {
        if let Some(slot) = self.slots().get_mut(&hold.account) {
            slot.end(hold.amount);
        }
    }

    /// The top-up to ask for so that Prepares of `waiting` more can be held on `account`;
    /// `None` when they fit already or can never fit.
    pub fn top_up(&self, account: i64, waiting: i64) -> Option<TopUp> {
        let now = Instant::now();
        let mut slots = self.slots();
        let slot = slots.entry(account).or_insert_with(|| Slot::new(now));
        let needed = slot.in_flight.checked_add(waiting)?;
        let short = needed.saturating_sub(slot.reserved).max(0);
        if short == 0 && slot.checked_at.is_some() && !slot.unlimited {
            return None;
        }
        // Ask for the flow of the next moments too, or (no flow yet) as much again.
        let flow = (slot.flow * RESERVATION_WINDOW.as_secs_f64()).min(i64::MAX as f64) as i64;
        let short = short.max(1);
        Some(TopUp {
            short,
            want: short.saturating_add(flow.max(short)),
        })
    }

    /// Takes in what a committed batch reported.
    pub fn apply_states(&self, states: &[AccountState]) {
        let now = Instant::now();
        let mut slots = self.slots();
        for state in states {
            let slot = slots
                .entry(state.account_id)
                .or_insert_with(|| Slot::new(now));
            slot.reserved = state.reserved;
            slot.balance = state.balance;
            slot.unlimited = state.unlimited;
            slot.checked_at = Some(now);
        }
    }

    /// Replaces every reservation figure by the committed ones (after a failure).
    pub fn resync(&self, committed: &[(i64, i64)]) {
        let committed: HashMap<i64, i64> = committed.iter().copied().collect();
        let mut slots = self.slots();
        for (account, slot) in slots.iter_mut() {
            slot.reserved = committed.get(account).copied().unwrap_or(0);
        }
        let now = Instant::now();
        for (account, amount) in committed {
            slots
                .entry(account)
                .or_insert_with(|| Slot::new(now))
                .reserved = amount;
        }
    }

    /// Once per tick of `elapsed`: updates each account's flow, forgets idle accounts and
    /// takes the reservations to give back (lowered here at once, before they are sent).
    pub fn tick(&self, elapsed: Duration) -> Vec<(i64, i64)> {
        let now = Instant::now();
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let mut give_back = Vec::new();
        let mut slots = self.slots();
        slots.retain(|account, slot| {
            slot.flow = 0.5 * slot.flow + 0.5 * (slot.recent as f64 / seconds);
            slot.recent = 0;
            let free = slot.reserved - slot.in_flight;
            let idle = now.duration_since(slot.last_used);
            if free > 0 {
                let keep = (2.0 * slot.flow * RESERVATION_WINDOW.as_secs_f64()) as i64;
                let amount = if idle >= IDLE_GIVE_BACK {
                    free
                } else if free > keep.saturating_mul(2) {
                    free - keep
                } else {
                    0
                };
                if amount > 0 {
                    slot.reserved -= amount;
                    give_back.push((*account, amount));
                }
            }
            slot.reserved != 0 || slot.in_flight != 0 || idle < FORGET_AFTER
        });
        give_back
    }

    /// What is held per account now: (account, amount, packets), for dashboards.
    pub fn in_flight(&self) -> Vec<(i64, i64, i64)> {
        let mut held: Vec<(i64, i64, i64)> = self
            .slots()
            .iter()
            .filter(|(_, slot)| slot.packets > 0)
            .map(|(account, slot)| (*account, slot.in_flight, slot.packets))
            .collect();
        held.sort_unstable();
        held
    }

    /// This instance's reservation and holds on `account`: (reserved, in flight).
    #[cfg(test)]
    pub fn reservation(&self, account: i64) -> (i64, i64) {
        self.slots()
            .get(&account)
            .map_or((0, 0), |slot| (slot.reserved, slot.in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(account_id: i64, reserved: i64, unlimited: bool) -> AccountState {
        AccountState {
            account_id,
            balance: 0,
            unlimited,
            reserved,
        }
    }

    #[tokio::test]
    async fn prepares_are_held_against_the_reservation_and_no_further() {
        // Proves the in-memory no-overdraft rule: holds never exceed the committed reservation.
        let escrow = Escrow::default();
        assert_eq!(escrow.try_hold(1, 10), TryHold::NeedsTopUp);
        escrow.apply_states(&[state(1, 25, false)]);
        let first = escrow.try_hold(1, 10);
        assert!(matches!(first, TryHold::Held(Hold { reserved: true, .. })));
        assert!(matches!(escrow.try_hold(1, 15), TryHold::Held(_)));
        assert_eq!(escrow.try_hold(1, 1), TryHold::NeedsTopUp);
        let TryHold::Held(first) = first else {
            unreachable!()
        };
        escrow.end(first);
        assert!(matches!(escrow.try_hold(1, 10), TryHold::Held(_)));
        assert_eq!(escrow.reservation(1), (25, 25));
    }

    #[tokio::test]
    async fn top_ups_ask_for_what_is_missing_and_a_margin() {
        // Proves a top-up asks at least for what the waiting Prepares lack.
        let escrow = Escrow::default();
        escrow.apply_states(&[state(1, 25, false)]);
        assert!(matches!(escrow.try_hold(1, 20), TryHold::Held(_)));
        let top_up = escrow.top_up(1, 30).expect("a top-up");
        assert_eq!(top_up.short, 25);
        assert!(top_up.want >= 50);
        assert_eq!(escrow.top_up(1, 5), None, "5 more still fit");
        assert_eq!(escrow.top_up(1, i64::MAX), None, "can never fit");
    }

    #[tokio::test]
    async fn unlimited_accounts_need_no_reservation_but_must_fit_a_bigint() {
        // Proves accounts without a credit limit hold without reserving, up to 64 bits.
        let escrow = Escrow::default();
        escrow.apply_states(&[AccountState {
            account_id: 1,
            balance: i64::MIN + 100,
            unlimited: true,
            reserved: 0,
        }]);
        assert!(matches!(
            escrow.try_hold(1, 100),
            TryHold::Held(Hold {
                reserved: false,
                ..
            })
        ));
        assert_eq!(escrow.try_hold(1, 1), TryHold::Never);
        assert_eq!(escrow.try_hold(1, i64::MAX), TryHold::Never);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_reservations_are_given_back_and_lowered_first() {
        // Proves an unused reservation is given back after IDLE_GIVE_BACK, lowered in memory
        // before it is sent, and what is in flight is kept.
        let escrow = Escrow::default();
        escrow.apply_states(&[state(1, 100, false)]);
        assert!(matches!(escrow.try_hold(1, 30), TryHold::Held(_)));
        tokio::time::advance(IDLE_GIVE_BACK).await;
        assert_eq!(escrow.tick(IDLE_GIVE_BACK), vec![(1, 70)]);
        assert_eq!(escrow.reservation(1), (30, 30));
        assert_eq!(escrow.tick(IDLE_GIVE_BACK), vec![]);
        escrow.resync(&[(1, 100)]);
        assert_eq!(escrow.reservation(1), (100, 30));
    }
}
