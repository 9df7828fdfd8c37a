//! Numbers, not only logs: CloudWatch metrics in the [Embedded Metric Format] (EMF).
//!
//! Each Lambda invocation records its numbers in an [`Invocation`] and flushes them once, as
//! JSON lines on stdout ([`Metrics::flush`]). Lambda sends stdout to CloudWatch Logs, which
//! turns every EMF line into metric data points: no `PutMetricData` call, no agent, nothing
//! added to the invocation's latency but a `write`.
//!
//! # The contract
//! The dashboard and alarms are built against these names; the README's *Metrics* section
//! lists them with what each counts. Namespace [`NAMESPACE`]; every metric has the dimension
//! set `[Stack, Function]` (`Stack` is `METRICS_STACK`, default `local`; `Function` is
//! `messages` or `delivery`). Two breakdowns add one dimension each: [`TURNS`] by `Kind`
//! ([`TurnKind`]) and [`NOTIFICATIONS_FAILED`] by `Reason` ([`FailureReason`]). No other
//! dimension exists: each distinct combination is one billed custom metric, so the sets stay
//! small and their values few.
//!
//! # Zeros
//! A function's main counters ([`Function::counters`]) are written on every flush, zeros
//! included. CloudWatch charges per metric, not per value, so a zero costs a few bytes of log
//! and nothing else; in exchange every period of an active function has a data point, `Sum`
//! is a true total, `Average` of `ColdStart` is the cold-start rate, and the failure-rate
//! alarm's `NotificationsFailed / (NotificationsSent + NotificationsFailed)` has both terms
//! instead of "missing data". Breakdowns (`Kind`, `Reason`) and timings ([`TURN_DURATION`],
//! [`DELIVERY_LATENCY`]) are written only when there is something to say: a zero per kind or
//! per reason would say nothing the total does not.
//!
//! # Lines
//! A flush is normally one line. A breakdown rides on that line when it accounts for all of
//! its metric's total (one turn of one kind; failures all of one reason): the line then has a
//! second directive naming the extra dimension. Failures of several reasons in one batch each
//! get a line of their own, holding only their `NotificationsFailed`; so do timing values
//! past EMF's 100 per metric per line.
//!
//! # Where metrics are emitted
//! Only in the Lambda handlers (`functions/messages`'s `handle`, `functions/delivery`'s
//! `handle`), which build one [`Metrics`] writing to stdout. The local runner (`cargo run`)
//! serves the router and consumes the queue without those handlers and emits none: locally
//! there is no CloudWatch to read the lines, and the logs already say what happened. Tests give
//! the handlers a [`Metrics`] writing to a buffer ([`Metrics::new`]).
//!
//! [Embedded Metric Format]: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::delivery::answers::GONE_CODES;
use crate::delivery::engine::{Delivered, NOT_REGISTERED, RecordResult};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "ProactiveBot";
/// The environment variable naming the stack (the `Stack` dimension's value).
pub const STACK_VARIABLE: &str = "METRICS_STACK";
/// The `Stack` dimension's value when [`STACK_VARIABLE`] is unset or empty.
pub const DEFAULT_STACK: &str = "local";
/// EMF's limit on the values of one metric in one line.
pub const MAX_VALUES: usize = 100;

/// Dimension names.
pub const STACK: &str = "Stack";
pub const FUNCTION: &str = "Function";
pub const KIND: &str = "Kind";
pub const REASON: &str = "Reason";

/// A CloudWatch unit (the two this bot uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// A metric's name and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
}

const fn count(name: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
    }
}

const fn milliseconds(name: &'static str) -> Metric {
    Metric {
        name,
        unit: Unit::Milliseconds,
    }
}

