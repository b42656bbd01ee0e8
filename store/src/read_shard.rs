//! Read shards. A thread that runs its own current-thread runtime (the API's serving threads)
//! marks itself shard `i` of `n`; its value reads then use only its own slice of the shared reader
//! connections. Those connections are opened on that thread, so their tokio-postgres driver tasks
//! run there too, and a query and the task awaiting it never wake each other across threads.
//!
//! Why: on a multi-thread runtime every read costs two cross-thread wake-ups (caller → connection
//! task → caller). On 2 cores that made store reads 0.64–0.71× a `pgbench` point-select at 8
//! tasks; two pinned current-thread shards measured 0.87–0.90× (`read_bench`, same session).
//!
//! A property of the thread, not of a handle: which runtime drives a connection is decided by the
//! thread that opens it, so the thread is what must be known when choosing one.

use std::cell::Cell;
use std::ops::Range;

thread_local! {
    static CURRENT: Cell<Option<ReadShard>> = const { Cell::new(None) };
}

/// Shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadShard {
    index: usize,
    count: usize,
}

impl ReadShard {
    /// `None` unless `index < count`.
    pub fn new(index: usize, count: usize) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    /// Marks the calling thread as this shard for every [`crate::Store`] it reads through. Call it
    /// first thing on a thread that drives a current-thread runtime of its own.
    pub fn pin_current_thread(self) {
        CURRENT.with(|c| c.set(Some(self)));
    }
}

pub(crate) fn current() -> Option<ReadShard> {
    CURRENT.with(Cell::get)
}

/// The reader slots `shard` may use out of `slots`: all of them for an unpinned thread, else an
/// even, disjoint share; with fewer slots than shards, shards share single slots.
pub(crate) fn slot_range(shard: Option<ReadShard>, slots: usize) -> Range<usize> {
    match shard {
        None => 0..slots,
        Some(_) if slots == 0 => 0..0,
        Some(ReadShard { index, count }) if slots >= count => {
            index * slots / count..(index + 1) * slots / count
        }
        Some(ReadShard { index, .. }) => {
            let s = index % slots;
            s..s + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(i: usize, n: usize) -> Option<ReadShard> {
        ReadShard::new(i, n)
    }

    #[test]
    fn an_unpinned_thread_uses_every_slot() {
        assert_eq!(slot_range(None, 4), 0..4);
    }

    #[test]
    fn shards_get_disjoint_non_empty_shares_covering_all_slots() {
        for slots in 1..=9 {
            for count in 1..=slots {
                let ranges: Vec<_> = (0..count).map(|i| slot_range(shard(i, count), slots)).collect();
                assert!(ranges.iter().all(|r| !r.is_empty()), "{slots} slots, {count} shards: {ranges:?}");
                let covered: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(covered, (0..slots).collect::<Vec<_>>(), "{slots} slots, {count} shards");
            }
        }
    }

    #[test]
    fn more_shards_than_slots_share_single_slots() {
        assert_eq!(slot_range(shard(0, 3), 2), 0..1);
        assert_eq!(slot_range(shard(1, 3), 2), 1..2);
        assert_eq!(slot_range(shard(2, 3), 2), 0..1);
    }

    #[test]
    fn an_index_outside_the_count_is_refused() {
        assert_eq!(ReadShard::new(2, 2), None);
        assert_eq!(ReadShard::new(0, 0), None);
    }

    #[test]
    fn pinning_is_per_thread() {
        ReadShard::new(1, 2).expect("valid").pin_current_thread();
        assert_eq!(current(), shard(1, 2));
        let other = std::thread::spawn(current).join().expect("thread ran");
        assert_eq!(other, None);
    }
}
