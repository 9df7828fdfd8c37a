//! The Bot Framework activity schema: the parts this bot reads and writes.
//!
//! Every struct keeps the fields it does not model in `extra`, so an activity or reference
//! read from a channel and written back (to the store, to the Connector) loses nothing: Teams
//! puts a lot in `channelData` and `conversation` that other code may need later.

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Activity types this bot reacts to; anything else is ignored.
pub mod activity_types {
    pub const MESSAGE: &str = "message";
    pub const CONVERSATION_UPDATE: &str = "conversationUpdate";
    pub const EVENT: &str = "event";
    pub const INSTALLATION_UPDATE: &str = "installationUpdate";
    pub const INVOKE: &str = "invoke";
}

/// A user or bot on a channel.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelAccount {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad_object_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A conversation on a channel (a 1:1 chat, a group chat, a Teams channel thread).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationAccount {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_group: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A Bot Framework activity. Only `type` is required by serde; [`Activity::validate_incoming`]
/// says what an incoming activity must carry for this bot to act on it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "lenient_timestamp"
    )]
    pub timestamp: Option<DateTime<FixedOffset>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ChannelAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<ChannelAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_added: Option<Vec<ChannelAccount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_removed: Option<Vec<ChannelAccount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_data: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why an incoming activity cannot be handled; the text is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidActivity {
    #[error("activity has no type")]
    MissingType,
    #[error("activity has no conversation.id")]
    MissingConversationId,
    #[error("activity has no serviceUrl")]
    MissingServiceUrl,
}

impl Activity {
    /// Checks the fields without which the bot could neither answer nor remember where the
    /// conversation lives.
    pub fn validate_incoming(&self) -> Result<(), InvalidActivity> {
        if self.kind.trim().is_empty() {
            return Err(InvalidActivity::MissingType);
        }
        if self.conversation.as_ref().is_none_or(|c| c.id.is_empty()) {
            return Err(InvalidActivity::MissingConversationId);
        }
        if self.service_url.as_deref().is_none_or(str::is_empty) {
            return Err(InvalidActivity::MissingServiceUrl);
        }
        Ok(())
    }

    /// A text message with no addressing (the caller addresses it), its `textFormat` read off
    /// its text ([`text_format_of`]): channels then render it as it was written.
    pub fn message(text: impl Into<String>) -> Self {
        let text = text.into();
        Activity {
            kind: activity_types::MESSAGE.to_owned(),
            text_format: Some(text_format_of(&text).to_owned()),
            text: Some(text),
            ..Activity::default()
        }
    }

    /// A Markdown message (used for the job table).
    pub fn markdown(text: impl Into<String>) -> Self {
        Activity {
            text_format: Some("markdown".to_owned()),
            ..Activity::message(text)
        }
    }

    /// The reply to `self` carrying `reply`'s content: from our bot to the sender, in the same
    /// conversation, `replyToId` set to the incoming activity's id.
    pub fn reply_with(&self, reply: Activity) -> Activity {
        Activity {
            from: self.recipient.clone(),
            recipient: self.from.clone(),
            conversation: self.conversation.clone(),
            channel_id: self.channel_id.clone(),
            service_url: self.service_url.clone(),
            reply_to_id: self.id.clone(),
            locale: reply.locale.clone().or_else(|| self.locale.clone()),
            ..reply
        }
    }

    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation.as_ref().map(|c| c.id.as_str())
    }
}

/// The `textFormat` a text written by this bot needs: `markdown` when it uses Markdown's
/// markup (bold, code, tables, links, lists, headings), `plain` otherwise, so a channel never
/// renders a plain text's stray `*` or `_` as formatting, nor shows markup raw.
pub fn text_format_of(text: &str) -> &'static str {
    const MARKUP: [&str; 8] = ["**", "__", "`", "|", "](", "\n- ", "\n* ", "# "];
    if MARKUP.iter().any(|mark| text.contains(mark)) {
        "markdown"
    } else {
        "plain"
    }
}

