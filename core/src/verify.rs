//! Constant-time verification of a presented value against the live versions of a secret.
//!
//! Every candidate is hashed and compared, whether or not an earlier one matched, and comparisons
//! are between fixed-size SHA-256 digests so neither the position of the first differing byte nor
//! the candidates' lengths influence timing.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Returns the version of the first candidate (in the given order) equal to `presented`.
/// Candidates are `(version, plaintext)`; versions must be non-zero.
pub fn find_match<'a, I>(presented: &[u8], candidates: I) -> Option<u32>
where
    I: IntoIterator<Item = (u32, &'a [u8])>,
{
    let presented_digest: [u8; 32] = Sha256::digest(presented).into();
    let mut found = subtle::Choice::from(0);
    let mut version = 0u32;
    for (candidate_version, candidate) in candidates {
        let candidate_digest: [u8; 32] = Sha256::digest(candidate).into();
        let equal = presented_digest.ct_eq(&candidate_digest);
        version = u32::conditional_select(&version, &candidate_version, equal & !found);
        found |= equal;
    }
    bool::from(found).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_current_or_grace_version() {
        let live: [(u32, &[u8]); 2] = [(3, b"new"), (2, b"old")];
        assert_eq!(find_match(b"new", live), Some(3));
        assert_eq!(find_match(b"old", live), Some(2));
        assert_eq!(find_match(b"other", live), None);
        assert_eq!(find_match(b"ne", live), None);
        assert_eq!(find_match(b"", live), None);
        assert_eq!(find_match(b"x", std::iter::empty()), None);
    }

    #[test]
    fn first_match_wins_when_values_repeat() {
        let live: [(u32, &[u8]); 3] = [(5, b"a"), (4, b"b"), (3, b"a")];
        assert_eq!(find_match(b"a", live), Some(5));
    }

    #[test]
    fn every_candidate_is_visited() {
        struct Counting<'a> {
            items: &'a [(u32, &'a [u8])],
            next: usize,
            visited: &'a std::cell::Cell<usize>,
        }
        impl<'a> Iterator for Counting<'a> {
            type Item = (u32, &'a [u8]);
            fn next(&mut self) -> Option<Self::Item> {
                let item = self.items.get(self.next).copied();
                self.next += 1;
                if item.is_some() {
                    self.visited.set(self.visited.get() + 1);
                }
                item
            }
        }
        let visited = std::cell::Cell::new(0);
        let items: [(u32, &[u8]); 3] = [(3, b"hit"), (2, b"b"), (1, b"c")];
        let it = Counting { items: &items, next: 0, visited: &visited };
        assert_eq!(find_match(b"hit", it), Some(3));
        assert_eq!(visited.get(), 3, "no early exit after the first match");
    }

    proptest! {
        #[test]
        fn agrees_with_naive_search(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..6), presented in prop::collection::vec(any::<u8>(), 0..8)) {
            let candidates: Vec<(u32, &[u8])> = values.iter().enumerate().map(|(i, v)| (i as u32 + 1, v.as_slice())).collect();
            let naive = candidates.iter().find(|(_, v)| *v == presented.as_slice()).map(|(n, _)| *n);
            prop_assert_eq!(find_match(&presented, candidates.iter().copied()), naive);
        }
    }
}
