//! Channel rate limits that hold across every concurrent invocation.
//!
//! Two kinds of key, two shapes of shared state (kept behind [`RateLimitStore`], in DynamoDB
//! on AWS):
//!
//! - **A conversation** has sliding windows (Teams: 7 sends per 1 s, 8 per 2 s, 60 per 30 s,
//!   1800 per hour) and bursts are welcome, so its state is a **log of its recent send
//!   times**. The queue already serialises a conversation (one FIFO message group, one message
//!   in flight), so the log is read, extended and written back with a version check that only
//!   a rare takeover ever trips. A window larger than the log ([`LOG_CAPACITY`]) is replaced
//!   by a proportionally smaller one (1800 / 3600 s → 60 / 120 s): stricter, never looser,
//!   since any hour is 30 windows of two minutes.
//! - **A tenant** (Teams: about 50 per second per app) is shared by every concurrent delivery,
//!   so its state is one **next free slot** time, with slots evenly spaced at
//!   `per / count`: reserving one is a single atomic write that never conflicts, and evenly
//!   spaced sends can never exceed `count` in any window of `per`.
//!
//! Every window is widened by [`LimitsConfig::margin`] so that the jitter between when the
//! bot sends and when the channel counts does not turn an exact schedule into a 429.
//!
//! A send is admitted at time `t ≥ now`. If `t - now` is at most `max_wait` (a fraction of a
//! second: Lambda bills idle waiting) the sender waits and sends; otherwise the message is
//! put back on the queue until `t`.
//!
//! # Bulk: slots held from the fan-out to the send
//! A backlog of one tenant must not meet the tenant's rate in the queue: each message that
//! finds the tenant's slots taken goes back "for a second" (SQS counts visibility in whole
//! seconds), comes back with all the others, and the slots handed out meanwhile go to
//! whoever happens to be there — a recipient then passes through the queue dozens of times
//! and the rate falls far below the limit. So bulk work (a broadcast's fan-out) is paced
//! where the backlog is made: the fan-out reserves a **block** of consecutive tenant slots
//! ([`RateLimiter::reserve_block`], one atomic write on the counter every send uses) only
//! when the block starts at most a lead time away, and queues each recipient with its slot
//! in the message ([`super::DeliveryMessage::slot`]). The delivery **keeps** that slot
//! ([`RateLimiter::admit`] with `held`): it checks only the conversation's windows and sends
//! at the slot. The queue never holds much more than a lead time of one tenant's sends, so
//! a recipient is received about once.
//!
//! Why it holds:
//! - **Across concurrent invocations**: held slots come from the one counter, by atomic
//!   writes, so no two sends share a slot whoever reserved them; two broadcasts of one tenant
//!   each wait for the counter and so share the rate.
//! - **A late send** (its slot is already behind the earliest it could leave: the message
//!   waited behind its conversation, or a crash) never uses its held slot: it takes a new one
//!   like any send. The held slot is lost, never doubled. A send that keeps its slot may
//!   still leave up to [`RateLimiter::lateness_allowed`] after it, as any send may, and no
//!   later.
//! - **A crash halfway** through a fan-out re-queues its recipients with new slots; a message
//!   that still carries an old one is late, and takes a new one.
//! - **Order per conversation** is the queue's (one FIFO group per conversation): a held slot
//!   only says *when*, and never lets a message overtake.
//!
//! # Urgent sends beside a bulk one
//! The tenant's evenly spaced slots leave room for a few more sends in any window (the
//! margin: 48 of Teams' 50 a second). A send that is not bulk and finds the main slots taken
//! for longer than `max_wait` takes a **priority slot** from a second counter that spends
//! that room less one ([`ChannelLimits::priority_interval`]; Teams: one a 1.05 s), so an
//! alert to a tenant whose announcement is draining goes within a fraction of a second, and
//! the two counters together stay within the tenant's windows.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::notification::StoreError;

/// How many send times a conversation's log keeps.
pub const LOG_CAPACITY: usize = 64;

/// At most `count` sends in any `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub count: u32,
    pub per: Duration,
}

impl Window {
    pub const fn new(count: u32, per: Duration) -> Self {
        Window { count, per }
    }