/// Both functions: 1 on the first invocation of a process, 0 on the others.
pub const COLD_START: Metric = count("ColdStart");
/// messages: activities that reached the bot (a turn ran, or an invoke was answered 501);
/// requests refused before (400, 401, 403, 413) and notify API calls are not turns.
pub const TURNS: Metric = count("Turns");
/// messages: from the request entering the handler to its answer, for turns.
pub const TURN_DURATION: Metric = milliseconds("TurnDuration");
/// delivery: notifications the Connector accepted.
pub const NOTIFICATIONS_SENT: Metric = count("NotificationsSent");
/// delivery: notifications that ended failed or given up, and malformed queue messages.
pub const NOTIFICATIONS_FAILED: Metric = count("NotificationsFailed");
/// delivery: transient Connector answers after which the notification will be retried.
pub const NOTIFICATIONS_RETRIED: Metric = count("NotificationsRetried");
/// delivery: 429 answers from the Connector (among the retried).
pub const NOTIFICATIONS_THROTTLED: Metric = count("NotificationsThrottled");
/// delivery: messages the rate limits put back on the queue, not attempted.
pub const NOTIFICATIONS_DEFERRED: Metric = count("NotificationsDeferred");
/// delivery: notifications held for later.
pub const NOTIFICATIONS_HELD: Metric = count("NotificationsHeld");
/// delivery: notifications folded into a digest.
pub const NOTIFICATIONS_DIGESTED: Metric = count("NotificationsDigested");
/// delivery: from the message's arrival on the queue (SQS `SentTimestamp`) to its send.
pub const DELIVERY_LATENCY: Metric = milliseconds("DeliveryLatency");

/// Which function emits: the `Function` dimension's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Messages,
    Delivery,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Messages => "messages",
            Function::Delivery => "delivery",
        }
    }

    /// The counters every flush of this function writes, zeros included (see the module doc).
    pub fn counters(self) -> &'static [Metric] {
        match self {
            Function::Messages => &[COLD_START, TURNS],
            Function::Delivery => &[
                COLD_START,
                NOTIFICATIONS_SENT,
                NOTIFICATIONS_FAILED,
                NOTIFICATIONS_RETRIED,
                NOTIFICATIONS_THROTTLED,
                NOTIFICATIONS_DEFERRED,
                NOTIFICATIONS_HELD,
                NOTIFICATIONS_DIGESTED,
            ],
        }
    }
}

/// The `Kind` of a turn: the activity's type, the few the bot handles named, the rest `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnKind {
    Message,
    ConversationUpdate,
    InstallationUpdate,
    Event,
    Invoke,
    Other,
}

impl TurnKind {
    /// The kind of an activity of type `activity_type` (compared as the SDKs do, ignoring case).
    pub fn of(activity_type: &str) -> TurnKind {
        use crate::schema::activity_types as types;
        [
            (types::MESSAGE, TurnKind::Message),
            (types::CONVERSATION_UPDATE, TurnKind::ConversationUpdate),
            (types::INSTALLATION_UPDATE, TurnKind::InstallationUpdate),
            (types::EVENT, TurnKind::Event),
            (types::INVOKE, TurnKind::Invoke),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(activity_type))
        .map_or(TurnKind::Other, |(_, kind)| kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TurnKind::Message => "message",
            TurnKind::ConversationUpdate => "conversationUpdate",
            TurnKind::InstallationUpdate => "installationUpdate",
            TurnKind::Event => "event",
            TurnKind::Invoke => "invoke",
            TurnKind::Other => "other",
        }
    }
}

/// The `Reason` of a failed notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Its conversation never talked to the bot, or was retired: nothing was sent.
    NotRegistered,
    /// The Connector said the conversation is gone for the bot (404, or 403 with a code that
    /// says so): it is retired.
    ConversationGone,
    /// Any other permanent answer (400, 413, a 401/403 after a fresh token, a refused
    /// serviceUrl): the request is wrong and would stay wrong.
    Rejected,
    /// Transient answers that never cleared, or its last receive came: dead-lettered.
    GaveUp,
    /// A queue message that is no delivery this version understands.
    Malformed,
}

