//! The Teams simulator itself, driven through the real Connector client: exact sliding windows
//! per conversation and per tenant, scripted faults, and what it records.

use std::time::{Duration, Instant};

use proactive_bot::connector::{ConnectorClient, ConnectorConfig, ConnectorError};
use proactive_bot::delivery::limits::Window;
use proactive_bot::schema::{Activity, ConversationAccount};
use proactive_bot::testing::simulator::{ScriptedResponse, SimulatorConfig, TeamsSimulator};

fn client() -> ConnectorClient {
    ConnectorClient::new(ConnectorConfig::default()).unwrap()
}

fn message(sim: &TeamsSimulator, conversation: &str, tenant: Option<&str>, text: &str) -> Activity {
    Activity {
        service_url: Some(sim.service_url()),
        conversation: Some(ConversationAccount {
            id: conversation.to_owned(),
            tenant_id: tenant.map(str::to_owned),
            ..Default::default()
        }),
        ..Activity::message(text)
    }
}

/// The status of one send (2xx as 200), and the `Retry-After` of a refusal.
async fn send(client: &ConnectorClient, activity: &Activity) -> (u16, Option<Duration>) {
    match client.send_to_conversation(activity).await {
        Ok(_) => (200, None),
        Err(ConnectorError::Status {
            status,
            retry_after,
            ..
        }) => (status, retry_after),
        Err(other) => panic!("the simulator must answer: {other:?}"),
    }
}

#[tokio::test]
async fn the_eighth_send_within_a_second_to_one_conversation_is_throttled() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    let client = client();
    for i in 0..7 {
        let (status, _) = send(&client, &message(&sim, "a:1", None, &format!("m{i}"))).await;
        assert_eq!(status, 200, "send {i}");
    }
    let (status, retry_after) = send(&client, &message(&sim, "a:1", None, "m7")).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after, Some(Duration::from_secs(1)));
    // Another conversation is not affected.
    assert_eq!(send(&client, &message(&sim, "a:2", None, "x")).await.0, 200);

    let throttled = sim
        .requests()
        .into_iter()
        .find(|r| r.status == 429)
        .unwrap();
    assert!(throttled.is_throttled());
    assert_eq!(sim.throttled_count(), 1);
    assert_eq!(
        sim.accepted_texts_for("a:1"),
        vec!["m0", "m1", "m2", "m3", "m4", "m5", "m6"]
    );
}

#[tokio::test]
async fn the_throttled_answer_has_teams_error_shape() {
    let sim = TeamsSimulator::start(SimulatorConfig {
        conversation: vec![Window::new(1, Duration::from_secs(10))],
        retry_after: Some(7),
        ..SimulatorConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}v3/conversations/c/activities", sim.service_url());
    let body = serde_json::json!({"type": "message", "text": "x"});
    let first = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let id: serde_json::Value = first.json().await.unwrap();
    assert!(id["id"].as_str().is_some_and(|id| !id.is_empty()));
    let second = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert_eq!(second.headers()["retry-after"], "7");
    let error: serde_json::Value = second.json().await.unwrap();
    assert_eq!(error["error"]["code"], "Throttled");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1/10s")
    );
}