    /// This window, or a stricter one that fits in the log (see the module doc).
    pub fn fitted(self) -> Window {
        let capacity = LOG_CAPACITY as u32;
        if self.count <= capacity {
            return self;
        }
        // The smallest split into k equal windows that fits, preferring a k that divides the
        // count (1800 / 3600 s → 60 / 120 s rather than 62 / 124.1 s).
        let least = self.count.div_ceil(capacity);
        let k = (least..=least * 2)
            .find(|k| self.count.is_multiple_of(*k))
            .unwrap_or(least);
        Window {
            count: self.count / k,
            per: self.per / k,
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.per.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}/{}s", self.count, ms / 1000)
        } else {
            write!(f, "{}/{}ms", self.count, ms)
        }
    }
}

/// Why a limits setting cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a list of limits like \"7/1s,8/2s,60/30s\" (count/duration, duration in s or ms)"
)]
pub struct InvalidLimits(pub String);

/// Parses `"7/1s,8/2s,60/30s,1800/3600s"` (also `ms`). An empty string is no limit.
pub fn parse_windows(text: &str) -> Result<Vec<Window>, InvalidLimits> {
    let bad = || InvalidLimits(text.to_owned());
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (count, per) = part.split_once('/').ok_or_else(bad)?;
            let count: u32 = count
                .trim()
                .parse()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(bad)?;
            let per = per.trim();
            let per = if let Some(ms) = per.strip_suffix("ms") {
                Duration::from_millis(ms.trim().parse().map_err(|_| bad())?)
            } else if let Some(s) = per.strip_suffix('s') {
                Duration::from_secs(s.trim().parse().map_err(|_| bad())?)
            } else {
                return Err(bad());
            };
            if per.is_zero() {
                return Err(bad());
            }
            Ok(Window::new(count, per))
        })
        .collect()
}

/// The limits of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Per conversation (per bot).
    pub conversation: Vec<Window>,
    /// Per tenant (per app); the tightest window sets the slot spacing.
    pub tenant: Vec<Window>,
}

impl ChannelLimits {
    /// Microsoft Teams' documented limits for a bot.
    pub fn teams() -> Self {
        ChannelLimits {
            conversation: vec![
                Window::new(7, Duration::from_secs(1)),
                Window::new(8, Duration::from_secs(2)),
                Window::new(60, Duration::from_secs(30)),
                Window::new(1800, Duration::from_secs(3600)),
            ],
            tenant: vec![Window::new(50, Duration::from_secs(1))],
        }
    }

    /// The even spacing of tenant slots (zero when the tenant is unlimited).
    pub fn tenant_interval(&self, margin: Duration) -> Duration {
        self.tenant
            .iter()
            .map(|w| (w.per + margin) / w.count)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The spacing of the tenant's priority slots (see the module doc), or `None` when the
    /// main slots leave no room. Main slots `interval` apart put at most ⌈per / interval⌉
    /// sends in any window of `per`; the priority slots spend what is left of `count`, less
    /// one for jitter, spaced so that they too never exceed it in any window.
    pub fn priority_interval(&self, margin: Duration) -> Option<Duration> {
        let interval = self.tenant_interval(margin);
        if interval.is_zero() {
            return None;
        }
        self.tenant
            .iter()
            .map(|w| {
                let main = w.per.as_nanos().div_ceil(interval.as_nanos()) as u32;
                let room = w.count.saturating_sub(main).saturating_sub(1);
                (room > 0).then(|| (w.per + margin) / room)
            })
            .try_fold(Duration::ZERO, |widest, spacing| {
                spacing.map(|s| widest.max(s))
            })
    }
}

/// Limits by channel, with a default for channels not named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub default: ChannelLimits,
    pub by_channel: HashMap<String, ChannelLimits>,
    /// Added to every window's duration (see the module doc).
    pub margin: Duration,
    /// The longest a delivery waits in process for its slot before putting the message back.
    pub max_wait: Duration,
}

impl Default for LimitsConfig {
    /// Teams' limits for every channel: the strictest known, so a safe default for Web Chat,
    /// Direct Line and the Emulator too.
    fn default() -> Self {
        LimitsConfig {
            default: ChannelLimits::teams(),
            by_channel: HashMap::new(),
            margin: Duration::from_millis(50),
            max_wait: Duration::from_millis(200),
        }
    }
}

