//! What each Connector answer means for a notification, in one place, and when to try again.
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx | sent |
//! | 400, 413, other 4xx, a refused redirect (3xx) | failed: our request is wrong and will stay wrong |
//! | 401; 403 without a code below | refresh the bot's token and try once more, then failed |
//! | 403 `BotNotInConversationRoster`, `ConversationBlockedByUser`, `BotDisabledByAdmin`, `NotEnoughPermissions`, `ForbiddenOperationException`, `MessageWritesBlocked` (or Teams' `209`); 404 | failed: the conversation is gone for the bot |
//! | a serviceUrl the allowlist refuses, or that forms no URL | failed, without a request |
//! | 408, 412, 429, 502, 503, 504, a timeout, a transport error, no token to be had | retried, up to [`TRANSIENT_ATTEMPTS`] attempts |
//! | 500, 501, other 5xx | retried, up to [`SERVER_ERROR_ATTEMPTS`] attempts |
//!
//! **500 is retried, a little.** Teams' table says not to retry a 500 `ServiceError`. A lost
//! notification is worse than one careful retry, and a 500 is often a blip: we retry twice
//! (three attempts) with backoff, then give up with the error recorded.
//!
//! **When.** A `Retry-After` (seconds or HTTP date) is honoured as given; without one the
//! delay is exponential (1 s, 2 s, 4 s … at most 5 min) with full jitter over its upper half,
//! so retries of many notifications spread out instead of arriving together.

use std::time::Duration;

use crate::connector::ConnectorError;

/// Attempts for transient answers (408, 412, 429, 502–504, timeouts, transport errors).
pub const TRANSIENT_ATTEMPTS: u32 = 8;
/// Attempts for server errors (500 and other 5xx): two retries.
pub const SERVER_ERROR_ATTEMPTS: u32 = 3;

/// 403 codes that mean the bot can no longer write to the conversation.
pub const GONE_CODES: [&str; 7] = [
    "BotNotInConversationRoster",
    "ConversationBlockedByUser",
    "BotDisabledByAdmin",
    "NotEnoughPermissions",
    "ForbiddenOperationException",
    "MessageWritesBlocked",
    "209",
];

/// What to do after a Connector answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stop: the notification failed for good.
    Permanent {
        reason: String,
        /// The conversation is gone for the bot (removed, blocked, deleted): stop sending to it.
        conversation_gone: bool,
    },
    /// Try again later, up to `max_attempts` attempts in all.
    Transient {
        error: String,
        retry_after: Option<Duration>,
        max_attempts: u32,
    },
    /// Refresh the bot's token and try once more at once (a 401, or a 403 with no code that
    /// explains it, may be a stale or revoked token).
    RefreshToken,
}

/// The verdict on `error`, a failed Connector call; `token_refreshed` says whether this attempt
/// already used a fresh token.
pub fn classify(error: &ConnectorError, token_refreshed: bool) -> Verdict {
    let permanent = |conversation_gone: bool| Verdict::Permanent {
        reason: error.to_string(),
        conversation_gone,
    };
    let transient = |retry_after: Option<Duration>, max_attempts: u32| Verdict::Transient {
        error: error.to_string(),
        retry_after,
        max_attempts,
    };
    match error {
        ConnectorError::Status {
            status,
            code,
            retry_after,
            ..
        } => {
            let code = code.as_deref().unwrap_or_default();
            match *status {
                403 if GONE_CODES.contains(&code) => permanent(true),
                404 => permanent(true),
                401 | 403 if !token_refreshed => Verdict::RefreshToken,
                408 | 412 | 429 | 502 | 503 | 504 => transient(*retry_after, TRANSIENT_ATTEMPTS),
                500..=599 => transient(*retry_after, SERVER_ERROR_ATTEMPTS),
                _ => permanent(false),
            }
        }
        ConnectorError::Timeout | ConnectorError::Transport(_) | ConnectorError::Credentials(_) => {
            transient(None, TRANSIENT_ATTEMPTS)
        }
        ConnectorError::ServiceUrlNotAllowed(_) | ConnectorError::InvalidUrl(_) => permanent(false),
    }
}

