//! The schema on real payload shapes: round trips, references, URL encoding, commands.

use proactive_bot::bot::Command;
use proactive_bot::connector::activities_url;
use proactive_bot::schema::{Activity, ConversationReference};
use serde_json::{Value, json};

const EMULATOR: &str = include_str!("fixtures/emulator-message.json");
const WEBCHAT_UPDATE: &str = include_str!("fixtures/webchat-conversation-update.json");
const TEAMS_PERSONAL: &str = include_str!("fixtures/teams-personal-message.json");
const TEAMS_CHANNEL: &str = include_str!("fixtures/teams-channel-thread-message.json");

fn parse(text: &str) -> (Activity, Value) {
    let activity: Activity = serde_json::from_str(text).expect("parses");
    let original: Value = serde_json::from_str(text).expect("json");
    (activity, original)
}

/// Timestamps are re-serialized with the same instant but maybe other digits; compare them
/// as instants and everything else byte for byte.
fn assert_round_trip(text: &str) {
    let (activity, mut original) = parse(text);
    let mut written = serde_json::to_value(&activity).unwrap();
    for value in [&mut original, &mut written] {
        if let Some(ts) = value.get("timestamp").and_then(Value::as_str) {
            let instant = chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap()
                .timestamp_nanos_opt();
            value["timestamp"] = json!(instant);
        }
    }
    assert_eq!(written, original, "nothing lost or changed");
}

#[test]
fn every_real_payload_survives_a_round_trip_with_its_unknown_fields() {
    for text in [EMULATOR, WEBCHAT_UPDATE, TEAMS_PERSONAL, TEAMS_CHANNEL] {
        assert_round_trip(text);
    }
    let (activity, _) = parse(TEAMS_CHANNEL);
    assert_eq!(activity.extra["localTimezone"], "America/Los_Angeles");
    assert!(activity.extra.contains_key("entities"));
    let conversation = activity.conversation.as_ref().unwrap();
    assert_eq!(conversation.is_group, Some(true));
    assert_eq!(
        conversation.tenant_id.as_deref(),
        Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
    );
}

#[test]
fn seven_digit_timestamps_keep_their_precision() {
    let (activity, _) = parse(TEAMS_CHANNEL);
    let ts = activity.timestamp.unwrap();
    assert_eq!(ts.timestamp_subsec_nanos(), 805_137_900);
}

#[test]
fn a_reference_is_built_from_the_incoming_activity() {
    let (activity, _) = parse(TEAMS_PERSONAL);
    let reference = ConversationReference::from_incoming(&activity);
    assert_eq!(reference.activity_id.as_deref(), Some("1732183203496"));
    assert_eq!(reference.user.id, "29:1Mu-kQ4Hy2lT6yW7rX0a9nTzQj3bV5cXy8d");
    assert_eq!(
        reference.user.aad_object_id.as_deref(),
        Some("6a1e5c2a-4b0c-4a59-8d3e-1f2a3b4c5d6e")
    );
    assert_eq!(reference.bot.id, "28:0c7b1e5a-2d3f-4e6a-9b8c-1d2e3f4a5b6c");
    assert_eq!(reference.channel_id, "msteams");
    assert_eq!(
        reference.service_url,
        "https://smba.trafficmanager.net/emea/"
    );
    assert_eq!(reference.locale.as_deref(), Some("en-GB"));
    assert_eq!(
        reference.conversation.conversation_type.as_deref(),
        Some("personal")
    );

    // Stored and read back, nothing is lost.
    let stored = serde_json::to_string(&reference).unwrap();
    assert_eq!(
        serde_json::from_str::<ConversationReference>(&stored).unwrap(),
        reference
    );
}

#[test]
fn conversation_updates_on_web_chat_and_direct_line_carry_no_activity_id() {
    let (mut activity, _) = parse(WEBCHAT_UPDATE);
    assert_eq!(
        ConversationReference::from_incoming(&activity).activity_id,
        None
    );
    activity.channel_id = Some("directline".into());
    assert_eq!(
        ConversationReference::from_incoming(&activity).activity_id,
        None
    );
    // On other channels, and for messages, the id is kept.
    activity.channel_id = Some("msteams".into());
    assert_eq!(
        ConversationReference::from_incoming(&activity)
            .activity_id
            .as_deref(),
        Some("G8kN1xQyZ9p")
    );
    let (message, _) = parse(EMULATOR);
    assert!(
        ConversationReference::from_incoming(&message)
            .activity_id
            .is_some()
    );
}

#[test]
fn a_reference_addresses_a_proactive_message_from_the_bot_to_the_user() {
    let (activity, _) = parse(TEAMS_CHANNEL);
    let reference = ConversationReference::from_incoming(&activity);
    let message = reference.address(Activity::message("Job 1 is complete."));
    assert_eq!(
        message.from.as_ref().unwrap().id,
        "28:0c7b1e5a-2d3f-4e6a-9b8c-1d2e3f4a5b6c"
    );
    assert_eq!(
        message.recipient.as_ref().unwrap().id,
        "29:1Mu-kQ4Hy2lT6yW7rX0a9nTzQj3bV5cXy8d"
    );
    assert_eq!(message.conversation, activity.conversation);
    assert_eq!(message.channel_id.as_deref(), Some("msteams"));
    assert_eq!(message.service_url, activity.service_url);
    assert_eq!(message.locale.as_deref(), Some("en-US"));
    assert_eq!(message.reply_to_id, None);
}

#[test]
fn a_reply_swaps_from_and_recipient_and_points_at_the_activity() {
    let (activity, _) = parse(EMULATOR);
    let reply = activity.reply_with(Activity::message("hi"));
    assert_eq!(reply.from, activity.recipient);
    assert_eq!(reply.recipient, activity.from);
    assert_eq!(reply.reply_to_id, activity.id);
    assert_eq!(reply.conversation, activity.conversation);
}

#[test]
fn teams_channel_thread_ids_are_encoded_as_one_segment() {
    let (activity, _) = parse(TEAMS_CHANNEL);
    let url = activities_url(
        activity.service_url.as_deref().unwrap(),
        activity.conversation_id().unwrap(),
        activity.id.as_deref(),
    );
    assert_eq!(
        url,
        "https://smba.trafficmanager.net/amer/v3/conversations/19%3A4a95f7d8db4c4e7fae857bcebe0623e6%40thread.tacv2%3Bmessageid%3D1732183000000/activities/1732183512805"
    );
    let emulator = activities_url("http://localhost:53281", "8a684db0|livechat", None);
    assert_eq!(
        emulator,
        "http://localhost:53281/v3/conversations/8a684db0%7Clivechat/activities"
    );
}

#[test]
fn a_teams_mention_does_not_hide_the_command() {
    let (activity, _) = parse(TEAMS_CHANNEL);
    assert_eq!(
        Command::parse(activity.text.as_deref().unwrap()),
        Command::Run
    );
    let (personal, _) = parse(TEAMS_PERSONAL);
    assert_eq!(
        Command::parse(personal.text.as_deref().unwrap()),
        Command::Show
    );
}
