//! The notify API's request body, read field by field so every refusal says what is wrong in
//! our words (never quoting the input).
//!
//! ```json
//! {"conversationId": "…"}                      one conversation
//! {"conversationIds": ["…", "…"]}              several (at most 1000, duplicates once)
//! {"all": true, "tenantId": "…"}               every active conversation (of one tenant)
//! + "text": "…", "textFormat": "markdown" | "plain" | "xml", "attachments": [{…}], "urgent": bool
//! ```

use serde_json::{Map, Value};

use crate::delivery::Content;

/// The most conversations one request may name.
pub const MAX_CONVERSATION_IDS: usize = 1000;

/// The longest conversation id accepted (Teams' are about 100 characters).
const MAX_CONVERSATION_ID_LEN: usize = 1024;

const FIELDS: [&str; 8] = [
    "conversationId",
    "conversationIds",
    "all",
    "tenantId",
    "text",
    "textFormat",
    "attachments",
    "urgent",
];

/// Who a request goes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Target {
    /// The named conversations, each once, in the order first named.
    Conversations { ids: Vec<String> },
    /// Every active registered conversation, or those of one tenant.
    #[serde(rename_all = "camelCase")]
    All { tenant_id: Option<String> },
}

/// A valid notify request.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyBody {
    pub target: Target,
    pub content: Content,
    /// Named conversations are urgent unless the request says `"urgent": false`; a broadcast
    /// is not unless it says `"urgent": true` (it may wait for a quiet moment).
    pub urgent: bool,
}

/// Why a body is refused; the text is the 400's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidBody(pub String);

fn invalid(reason: impl Into<String>) -> InvalidBody {
    InvalidBody(reason.into())
}

impl NotifyBody {
    /// Reads a parsed JSON body.
    pub fn from_json(value: &Value) -> Result<NotifyBody, InvalidBody> {
        let Value::Object(fields) = value else {
            return Err(invalid("the body must be a JSON object"));
        };
        if fields.keys().any(|key| !FIELDS.contains(&key.as_str())) {
            return Err(invalid(format!(
                "unknown field; the fields are {}",
                FIELDS.join(", ")
            )));
        }
        let target = target(fields)?;
        let content = content(fields)?;
        let urgent = match fields.get("urgent") {
            None | Some(Value::Null) => matches!(target, Target::Conversations { .. }),
            Some(Value::Bool(urgent)) => *urgent,
            Some(_) => return Err(invalid("urgent must be true or false")),
        };
        Ok(NotifyBody {
            target,
            content,
            urgent,
        })
    }
}

fn conversation_id(value: &Value, field: &str) -> Result<String, InvalidBody> {
    match value {
        Value::String(id) if !id.trim().is_empty() && id.len() <= MAX_CONVERSATION_ID_LEN => {
            Ok(id.clone())
        }
        _ => Err(invalid(format!(
            "{field} must hold non-empty strings of at most {MAX_CONVERSATION_ID_LEN} bytes"
        ))),
    }
}

fn target(fields: &Map<String, Value>) -> Result<Target, InvalidBody> {
    let all = match fields.get("all") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(invalid("all must be true or false")),
    };
    let one = fields.get("conversationId").filter(|v| !v.is_null());
    let many = fields.get("conversationIds").filter(|v| !v.is_null());
    let named = usize::from(all) + usize::from(one.is_some()) + usize::from(many.is_some());
    if named == 0 {
        return Err(invalid(
            "no target: give conversationId, conversationIds or \"all\": true",
        ));
    }
    if named > 1 {
        return Err(invalid(
            "give one target: conversationId, conversationIds or \"all\": true",
        ));
    }
    let tenant = match fields.get("tenantId") {
        None | Some(Value::Null) => None,
        Some(Value::String(tenant)) if !tenant.trim().is_empty() && tenant.len() <= 256 => {
            Some(tenant.clone())
        }
        Some(_) => return Err(invalid("tenantId must be a non-empty string")),
    };
    if tenant.is_some() && !all {
        return Err(invalid(
            "tenantId narrows \"all\": true; it cannot be used with conversation ids",
        ));
    }
    if all {
        return Ok(Target::All { tenant_id: tenant });
    }
    if let Some(one) = one {
        return Ok(Target::Conversations {
            ids: vec![conversation_id(one, "conversationId")?],
        });
    }
    let Some(Value::Array(values)) = many else {
        return Err(invalid("conversationIds must be an array of strings"));
    };
    if values.is_empty() {
        return Err(invalid("conversationIds is empty"));
    }
    if values.len() > MAX_CONVERSATION_IDS {
        return Err(invalid(format!(
            "conversationIds names more than {MAX_CONVERSATION_IDS} conversations; use several requests or \"all\": true"
        )));
    }
    let mut ids: Vec<String> = Vec::with_capacity(values.len());
    let mut seen = std::collections::HashSet::new();
    for value in values {
        let id = conversation_id(value, "conversationIds")?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(Target::Conversations { ids })
}

