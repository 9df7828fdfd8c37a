//! Authentication through the served router, configured by environment variables as `cargo
//! run` would be: good tokens are accepted, every bad one is refused with 401 and no side
//! effect, and replies carry a Bearer token fetched once.

mod support;

use std::time::Duration;

use chrono::Utc;
use proactive_bot::delivery::consumer::sqs_record;
use proactive_bot::delivery::{
    Content, Decision, Delivered, DeliveryState, Notification, NotificationId, Source,
};
use proactive_bot::schema::{ConversationAccount, ConversationReference};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::idp::{self, TestIdp};
use serde_json::{Value, json};
use support::*;

const APP_ID: &str = "4b8e0f6c-app-id";

async fn start(idp: &TestIdp) -> (messages::local::LocalBot, proactive_bot::wiring::Services) {
    start_bot(&[
        ("MicrosoftAppId", APP_ID),
        ("MicrosoftAppPassword", idp::TEST_APP_PASSWORD),
        ("MicrosoftAppType", "MultiTenant"),
        (
            "BOTFRAMEWORK_OPENID_METADATA_URL",
            &idp.channel_metadata_url(),
        ),
        (
            "BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL",
            &idp.emulator_metadata_url(),
        ),
        ("BOTFRAMEWORK_LOGIN_URL", &idp.base_url()),
        // The Connector stand-in is plain http on loopback: allowed only because it is named.
        (
            "ALLOWED_SERVICE_URL_HOSTS",
            "*.botframework.com,smba.trafficmanager.net,127.0.0.1",
        ),
    ])
    .await
}

async fn post_with(
    bot: &messages::local::LocalBot,
    activity: &Value,
    authorization: Option<&str>,
) -> u16 {
    post_raw(bot, activity.to_string().into_bytes(), authorization)
        .await
        .0
}

