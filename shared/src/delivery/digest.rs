//! Digests: several notifications due for one conversation at once, said in one message.
//!
//! The engine gathers the notifications of a conversation that are waiting together (a burst
//! of completions within the digest window, or a backlog the rate limits built up) and sends
//! them as one activity; each is still recorded Sent, with that activity's id.
//!
//! How the text reads: notifications whose content has the same [`DigestLine::key`] are
//! summarised by their `summary` ("3 jobs are complete: 101, 102, 103."); a lone one keeps its
//! own text, and so does one without a digest line. The parts follow in the order their first
//! notification was queued, one paragraph each; attachments follow in the same order.
//!
//! A digest stays within what a channel takes in one message ([`DigestLimits`]): Teams refuses
//! messages much above 28 KB, and a carousel of more than ten cards is unreadable.

use super::notification::Content;

/// How much one digest may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestLimits {
    /// Notifications in one digest (an SQS batch holds ten messages at most anyway).
    pub notifications: usize,
    /// Characters of text.
    pub text: usize,
    pub attachments: usize,
}

impl Default for DigestLimits {
    fn default() -> Self {
        DigestLimits {
            notifications: 10,
            text: 8_000,
            attachments: 10,
        }
    }
}

impl DigestLimits {
    /// Whether `contents`, merged, stay within the limits.
    pub fn fit(&self, contents: &[&Content]) -> bool {
        if contents.len() > self.notifications {
            return false;
        }
        let merged = merge(contents);
        merged.text.as_deref().map_or(0, |t| t.chars().count()) <= self.text
            && merged.attachments.len() <= self.attachments
    }
}

/// One message saying everything `contents` say (see the module doc). One content is
/// returned as it is.
pub fn merge(contents: &[&Content]) -> Content {
    if let [only] = contents {
        return (*only).clone();
    }
    // Groups in order of first appearance: a digest key, or a content standing alone.
    let mut groups: Vec<Vec<&Content>> = Vec::new();
    for content in contents {
        let key = content.digest.as_ref().map(|line| line.key.as_str());
        let existing = key.and_then(|key| {
            groups.iter().position(|group| {
                group[0].digest.as_ref().map(|line| line.key.as_str()) == Some(key)
            })
        });
        match existing {
            Some(index) => groups[index].push(content),
            None => groups.push(vec![content]),
        }
    }
    let paragraphs: Vec<String> = groups
        .iter()
        .filter_map(|group| match group.as_slice() {
            [one] => one.text.clone().filter(|t| !t.is_empty()),
            many => {
                let line = many[0].digest.as_ref().expect("grouped by digest key");
                let items: Vec<&str> = many
                    .iter()
                    .filter_map(|c| c.digest.as_ref().map(|l| l.item.as_str()))
                    .collect();
                Some(
                    line.summary
                        .replace("{count}", &many.len().to_string())
                        .replace("{items}", &items.join(", ")),
                )
            }
        })
        .collect();
    // A format every part agrees on is kept; otherwise it is read off the merged text.
    let formats: Vec<Option<&str>> = contents
        .iter()
        .filter(|c| c.text.is_some())
        .map(|c| c.text_format.as_deref())
        .collect();
    let text_format = match formats.split_first() {
        Some((first, rest)) if rest.iter().all(|f| f == first) => first.map(str::to_owned),
        _ => None,
    };
    Content {
        text: (!paragraphs.is_empty()).then(|| paragraphs.join("\n\n")),
        text_format,
        attachments: contents
            .iter()
            .flat_map(|c| c.attachments.iter().cloned())
            .collect(),
        digest: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::DigestLine;
    use serde_json::json;

    fn job(number: u32) -> Content {
        Content::text(format!("Job {number} is complete.")).with_digest(DigestLine {
            key: "jobs-complete".into(),
            item: number.to_string(),
            summary: "{count} jobs are complete: {items}.".into(),
        })
    }

    #[test]
    fn one_content_is_left_as_it_is() {
        let one = job(101);
        assert_eq!(merge(&[&one]), one);
    }

    #[test]
    fn the_same_kind_is_summarised_and_others_keep_their_text() {
        let (a, b, c) = (job(101), job(102), job(103));
        let reminder = Content::text("Reminder: **stretch**");
        let merged = merge(&[&a, &reminder, &b, &c]);
        assert_eq!(
            merged.text.as_deref(),
            Some("3 jobs are complete: 101, 102, 103.\n\nReminder: **stretch**")
        );
        assert_eq!(merged.digest, None);
        // Mixed formats (none given): read off the text by the activity.
        assert_eq!(merged.text_format, None);
        assert_eq!(
            merged.to_activity().text_format.as_deref(),
            Some("markdown")
        );
    }

    #[test]
    fn a_lone_member_of_a_kind_keeps_its_own_text_and_attachments_follow_in_order() {
        let card = json!({"contentType": "application/vnd.microsoft.card.adaptive", "content": {}});
        let with_card = Content {
            text: None,
            attachments: vec![card.clone()],
            ..Content::default()
        };
        let plain = Content {
            text: Some("Build 7 passed".into()),
            text_format: Some("plain".into()),
            ..Content::default()
        };
        let merged = merge(&[&job(101), &with_card, &plain]);
        assert_eq!(
            merged.text.as_deref(),
            Some("Job 101 is complete.\n\nBuild 7 passed")
        );
        assert_eq!(merged.attachments, vec![card]);
    }

    #[test]
    fn limits_count_notifications_text_and_attachments() {
        let limits = DigestLimits {
            notifications: 3,
            text: 60,
            attachments: 1,
        };
        let jobs: Vec<Content> = (101..105).map(job).collect();
        let refs: Vec<&Content> = jobs.iter().collect();
        assert!(limits.fit(&refs[..3]));
        assert!(!limits.fit(&refs[..4]), "four notifications");
        let long = Content::text("x".repeat(61));
        assert!(!limits.fit(&[&long]), "text");
        let cards = Content {
            attachments: vec![json!({}), json!({})],
            ..Content::default()
        };
        assert!(!limits.fit(&[&cards]), "attachments");
    }
}