impl LimitsConfig {
    pub fn for_channel(&self, channel: &str) -> &ChannelLimits {
        self.by_channel.get(channel).unwrap_or(&self.default)
    }
}

impl FromStr for ChannelLimits {
    type Err = InvalidLimits;
    /// `conversation=7/1s,8/2s;tenant=50/1s` (either part may be left out: no limit).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut limits = ChannelLimits {
            conversation: Vec::new(),
            tenant: Vec::new(),
        };
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("conversation", windows)) => limits.conversation = parse_windows(windows)?,
                Some(("tenant", windows)) => limits.tenant = parse_windows(windows)?,
                _ => return Err(InvalidLimits(text.to_owned())),
            }
        }
        Ok(limits)
    }
}

/// A conversation's recent send times (epoch milliseconds, ascending, at most
/// [`LOG_CAPACITY`]) and the version they were read at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendLog {
    pub sends: Vec<i64>,
    /// 0 for a log never written.
    pub version: u64,
}

impl SendLog {
    /// The earliest time at or after `now` that a send conforms to every window, each widened
    /// by `margin`. Never earlier than the latest logged send, so the log stays in order.
    pub fn next_allowed(&self, windows: &[Window], now: i64, margin: Duration) -> i64 {
        let margin = margin.as_millis() as i64;
        let mut at = now.max(self.sends.last().copied().unwrap_or(i64::MIN));
        for window in windows.iter().map(|w| w.fitted()) {
            let count = window.count as usize;
            if self.sends.len() >= count {
                // The count-th most recent send must have left the window.
                let oldest_in_window = self.sends[self.sends.len() - count];
                at = at.max(oldest_in_window + window.per.as_millis() as i64 + margin);
            }
        }
        at
    }

    /// The log with a send at `at` appended, trimmed to [`LOG_CAPACITY`].
    pub fn with_send(&self, at: i64) -> Vec<i64> {
        let mut sends = self.sends.clone();
        sends.push(at);
        let excess = sends.len().saturating_sub(LOG_CAPACITY);
        sends.drain(..excess);
        sends
    }
}

/// What [`RateLimitStore::reserve_slot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A slot at this time (epoch ms) is the caller's.
    Reserved(i64),
    /// Every slot up to the latest acceptable time is taken; the next free one is at this time.
    Full(i64),
}

/// What [`RateLimitStore::replace_log`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWrite {
    Stored,
    /// Someone else wrote first; this is the key's log now.
    Conflict(SendLog),
}

/// Shared rate-limit state.
///
/// Contract, for every adapter:
/// - `load_log` returns the key's [`SendLog`] (empty, version 0, when there is none).
/// - `store_log` writes `sends` as the key's log only if its version is still
///   `expected_version` (0: no log exists), making it `expected_version + 1`; it returns
///   `Ok(false)`, changing nothing, when someone else wrote first. `keep_for` bounds how long
///   an idle log is kept (a TTL).
/// - `replace_log` is `store_log` that, when refused, returns the key's log as it is now
///   ([`LogWrite::Conflict`]); an adapter that can say so in the refusal itself (DynamoDB)
///   saves the read the default makes.
/// - `reserve_slot` atomically takes the next free slot of the key: the slot is
///   `max(next free, not_before)`, and the next free becomes slot + `interval`. If that slot
///   would be later than `latest` nothing is reserved and [`Slot::Full`] says when the next
///   free one is. Concurrent callers never get the same slot (on real DynamoDB; moto's
///   conditional writes are not atomic across concurrent requests). A block of `n` slots is
///   one reservation of `n × interval`.
#[async_trait]
pub trait RateLimitStore: Send + Sync {
    async fn load_log(&self, key: &str) -> Result<SendLog, StoreError>;
    async fn store_log(
        &self,
        key: &str,
        expected_version: u64,
        sends: &[i64],
        keep_for: Duration,
    ) -> Result<bool, StoreError>;
    async fn replace_log(
        &self,
        key: &str,
        expected_version: u64,
        sends: &[i64],
        keep_for: Duration,
    ) -> Result<LogWrite, StoreError> {
        Ok(
            match self
                .store_log(key, expected_version, sends, keep_for)
                .await?
            {
                true => LogWrite::Stored,
                false => LogWrite::Conflict(self.load_log(key).await?),
            },
        )
    }
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        not_before: i64,
        latest: i64,
    ) -> Result<Slot, StoreError>;
}