impl FailureReason {
    /// The reason of `Delivered::Failed(reason)`: the engine's text for an unregistered
    /// conversation, or a Connector error's (see [`connector_status`]).
    pub fn of_failure(reason: &str) -> FailureReason {
        if reason == NOT_REGISTERED {
            return FailureReason::NotRegistered;
        }
        match connector_status(reason) {
            Some((404, _)) => FailureReason::ConversationGone,
            Some((403, Some(code))) if GONE_CODES.contains(&code) => {
                FailureReason::ConversationGone
            }
            _ => FailureReason::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::NotRegistered => "not_registered",
            FailureReason::ConversationGone => "conversation_gone",
            FailureReason::Rejected => "rejected",
            FailureReason::GaveUp => "gave_up",
            FailureReason::Malformed => "malformed",
        }
    }
}

/// The HTTP status and error code in the text of a Connector error
/// (`connector answered 429 Throttled: …`, `connector answered 502: …`), which is how the
/// engine's results carry them; `None` for any other text (timeouts, transport errors, …).
pub fn connector_status(error: &str) -> Option<(u16, Option<&str>)> {
    let rest = error.strip_prefix("connector answered ")?;
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let status = rest[..digits].parse().ok()?;
    let code = rest[digits..]
        .strip_prefix(' ')
        .and_then(|rest| rest.split_once(':'))
        .map(|(code, _)| code);
    Some((status, code))
}

/// Whether a transient error's text is the Connector's 429 (Too Many Requests).
pub fn is_throttled(error: &str) -> bool {
    matches!(connector_status(error), Some((429, _)))
}

/// When SQS received `record` (its `SentTimestamp` attribute, ms since the epoch): Lambda's
/// records always carry it; the local queues' do not.
pub fn sent_timestamp(record: &SqsMessage) -> Option<DateTime<Utc>> {
    let millis = record.attributes.get("SentTimestamp")?.parse().ok()?;
    DateTime::from_timestamp_millis(millis)
}

/// One breakdown count: `metric` for `dimension` = `value`.
#[derive(Debug, Clone, PartialEq)]
struct Breakdown {
    dimension: &'static str,
    value: &'static str,
    metric: Metric,
    count: u64,
}

/// The numbers of one invocation, flushed once by [`Metrics::flush`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invocation {
    counts: Vec<(Metric, u64)>,
    values: Vec<(Metric, Vec<f64>)>,
    breakdowns: Vec<Breakdown>,
}

impl Invocation {
    /// An invocation with `counters` at zero, so they are written even if nothing adds to
    /// them.
    pub fn with_counters(counters: &[Metric]) -> Invocation {
        Invocation {
            counts: counters.iter().map(|metric| (*metric, 0)).collect(),
            ..Invocation::default()
        }
    }

    /// Adds `n` to `metric` (written even when it stays 0).
    pub fn count(&mut self, metric: Metric, n: u64) {
        match self.counts.iter_mut().find(|(m, _)| m.name == metric.name) {
            Some((_, total)) => *total += n,
            None => self.counts.push((metric, n)),
        }
    }

    /// Adds `n` to `metric`, and to its breakdown by `dimension` = `value`.
    pub fn count_by(
        &mut self,
        metric: Metric,
        dimension: &'static str,
        value: &'static str,
        n: u64,
    ) {
        self.count(metric, n);
        if n == 0 {
            return;
        }
        match self
            .breakdowns
            .iter_mut()
            .find(|b| b.dimension == dimension && b.value == value && b.metric.name == metric.name)
        {
            Some(breakdown) => breakdown.count += n,
            None => self.breakdowns.push(Breakdown {
                dimension,
                value,
                metric,
                count: n,
            }),
        }
    }