#[tokio::test]
async fn good_tokens_are_accepted_and_replies_carry_one_fetched_bearer_token() {
    let idp = TestIdp::start().await;
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start(&idp).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let channel = format!(
        "Bearer {}",
        idp::channel_token(APP_ID, &connector.service_url())
    );
    let v1 = format!("Bearer {}", idp::emulator_token_v1(APP_ID));
    let v2 = format!("Bearer {}", idp::emulator_token_v2(APP_ID));

    assert_eq!(
        post_with(&bot, &a.message("run"), Some(&channel)).await,
        200
    );
    assert_eq!(post_with(&bot, &a.message("show"), Some(&v1)).await, 200);
    assert_eq!(post_with(&bot, &a.message("help"), Some(&v2)).await, 200);
    let requests = connector.wait_for(3, WAIT).await;
    let first = job_number(&requests[0]);
    for request in &requests {
        let header = request.authorization.as_deref().unwrap_or_default();
        assert!(
            header.starts_with("Bearer ") && header.len() > 20,
            "{header:?}"
        );
    }
    assert_eq!(idp.token_request_count(), 1, "one token for every send");
    let token_request = &idp.token_requests()[0];
    assert_eq!(token_request.field("client_id"), Some(APP_ID));
    assert_eq!(
        token_request.field("scope"),
        Some("https://api.botframework.com/.default")
    );

    // The proactive message carries the token too.
    connector.clear();
    assert_eq!(
        post_with(&bot, &a.message(&format!("done {first}")), Some(&channel)).await,
        200
    );
    let proactive = support::wait_for_proactive(&connector, &a, 1).await;
    let requests = connector.requests();
    let proactive = proactive.first().expect("proactive message");
    assert_eq!(proactive.authorization, requests[0].authorization);
    // So does the update of the "running" reply in place.
    let updates = support::updates(&connector, &a);
    assert_eq!(updates.len(), 1, "{requests:#?}");
    assert_eq!(updates[0].authorization, requests[0].authorization);
    assert_eq!(idp.token_request_count(), 1);
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 1);
    let registration = services.registry.get(&a.id).await.unwrap();
    assert!(
        registration.is_some_and(|r| r.status.is_active()),
        "an authenticated conversation is registered"
    );
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_changes_nothing() {
    let idp = TestIdp::start().await;
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start(&idp).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let service_url = connector.service_url();
    let now = idp::now();

    let mut expired = idp::channel_claims(APP_ID, &service_url);
    expired["exp"] = json!(now - 600);
    expired["nbf"] = json!(now - 4000);
    let mut future = idp::channel_claims(APP_ID, &service_url);
    future["nbf"] = json!(now + 600);
    let mut audience = idp::channel_claims(APP_ID, &service_url);
    audience["aud"] = json!("someone-else");
    let mut issuer = idp::channel_claims(APP_ID, &service_url);
    issuer["iss"] = json!("https://evil.example.com");
    let forged_url = idp::channel_claims(APP_ID, "https://evil.example.com/");
    let sign = |claims: &Value| {
        idp::sign(
            idp::channel_key(),
            idp::CHANNEL_KID,
            jsonwebtoken::Algorithm::RS256,
            claims,
        )
    };
    let good_claims = idp::channel_claims(APP_ID, &service_url);

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        (
            "basic scheme",
            Some(format!(
                "Basic {}",
                idp::channel_token(APP_ID, &service_url)
            )),
        ),
        (
            "lowercase bearer",
            Some(format!(
                "bearer {}",
                idp::channel_token(APP_ID, &service_url)
            )),
        ),
        ("garbage", Some("Bearer not.a.jwt".into())),
        (
            "another key under a known kid",
            Some(format!(
                "Bearer {}",
                idp::sign(
                    idp::other_key(),
                    idp::CHANNEL_KID,
                    jsonwebtoken::Algorithm::RS256,
                    &good_claims
                )
            )),
        ),
        (
            "unknown kid",
            Some(format!(
                "Bearer {}",
                idp::sign(
                    idp::channel_key(),
                    "no-such-kid",
                    jsonwebtoken::Algorithm::RS256,
                    &good_claims
                )
            )),
        ),
        ("expired", Some(format!("Bearer {}", sign(&expired)))),
        ("not yet valid", Some(format!("Bearer {}", sign(&future)))),
        (
            "wrong audience",
            Some(format!("Bearer {}", sign(&audience))),
        ),
        ("wrong issuer", Some(format!("Bearer {}", sign(&issuer)))),
        (
            "alg none",
            Some(format!(
                "Bearer {}",
                idp::unsigned(
                    &json!({"alg": "none", "kid": idp::CHANNEL_KID, "typ": "JWT"}),
                    &good_claims
                )
            )),
        ),
        (
            "serviceurl differs",
            Some(format!("Bearer {}", sign(&forged_url))),
        ),
        (
            "not endorsed for the channel",
            Some(format!(
                "Bearer {}",
                idp::sign(
                    idp::channel_key(),
                    idp::TEAMS_ONLY_KID,
                    jsonwebtoken::Algorithm::RS256,
                    &good_claims
                )
            )),
        ),
        (
            "emulator token for another app",
            Some(format!("Bearer {}", idp::emulator_token_v2("another-app"))),
        ),
    ];
    for (name, header) in &cases {
        for text in ["run", "done 123456"] {
            let status = post_with(&bot, &a.message(text), header.as_deref()).await;
            assert_eq!(status, 401, "{name} ({text})");
        }
    }
    // A body that is not even JSON: still 401, not 400, whenever the token alone is bad. It
    // is checked before the body is parsed. (The two tokens that are sound but do not fit the
    // activity they came with need an activity to be refused.)
    let fits_no_activity = ["serviceurl differs", "not endorsed for the channel"];
    for (name, header) in cases.iter().filter(|(n, _)| !fits_no_activity.contains(n)) {
        let (status, body) = post_raw(&bot, b"{oops".to_vec(), header.as_deref()).await;
        assert_eq!(status, 401, "{name}, not JSON: {body}");
    }
    for (name, header) in cases.iter().filter(|(n, _)| fits_no_activity.contains(n)) {
        let (status, body) = post_raw(&bot, b"{oops".to_vec(), header.as_deref()).await;
        assert_eq!(status, 400, "{name}, not JSON: {body}");
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        services.jobs.list_recent(None, 10).await.unwrap().total,
        0,
        "no job written"
    );
    assert!(connector.requests().is_empty(), "no Connector call");
    assert_eq!(idp.token_request_count(), 0, "not even a token was fetched");
    assert!(
        services.registry.get(&a.id).await.unwrap().is_none(),
        "no conversation registered"
    );
}