/// What the limiter decided for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send at this time (at most `max_wait` from now, or [`HELD_WAIT`] for a held slot); the
    /// shared state counts it then.
    SendAt(DateTime<Utc>),
    /// Put the message back: the next chance is this far away.
    RetryIn(Duration),
}

/// What [`RateLimiter::reserve_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The tenant's slots `first`, `first + interval`, … (epoch ms), as many as asked for, are
    /// the caller's.
    Reserved { first: i64, interval: Duration },
    /// The tenant's slots are taken up to this time (epoch ms): ask again a lead before it.
    Full(i64),
    /// No tenant limit applies (no tenant, or none configured): no slot to hold.
    Unlimited,
}

/// How far away a held slot may be and still be waited for in process: SQS brings a message
/// back no more precisely than in whole seconds.
pub const HELD_WAIT: Duration = Duration::from_secs(1);

/// The engine's view of the limits: decides when a send to a conversation may happen and
/// records it in the shared state.
pub struct RateLimiter {
    store: std::sync::Arc<dyn RateLimitStore>,
    config: LimitsConfig,
    /// The send logs this process wrote last, by key: in the usual case — the same instance
    /// keeps delivering to a conversation — the log need not be read back before it is
    /// extended. A stale entry only costs a refused write (versions never repeat).
    cache: std::sync::Mutex<HashMap<String, SendLog>>,
    /// A moving average of how long admitting a send takes (see [`RateLimiter::headroom`]).
    admit_time: std::sync::Mutex<Duration>,
}

/// How many conversations' logs a process remembers before starting afresh.
const CACHE_CAPACITY: usize = 4096;

/// How many times a conflicting log write is retried before giving the turn back to the queue.
const LOG_CONFLICT_RETRIES: usize = 3;

/// Which of a tenant's counters a send may take a slot from, and how far ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// Bulk (a broadcast's recipient that missed its held slot): only the main counter, up
    /// to [`HELD_WAIT`] ahead. The fan-out keeps that counter only a lead ahead of now, so a
    /// late recipient waits a fraction of a second in process rather than going back to the
    /// queue, where it would come back a second later and late again.
    Main,
    /// The main counter within `max_wait`, else a priority slot (see the module doc).
    MainThenPriority,
}

impl RateLimiter {
    pub fn new(store: std::sync::Arc<dyn RateLimitStore>, config: LimitsConfig) -> Self {
        RateLimiter {
            store,
            config,
            cache: std::sync::Mutex::new(HashMap::new()),
            admit_time: std::sync::Mutex::new(Duration::from_millis(10)),
        }
    }

