//! The notify API's producer: "tell these conversations X" from another system, and
//! broadcasts to every active registered conversation. Beside the delivery core, not in it: it
//! turns a request into one [`Notification`] per recipient (each in the request's batch) and
//! hands them to the [`Notifier`]; the engine delivers them within the channel's limits.
//!
//! # A request's life
//! 1. [`NotifyService::submit`] stores a [`NotifyRequest`] (its id derived from the caller's
//!    `Idempotency-Key`, so the same key again finds it and sends nothing twice).
//! 2. A few named conversations (at most [`FanOutConfig::chunk`]) are fanned out at once: the
//!    registry says which are active (the others count as failed, "not registered", and are
//!    never sent to); each active one gets a notification, created then queued. More named
//!    conversations, and `"all": true`, are fanned out in the background: a [`BroadcastTask`]
//!    message on the delivery queue goes through them (the list, or the registry's active
//!    conversations) a page at a time, saving its cursor after each page.
//! 3. [`NotifyService::status`] counts the batch's notifications: sent, failed, pending.
//!
//! # Paced where the backlog is made
//! The background fan-out creates a page's notifications ahead, but queues them just in
//! time: per tenant, a chunk at a time, each recipient with a tenant slot of a block it
//! reserved no sooner than a lead before the block starts ([`RateLimiter::reserve_block`];
//! why that holds across invocations, crashes and each conversation's order is in
//! [`crate::delivery::limits`]). So the delivery queue holds about a lead time of each
//! tenant's sends, not the whole announcement: every recipient is received about once, and
//! other tenants' notifications (and urgent ones of the same tenant, from the priority
//! slots) do not wait behind a backlog. One queue serves both: a separate bulk queue would
//! add a second event source and dead-letter queue for what pacing already gives, and FIFO
//! order per conversation must hold across a conversation's bulk and single notifications.
//! 3. [`NotifyService::status`] counts the batch's notifications: sent, failed, pending.
//!
//! # Exactly once, across crashes
//! A recipient's notification id is the request id and a hash of the conversation id, so a
//! fan-out that runs a page again (after a crash between the page and its saved cursor, or an
//! idempotent retry of the request) finds the notifications it made and queues again only
//! those still queued: the queue's deduplication and the engine's claim make those harmless
//! (a message that still carries the old slot finds it late and takes a new one).

pub mod api;
pub mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::delivery::engine::QueueTask;
use crate::delivery::limits::{Block, RateLimiter};
use crate::delivery::notification::{group_hash, new_correlation_id};
use crate::delivery::{
    Content, Decision, Delivered, Notification, NotificationId, NotificationQueue, Notifier,
    NotifyError, Progress, QueueMessage, Source, StoreError,
};
use crate::registry::{ConversationRegistry, RegistryError};
pub use request::{InvalidBody, NotifyBody, Target};

/// A stored notify request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyRequest {
    pub id: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub correlation_id: String,
    pub target: Target,
    pub content: Content,
    pub urgent: bool,
    /// Named conversations: how many (each once). `all`: the active conversations counted
    /// when the request was accepted.
    pub recipients: u32,
    pub fan_out: FanOut,
}

/// How far a request's fan-out has come.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FanOut {
    /// The registry cursor after the last page handed over (`all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Conversations handed to the engine so far.
    pub reached: u32,
    /// Named conversations that were not registered (or retired): failed, never sent to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_registered: Vec<String>,
    /// Every recipient has its notification.
    pub done: bool,
}

/// What [`RequestStore::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreatedRequest {
    New,
    /// A request with this id exists (the same idempotency key again): here it is.
    Existing(Box<NotifyRequest>),
}

/// Notify requests.
///
/// Contract, for every adapter:
/// - `create` writes the request only if none with its id exists, and otherwise returns the
///   stored one unchanged ([`CreatedRequest::Existing`]).
/// - `get` returns `Ok(None)` for an unknown id.
/// - `save_fan_out` replaces the request's [`FanOut`] (one fan-out runs a request at a time:
///   its task messages share one FIFO group).
/// - Requests expire with the store's retention, counted from creation.
#[async_trait]
pub trait RequestStore: Send + Sync {
    async fn create(&self, request: &NotifyRequest) -> Result<CreatedRequest, StoreError>;
    async fn get(&self, id: &str) -> Result<Option<NotifyRequest>, StoreError>;
    async fn save_fan_out(&self, id: &str, fan_out: &FanOut) -> Result<(), StoreError>;
}