/// Where a conversation lives: everything needed to message it later, unprompted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_id: Option<String>,
    #[serde(default)]
    pub user: ChannelAccount,
    #[serde(default)]
    pub bot: ChannelAccount,
    pub conversation: ConversationAccount,
    #[serde(default)]
    pub channel_id: String,
    pub service_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ConversationReference {
    /// The reference of the conversation `activity` arrived in: `user = from`,
    /// `bot = recipient`, `activityId = id`, except for conversationUpdate on Direct Line and
    /// Web Chat, whose ids are not real activities that could be replied to.
    pub fn from_incoming(activity: &Activity) -> Self {
        let channel_id = activity.channel_id.clone().unwrap_or_default();
        let fake_id = activity.kind == activity_types::CONVERSATION_UPDATE
            && matches!(channel_id.as_str(), "directline" | "webchat");
        ConversationReference {
            activity_id: if fake_id { None } else { activity.id.clone() },
            user: activity.from.clone().unwrap_or_default(),
            bot: activity.recipient.clone().unwrap_or_default(),
            conversation: {
                let mut conversation = activity.conversation.clone().unwrap_or_default();
                // Teams always says the tenant in channelData; keep it with the conversation,
                // where the per-tenant rate limit and tenant scoping look for it.
                if conversation.tenant_id.is_none() {
                    conversation.tenant_id = activity
                        .channel_data
                        .as_ref()
                        .and_then(|data| data.pointer("/tenant/id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                conversation
            },
            channel_id,
            service_url: activity.service_url.clone().unwrap_or_default(),
            locale: activity.locale.clone(),
            extra: Map::new(),
        }
    }

    /// The tenant the conversation belongs to (Teams, Entra ID channels), when known.
    pub fn tenant_id(&self) -> Option<&str> {
        self.conversation
            .tenant_id
            .as_deref()
            .filter(|tenant| !tenant.is_empty())
    }

    /// Addresses `activity` for a proactive send into this conversation: from the bot, to the
    /// user, same conversation, channel and serviceUrl.
    pub fn address(&self, activity: Activity) -> Activity {
        Activity {
            from: Some(self.bot.clone()),
            recipient: Some(self.user.clone()),
            conversation: Some(self.conversation.clone()),
            channel_id: Some(self.channel_id.clone()),
            service_url: Some(self.service_url.clone()),
            locale: activity.locale.clone().or_else(|| self.locale.clone()),
            ..activity
        }
    }
}

/// Timestamps as channels send them: RFC 3339 with any number of fractional digits (.NET
/// sends 7), and, leniently, without an offset (taken as UTC).
mod lenient_timestamp {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<FixedOffset>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(ts) => {
                serializer.serialize_str(&ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        parse(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {text:?}")))
    }

    pub fn parse(text: &str) -> Option<DateTime<FixedOffset>> {
        if let Ok(ts) = DateTime::parse_from_rfc3339(text) {
            return Some(ts);
        }
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|naive| naive.and_utc().fixed_offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_say_whether_they_are_markdown() {
        assert_eq!(
            Activity::message("Job 1 is complete.")
                .text_format
                .as_deref(),
            Some("plain")
        );
        assert_eq!(
            Activity::message("Type **run** to start a job")
                .text_format
                .as_deref(),
            Some("markdown")
        );
        assert_eq!(text_format_of("| Job | State |\n|---|---|"), "markdown");
        assert_eq!(
            text_format_of("see [the docs](https://example.com)"),
            "markdown"
        );
        assert_eq!(text_format_of("Reminder: stretch"), "plain");
        assert_eq!(
            Activity::markdown("a table").text_format.as_deref(),
            Some("markdown")
        );
    }

    #[test]
    fn seven_fractional_digits_parse() {
        let ts = lenient_timestamp::parse("2016-10-19T20:17:52.2891902Z").expect("parses");
        assert_eq!(ts.timestamp_subsec_nanos(), 289_190_200);
        assert!(lenient_timestamp::parse("2016-10-19T20:17:52.2891902").is_some());
        assert!(lenient_timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn validation_names_the_missing_field() {
        let activity: Activity = serde_json::from_value(json!({"type": "message"})).unwrap();
        assert_eq!(
            activity.validate_incoming(),
            Err(InvalidActivity::MissingConversationId)
        );
        let activity: Activity =
            serde_json::from_value(json!({"type": "message", "conversation": {"id": "c"}}))
                .unwrap();
        assert_eq!(
            activity.validate_incoming(),
            Err(InvalidActivity::MissingServiceUrl)
        );
    }
}