    fn cached(&self, key: &str) -> Option<SendLog> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, log: Option<SendLog>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match log {
            Some(log) => {
                if cache.len() >= CACHE_CAPACITY && !cache.contains_key(key) {
                    cache.clear();
                }
                cache.insert(key.to_owned(), log);
            }
            None => {
                cache.remove(key);
            }
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Admits one send into `conversation` (of `tenant`, on `channel`) at or after `now`:
    /// checks the conversation's windows against its log, takes a tenant slot, and writes the
    /// send into the log at the time it is to leave. The caller sends then, and reports when
    /// the send left with [`RateLimiter::sent`].
    ///
    /// `held` is a tenant slot the message already holds (bulk, see the module doc): kept if
    /// it is not late and the conversation's windows allow it; otherwise a new one is taken
    /// from the main counter only.
    pub async fn admit(
        &self,
        channel: &str,
        conversation: &str,
        tenant: Option<&str>,
        held: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let started = std::time::Instant::now();
        let limits = self.config.for_channel(channel);
        let now_ms = now.timestamp_millis();
        // The earliest a send can be: after the writes that admit it.
        let earliest = now_ms + self.headroom().as_millis() as i64;
        let max_wait = self.config.max_wait.as_millis() as i64;
        let key = conversation_key(channel, conversation);
        let send_at =
            |at: i64| Admission::SendAt(DateTime::from_timestamp_millis(at).unwrap_or(now));
        let lanes = match held {
            Some(_) => Lanes::Main,
            None => Lanes::MainThenPriority,
        };
        // A held slot already behind the earliest send is late: the lateness a send may have
        // is counted from its slot once, in the wait after admission, never twice.
        let held = held.filter(|slot| *slot >= earliest);
        if let Some(slot) = held
            && slot - now_ms > HELD_WAIT.as_millis() as i64
        {
            // Back a moment before the slot (whole seconds, rounded down), which it keeps.
            return Ok(Admission::RetryIn(Duration::from_secs(
                ((slot - now_ms) / 1000) as u64,
            )));
        }

        // A bulk recipient's conversation rarely has a log this process knows: the write
        // assumes none, and a refusal hands over the real one (one request, not two).
        let mut known = match held {
            Some(_) if !limits.conversation.is_empty() => {
                Some(self.cached(&key).unwrap_or_default())
            }
            _ => None,
        };
        for _ in 0..LOG_CONFLICT_RETRIES {
            let log = match known.take() {
                Some(log) => log,
                None => self.log(&key, limits).await?,
            };
            // Kept only as it is: the conversation's windows allow a send at the slot itself.
            let kept = held.filter(|slot| {
                log.next_allowed(&limits.conversation, *slot, self.config.margin) == *slot
            });
            let at = match kept {
                Some(at) => at,
                None => {
                    let conversation_at =
                        log.next_allowed(&limits.conversation, earliest, self.config.margin);
                    if conversation_at - now_ms > max_wait {
                        return Ok(Admission::RetryIn(millis(conversation_at - now_ms)));
                    }
                    match self
                        .reserve_tenant_slot(
                            channel,
                            tenant,
                            limits,
                            conversation_at,
                            now_ms,
                            lanes,
                        )
                        .await?
                    {
                        Ok(at) => at,
                        Err(next) => return Ok(Admission::RetryIn(millis(next - now_ms))),
                    }
                }
            };
            if limits.conversation.is_empty() {
                self.learn_headroom(started.elapsed());
                return Ok(send_at(at));
            }
            let sends = log.with_send(at);
            match self.write_log(&key, limits, &log, sends).await? {
                LogWrite::Stored => {
                    self.learn_headroom(started.elapsed());
                    return Ok(send_at(at));
                }
                // Another delivery of this conversation wrote in between (a lease takeover, or
                // this process's copy of the log was stale): try again on the log as it is. A
                // new tenant slot taken is left unused; a held one is kept.
                LogWrite::Conflict(current) => known = Some(current),
            }
        }
        Ok(Admission::RetryIn(Duration::from_secs(1)))
    }

    /// Reserves `count` consecutive tenant slots for bulk sends (a broadcast's fan-out, see
    /// the module doc), the first no sooner than `lead / 2` and no later than `lead` from
    /// `now`: [`Block::Full`] says when the tenant's taken slots end, so the caller comes
    /// back a lead before that and queues just-in-time.
    pub async fn reserve_block(
        &self,
        channel: &str,
        tenant: Option<&str>,
        count: usize,
        lead: Duration,
        now: DateTime<Utc>,
    ) -> Result<Block, StoreError> {
        let limits = self.config.for_channel(channel);
        let interval = limits.tenant_interval(self.config.margin);
        let Some(tenant) = tenant.filter(|_| !interval.is_zero() && count > 0) else {
            return Ok(Block::Unlimited);
        };
        let now_ms = now.timestamp_millis();
        let lead_ms = lead.as_millis() as i64;
        Ok(
            match self
                .store
                .reserve_slot(
                    &tenant_key(channel, tenant),
                    interval * count as u32,
                    now_ms + lead_ms / 2,
                    now_ms + lead_ms,
                )
                .await?
            {
                Slot::Reserved(first) => Block::Reserved { first, interval },
                Slot::Full(next) => Block::Full(next),
            },
        )
    }

    /// A send admitted for `planned` missed it (it is now later than that by more than
    /// [`RateLimiter::lateness_allowed`]): takes a new tenant slot, so the tenant's sends stay
    /// evenly spaced (a `bulk` send from the main counter only). Returns when to send, or how
    /// long until the tenant has room.
    pub async fn reschedule(
        &self,
        channel: &str,
        tenant: Option<&str>,
        bulk: bool,
        now: DateTime<Utc>,
    ) -> Result<Admission, StoreError> {
        let limits = self.config.for_channel(channel);
        let now_ms = now.timestamp_millis();
        let earliest = now_ms + self.headroom().as_millis() as i64;
        let lanes = match bulk {
            true => Lanes::Main,
            false => Lanes::MainThenPriority,
        };
        Ok(
            match self
                .reserve_tenant_slot(channel, tenant, limits, earliest, now_ms, lanes)
                .await?
            {
                Ok(at) => Admission::SendAt(DateTime::from_timestamp_millis(at).unwrap_or(now)),
                Err(next) => Admission::RetryIn(millis(next - now_ms)),
            },
        )
    }

    /// Reports that a send admitted for `planned` left at `left`. When it left later than
    /// planned by more than the lateness allowed (its slot was missed and retaken), the log's
    /// entry moves to `left`, so later sends keep their distance from the real one. On time,
    /// nothing is written.
    pub async fn sent(
        &self,
        channel: &str,
        conversation: &str,
        planned: DateTime<Utc>,
        left: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let limits = self.config.for_channel(channel);
        if limits.conversation.is_empty()
            || (left - planned).to_std().unwrap_or_default() <= self.lateness_allowed()
        {
            return Ok(());
        }
        let key = conversation_key(channel, conversation);
        let (planned, left) = (planned.timestamp_millis(), left.timestamp_millis());
        let mut known = None;
        for _ in 0..LOG_CONFLICT_RETRIES {
            let log = match known.take() {
                Some(log) => log,
                None => self.log(&key, limits).await?,
            };
            let mut sends = log.sends.clone();
            match sends.iter().rposition(|&t| t == planned) {
                Some(index) => sends[index] = left,
                None => sends.push(left),
            }
            sends.sort_unstable();
            match self.write_log(&key, limits, &log, sends).await? {
                LogWrite::Stored => return Ok(()),
                LogWrite::Conflict(current) => known = Some(current),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the send log of {conversation} kept changing under this delivery"
        )))
    }