#[tokio::test]
async fn after_a_burst_of_seven_one_more_fits_a_second_later_and_the_two_second_window_bites() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    let client = client();
    let first = Instant::now();
    for i in 0..7 {
        assert_eq!(
            send(&client, &message(&sim, "c", None, &format!("m{i}")))
                .await
                .0,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(send(&client, &message(&sim, "c", None, "m7")).await.0, 200);
    let (status, _) = send(&client, &message(&sim, "c", None, "m8")).await;
    assert!(
        first.elapsed() < Duration::from_secs(2),
        "the test ran too slowly to check the 2 s window"
    );
    assert_eq!(status, 429, "8 per 2 s: the ninth within 2 s is refused");
}

#[tokio::test]
async fn refused_requests_do_not_count() {
    let sim = TeamsSimulator::start(SimulatorConfig {
        conversation: vec![Window::new(2, Duration::from_millis(500))],
        ..SimulatorConfig::default()
    })
    .await;
    let client = client();
    let start = Instant::now();
    assert_eq!(send(&client, &message(&sim, "c", None, "1")).await.0, 200);
    assert_eq!(send(&client, &message(&sim, "c", None, "2")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert_eq!(send(&client, &message(&sim, "c", None, "no")).await.0, 429);
    }
    // The two accepted sends have left the window; the refused ones never entered it.
    tokio::time::sleep(
        Duration::from_millis(550) - start.elapsed().min(Duration::from_millis(550)),
    )
    .await;
    assert_eq!(send(&client, &message(&sim, "c", None, "3")).await.0, 200);
    assert_eq!(send(&client, &message(&sim, "c", None, "4")).await.0, 200);
    assert_eq!(sim.accepted_texts_for("c"), vec!["1", "2", "3", "4"]);
    assert_eq!(sim.throttled_count(), 3);
}

#[tokio::test]
async fn a_tenant_takes_fifty_a_second_across_its_conversations() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..51 {
        let activity = message(&sim, &format!("c{i}"), Some("tenant-a"), "hi");
        statuses.push(send(&client, &activity).await.0);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 50);
    assert_eq!(statuses[50], 429, "the 51st is over the tenant's limit");
    assert_eq!(sim.throttled_count(), 1);
    let throttled = sim
        .requests()
        .into_iter()
        .find(|r| r.is_throttled())
        .unwrap();
    assert_eq!(throttled.tenant_id.as_deref(), Some("tenant-a"));
}

#[tokio::test]
async fn tenants_are_independent_and_a_tenant_in_channel_data_counts() {
    let sim = TeamsSimulator::start(SimulatorConfig {
        tenant: vec![Window::new(3, Duration::from_secs(10))],
        ..SimulatorConfig::default()
    })
    .await;
    let client = client();
    for i in 0..3 {
        let a = message(&sim, &format!("a{i}"), Some("tenant-a"), "hi");
        assert_eq!(send(&client, &a).await.0, 200);
        let mut b = message(&sim, &format!("b{i}"), None, "hi");
        b.channel_data = Some(serde_json::json!({"tenant": {"id": "tenant-b"}}));
        assert_eq!(send(&client, &b).await.0, 200);
    }
    let a = message(&sim, "a-more", Some("tenant-a"), "hi");
    assert_eq!(send(&client, &a).await.0, 429);
    let mut b = message(&sim, "b-more", None, "hi");
    b.channel_data = Some(serde_json::json!({"tenant": {"id": "tenant-b"}}));
    assert_eq!(send(&client, &b).await.0, 429);
    // Without a tenant there is no tenant limit.
    for i in 0..5 {
        let none = message(&sim, &format!("n{i}"), None, "hi");
        assert_eq!(send(&client, &none).await.0, 200);
    }
}

#[tokio::test]
async fn scripted_faults_are_taken_in_order_by_their_conversation_only() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    sim.script(
        Some("a"),
        ScriptedResponse::status(
            403,
            Some(r#"{"error":{"code":"ConversationBlockedByUser","message":"blocked"}}"#),
        ),
    );
    sim.script(Some("a"), ScriptedResponse::status(503, None));
    sim.script(None, ScriptedResponse::status(502, None));
    let client = client();
    // "b" skips both faults for "a" and takes the one for anyone.
    assert_eq!(send(&client, &message(&sim, "b", None, "b1")).await.0, 502);
    assert_eq!(send(&client, &message(&sim, "b", None, "b2")).await.0, 200);
    let error = client
        .send_to_conversation(&message(&sim, "a", None, "a1"))
        .await
        .unwrap_err();
    assert!(gone(&error), "{error:?}");
    assert_eq!(send(&client, &message(&sim, "a", None, "a2")).await.0, 503);
    assert_eq!(send(&client, &message(&sim, "a", None, "a3")).await.0, 200);
    let requests = sim.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![502, 201, 403, 503, 201]
    );
    assert!(requests[0].scripted && !requests[1].scripted);
    assert_eq!(
        sim.throttled_count(),
        0,
        "a scripted fault is not throttling"
    );
    assert_eq!(sim.accepted_texts_for("a"), vec!["a3"]);
    assert_eq!(sim.accepted_texts_for("b"), vec!["b2"]);
}

