//! The outbox's far side: deliveries due to the dispatcher, their outcomes,
//! and the dead letters an operator can list and redrive.

use super::*;

/// A delivery the dispatcher should attempt now.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub event: Event,
    pub subscription: String,
    pub function: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

impl SqliteStore {
    /// Pending deliveries due at `now_ms`, oldest event first.
    pub fn due_deliveries(&self, now_ms: i64, limit: usize) -> StoreResult<Vec<DueDelivery>> {
        self.inner.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT e.seq, e.data, d.subscription, d.function, d.attempts
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE d.state = 'pending' AND d.next_attempt_at <= ?1
                 ORDER BY d.event_seq LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![now_ms, limit as i64], |r| {
                    Ok(DueDelivery {
                        event: event_row(r)?,
                        subscription: r.get(2)?,
                        function: r.get(3)?,
                        attempts: r.get::<_, i64>(4)? as u32,
                    })
                })
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            Ok(rows)
        })
    }

    /// When the next pending delivery falls due (unix ms), if any.
    pub fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        self.inner.read(|c| {
            row(c, "SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0))
                .map_err(backend)
        })
    }

    pub fn mark_delivered(&self, event_seq: u64, subscription: &str) -> StoreResult<()> {
        let subscription = subscription.to_string();
        self.inner.write(move |tx, _| {
            exec(
                tx,
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, finished_at = ?3
                 WHERE event_seq = ?1 AND subscription = ?2",
                params![event_seq as i64, subscription, ts(&now())],
            )
            .map_err(backend)?;
            Ok(())
        })
    }

    /// Records a failed attempt: retry at `next_ms`, or dead-letter when `dead`.
    pub fn mark_failed(
        &self,
        event_seq: u64,
        subscription: &str,
        error: &str,
        next_ms: i64,
        dead: bool,
    ) -> StoreResult<()> {
        let (subscription, error) = (subscription.to_string(), error.to_string());
        self.inner.write(move |tx, _| {
            exec(
                tx,
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4,
                     state = CASE WHEN ?5 THEN 'dead' ELSE 'pending' END,
                     finished_at = CASE WHEN ?5 THEN ?6 ELSE NULL END
                 WHERE event_seq = ?1 AND subscription = ?2",
                params![event_seq as i64, subscription, error, next_ms, dead, ts(&now())],
            )
            .map_err(backend)?;
            Ok(())
        })
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    /// The embedded dispatcher records its own dead letters (a delivery
    /// row that used up its attempts); nothing pushes them.
    async fn record(&self, _envelope: &bifrost_core::events::PushEnvelope) -> StoreResult<DeadLetter> {
        Err(StoreError::Invalid("the embedded home records dead letters itself; nothing pushes them".into()))
    }

    /// The outbox is the delivery queue here: nothing is published to a bus
    /// that could fail to confirm it.
    async fn republish_unconfirmed(&self, _older_than: std::time::Duration) -> StoreResult<usize> {
        Ok(0)
    }

    async fn backlog(&self) -> StoreResult<bifrost_core::ports::Backlog> {
        self.run(|inner| {
            inner.read(|c| {
                let (pending, oldest): (i64, Option<String>) = row(
                    c,
                    "SELECT COUNT(*), MIN(e.at) FROM deliveries d JOIN events e ON e.seq = d.event_seq \
                     WHERE d.state = 'pending'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(backend)?;
                let oldest_age = match oldest {
                    Some(at) => Some(parse_ts(&at).map_err(backend)?),
                    None => None,
                }
                .map(|at| (now() - at).to_std().unwrap_or_default());
                Ok(bifrost_core::ports::Backlog { pending: pending as u64, oldest_age })
            })
        })
        .await
    }

    async fn dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.run(|inner| {
            inner.read(|c| {
                let mut stmt = c
                    .prepare_cached(
                        "SELECT e.seq, e.data, d.subscription, d.attempts, d.last_error, d.finished_at
                     FROM deliveries d JOIN events e ON e.seq = d.event_seq
                     WHERE d.state = 'dead' ORDER BY d.event_seq",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map([], |r| {
                        let event = event_row(r)?;
                        let subscription: String = r.get(2)?;
                        Ok(DeadLetter {
                            id: format!("{}/{}", event.seq, subscription),
                            subscription,
                            event,
                            attempts: r.get::<_, i64>(3)? as u32,
                            last_error: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            dead_at: parse_ts(&r.get::<_, Option<String>>(5)?.unwrap_or_default())?,
                        })
                    })
                    .map_err(backend)?
                    .collect::<Result<_, _>>()
                    .map_err(backend)?;
                Ok(rows)
            })
        })
        .await
    }

    async fn redrive(&self, ids: Option<Vec<String>>) -> StoreResult<usize> {
        self.run(move |inner| {
            let n = inner.write(move |tx, _| {
                let now_ms = now().timestamp_millis();
                match ids {
                    None => Ok(exec(tx,
                        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, finished_at = NULL
                         WHERE state = 'dead'",
                        [now_ms],
                    ).map_err(backend)?),
                    Some(ids) => {
                        let mut n = 0;
                        for id in ids {
                            let (seq, sub) = id
                                .split_once('/')
                                .and_then(|(s, sub)| Some((s.parse::<i64>().ok()?, sub.to_string())))
                                .ok_or_else(|| StoreError::Invalid(format!("dead letter id {id:?} must look like <seq>/<subscription>")))?;
                            let changed = exec(tx,
                                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?1, finished_at = NULL
                                 WHERE event_seq = ?2 AND subscription = ?3 AND state = 'dead'",
                                params![now_ms, seq, sub],
                            ).map_err(backend)?;
                            if changed == 0 {
                                return Err(StoreError::not_found("dead letter", id));
                            }
                            n += changed;
                        }
                        Ok(n)
                    }
                }
            })?;
            if n > 0 {
                inner.deliveries_ready.notify_one();
            }
            Ok(n)
        })
        .await
    }
}