    /// A tenant slot at or after `not_before`, at most `max_wait` from now: `Err` says when
    /// the next one is free.
    async fn reserve_tenant_slot(
        &self,
        channel: &str,
        tenant: Option<&str>,
        limits: &ChannelLimits,
        not_before: i64,
        now_ms: i64,
        lanes: Lanes,
    ) -> Result<Result<i64, i64>, StoreError> {
        let interval = limits.tenant_interval(self.config.margin);
        let Some(tenant) = tenant.filter(|_| !interval.is_zero()) else {
            return Ok(Ok(not_before));
        };
        let key = tenant_key(channel, tenant);
        let latest = now_ms
            + match lanes {
                Lanes::Main => HELD_WAIT,
                Lanes::MainThenPriority => self.config.max_wait,
            }
            .as_millis() as i64;
        let next = match self
            .store
            .reserve_slot(&key, interval, not_before, latest)
            .await?
        {
            Slot::Reserved(at) => return Ok(Ok(at)),
            Slot::Full(next) => next,
        };
        let priority = match (lanes, limits.priority_interval(self.config.margin)) {
            (Lanes::MainThenPriority, Some(priority)) => priority,
            _ => return Ok(Err(next)),
        };
        Ok(
            match self
                .store
                .reserve_slot(&format!("{key}#priority"), priority, not_before, latest)
                .await?
            {
                Slot::Reserved(at) => Ok(at),
                Slot::Full(priority_next) => Err(next.min(priority_next)),
            },
        )
    }

    async fn log(&self, key: &str, limits: &ChannelLimits) -> Result<SendLog, StoreError> {
        if limits.conversation.is_empty() {
            return Ok(SendLog::default());
        }
        match self.cached(key) {
            Some(log) => Ok(log),
            None => self.store.load_log(key).await,
        }
    }

