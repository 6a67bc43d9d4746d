//! Records fan-out cannot process: isolated from their batch, then kept as
//! dead letters (never skipped silently) before the checkpoint moves past
//! them.

use herald_log::Record;
use herald_store::DeadLetter;

use crate::worker::{Halt, Worker};

impl Worker {
    /// A batch failed the same way every time: process its records one by
    /// one, so only the records at fault become dead letters.
    pub(crate) async fn isolate(&mut self, records: Vec<Record>, why: String) {
        if records.len() == 1 {
            if let Some(r) = records.into_iter().next() {
                self.dead_letter(&r, why).await;
            }
            return;
        }
        tracing::warn!(
            partition = self.partition,
            records = records.len(),
            reason = %why,
            "batch failed every time; processing its records one by one"
        );
        for r in records {
            if *self.stop.borrow() {
                return;
            }
            if let Err(Halt::Permanent(why)) = self.process(vec![r.clone()]).await {
                self.dead_letter(&r, why).await;
            }
        }
    }

    /// Writes `r` to the dead-letter store with `reason`, then settles it.
    /// While Redis is unreachable this waits; if even the dead letter
    /// cannot be written the record stays unsettled (processed again after
    /// a restart).
    pub(crate) async fn dead_letter(&mut self, r: &Record, reason: String) {
        let hold = self.tracker.begin(r.offset);
        let event = herald_types::LogEvent::decode(&r.payload).ok();
        let undecodable = event.is_none();
        let d = DeadLetter {
            id: format!(
                "{}{}",
                DeadLetter::id_for(self.partition, r.offset),
                self.cfg.id_scope
            ),
            partition: self.partition,
            offset: r.offset,
            reason: reason.clone(),
            at_ms: herald_types::now_ms() as i64,
            raw_hex: undecodable.then(|| r.payload.iter().map(|b| format!("{b:02x}")).collect()),
            event,
            webhook: None,
        };
        let store = self.store.clone();
        let fence = self.fence;
        match self
            .retry("dead letter", || store.dead_letter_put(&d, fence))
            .await
        {
            Ok(false) => {
                self.deposed("dead_letter");
                hold.fail();
            }
            Ok(true) => {
                let class = if undecodable { "undecodable" } else { "failed" };
                metrics::counter!("herald_dead_letters_total", "reason" => class).increment(1);
                tracing::error!(
                    partition = self.partition,
                    offset = r.offset,
                    id = %d.id,
                    reason = %reason,
                    "record kept as a dead letter"
                );
                drop(hold);
            }
            Err(_) => {
                tracing::error!(
                    partition = self.partition,
                    offset = r.offset,
                    "dead letter not written; record stays unsettled until restart"
                );
                hold.fail();
            }
        }
    }
}