    /// Adds a value of a timing `metric` (in its unit, milliseconds).
    pub fn observe(&mut self, metric: Metric, took: Duration) {
        // Microsecond resolution: a turn in memory takes well under a millisecond.
        let millis = (took.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        match self.values.iter_mut().find(|(m, _)| m.name == metric.name) {
            Some((_, values)) => values.push(millis),
            None => self.values.push((metric, vec![millis])),
        }
    }

    /// The counter `metric`'s total so far (0 if never counted).
    pub fn total(&self, metric: Metric) -> u64 {
        self.counts
            .iter()
            .find(|(m, _)| m.name == metric.name)
            .map_or(0, |(_, n)| *n)
    }

    /// The EMF documents of this invocation, one a line: see the module doc for what goes
    /// where.
    pub fn documents(&self, stack: &str, function: Function, at: DateTime<Utc>) -> Vec<Value> {
        let document = |directives: Vec<Value>, members: Map<String, Value>| {
            let mut root = Map::new();
            root.insert(
                "_aws".to_owned(),
                json!({ "Timestamp": at.timestamp_millis(), "CloudWatchMetrics": directives }),
            );
            root.insert(STACK.to_owned(), json!(stack));
            root.insert(FUNCTION.to_owned(), json!(function.as_str()));
            root.extend(members);
            Value::Object(root)
        };
        let directive = |dimension: Option<&str>, metrics: &[Metric]| {
            let mut dimensions = vec![STACK, FUNCTION];
            dimensions.extend(dimension);
            json!({
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions],
                "Metrics": metrics
                    .iter()
                    .map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() }))
                    .collect::<Vec<_>>(),
            })
        };

        let mut metrics = Vec::new();
        let mut members = Map::new();
        for (metric, n) in &self.counts {
            metrics.push(*metric);
            members.insert(metric.name.to_owned(), json!(n));
        }
        let mut more_values = Vec::new();
        for (metric, values) in &self.values {
            let mut chunks = values.chunks(MAX_VALUES);
            if let Some(first) = chunks.next() {
                metrics.push(*metric);
                members.insert(metric.name.to_owned(), values_member(first));
            }
            more_values.extend(chunks.map(|chunk| (*metric, chunk)));
        }
        let mut directives = vec![directive(None, &metrics)];

        let mut own_lines = Vec::new();
        let mut dimensions: Vec<&'static str> = Vec::new();
        for breakdown in &self.breakdowns {
            if !dimensions.contains(&breakdown.dimension) {
                dimensions.push(breakdown.dimension);
            }
        }
        for dimension in dimensions {
            let of_dimension: Vec<&Breakdown> = self
                .breakdowns
                .iter()
                .filter(|b| b.dimension == dimension)
                .collect();
            let single_value = of_dimension
                .iter()
                .all(|b| b.value == of_dimension[0].value);
            let whole = of_dimension.iter().all(|b| b.count == self.total(b.metric));
            if single_value && whole {
                // The line's own totals are this value's counts: one more directive says so.
                let metrics: Vec<Metric> = of_dimension.iter().map(|b| b.metric).collect();
                directives.push(directive(Some(dimension), &metrics));
                members.insert(dimension.to_owned(), json!(of_dimension[0].value));
            } else {
                own_lines.extend(of_dimension);
            }
        }

        let mut lines = vec![document(directives, members)];
        let mut seen: Vec<(&'static str, &'static str)> = Vec::new();
        for breakdown in own_lines {
            if seen.contains(&(breakdown.dimension, breakdown.value)) {
                continue;
            }
            seen.push((breakdown.dimension, breakdown.value));
            let same: Vec<&Breakdown> = self
                .breakdowns
                .iter()
                .filter(|b| b.dimension == breakdown.dimension && b.value == breakdown.value)
                .collect();
            let mut members = Map::new();
            members.insert(breakdown.dimension.to_owned(), json!(breakdown.value));
            for b in &same {
                members.insert(b.metric.name.to_owned(), json!(b.count));
            }
            let metrics: Vec<Metric> = same.iter().map(|b| b.metric).collect();
            lines.push(document(
                vec![directive(Some(breakdown.dimension), &metrics)],
                members,
            ));
        }
        for (metric, chunk) in more_values {
            let mut members = Map::new();
            members.insert(metric.name.to_owned(), values_member(chunk));
            lines.push(document(vec![directive(None, &[metric])], members));
        }
        lines
    }
}

/// One value as a number, several as EMF's array of values.
fn values_member(values: &[f64]) -> Value {
    match values {
        [one] => json!(one),
        many => json!(many),
    }
}