    /// Writes `sends` over `log` if nobody wrote since it was read; keeps the copy (or, when
    /// refused, the log as it is now).
    async fn write_log(
        &self,
        key: &str,
        limits: &ChannelLimits,
        log: &SendLog,
        sends: Vec<i64>,
    ) -> Result<LogWrite, StoreError> {
        let keep_for = limits
            .conversation
            .iter()
            .map(|w| w.fitted().per)
            .max()
            .unwrap_or(Duration::ZERO)
            + self.config.margin
            + Duration::from_secs(60);
        let written = self
            .store
            .replace_log(key, log.version, &sends, keep_for)
            .await?;
        match &written {
            LogWrite::Stored => self.remember(
                key,
                Some(SendLog {
                    sends,
                    version: log.version + 1,
                }),
            ),
            LogWrite::Conflict(current) => self.remember(key, Some(current.clone())),
        }
        Ok(written)
    }

    /// How far ahead of `now` a send is scheduled: about as long as admitting it takes (the
    /// state's writes), so the send leaves at its scheduled time instead of late — the
    /// schedule, not the moment of sending, is what the windows were checked against.
    fn headroom(&self) -> Duration {
        let average = *self.admit_time.lock().unwrap_or_else(|p| p.into_inner());
        (average.mul_f64(1.5) + Duration::from_millis(2)).min(self.config.max_wait / 2)
    }

    fn learn_headroom(&self, took: Duration) {
        let mut average = self.admit_time.lock().unwrap_or_else(|p| p.into_inner());
        *average = average.mul_f64(0.8) + took.mul_f64(0.2);
    }

    /// How late a send may leave after its scheduled time and still count as on time: half
    /// the margin the windows were widened by.
    pub fn lateness_allowed(&self) -> Duration {
        self.config.margin / 2
    }
}

fn tenant_key(channel: &str, tenant: &str) -> String {
    format!("t#{channel}#{tenant}")
}