fn content(fields: &Map<String, Value>) -> Result<Content, InvalidBody> {
    let text = match fields.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.trim().is_empty() => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(invalid("text must be a string")),
    };
    let text_format = match fields.get("textFormat") {
        None | Some(Value::Null) => None,
        Some(Value::String(format)) if matches!(format.as_str(), "markdown" | "plain" | "xml") => {
            Some(format.clone())
        }
        Some(_) => return Err(invalid("textFormat must be markdown, plain or xml")),
    };
    let attachments = match fields.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(attachments)) => {
            for attachment in attachments {
                let valid = attachment
                    .get("contentType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.trim().is_empty());
                if !valid {
                    return Err(invalid(
                        "each attachment must be an object with a contentType",
                    ));
                }
            }
            attachments.clone()
        }
        Some(_) => return Err(invalid("attachments must be an array")),
    };
    if text.is_none() && attachments.is_empty() {
        return Err(invalid("no content: give text and/or attachments"));
    }
    Ok(Content {
        text,
        text_format,
        attachments,
        digest: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<NotifyBody, String> {
        NotifyBody::from_json(&value).map_err(|e| e.0)
    }

    #[test]
    fn targets() {
        let body = parse(json!({"conversationId": "c1", "text": "hi"})).unwrap();
        assert_eq!(
            body.target,
            Target::Conversations {
                ids: vec!["c1".into()]
            }
        );
        assert!(body.urgent);
        let body =
            parse(json!({"conversationIds": ["a", "b", "a"], "text": "hi", "urgent": false}))
                .unwrap();
        assert_eq!(
            body.target,
            Target::Conversations {
                ids: vec!["a".into(), "b".into()]
            }
        );
        assert!(!body.urgent);
        let body = parse(json!({"all": true, "tenantId": "t1", "text": "hi"})).unwrap();
        assert!(!body.urgent, "a broadcast is not urgent unless it says so");
        assert!(
            parse(json!({"all": true, "text": "hi", "urgent": true}))
                .unwrap()
                .urgent
        );
        assert_eq!(
            body.target,
            Target::All {
                tenant_id: Some("t1".into())
            }
        );
    }

    #[test]
    fn refusals_name_the_problem_without_quoting() {
        for (body, expected) in [
            (json!([1]), "JSON object"),
            (json!({"text": "hi"}), "no target"),
            (json!({"all": false, "text": "hi"}), "no target"),
            (
                json!({"conversationId": "c", "all": true, "text": "hi"}),
                "one target",
            ),
            (json!({"conversationId": "c"}), "no content"),
            (json!({"conversationId": "c", "text": "  "}), "no content"),
            (json!({"conversationId": "", "text": "x"}), "non-empty"),
            (json!({"conversationIds": [], "text": "x"}), "empty"),
            (json!({"conversationIds": "c", "text": "x"}), "array"),
            (
                json!({"conversationIds": [5], "text": "x"}),
                "non-empty strings",
            ),
            (
                json!({"conversationId": "c", "tenantId": "t", "text": "x"}),
                "narrows",
            ),
            (
                json!({"conversationId": "c", "text": "x", "textFormat": "html"}),
                "textFormat",
            ),
            (
                json!({"conversationId": "c", "attachments": [{}]}),
                "contentType",
            ),
            (json!({"conversationId": "c", "text": 5}), "text must"),
            (
                json!({"conversationId": "c", "text": "x", "urgent": "yes"}),
                "urgent",
            ),
            (
                json!({"conversationId": "c", "text": "x", "SECRET-field": 1}),
                "unknown field",
            ),
            (json!({"all": "yes", "text": "x"}), "all must"),
        ] {
            let error = parse(body.clone()).unwrap_err();
            assert!(error.contains(expected), "{body}: {error}");
            assert!(!error.contains("SECRET"), "{error}");
        }
        let too_many: Vec<String> = (0..=MAX_CONVERSATION_IDS)
            .map(|i| format!("c{i}"))
            .collect();
        let error = parse(json!({"conversationIds": too_many, "text": "x"})).unwrap_err();
        assert!(error.contains("more than 1000"), "{error}");
    }

    #[test]
    fn cards_alone_are_content() {
        let card = json!({"contentType": "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard"}});
        let body = parse(json!({"conversationId": "c", "attachments": [card]})).unwrap();
        assert_eq!(body.content.text, None);
        assert_eq!(body.content.attachments.len(), 1);
    }
}