#[tokio::test]
async fn a_scripted_429_keeps_its_own_headers_and_delay() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    sim.script(
        None,
        ScriptedResponse::status(429, None)
            .with_header("Retry-After", "5")
            .delayed(Duration::from_millis(200)),
    );
    let started = Instant::now();
    let (status, retry_after) = send(&client(), &message(&sim, "c", None, "x")).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after, Some(Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn replies_and_updates_are_recorded_and_count_as_sends() {
    let sim = TeamsSimulator::start(SimulatorConfig {
        conversation: vec![Window::new(2, Duration::from_secs(10))],
        ..SimulatorConfig::default()
    })
    .await;
    let client = client();
    let reply = Activity {
        reply_to_id: Some("1:incoming".to_owned()),
        ..message(&sim, "19:x@thread.skype", None, "reply")
    };
    let sent = client.reply_to_activity(&reply).await.unwrap();
    let id = sent.id.expect("an activity id");
    let updated = client
        .update_activity(&message(&sim, "19:x@thread.skype", None, "edited"), &id)
        .await
        .unwrap();
    assert!(updated.id.is_some());
    assert_eq!(
        send(&client, &message(&sim, "19:x@thread.skype", None, "third"))
            .await
            .0,
        429,
        "the reply and the update used the window"
    );
    let requests = sim.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].conversation_id.as_deref(),
        Some("19:x@thread.skype")
    );
    assert_eq!(requests[0].activity_id.as_deref(), Some("1:incoming"));
    assert_eq!(requests[0].response_id.as_deref(), Some(id.as_str()));
    assert_eq!(requests[1].method, "PUT");
    assert_eq!(requests[1].activity_id.as_deref(), Some(id.as_str()));
    assert_eq!(requests[1].status, 200);
    assert_eq!(requests[1].text(), "edited");
    assert_ne!(requests[0].response_id, requests[1].response_id);
    assert!(requests[0].arrived <= requests[1].arrived);
}

#[tokio::test]
async fn other_routes_are_recorded_and_answered_404() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    let response = reqwest::Client::new()
        .get(format!("{}v3/conversations/c/members", sim.service_url()))
        .header("authorization", "Bearer t")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let requests = sim.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].conversation_id, None);
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer t"));
    assert!(sim.accepted().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_to_one_conversation_never_exceed_a_window() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    let client = client();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            let activity = message(&sim, "c", None, &format!("m{i}"));
            tokio::spawn(async move { send(&client, &activity).await.0 })
        })
        .collect();
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
    }
    assert_eq!(sim.accepted().len(), 7);
    assert_eq!(sim.throttled_count(), 23);
    let accepted = sim.wait_for_accepted(7, Duration::from_secs(1)).await;
    assert_eq!(accepted.len(), 7);
}

#[tokio::test]
async fn latency_is_added_to_every_answer() {
    let sim = TeamsSimulator::start(SimulatorConfig {
        latency: Duration::from_millis(150),
        ..SimulatorConfig::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(send(&client(), &message(&sim, "c", None, "x")).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
#[should_panic(expected = "expected 1 accepted requests")]
async fn waiting_for_more_than_was_accepted_fails() {
    let sim = TeamsSimulator::start(SimulatorConfig::default()).await;
    sim.wait_for_accepted(1, Duration::from_millis(50)).await;
}

/// The engine's verdict: the conversation is gone for the bot.
fn gone(error: &proactive_bot::connector::ConnectorError) -> bool {
    matches!(
        proactive_bot::delivery::answers::classify(error, false),
        proactive_bot::delivery::answers::Verdict::Permanent {
            conversation_gone: true,
            ..
        }
    )
}