/// Counts a request to the messages function: a turn of `kind` that took `took`, or (`None`)
/// a request that was no turn.
pub fn record_turn(invocation: &mut Invocation, kind: Option<TurnKind>, took: Duration) {
    match kind {
        Some(kind) => {
            invocation.count_by(TURNS, KIND, kind.as_str(), 1);
            invocation.observe(TURN_DURATION, took);
        }
        None => invocation.count(TURNS, 0),
    }
}

/// Counts what became of a delivery batch: `results` are the engine's, one per record in the
/// records' order. Call it when the batch is done: a sent record's latency runs to now (the
/// engine does not say when within the batch it was sent, so the figure can be late by the
/// batch's own duration).
pub fn record_deliveries(
    invocation: &mut Invocation,
    records: &[SqsMessage],
    results: &[RecordResult],
) {
    record_deliveries_at(invocation, records, results, Utc::now());
}

/// [`record_deliveries`], with latencies running to `now`.
pub fn record_deliveries_at(
    invocation: &mut Invocation,
    records: &[SqsMessage],
    results: &[RecordResult],
    now: DateTime<Utc>,
) {
    let failed = |invocation: &mut Invocation, reason: FailureReason| {
        invocation.count_by(NOTIFICATIONS_FAILED, REASON, reason.as_str(), 1)
    };
    for (record, result) in records.iter().zip(results) {
        // No wildcard: a new outcome of the engine must be placed here, and the compiler says
        // so.
        match &result.delivered {
            // A digest's other notifications are sent too, in its one message.
            Delivered::Sent | Delivered::Digested => {
                invocation.count(NOTIFICATIONS_SENT, 1);
                if result.delivered == Delivered::Digested {
                    invocation.count(NOTIFICATIONS_DIGESTED, 1);
                }
                if let Some(queued) = sent_timestamp(record) {
                    let latency = (now - queued).to_std().unwrap_or_default();
                    invocation.observe(DELIVERY_LATENCY, latency);
                }
            }
            Delivered::Held => invocation.count(NOTIFICATIONS_HELD, 1),
            Delivered::Failed(reason) => failed(invocation, FailureReason::of_failure(reason)),
            Delivered::GaveUp(_) => failed(invocation, FailureReason::GaveUp),
            Delivered::Malformed(_) => failed(invocation, FailureReason::Malformed),
            Delivered::Retrying(error) => {
                invocation.count(NOTIFICATIONS_RETRIED, 1);
                if is_throttled(error) {
                    invocation.count(NOTIFICATIONS_THROTTLED, 1);
                }
            }
            Delivered::Deferred => invocation.count(NOTIFICATIONS_DEFERRED, 1),
            // Nothing to count: nothing was attempted, or the logs say enough.
            Delivered::Duplicate
            | Delivered::DigestWindow
            | Delivered::Blocked
            | Delivered::Busy
            | Delivered::Unknown
            | Delivered::Task(_)
            | Delivered::StoreUnavailable(_) => {}
        }
    }
}

/// A process's metrics: where its lines go, and whether it has been invoked yet. Built once
/// per process, beside the other clients; each invocation takes an [`Invocation`] and hands
/// it back to [`Metrics::flush`].
pub struct Metrics {
    stack: String,
    function: Function,
    out: Mutex<Box<dyn Write + Send>>,
    invoked: AtomicBool,
}

impl Metrics {
    /// Lines to stdout (where Lambda's logs are read), the stack from `METRICS_STACK`.
    pub fn stdout(function: Function) -> Metrics {
        let stack = std::env::var(STACK_VARIABLE)
            .ok()
            .filter(|stack| !stack.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_STACK.to_owned());
        Metrics::new(stack, function, Box::new(std::io::stdout()))
    }

    /// Lines to `out` (tests: a buffer).
    pub fn new(
        stack: impl Into<String>,
        function: Function,
        out: Box<dyn Write + Send>,
    ) -> Metrics {
        Metrics {
            stack: stack.into(),
            function,
            out: Mutex::new(out),
            invoked: AtomicBool::new(false),
        }
    }