/// Why a request could not be handled (not the caller's fault).
#[derive(Debug, thiserror::Error)]
pub enum NotifyApiError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Queue(#[from] crate::delivery::QueueError),
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    pub recipients: u32,
    /// The idempotency key named an earlier request: this is its id, nothing new was sent.
    pub existing: bool,
}

/// One failed recipient in a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub conversation_id: String,
    pub reason: String,
}

/// A request's progress (`GET /api/notify/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    pub id: String,
    pub recipients: u32,
    pub sent: u32,
    pub failed: u32,
    pub pending: u32,
    /// The first [`MAX_FAILURES_LISTED`] failures.
    pub failures: Vec<Failure>,
    /// `running` while a broadcast's fan-out is still handing recipients over, then `done`.
    pub fan_out: &'static str,
    pub created_at: DateTime<Utc>,
}

/// How many failures a status lists.
pub const MAX_FAILURES_LISTED: usize = 100;

/// The envelope kind of a broadcast's fan-out messages on the delivery queue.
pub const BROADCAST_KIND: &str = "broadcast";

/// How the fan-out paces itself.
#[derive(Debug, Clone, Copy)]
pub struct FanOutConfig {
    /// Registry page size: one page's notifications are created together (the next page's
    /// while this one is queued).
    pub page: usize,
    /// Concurrent notification writes.
    pub concurrency: usize,
    /// After this long, a fan-out step finishes its page and hands the rest to a new message
    /// (well inside the delivery function's timeout and the queue's visibility timeout; the
    /// other messages of its batch are deleted only when it ends).
    pub step_budget: Duration,
    /// Recipients of one tenant queued together, their slots reserved in one write. Also the
    /// most named conversations fanned out at once, in the request.
    pub chunk: usize,
    /// How long before its slot a recipient is queued: at most this, at least half of it
    /// (enough for the queue to hand it over and the delivery to admit and claim it); more
    /// on a slow store (see [`NotifyService`]'s `lead`).
    pub lead: Duration,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            page: 100,
            concurrency: 16,
            step_budget: Duration::from_secs(5),
            chunk: 5,
            lead: Duration::from_millis(200),
        }
    }
}

/// The notify API's service. Built once per process.
pub struct NotifyService {
    requests: Arc<dyn RequestStore>,
    registry: Arc<dyn ConversationRegistry>,
    notifier: Arc<Notifier>,
    queue: Arc<dyn NotificationQueue>,
    /// The engine's limits over the same state: the fan-out reserves its recipients' slots.
    pacer: RateLimiter,
    /// A moving average of how long reserving a block takes: a slow store makes the
    /// delivery's own writes slow too, so the lead grows with it ([`NotifyService::lead`]).
    reserve_time: std::sync::Mutex<Duration>,
    config: FanOutConfig,
}

impl NotifyService {
    pub fn new(
        requests: Arc<dyn RequestStore>,
        registry: Arc<dyn ConversationRegistry>,
        notifier: Arc<Notifier>,
        queue: Arc<dyn NotificationQueue>,
        pacer: RateLimiter,
        config: FanOutConfig,
    ) -> Self {
        NotifyService {
            requests,
            registry,
            notifier,
            queue,
            pacer,
            reserve_time: std::sync::Mutex::new(Duration::ZERO),
            config,
        }
    }

    /// How long before its slot a recipient is queued: [`FanOutConfig::lead`], or more on a
    /// store slow enough that a delivery's few writes before the send (the send log, the
    /// claim, the registration's read) would miss it — six of this store's round trips, at
    /// most 0.8 s (a held slot, a chunk after it, is waited for up to
    /// [`crate::delivery::limits::HELD_WAIT`]).
    fn lead(&self) -> Duration {
        let round_trip = *self.reserve_time.lock().unwrap_or_else(|p| p.into_inner());
        self.config
            .lead
            .max(round_trip * 6)
            .min(Duration::from_millis(800))
    }

