//! In-memory adapters: the local runner's embedded default and the unit tests' store. They
//! honour the same contracts as the DynamoDB and SQS adapters, so the conversation and the
//! worker behave the same on both.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::jobs::{
    CompleteOutcome, Completion, CompletionQueue, DeliveryOutcome, Job, JobNumber, JobPage,
    JobStatus, JobStore, MAX_QUEUE_DELAY, QueueError, StoreError,
};

/// Jobs in a map behind a mutex; every operation is atomic under the lock, as the DynamoDB
/// conditional writes are.
#[derive(Default)]
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<JobNumber, Job>>,
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobNumber, Job>> {
        // A panic while holding the lock cannot leave a half-written job (every write is a
        // single insert), so a poisoned map is still consistent.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let mut jobs = self.lock();
        if jobs.contains_key(&job.number) {
            return Err(StoreError::Duplicate(job.number));
        }
        jobs.insert(job.number, job.clone());
        Ok(())
    }

    async fn get(&self, number: JobNumber) -> Result<Option<Job>, StoreError> {
        Ok(self.lock().get(&number).cloned())
    }

    async fn list_recent(&self, limit: usize) -> Result<JobPage, StoreError> {
        let jobs = self.lock();
        let mut all: Vec<&Job> = jobs.values().collect();
        all.sort_by_key(|job| std::cmp::Reverse((job.created_at, job.number)));
        Ok(JobPage {
            total: all.len(),
            jobs: all.into_iter().take(limit).cloned().collect(),
        })
    }

    async fn complete_if_running(
        &self,
        number: JobNumber,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError> {
        let mut jobs = self.lock();
        let Some(job) = jobs.get_mut(&number) else {
            return Ok(CompleteOutcome::NotFound);
        };
        let next = match &job.status {
            JobStatus::Running => JobStatus::Completing {
                completed_at: now,
                lease_until,
                attempts: 1,
            },
            JobStatus::Completing {
                completed_at,
                lease_until: held_until,
                attempts,
            } if *held_until < now => JobStatus::Completing {
                completed_at: *completed_at,
                lease_until,
                attempts: attempts + 1,
            },
            _ => return Ok(CompleteOutcome::AlreadyComplete(job.clone())),
        };
        job.status = next;
        Ok(CompleteOutcome::Completed(job.clone()))
    }

    async fn record_delivery(
        &self,
        number: JobNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut jobs = self.lock();
        if let Some(job) = jobs.get_mut(&number)
            && let JobStatus::Completing { completed_at, .. } = job.status
        {
            job.status = match outcome {
                DeliveryOutcome::Notified => JobStatus::Notified {
                    completed_at,
                    notified_at: now,
                },
                DeliveryOutcome::Failed { reason } => JobStatus::Failed {
                    completed_at,
                    reason,
                },
            };
        }
        Ok(())
    }
}

/// A message as a queue consumer sees it: the SQS message id and the body, as SQS would carry
/// them, so the in-process consumer runs the very decoding the SQS function runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    pub correlation_id: String,
}

/// The in-memory completion queue: an unbounded channel, with delays served by a timer task.
#[derive(Clone)]
pub struct MemoryCompletionQueue {
    sender: mpsc::UnboundedSender<QueuedMessage>,
}

/// The consuming end of a [`MemoryCompletionQueue`].
pub type MemoryQueueReceiver = mpsc::UnboundedReceiver<QueuedMessage>;

impl MemoryCompletionQueue {
    pub fn new() -> (Self, MemoryQueueReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (MemoryCompletionQueue { sender }, receiver)
    }
}

#[async_trait]
impl CompletionQueue for MemoryCompletionQueue {
    async fn send(&self, completion: &Completion, delay: Duration) -> Result<(), QueueError> {
        if delay > MAX_QUEUE_DELAY {
            return Err(QueueError::DelayTooLong(delay));
        }
        let message = QueuedMessage {
            message_id: format!("mem-{:016x}", fastrand::u64(..)),
            body: completion.to_body(),
            correlation_id: completion.correlation_id.clone(),
        };
        if delay.is_zero() {
            return self
                .sender
                .send(message)
                .map_err(|_| QueueError::Unavailable("the consumer has stopped".to_owned()));
        }
        if self.sender.is_closed() {
            return Err(QueueError::Unavailable(
                "the consumer has stopped".to_owned(),
            ));
        }
        let sender = self.sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // The consumer may have stopped during the delay (shutdown); nothing to deliver to.
            let _ = sender.send(message);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ConversationAccount, ConversationReference};