#[tokio::test]
async fn a_well_signed_request_whose_service_url_is_not_allowed_gets_403_and_changes_nothing() {
    let idp = TestIdp::start().await;
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start(&idp).await;
    let mut a = Conversation::new("a|livechat", "user-a", &connector);
    // An Emulator token carries no serviceurl claim: only the allowlist stands between the
    // activity's serviceUrl and the bot's token.
    a.service_url = "https://evil.example.com/amer/".to_owned();
    let token = format!("Bearer {}", idp::emulator_token_v2(APP_ID));
    let (status, body) = post_raw(
        &bot,
        a.message("run").to_string().into_bytes(),
        Some(&token),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body, r#"{"error":"serviceUrl not allowed"}"#);
    // A channel token signed for that serviceUrl is refused the same way.
    let channel = format!("Bearer {}", idp::channel_token(APP_ID, &a.service_url));
    assert_eq!(
        post_with(&bot, &a.message("run"), Some(&channel)).await,
        403
    );
    // Not a URL at all: 400.
    a.service_url = "not a url".to_owned();
    let channel = format!("Bearer {}", idp::channel_token(APP_ID, &a.service_url));
    assert_eq!(
        post_with(&bot, &a.message("run"), Some(&channel)).await,
        400
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
    assert!(connector.requests().is_empty());
    assert_eq!(idp.token_request_count(), 0);
    assert!(
        services.registry.get(&a.id).await.unwrap().is_none(),
        "no conversation registered with a serviceUrl the bot may not send to"
    );
}

#[tokio::test]
async fn a_stored_reference_outside_the_allowlist_is_refused_and_marked_failed() {
    let idp = TestIdp::start().await;
    let connector = ConnectorStandIn::start().await;
    let (_bot, services) = start(&idp).await;
    // Plain http to a loopback port the allowlist names only as 127.0.0.1: use another
    // loopback name so the host is not allowed.
    let reference = ConversationReference {
        conversation: ConversationAccount {
            id: "c".into(),
            ..Default::default()
        },
        channel_id: "msteams".into(),
        service_url: format!("http://localhost:{}/amer/", connector.addr().port()),
        ..Default::default()
    };
    // Registered when the allowlist still let it in (it has changed since).
    services
        .registry
        .seen(&reference, Utc::now())
        .await
        .unwrap();
    let notification = Notification::new(
        NotificationId::parse("n-refused").unwrap(),
        Source::Job { number: 424_242 },
        reference,
        Content::text("Job 424242 is complete."),
        Utc::now(),
    );
    services.notifications.create(&notification).await.unwrap();
    let results = services
        .engine
        .handle_batch(&[sqs_record("m", &notification.message().to_body())])
        .await;
    assert_eq!(results[0].decision, Decision::Done, "not retried forever");
    assert!(
        matches!(results[0].delivered, Delivered::Failed(ref reason) if reason.contains("not allowed")),
        "{results:?}"
    );
    let stored = services
        .notifications
        .get(&notification.id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(stored.state, DeliveryState::Failed { ref reason, .. } if reason.contains("not allowed")),
        "{stored:?}"
    );
    assert!(connector.requests().is_empty());
    assert_eq!(
        idp.token_request_count(),
        0,
        "the token was not even fetched"
    );
}