/// The first delay without a `Retry-After`.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// The longest delay without a `Retry-After`.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// When to try again after the `attempt`-th attempt (1-based) failed: `retry_after` when the
/// channel gave one, else exponential backoff with jitter in `[d/2, d]`.
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(delay) = retry_after {
        return delay.min(super::notification::MAX_VISIBILITY);
    }
    let exponent = attempt.saturating_sub(1).min(16);
    let ceiling = BASE_DELAY.saturating_mul(1 << exponent).min(MAX_DELAY);
    let half = ceiling / 2;
    half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: Option<&str>) -> ConnectorError {
        ConnectorError::Status {
            status,
            code: code.map(str::to_owned),
            message: "m".into(),
            correlation_id: None,
            retry_after: None,
        }
    }

    fn is_permanent(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Permanent { .. })
    }

    fn attempts(verdict: &Verdict) -> Option<u32> {
        match verdict {
            Verdict::Transient { max_attempts, .. } => Some(*max_attempts),
            _ => None,
        }
    }

    #[test]
    fn bad_requests_fail_at_once() {
        for code in [400, 413, 405, 409, 422, 302, 307] {
            let verdict = classify(&status(code, None), false);
            assert_eq!(
                verdict,
                Verdict::Permanent {
                    reason: status(code, None).to_string(),
                    conversation_gone: false
                },
                "{code}"
            );
        }
    }

    #[test]
    fn unauthorised_refreshes_the_token_once_then_fails() {
        for code in [401, 403] {
            assert_eq!(
                classify(&status(code, None), false),
                Verdict::RefreshToken,
                "{code}"
            );
            assert!(is_permanent(&classify(&status(code, None), true)), "{code}");
        }
        assert_eq!(
            classify(&status(403, Some("SomethingElse")), false),
            Verdict::RefreshToken
        );
    }

    #[test]
    fn a_conversation_gone_fails_without_a_refresh_and_says_so() {
        for code in GONE_CODES {
            let verdict = classify(&status(403, Some(code)), false);
            assert!(
                matches!(
                    verdict,
                    Verdict::Permanent {
                        conversation_gone: true,
                        ..
                    }
                ),
                "{code}: {verdict:?}"
            );
        }
        assert!(matches!(
            classify(&status(404, Some("ConversationNotFound")), false),
            Verdict::Permanent {
                conversation_gone: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&status(404, None), false),
            Verdict::Permanent {
                conversation_gone: true,
                ..
            }
        ));
        // The codes mean "gone" only with a 403: with a 400 the request itself is wrong.
        for code in GONE_CODES {
            assert!(
                matches!(
                    classify(&status(400, Some(code)), false),
                    Verdict::Permanent {
                        conversation_gone: false,
                        ..
                    }
                ),
                "{code} with 400"
            );
        }
    }

    #[test]
    fn refused_or_unbuildable_urls_fail() {
        assert!(is_permanent(&classify(
            &ConnectorError::ServiceUrlNotAllowed("x".into()),
            false
        )));
        assert!(is_permanent(&classify(
            &ConnectorError::InvalidUrl("x".into()),
            false
        )));
    }

    #[test]
    fn transient_answers_are_retried_with_a_bound() {
        for code in [408, 412, 429, 502, 503, 504] {
            assert_eq!(
                attempts(&classify(&status(code, None), false)),
                Some(TRANSIENT_ATTEMPTS),
                "{code}"
            );
        }
        for error in [
            ConnectorError::Timeout,
            ConnectorError::Transport("reset".into()),
            ConnectorError::Credentials("token endpoint down".into()),
        ] {
            assert_eq!(
                attempts(&classify(&error, false)),
                Some(TRANSIENT_ATTEMPTS),
                "{error}"
            );
        }
    }

    #[test]
    fn server_errors_are_retried_only_a_couple_of_times() {
        for code in [500, 501, 599] {
            assert_eq!(
                attempts(&classify(&status(code, None), false)),
                Some(SERVER_ERROR_ATTEMPTS),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_is_carried_into_the_verdict() {
        let error = ConnectorError::Status {
            status: 429,
            code: Some("Throttled".into()),
            message: "slow down".into(),
            correlation_id: None,
            retry_after: Some(Duration::from_secs(1)),
        };
        match classify(&error, false) {
            Verdict::Transient { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_wins_over_backoff_and_backoff_grows_with_jitter() {
        assert_eq!(
            retry_delay(7, Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        assert_eq!(retry_delay(1, Some(Duration::ZERO)), Duration::ZERO);
        for attempt in 1..=20 {
            let ceiling = BASE_DELAY
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(MAX_DELAY);
            for _ in 0..50 {
                let delay = retry_delay(attempt, None);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{attempt}: {delay:?}"
                );
            }
        }
        let spread: std::collections::HashSet<Duration> =
            (0..50).map(|_| retry_delay(5, None)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }
}