    fn job(n: u32, secs: i64) -> Job {
        let reference = ConversationReference {
            conversation: ConversationAccount {
                id: format!("conv-{n}"),
                ..Default::default()
            },
            service_url: "http://127.0.0.1:1/".into(),
            ..Default::default()
        };
        Job::new_running(
            JobNumber::new(n).unwrap(),
            reference,
            DateTime::from_timestamp(secs, 0).unwrap(),
        )
    }

    #[tokio::test]
    async fn create_refuses_an_existing_number() {
        let store = MemoryJobStore::new();
        store.create(&job(1, 0)).await.unwrap();
        assert!(matches!(
            store.create(&job(1, 5)).await,
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(
            store
                .get(JobNumber::new(1).unwrap())
                .await
                .unwrap()
                .unwrap()
                .created_at
                .timestamp(),
            0
        );
    }

    #[tokio::test]
    async fn lists_most_recent_first_within_the_limit() {
        let store = MemoryJobStore::new();
        for n in 1..=5 {
            store.create(&job(n, i64::from(n))).await.unwrap();
        }
        let page = store.list_recent(2).await.unwrap();
        assert_eq!(page.total, 5);
        let numbers: Vec<u32> = page.jobs.iter().map(|j| j.number.get()).collect();
        assert_eq!(numbers, vec![5, 4]);
    }

    #[tokio::test]
    async fn completion_is_conditional_and_a_lapsed_lease_is_taken_over() {
        let store = MemoryJobStore::new();
        let n = JobNumber::new(1).unwrap();
        store.create(&job(1, 0)).await.unwrap();
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        assert!(matches!(
            store.complete_if_running(n, t(10), t(70)).await.unwrap(),
            CompleteOutcome::Completed(_)
        ));
        // Lease still live: someone else is delivering.
        assert!(matches!(
            store.complete_if_running(n, t(20), t(80)).await.unwrap(),
            CompleteOutcome::AlreadyComplete(_)
        ));
        // Lease lapsed (the deliverer crashed): taken over.
        match store.complete_if_running(n, t(100), t(160)).await.unwrap() {
            CompleteOutcome::Completed(job) => assert!(matches!(
                job.status,
                JobStatus::Completing { attempts: 2, .. }
            )),
            other => panic!("expected a takeover, got {other:?}"),
        }
        store
            .record_delivery(n, DeliveryOutcome::Notified, t(101))
            .await
            .unwrap();
        // A late failure report cannot undo the notification.
        store
            .record_delivery(
                n,
                DeliveryOutcome::Failed {
                    reason: "late".into(),
                },
                t(102),
            )
            .await
            .unwrap();
        assert!(matches!(
            store.get(n).await.unwrap().unwrap().status,
            JobStatus::Notified { .. }
        ));
        assert!(matches!(
            store
                .complete_if_running(n, t(1000), t(1060))
                .await
                .unwrap(),
            CompleteOutcome::AlreadyComplete(_)
        ));
        assert_eq!(
            store
                .complete_if_running(JobNumber::new(2).unwrap(), t(1), t(2))
                .await
                .unwrap(),
            CompleteOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn queue_delivers_after_the_delay_and_refuses_long_delays() {
        let (queue, mut receiver) = MemoryCompletionQueue::new();
        let completion = Completion::new(JobNumber::new(3).unwrap(), "c");
        assert!(matches!(
            queue.send(&completion, Duration::from_secs(901)).await,
            Err(QueueError::DelayTooLong(_))
        ));
        queue
            .send(&completion, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(receiver.try_recv().is_err(), "delivered before its delay");
        let message = tokio::time::timeout(Duration::from_secs(2), receiver.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Completion::from_body(&message.body).unwrap(), completion);
    }
}
