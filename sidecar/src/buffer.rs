//! Reports waiting for the platform's acknowledgement. Bounded: while the
//! platform is unreachable the newest reports are kept and the oldest
//! dropped (and counted), so memory stays flat however long an outage is.

use std::collections::VecDeque;

use crate::proto::HealthReport;

pub struct Buffer {
    items: VecDeque<HealthReport>,
    capacity: usize,
    dropped: u64,
}

impl Buffer {
    pub fn new(capacity: usize) -> Self {
        Buffer { items: VecDeque::with_capacity(capacity.min(4096)), capacity: capacity.max(1), dropped: 0 }
    }

    pub fn push(&mut self, r: HealthReport) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(r);
    }

    /// The platform stored everything up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.items.front().is_some_and(|r| r.seq <= seq) {
            self.items.pop_front();
        }
    }

    /// Unacknowledged reports with a sequence number above `after`, oldest first.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &HealthReport> {
        self.items.iter().filter(move |r| r.seq > after)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: u64) -> HealthReport {
        HealthReport { seq, ..Default::default() }
    }

    #[test]
    fn keeps_the_newest_and_counts_the_dropped() {
        let mut b = Buffer::new(3);
        for s in 1..=5 {
            b.push(r(s));
        }
        assert_eq!(b.after(0).map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(b.dropped(), 2);
        b.ack(4);
        assert_eq!(b.after(0).map(|r| r.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(b.after(5).count(), 0);
    }
}
