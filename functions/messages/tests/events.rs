//! Every HTTP sample event in `events/` through the real handler: the event JSON is turned
//! into a request by `lambda_http` (as in Lambda) and served by the function's router.

mod support;

use chrono::Utc;
use std::time::Duration;

use proactive_bot::auth::AuthConfig;
use proactive_bot::delivery::DeliveryMessage;
use proactive_bot::jobs::{Job, JobNumber, JobStore};
use proactive_bot::schema::{Activity, ConversationReference};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::wiring::Services;
use tower::ServiceExt;

/// The serviceUrl the sample events carry; the tests point it at the Connector stand-in.
const EVENTS_SERVICE_URL: &str = "http://127.0.0.1:3979";

fn event(name: &str, connector: &ConnectorStandIn) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let service_url = connector.service_url();
    text.replace(EVENTS_SERVICE_URL, service_url.trim_end_matches('/'))
}

async fn invoke(services: &Services, event: &str) -> u16 {
    let request = lambda_http::request::from_str(event).expect("a valid Lambda HTTP event");
    let response = services
        .router()
        .oneshot(request)
        .await
        .expect("infallible");
    response.status().as_u16()
}

/// Services on in-memory ports; no consumer runs (the SQS events are tested with the delivery
/// function), so what `done` queued can be looked at.
fn services() -> Services {
    Services::in_memory(&AuthConfig::default()).unwrap()
}

/// Job 100001 (the number the `done` and event samples name), created from `run`'s activity.
async fn seed_job(store: &dyn JobStore, connector: &ConnectorStandIn) {
    let run = event("http-run.json", connector);
    let request: serde_json::Value = serde_json::from_str(&run).unwrap();
    let activity: Activity = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    let reference = ConversationReference::from_incoming(&activity);
    store
        .create(&Job::new_running(
            JobNumber::new(100_001).unwrap(),
            reference,
            Utc::now(),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_http_api_event_is_answered_by_the_router() {
    let connector = ConnectorStandIn::start().await;
    let services = services();

    assert_eq!(
        invoke(
            &services,
            &event("http-conversation-update.json", &connector)
        )
        .await,
        200
    );
    let welcome = connector.wait_for(1, support::WAIT).await;
    assert!(welcome[0].text().starts_with("Welcome"), "{welcome:#?}");

    assert_eq!(
        invoke(&services, &event("http-run.json", &connector)).await,
        200
    );
    let run = connector.wait_for(2, support::WAIT).await;
    assert!(run[1].text().starts_with("Job "), "{}", run[1].text());

    seed_job(services.jobs.as_ref(), &connector).await;
    assert_eq!(
        invoke(&services, &event("http-show.json", &connector)).await,
        200
    );
    let show = connector.wait_for(3, support::WAIT).await;
    assert!(show[2].text().contains("100001"), "{}", show[2].text());

    assert_eq!(
        invoke(&services, &event("http-done.json", &connector)).await,
        200
    );
    let done = connector.wait_for(4, support::WAIT).await;
    assert_eq!(done[3].text(), "Completing job 100001.");
    let queued = services
        .queue
        .receive(10, Duration::ZERO)
        .await
        .expect("the in-memory queue");
    assert_eq!(queued.len(), 1, "done queued one delivery");
    let message = DeliveryMessage::from_body(queued[0].body.as_deref().unwrap()).unwrap();
    assert!(
        message.id.as_str().starts_with("job-100001-"),
        "{message:?}"
    );

    // The event activity needs no reply.
    assert_eq!(
        invoke(
            &services,
            &event("http-job-complete-event.json", &connector)
        )
        .await,
        200
    );
    assert_eq!(connector.requests().len(), 4);
}

#[tokio::test]
async fn the_rest_api_and_function_url_events_reach_the_same_handler() {
    let connector = ConnectorStandIn::start().await;
    let services = services();
    for (n, name) in ["rest-run.json", "function-url-run.json"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            invoke(&services, &event(name, &connector)).await,
            200,
            "{name}"
        );
        let replies = connector.wait_for(n + 1, support::WAIT).await;
        assert!(
            replies[n].text().starts_with("Job "),
            "{name}: {}",
            replies[n].text()
        );
    }
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 2);
}

#[tokio::test]
async fn a_rest_api_stage_prefix_is_ignored() {
    let connector = ConnectorStandIn::start().await;
    let services = services();
    let mut rest: serde_json::Value =
        serde_json::from_str(&event("rest-run.json", &connector)).unwrap();
    rest["path"] = serde_json::json!("/prod/api/messages");
    rest["requestContext"]["path"] = serde_json::json!("/prod/api/messages");
    assert_eq!(invoke(&services, &rest.to_string()).await, 200);
    rest["path"] = serde_json::json!("/prod/api/other");
    rest["requestContext"]["path"] = serde_json::json!("/prod/api/other");
    assert_eq!(invoke(&services, &rest.to_string()).await, 404);
}

/// `events/activity.json` (what the README posts with curl to `cargo lambda watch`) is the
/// activity `http-run.json` carries, and is accepted as one.
#[tokio::test]
async fn the_bare_activity_is_the_run_events_body() {
    let connector = ConnectorStandIn::start().await;
    let run: serde_json::Value = serde_json::from_str(&event("http-run.json", &connector)).unwrap();
    let body: serde_json::Value = serde_json::from_str(run["body"].as_str().unwrap()).unwrap();
    let bare: serde_json::Value =
        serde_json::from_str(&event("activity.json", &connector)).unwrap();
    assert_eq!(bare, body);
    let activity: Activity = serde_json::from_value(bare).unwrap();
    assert_eq!(activity.text.as_deref(), Some("run"));
}