    /// The `Stack` dimension's value.
    pub fn stack(&self) -> &str {
        &self.stack
    }

    /// A new invocation's numbers: this function's counters at zero, and [`COLD_START`] 1 if
    /// it is the process's first.
    pub fn invocation(&self) -> Invocation {
        let mut invocation = Invocation::with_counters(self.function.counters());
        let cold = !self.invoked.swap(true, Ordering::Relaxed);
        invocation.count(COLD_START, u64::from(cold));
        invocation
    }

    /// Writes `invocation`'s lines at once, in one write (so they are not interleaved with
    /// log lines). A write that fails is logged: metrics never fail an invocation.
    pub fn flush(&self, invocation: Invocation) {
        let mut text = String::new();
        for document in invocation.documents(&self.stack, self.function, Utc::now()) {
            text.push_str(&document.to_string());
            text.push('\n');
        }
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(%error, "could not write the invocation's metrics");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::ConnectorError;
    use crate::delivery::Decision;
    use crate::delivery::answers::{Verdict, classify};
    use crate::delivery::consumer::sqs_record;
    use crate::testing::metrics::{CapturedMetrics, check_emf};

    fn status(status: u16, code: Option<&str>) -> String {
        ConnectorError::Status {
            status,
            code: code.map(str::to_owned),
            message: "the: message".into(),
            correlation_id: None,
            retry_after: None,
        }
        .to_string()
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()
    }

    #[test]
    fn a_429_is_recognised_from_the_connector_errors_text() {
        assert!(is_throttled(&status(429, Some("Throttled"))));
        assert!(is_throttled(&status(429, None)));
        for other in [
            status(4290, None),
            status(503, Some("429")),
            status(502, None),
            ConnectorError::Timeout.to_string(),
            ConnectorError::Transport("answered 429".into()).to_string(),
            "429".to_owned(),
        ] {
            assert!(!is_throttled(&other), "{other}");
        }
        assert_eq!(
            connector_status(&status(403, Some("BotDisabledByAdmin"))),
            Some((403, Some("BotDisabledByAdmin")))
        );
        assert_eq!(connector_status(&status(502, None)), Some((502, None)));
    }

    #[test]
    fn a_failure_is_conversation_gone_exactly_when_the_answer_table_says_so() {
        let mut cases: Vec<(u16, Option<&str>)> =
            GONE_CODES.iter().map(|c| (403, Some(*c))).collect();
        cases.extend([
            (404, None),
            (404, Some("ConversationNotFound")),
            (403, None),
            (403, Some("SomethingElse")),
            (400, Some("BotNotInConversationRoster")),
            (400, None),
            (413, None),
        ]);
        for (code, error_code) in cases {
            let error = ConnectorError::Status {
                status: code,
                code: error_code.map(str::to_owned),
                message: "m".into(),
                correlation_id: None,
                retry_after: None,
            };
            // After a refreshed token: the verdict the engine acts on.
            let Verdict::Permanent {
                reason,
                conversation_gone,
            } = classify(&error, true)
            else {
                panic!("{code} {error_code:?} is permanent");
            };
            let expected = if conversation_gone {
                FailureReason::ConversationGone
            } else {
                FailureReason::Rejected
            };
            assert_eq!(FailureReason::of_failure(&reason), expected, "{reason}");
        }
        assert_eq!(
            FailureReason::of_failure(NOT_REGISTERED),
            FailureReason::NotRegistered
        );
        assert_eq!(
            FailureReason::of_failure(&ConnectorError::InvalidUrl("x".into()).to_string()),
            FailureReason::Rejected
        );
    }

    #[test]
    fn turn_kinds_name_the_activity_types_the_bot_handles() {
        for (activity_type, kind) in [
            ("message", "message"),
            ("conversationUpdate", "conversationUpdate"),
            ("conversationupdate", "conversationUpdate"),
            ("installationUpdate", "installationUpdate"),
            ("event", "event"),
            ("invoke", "invoke"),
            ("typing", "other"),
            ("messageReaction", "other"),
            ("", "other"),
        ] {
            assert_eq!(
                TurnKind::of(activity_type).as_str(),
                kind,
                "{activity_type}"
            );
        }
    }

    #[test]
    fn a_turn_is_one_line_with_its_kind_as_a_second_dimension_set() {
        let mut invocation = Invocation::with_counters(Function::Messages.counters());
        invocation.count(COLD_START, 1);
        record_turn(
            &mut invocation,
            Some(TurnKind::Message),
            Duration::from_micros(12_345),
        );
        let lines = invocation.documents("prod", Function::Messages, at());
        assert_eq!(
            lines,
            vec![json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_123_i64,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": "ProactiveBot",
                            "Dimensions": [["Stack", "Function"]],
                            "Metrics": [
                                {"Name": "ColdStart", "Unit": "Count"},
                                {"Name": "Turns", "Unit": "Count"},
                                {"Name": "TurnDuration", "Unit": "Milliseconds"},
                            ],
                        },
                        {
                            "Namespace": "ProactiveBot",
                            "Dimensions": [["Stack", "Function", "Kind"]],
                            "Metrics": [{"Name": "Turns", "Unit": "Count"}],
                        },
                    ],
                },
                "Stack": "prod",
                "Function": "messages",
                "Kind": "message",
                "ColdStart": 1,
                "Turns": 1,
                "TurnDuration": 12.345,
            })]
        );
        check_emf(&lines[0]);
    }

    #[test]
    fn a_request_that_is_no_turn_writes_zeros_and_no_kind() {
        let mut invocation = Invocation::with_counters(Function::Messages.counters());
        record_turn(&mut invocation, None, Duration::from_millis(3));
        let lines = invocation.documents("prod", Function::Messages, at());
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        check_emf(line);
        assert_eq!((&line["Turns"], &line["ColdStart"]), (&json!(0), &json!(0)));
        assert!(line.get("Kind").is_none() && line.get("TurnDuration").is_none());
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(),
            1
        );
    }

    fn result(delivered: Delivered) -> RecordResult {
        RecordResult {
            message_id: "m".into(),
            delivered,
            decision: Decision::Done,
        }
    }

    fn record(sent_at: Option<DateTime<Utc>>) -> SqsMessage {
        let mut record = sqs_record("m", "{}");
        if let Some(at) = sent_at {
            record
                .attributes
                .insert("SentTimestamp".into(), at.timestamp_millis().to_string());
        }
        record
    }

    #[test]
    fn a_batch_maps_each_outcome_to_its_counter() {
        let now = at();
        let outcomes = [
            (
                Delivered::Sent,
                Some(now - chrono::Duration::milliseconds(1500)),
            ),
            (Delivered::Sent, None),
            (Delivered::Digested, None),
            (Delivered::Digested, None),
            (Delivered::Held, None),
            (Delivered::DigestWindow, None),
            (Delivered::Retrying(status(429, Some("Throttled"))), None),
            (Delivered::Retrying(status(503, None)), None),
            (Delivered::Deferred, None),
            (Delivered::Failed(NOT_REGISTERED.into()), None),
            (Delivered::Failed(status(404, None)), None),
            (Delivered::GaveUp(status(502, None)), None),
            (Delivered::Malformed("not json".into()), None),
            (Delivered::Duplicate, None),
            (Delivered::Blocked, None),
            (Delivered::Busy, None),
            (Delivered::Unknown, None),
            (Delivered::Task("fan-out".into()), None),
            (Delivered::StoreUnavailable("down".into()), None),
        ];
        let records: Vec<SqsMessage> = outcomes.iter().map(|(_, at)| record(*at)).collect();
        let results: Vec<RecordResult> = outcomes.into_iter().map(|(d, _)| result(d)).collect();
        let mut invocation = Invocation::with_counters(Function::Delivery.counters());
        record_deliveries_at(&mut invocation, &records, &results, now);
        for (metric, expected) in [
            (NOTIFICATIONS_SENT, 4),
            (NOTIFICATIONS_FAILED, 4),
            (NOTIFICATIONS_RETRIED, 2),
            (NOTIFICATIONS_THROTTLED, 1),
            (NOTIFICATIONS_DEFERRED, 1),
            (NOTIFICATIONS_HELD, 1),
            (NOTIFICATIONS_DIGESTED, 2),
        ] {
            assert_eq!(invocation.total(metric), expected, "{}", metric.name);
        }

        // Four reasons: the main line has no Reason; each reason has a line of its own.
        let lines = invocation.documents("prod", Function::Delivery, now);
        lines.iter().for_each(check_emf);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].get("Reason").is_none());
        assert_eq!(
            lines[0]["DeliveryLatency"],
            json!(1500.0),
            "only the record with a SentTimestamp"
        );
        let reasons: Vec<(&str, &Value)> = lines[1..]
            .iter()
            .map(|line| {
                (
                    line["Reason"].as_str().unwrap(),
                    &line["NotificationsFailed"],
                )
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("not_registered", &json!(1)),
                ("conversation_gone", &json!(1)),
                ("gave_up", &json!(1)),
                ("malformed", &json!(1)),
            ]
        );
        for line in &lines[1..] {
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"],
                json!([{
                    "Namespace": "ProactiveBot",
                    "Dimensions": [["Stack", "Function", "Reason"]],
                    "Metrics": [{"Name": "NotificationsFailed", "Unit": "Count"}],
                }])
            );
            assert!(
                line.get("NotificationsSent").is_none(),
                "a reason's line holds only its count"
            );
        }
    }

    #[test]
    fn failures_of_one_reason_ride_on_the_main_line() {
        let results = vec![
            result(Delivered::Failed(NOT_REGISTERED.into())),
            result(Delivered::Failed(NOT_REGISTERED.into())),
            result(Delivered::Sent),
        ];
        let records = vec![record(None), record(None), record(None)];
        let mut invocation = Invocation::with_counters(Function::Delivery.counters());
        record_deliveries_at(&mut invocation, &records, &results, at());
        let lines = invocation.documents("prod", Function::Delivery, at());
        assert_eq!(lines.len(), 1);
        check_emf(&lines[0]);
        assert_eq!(lines[0]["Reason"], "not_registered");
        assert_eq!(lines[0]["NotificationsFailed"], 2);
        assert_eq!(lines[0]["NotificationsSent"], 1);
        assert_eq!(
            lines[0]["_aws"]["CloudWatchMetrics"][1]["Dimensions"],
            json!([["Stack", "Function", "Reason"]])
        );
        assert!(
            lines[0].get("DeliveryLatency").is_none(),
            "no SentTimestamp, no latency"
        );
    }

    #[test]
    fn more_than_a_hundred_values_spill_onto_further_lines() {
        let mut invocation = Invocation::default();
        for ms in 0..250 {
            invocation.observe(DELIVERY_LATENCY, Duration::from_millis(ms));
        }
        let lines = invocation.documents("s", Function::Delivery, at());
        lines.iter().for_each(check_emf);
        let sizes: Vec<usize> = lines
            .iter()
            .map(|l| l["DeliveryLatency"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn the_first_invocation_of_a_process_is_its_cold_start_and_a_flush_is_whole_lines() {
        let captured = CapturedMetrics::default();
        let metrics = Metrics::new("test", Function::Delivery, Box::new(captured.clone()));
        for _ in 0..3 {
            let invocation = metrics.invocation();
            metrics.flush(invocation);
        }
        let lines = captured.documents();
        let cold: Vec<&Value> = lines.iter().map(|l| &l["ColdStart"]).collect();
        assert_eq!(cold, vec![&json!(1), &json!(0), &json!(0)]);
        for line in &lines {
            assert_eq!(
                (line["Stack"].as_str(), line["Function"].as_str()),
                (Some("test"), Some("delivery"))
            );
            for counter in Function::Delivery.counters() {
                assert!(
                    line[counter.name].is_u64(),
                    "{} written as a number",
                    counter.name
                );
            }
        }
    }
}
