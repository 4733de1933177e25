//! Analytics calls in flight: a bounded number per api process, and per tenant a share
//! of that, taken without waiting. A hung analytics then holds at most that many
//! requests (and their memory) in the api, each until its deadline, and one tenant's
//! flood cannot take the slots of the others: a request beyond either bound is
//! answered 503 with `Retry-After` at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use uuid::Uuid;

#[derive(Debug)]
pub struct AnalyticsSlots {
    total: usize,
    per_tenant: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// Only tenants holding a slot: at most `total` entries.
    by_tenant: HashMap<Uuid, usize>,
}

/// One call's right to wait on analytics; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<AnalyticsSlots>,
    tenant: Uuid,
}

impl AnalyticsSlots {
    /// `total` slots per process, at most `per_tenant` of them (at least 1 each) held
    /// by one tenant.
    pub fn new(total: usize, per_tenant: usize) -> Self {
        let total = total.max(1);
        Self {
            total,
            per_tenant: per_tenant.clamp(1, total),
            held: Mutex::default(),
        }
    }

    /// A slot for `tenant`, or `None` at once when the process or the tenant has none
    /// free.
    pub fn try_take(self: &Arc<Self>, tenant: Uuid) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.by_tenant.get(&tenant).copied().unwrap_or(0);
        if held.total >= self.total || mine >= self.per_tenant {
            return None;
        }
        held.total += 1;
        held.by_tenant.insert(tenant, mine + 1);
        Some(Slot {
            slots: self.clone(),
            tenant,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.total -= 1;
        if let Some(n) = held.by_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                held.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_share_and_the_process_its_total() {
        let slots = Arc::new(AnalyticsSlots::new(3, 2));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none(), "a's share is 2");
        let b1 = slots.try_take(b).unwrap();
        assert!(slots.try_take(b).is_none(), "the process has 3");
        drop(a1);
        let a3 = slots.try_take(a);
        assert!(a3.is_some(), "a slot given back is free again");
        drop((a3, b1));
        let held = slots.held.lock().unwrap();
        assert_eq!(held.total, 1, "only a's second slot is still held");
        assert!(
            !held.by_tenant.contains_key(&b),
            "no entry for a tenant holding none"
        );
    }
}