    fn learn_reserve_time(&self, took: Duration) {
        let mut average = self.reserve_time.lock().unwrap_or_else(|p| p.into_inner());
        *average = average.mul_f64(0.8) + took.mul_f64(0.2);
    }

    /// The request id: derived from the idempotency key (so the same key finds the same
    /// request), random otherwise.
    pub fn request_id(idempotency_key: Option<&str>) -> String {
        match idempotency_key {
            Some(key) => {
                let digest = sha2::Sha256::digest(key.as_bytes());
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                format!("k-{hex}")
            }
            None => format!("r-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        }
    }

    /// Accepts a request: stores it and fans it out (named conversations now, `all` in the
    /// background). The same idempotency key again returns the first request, finishing its
    /// fan-out if a crash interrupted it.
    pub async fn submit(
        &self,
        body: NotifyBody,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, NotifyApiError> {
        let id = Self::request_id(idempotency_key);
        let recipients = match &body.target {
            Target::Conversations { ids } => ids.len() as u32,
            Target::All { tenant_id } => self.count_active(tenant_id.as_deref()).await?,
        };
        let request = NotifyRequest {
            id: id.clone(),
            created_at: Utc::now(),
            idempotency_key: idempotency_key.map(str::to_owned),
            correlation_id: new_correlation_id(),
            target: body.target,
            content: body.content,
            urgent: body.urgent,
            recipients,
            fan_out: FanOut::default(),
        };
        let (request, existing) = match self.requests.create(&request).await? {
            CreatedRequest::New => (request, false),
            CreatedRequest::Existing(stored) => (*stored, true),
        };
        if !request.fan_out.done {
            match &request.target {
                Target::Conversations { ids } if ids.len() <= self.config.chunk => {
                    self.fan_out_named(&request, ids).await?
                }
                _ => self.queue.send(&broadcast_message(&request.id, 0)).await?,
            }
        }
        tracing::info!(
            request = %request.id,
            recipients = request.recipients,
            existing,
            correlation_id = %request.correlation_id,
            "notify request accepted"
        );
        Ok(Submitted {
            id: request.id,
            recipients: request.recipients,
            existing,
        })
    }

    async fn count_active(&self, tenant: Option<&str>) -> Result<u32, RegistryError> {
        let mut count = 0u32;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .registry
                .list_active(tenant, after.as_deref(), 1000)
                .await?;
            count += page.conversations.len() as u32;
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(count),
            }
        }
    }

    async fn fan_out_named(
        &self,
        request: &NotifyRequest,
        ids: &[String],
    ) -> Result<(), NotifyApiError> {
        let mut fan_out = FanOut::default();
        for chunk in ids.chunks(100) {
            let registered = self.registry.get_many(chunk).await?;
            let active: std::collections::HashMap<&str, _> = registered
                .iter()
                .filter(|r| r.status.is_active())
                .map(|r| (r.conversation_id(), r))
                .collect();
            let mut notifications = Vec::new();
            for id in chunk {
                match active.get(id.as_str()) {
                    Some(registration) => {
                        notifications.push(self.recipient(request, &registration.reference));
                    }
                    None => fan_out.not_registered.push(id.clone()),
                }
            }
            fan_out.reached += notifications.len() as u32;
            self.hand_over(notifications).await?;
        }
        fan_out.done = true;
        self.requests.save_fan_out(&request.id, &fan_out).await?;
        Ok(())
    }

    /// The notification for one recipient of `request`.
    fn recipient(
        &self,
        request: &NotifyRequest,
        reference: &crate::schema::ConversationReference,
    ) -> Notification {
        let id = recipient_id(&request.id, &reference.conversation.id);
        let source = match request.target {
            Target::Conversations { .. } => Source::Api {
                request: request.id.clone(),
            },
            Target::All { .. } => Source::Broadcast {
                id: request.id.clone(),
            },
        };
        let mut notification = Notification::new(
            id,
            source,
            reference.clone(),
            request.content.clone(),
            Utc::now(),
        );
        notification.batch = Some(request.id.clone());
        notification.urgent = request.urgent;
        notification.idempotency_key = request.idempotency_key.clone();
        notification.correlation_id = request.correlation_id.clone();
        notification
    }

    async fn hand_over(&self, notifications: Vec<Notification>) -> Result<(), NotifyError> {
        if notifications.is_empty() {
            return Ok(());
        }
        self.notifier
            .notify_many(notifications, self.config.concurrency)
            .await?;
        Ok(())
    }

    /// One step of a background fan-out: from the saved cursor, creates a page's
    /// notifications and queues them at the tenants' pace ([`NotifyService::release`]) while
    /// the next page is read and created, saving the cursor after each page, until done or the
    /// step's time is up (then a new message carries on).
    pub async fn fan_out_step(&self, request_id: &str, step: u32) -> Result<Step, NotifyApiError> {
        let Some(request) = self.requests.get(request_id).await? else {
            return Ok(Step::Unknown);
        };
        let started = Instant::now();
        let mut fan_out = request.fan_out.clone();
        if fan_out.done {
            return Ok(Step::Done);
        }
        let mut page = self.prepare(&request, fan_out.cursor.clone()).await?;
        loop {
            let next = page.next.clone();
            let prefetch = async {
                match &next {
                    Some(cursor) if started.elapsed() < self.config.step_budget => {
                        Some(self.prepare(&request, Some(cursor.clone())).await)
                    }
                    _ => None,
                }
            };
            let (released, prefetched) =
                futures_util::future::join(self.release(page.to_queue), prefetch).await;
            released?;
            fan_out.reached += page.reached;
            fan_out.not_registered.extend(page.not_registered);
            fan_out.done = next.is_none();
            fan_out.cursor = next;
            self.requests.save_fan_out(&request.id, &fan_out).await?;
            if fan_out.done {
                break;
            }
            match prefetched {
                Some(prepared) => page = prepared?,
                None => {
                    self.queue
                        .send(&broadcast_message(&request.id, step + 1))
                        .await?;
                    return Ok(Step::Continued);
                }
            }
        }
        tracing::info!(request = %request.id, reached = fan_out.reached, "fanned out");
        Ok(Step::Done)
    }

    /// The page of `request`'s recipients after `cursor`, their notifications created.
    async fn prepare(
        &self,
        request: &NotifyRequest,
        cursor: Option<String>,
    ) -> Result<Prepared, NotifyApiError> {
        let (registrations, not_registered, next) = match &request.target {
            Target::All { tenant_id } => {
                let page = self
                    .registry
                    .list_active(tenant_id.as_deref(), cursor.as_deref(), self.config.page)
                    .await?;
                (page.conversations, Vec::new(), page.next)
            }
            Target::Conversations { ids } => {
                // The cursor is how many of the list were handed over.
                let start = cursor
                    .and_then(|c| c.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(ids.len());
                let end = (start + self.config.page.min(100)).min(ids.len());
                let chunk = &ids[start..end];
                let registered = self.registry.get_many(chunk).await?;
                let mut active: std::collections::HashMap<String, _> = registered
                    .into_iter()
                    .filter(|r| r.status.is_active())
                    .map(|r| (r.conversation_id().to_owned(), r))
                    .collect();
                let mut registrations = Vec::new();
                let mut not_registered = Vec::new();
                for id in chunk {
                    match active.remove(id.as_str()) {
                        Some(registration) => registrations.push(registration),
                        None => not_registered.push(id.clone()),
                    }
                }
                (
                    registrations,
                    not_registered,
                    (end < ids.len()).then(|| end.to_string()),
                )
            }
        };
        let notifications: Vec<Notification> = registrations
            .iter()
            .map(|registration| self.recipient(request, &registration.reference))
            .collect();
        let reached = notifications.len() as u32;
        let to_queue = self
            .notifier
            .create_many(notifications, self.config.concurrency)
            .await?;
        Ok(Prepared {
            to_queue,
            reached,
            not_registered,
            next,
        })
    }

    /// Queues `notifications` just in time: each tenant's [`FanOutConfig::chunk`] at a time,
    /// with a block of tenant slots reserved for them no sooner than [`FanOutConfig::lead`]
    /// before it starts (recipients without a tenant limit at once). Tenants go in turn, so
    /// a small tenant of the page never waits for a large one.
    async fn release(&self, notifications: Vec<Notification>) -> Result<(), NotifyApiError> {
        let mut tenants: Vec<TenantQueue> = Vec::new();
        for notification in notifications {
            let target = &notification.target;
            let (channel, tenant) = (
                target.channel_id.clone(),
                target.tenant_id().map(str::to_owned),
            );
            let index = match tenants
                .iter()
                .position(|t| t.channel == channel && t.tenant == tenant)
            {
                Some(index) => index,
                None => {
                    tenants.push(TenantQueue {
                        channel,
                        tenant,
                        waiting: std::collections::VecDeque::new(),
                        ready_at: i64::MIN,
                    });
                    tenants.len() - 1
                }
            };
            tenants[index].waiting.push_back(notification.message());
        }
        loop {
            tenants.retain(|t| !t.waiting.is_empty());
            let Some(wake) = tenants.iter().map(|t| t.ready_at).min() else {
                return Ok(());
            };
            let now = Utc::now();
            if wake > now.timestamp_millis() {
                tokio::time::sleep(Duration::from_millis(
                    (wake - now.timestamp_millis()) as u64,
                ))
                .await;
                continue;
            }
            for tenant in tenants
                .iter_mut()
                .filter(|t| t.ready_at <= now.timestamp_millis())
            {
                let count = tenant.waiting.len().min(self.config.chunk.max(1));
                let lead = self.lead();
                let asked = Instant::now();
                let block = self
                    .pacer
                    .reserve_block(&tenant.channel, tenant.tenant.as_deref(), count, lead, now)
                    .await?;
                if block != Block::Unlimited {
                    self.learn_reserve_time(asked.elapsed());
                }
                let lead = lead.as_millis() as i64;
                match block {
                    Block::Unlimited => {
                        let all: Vec<_> = tenant.waiting.drain(..).collect();
                        self.notifier.enqueue(&all).await?;
                    }
                    Block::Reserved { first, interval } => {
                        let chunk: Vec<_> = tenant
                            .waiting
                            .drain(..count)
                            .enumerate()
                            .map(|(n, mut message)| {
                                message.slot = Some(first + interval.as_millis() as i64 * n as i64);
                                message
                            })
                            .collect();
                        self.notifier.enqueue(&chunk).await?;
                        // The counter is at least this far on: no need to ask before then.
                        let next_free = first + interval.as_millis() as i64 * count as i64;
                        tenant.ready_at = next_free - lead;
                    }
                    Block::Full(next_free) => tenant.ready_at = next_free - lead,
                }
            }
        }
    }

    /// A request's progress; `None` for an unknown id.
    pub async fn status(&self, id: &str) -> Result<Option<RequestStatus>, NotifyApiError> {
        let Some(request) = self.requests.get(id).await? else {
            return Ok(None);
        };
        let mut sent = 0u32;
        let mut failed = 0u32;
        let mut failures: Vec<Failure> = request
            .fan_out
            .not_registered
            .iter()
            .take(MAX_FAILURES_LISTED)
            .map(|conversation| Failure {
                conversation_id: conversation.clone(),
                reason: crate::delivery::engine::NOT_REGISTERED.to_owned(),
            })
            .collect();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .notifier
                .store()
                .list_batch(&request.id, after.as_deref(), 1000)
                .await?;
            for entry in page.entries {
                match entry.progress {
                    Progress::Pending => {}
                    Progress::Sent => sent += 1,
                    Progress::Failed { reason } => {
                        failed += 1;
                        if failures.len() < MAX_FAILURES_LISTED {
                            failures.push(Failure {
                                conversation_id: entry.conversation,
                                reason,
                            });
                        }
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        failed += request.fan_out.not_registered.len() as u32;
        let recipients = match request.target {
            Target::Conversations { .. } => request.recipients,
            Target::All { .. } if request.fan_out.done => request.fan_out.reached,
            Target::All { .. } => request.recipients.max(request.fan_out.reached),
        };
        Ok(Some(RequestStatus {
            id: request.id,
            recipients,
            sent,
            failed,
            pending: recipients.saturating_sub(sent + failed),
            failures,
            fan_out: if request.fan_out.done {
                "done"
            } else {
                "running"
            },
            created_at: request.created_at,
        }))
    }
}

/// A page of a background fan-out, its notifications created.
struct Prepared {
    /// The notifications to queue (new, or existing still Queued).
    to_queue: Vec<Notification>,
    /// Recipients the page reached (registered and active).
    reached: u32,
    /// Named conversations of the page that are not registered (or retired).
    not_registered: Vec<String>,
    /// The cursor after this page; `None` when it was the last.
    next: Option<String>,
}

/// One tenant's recipients waiting to be queued, and when its counter may have room.
struct TenantQueue {
    channel: String,
    tenant: Option<String>,
    waiting: std::collections::VecDeque<crate::delivery::DeliveryMessage>,
    /// Epoch ms: before this, asking for a block would find it full.
    ready_at: i64,
}

/// What a fan-out step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Done,
    /// Time was up; a new message carries on.
    Continued,
    /// No such request (expired): nothing to do.
    Unknown,
}

/// A recipient's notification id: the request id and a 64-bit hash of the conversation.
pub fn recipient_id(request_id: &str, conversation: &str) -> NotificationId {
    NotificationId::parse(&format!("{request_id}.{:016x}", group_hash(conversation)))
        .expect("request ids and hex digits make a valid notification id")
}

#[derive(Serialize, Deserialize)]
struct BroadcastEnvelope {
    v: u32,
    kind: String,
    request: String,
    #[serde(default)]
    step: u32,
}

/// The message of a broadcast's fan-out step `step`: its own FIFO group (so it never waits
/// behind a conversation's deliveries, nor they behind it) and a deduplication id per step.
pub fn broadcast_message(request_id: &str, step: u32) -> QueueMessage {
    let body = serde_json::to_string(&BroadcastEnvelope {
        v: crate::delivery::DeliveryMessage::VERSION,
        kind: BROADCAST_KIND.to_owned(),
        request: request_id.to_owned(),
        step,
    })
    .expect("a broadcast message serializes");
    QueueMessage {
        body,
        group: format!("broadcast-{request_id}"),
        deduplication_id: format!("broadcast-{request_id}-{step}"),
        correlation_id: String::new(),
    }
}

/// The delivery queue's handler of broadcast messages: runs fan-out steps. A failing step
/// comes back later and resumes from the saved cursor.
pub struct BroadcastTask {
    service: Arc<NotifyService>,
}

impl BroadcastTask {
    pub fn new(service: Arc<NotifyService>) -> Self {
        BroadcastTask { service }
    }
}

#[async_trait]
impl QueueTask for BroadcastTask {
    fn kind(&self) -> &'static str {
        BROADCAST_KIND
    }

    async fn run(&self, body: &str, receives: u32) -> (Delivered, Decision) {
        let envelope = match serde_json::from_str::<BroadcastEnvelope>(body) {
            Ok(envelope) if NotificationId::parse(&envelope.request).is_ok() => envelope,
            _ => {
                tracing::error!("malformed broadcast message acknowledged");
                return (
                    Delivered::Malformed("malformed broadcast message".to_owned()),
                    Decision::Done,
                );
            }
        };
        match self
            .service
            .fan_out_step(&envelope.request, envelope.step)
            .await
        {
            Ok(step) => (
                Delivered::Task(format!("broadcast {step:?}")),
                Decision::Done,
            ),
            Err(error) => {
                tracing::warn!(error = %error, request = %envelope.request, "broadcast step failed; it will resume");
                (
                    Delivered::StoreUnavailable(error.to_string()),
                    Decision::RetryIn(crate::delivery::answers::retry_delay(receives.max(1), None)),
                )
            }
        }
    }
}
