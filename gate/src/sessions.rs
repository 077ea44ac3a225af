//! Open sessions by certificate serial, and which of them a CRL change must
//! cut — the kick logic both shapes share (the broker signals a session
//! task, the plugin asks Mosquitto to disconnect a client id).

use std::collections::HashMap;

use gatehouse_auth::{RevocationSet, Serial};

/// What the CRL watcher said since the last look.
#[derive(Debug, Clone, Copy)]
pub enum CrlEvent<'a> {
    /// A reload listed these serials as newly revoked
    /// (`RevocationUpdate::newly_revoked`).
    Revoked(&'a [Serial]),
    /// Updates were missed (a lagging receiver): every open session must be
    /// checked against the set in force.
    Missed(&'a RevocationSet),
}

/// Open sessions by serial; `K` is how the shape reaches one session.
#[derive(Debug)]
pub struct SessionIndex<K> {
    by_serial: HashMap<Serial, Vec<K>>,
}

impl<K> Default for SessionIndex<K> {
    fn default() -> Self {
        SessionIndex {
            by_serial: HashMap::new(),
        }
    }
}

impl<K> SessionIndex<K> {
    /// Adds a session of the certificate `serial`. Register a session
    /// *before* its admission checks revocation, so a CRL change landing in
    /// between still reaches it.
    pub fn insert(&mut self, serial: Serial, key: K) {
        self.by_serial.entry(serial).or_default().push(key);
    }

    /// Removes the first session of `serial` that `is_it` picks; whether one
    /// was found.
    pub fn remove(&mut self, serial: &Serial, is_it: impl Fn(&K) -> bool) -> Option<K> {
        let keys = self.by_serial.get_mut(serial)?;
        let at = keys.iter().position(is_it)?;
        let key = keys.swap_remove(at);
        if keys.is_empty() {
            self.by_serial.remove(serial);
        }
        Some(key)
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.by_serial.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_serial.is_empty()
    }

    /// Every open session.
    pub fn all(&self) -> impl Iterator<Item = &K> + '_ {
        self.by_serial.values().flatten()
    }

    /// The sessions `event` concerns, with their serial.
    pub fn to_cut<'a>(&'a self, event: CrlEvent<'a>) -> Vec<(Serial, &'a K)> {
        let of = |serial: &'a Serial| {
            self.by_serial
                .get(serial)
                .into_iter()
                .flatten()
                .map(move |k| (*serial, k))
        };
        match event {
            CrlEvent::Revoked(serials) => serials.iter().flat_map(of).collect(),
            CrlEvent::Missed(set) => self
                .by_serial
                .keys()
                .filter(|s| set.contains(s))
                .flat_map(of)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Serial {
        Serial::from_u64(n)
    }

    #[test]
    fn an_update_cuts_the_sessions_of_its_newly_revoked_serials_only() {
        let mut idx = SessionIndex::default();
        idx.insert(s(1), "a");
        idx.insert(s(1), "a-again");
        idx.insert(s(2), "b");
        idx.insert(s(3), "c");
        let mut cut: Vec<_> = idx
            .to_cut(CrlEvent::Revoked(&[s(1), s(9)]))
            .into_iter()
            .map(|(serial, k)| (serial, *k))
            .collect();
        cut.sort();
        assert_eq!(cut, [(s(1), "a"), (s(1), "a-again")]);
    }

    #[test]
    fn missed_updates_rescan_every_session_against_the_set_in_force() {
        let mut idx = SessionIndex::default();
        idx.insert(s(1), 10);
        idx.insert(s(2), 20);
        idx.insert(s(3), 30);
        let set = RevocationSet::from_serials([s(2), s(3), s(4)]);
        let mut cut: Vec<_> = idx
            .to_cut(CrlEvent::Missed(&set))
            .into_iter()
            .map(|(_, k)| *k)
            .collect();
        cut.sort();
        assert_eq!(cut, [20, 30]);
    }

    #[test]
    fn removed_sessions_are_not_cut_and_empty_serials_are_dropped() {
        let mut idx = SessionIndex::default();
        idx.insert(s(1), 1);
        idx.insert(s(1), 2);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.remove(&s(1), |k| *k == 1), Some(1));
        assert_eq!(idx.remove(&s(1), |k| *k == 1), None);
        assert_eq!(idx.remove(&s(7), |_| true), None);
        let cut: Vec<_> = idx
            .to_cut(CrlEvent::Revoked(&[s(1)]))
            .into_iter()
            .map(|(_, k)| *k)
            .collect();
        assert_eq!(cut, [2]);
        assert_eq!(idx.remove(&s(1), |_| true), Some(2));
        assert!(idx.is_empty());
        assert_eq!(idx.all().count(), 0);
    }
}