fn conversation_key(channel: &str, conversation: &str) -> String {
    format!("c#{channel}#{conversation}")
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1000;

    fn teams() -> Vec<Window> {
        ChannelLimits::teams().conversation
    }

    /// Sends greedily, as early as the log allows, and returns the send times.
    fn greedy(windows: &[Window], n: usize, margin: Duration) -> Vec<i64> {
        let mut log = SendLog::default();
        let mut all = Vec::new();
        for _ in 0..n {
            let at = log.next_allowed(windows, 0, margin);
            log.sends = log.with_send(at);
            all.push(at);
        }
        all
    }

    /// The most sends in any half-open window of `per` ending at a send.
    fn max_in_window(times: &[i64], per: Duration) -> usize {
        let per = per.as_millis() as i64;
        times
            .iter()
            .map(|&end| times.iter().filter(|&&t| t > end - per && t <= end).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn windows_parse_and_print() {
        assert_eq!(
            parse_windows("7/1s, 8/2s,60/30s,1800/3600s,5/250ms").unwrap(),
            vec![
                Window::new(7, Duration::from_secs(1)),
                Window::new(8, Duration::from_secs(2)),
                Window::new(60, Duration::from_secs(30)),
                Window::new(1800, Duration::from_secs(3600)),
                Window::new(5, Duration::from_millis(250)),
            ]
        );
        assert_eq!(parse_windows("").unwrap(), vec![]);
        for bad in ["7", "7/1", "0/1s", "x/1s", "7/0s", "7/1h"] {
            assert!(parse_windows(bad).is_err(), "{bad}");
        }
        assert_eq!(Window::new(7, Duration::from_secs(1)).to_string(), "7/1s");
        let limits: ChannelLimits = "conversation=3/1s;tenant=10/1s".parse().unwrap();
        assert_eq!(
            limits.conversation,
            vec![Window::new(3, Duration::from_secs(1))]
        );
        assert_eq!(limits.tenant, vec![Window::new(10, Duration::from_secs(1))]);
        assert!("bogus=1/1s".parse::<ChannelLimits>().is_err());
    }

    #[test]
    fn large_windows_fit_the_log_and_are_stricter() {
        let hour = Window::new(1800, Duration::from_secs(3600)).fitted();
        assert_eq!(hour, Window::new(60, Duration::from_secs(120)));
        assert_eq!(
            Window::new(7, Duration::from_secs(1)).fitted(),
            Window::new(7, Duration::from_secs(1))
        );
    }

    #[test]
    fn greedy_sends_respect_every_teams_window_and_burst_as_allowed() {
        let times = greedy(&teams(), 200, Duration::ZERO);
        for window in teams() {
            let most = max_in_window(&times, window.per);
            assert!(most <= window.count as usize, "{window}: {most}");
        }
        // A burst of 7 at once, the 8th only after 2 s (8 / 2 s), then 4 per 2 s.
        assert!(times[..7].iter().all(|&t| t == 0), "{:?}", &times[..8]);
        assert_eq!(times[7], SECOND);
        assert_eq!(times[8], 2 * SECOND);
        // 60 per 30 s: the 61st waits for the first to leave the window.
        assert!(times[60] >= 30 * SECOND, "{}", times[60]);
    }

    #[test]
    fn the_margin_widens_each_window() {
        let times = greedy(
            &[Window::new(2, Duration::from_secs(1))],
            3,
            Duration::from_millis(50),
        );
        assert_eq!(times, vec![0, 0, 1050]);
    }

    #[test]
    fn the_log_never_goes_back_in_time_and_is_bounded() {
        let log = SendLog {
            sends: vec![5 * SECOND],
            version: 3,
        };
        assert_eq!(log.next_allowed(&teams(), 0, Duration::ZERO), 5 * SECOND);
        let full = SendLog {
            sends: (0..LOG_CAPACITY as i64).collect(),
            version: 1,
        };
        let next = full.with_send(1_000_000);
        assert_eq!(next.len(), LOG_CAPACITY);
        assert_eq!(*next.last().unwrap(), 1_000_000);
        assert_eq!(next[0], 1);
    }

    #[test]
    fn priority_slots_spend_the_room_the_main_ones_leave_and_stay_within_every_window() {
        let margin = Duration::from_millis(50);
        let teams = ChannelLimits::teams();
        // Main slots 21 ms apart: 48 in any second; one of the two left, a 1.05 s apart.
        assert_eq!(
            teams.priority_interval(margin),
            Some(Duration::from_millis(1050))
        );
        // Without a margin the main slots use the whole window: no priority slots.
        assert_eq!(teams.priority_interval(Duration::ZERO), None);
        let small: ChannelLimits = "tenant=7/1s".parse().unwrap();
        assert_eq!(
            small.priority_interval(margin),
            None,
            "150 ms apart: 7 a second"
        );
        for (limits, margin) in [
            (teams.clone(), margin),
            ("tenant=100/1s".parse().unwrap(), Duration::from_millis(100)),
            ("tenant=20/2s".parse().unwrap(), Duration::from_millis(400)),
        ] {
            let main = limits.tenant_interval(margin).as_millis() as i64;
            let priority = limits.priority_interval(margin).unwrap().as_millis() as i64;
            let window = limits.tenant[0];
            // Both counters running flat out, at every relative phase.
            for phase in (0..priority).step_by(7) {
                let mut times: Vec<i64> = (0..400).map(|n| n * main).collect();
                times.extend((0..20).map(|n| phase + n * priority));
                times.sort_unstable();
                let most = max_in_window(&times, window.per);
                assert!(
                    most < window.count as usize,
                    "{limits:?} phase {phase}: {most}"
                );
            }
        }
    }

    #[test]
    fn tenant_slots_are_spaced_by_the_tightest_window() {
        let limits = ChannelLimits::teams();
        assert_eq!(
            limits.tenant_interval(Duration::ZERO),
            Duration::from_millis(20)
        );
        assert_eq!(
            limits.tenant_interval(Duration::from_millis(50)),
            Duration::from_millis(21)
        );
        let none = ChannelLimits {
            conversation: vec![],
            tenant: vec![],
        };
        assert_eq!(
            none.tenant_interval(Duration::from_millis(50)),
            Duration::ZERO
        );
    }
}
