//! Incoming authentication (channel → bot) against a local identity provider.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proactive_bot::auth::{AppType, Auth, AuthConfig, AuthFailure, ChannelAuthenticator};
use proactive_bot::schema::{Activity, ConversationAccount};
use proactive_bot::testing::idp::{
    self, CHANNEL_KID, EMULATOR_KID, TEAMS_ONLY_KID, TestIdp, UNENDORSED_KID,
};
use serde_json::{Value, json};

const APP_ID: &str = "6b3f5e2a-0000-4000-8000-00000000b0b1";
const SERVICE_URL: &str = "https://smba.trafficmanager.net/amer/";

fn activity(channel_id: &str) -> Activity {
    Activity {
        kind: "message".to_owned(),
        id: Some("1".to_owned()),
        channel_id: Some(channel_id.to_owned()),
        service_url: Some(SERVICE_URL.to_owned()),
        conversation: Some(ConversationAccount {
            id: "a:conversation".to_owned(),
            ..ConversationAccount::default()
        }),
        text: Some("hello".to_owned()),
        ..Activity::default()
    }
}

async fn setup() -> (TestIdp, ChannelAuthenticator) {
    let idp = TestIdp::start().await;
    let auth = ChannelAuthenticator::new(&idp.auth_config(APP_ID), reqwest::Client::new());
    (idp, auth)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn accept(auth: &ChannelAuthenticator, token: &str, activity: &Activity) {
    auth.authenticate(Some(&bearer(token)), activity)
        .await
        .expect("token must be accepted");
}

async fn refuse(
    auth: &ChannelAuthenticator,
    header: Option<&str>,
    activity: &Activity,
) -> AuthFailure {
    let error = auth
        .authenticate(header, activity)
        .await
        .expect_err("request must be refused");
    assert_eq!(
        error.to_string(),
        "unauthorized",
        "the error text stays generic"
    );
    error.failure().clone()
}

fn channel_token_with(claims: impl FnOnce(&mut Value)) -> String {
    let mut c = idp::channel_claims(APP_ID, SERVICE_URL);
    claims(&mut c);
    idp::sign(idp::channel_key(), CHANNEL_KID, Algorithm::RS256, &c)
}

fn no_fetch_happened(idp: &TestIdp) {
    assert_eq!(idp.channel_metadata_fetches(), 0);
    assert_eq!(idp.channel_jwks_fetches(), 0);
    assert_eq!(idp.emulator_metadata_fetches(), 0);
    assert_eq!(idp.emulator_jwks_fetches(), 0);
}

// Accepted.

#[tokio::test]
async fn a_channel_token_is_accepted() {
    let (idp, auth) = setup().await;
    assert!(auth.is_enabled());
    accept(
        &auth,
        &idp::channel_token(APP_ID, SERVICE_URL),
        &activity("msteams"),
    )
    .await;
    assert_eq!(
        idp.emulator_metadata_fetches(),
        0,
        "channel tokens use the channel keys only"
    );
}

#[tokio::test]
async fn channel_tokens_signed_with_rs384_and_rs512_are_accepted() {
    let (_idp, auth) = setup().await;
    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    for alg in [Algorithm::RS384, Algorithm::RS512] {
        let token = idp::sign(idp::channel_key(), CHANNEL_KID, alg, &claims);
        accept(&auth, &token, &activity("msteams")).await;
    }
}

#[tokio::test]
async fn an_emulator_v1_token_is_accepted() {
    let (idp, auth) = setup().await;
    accept(
        &auth,
        &idp::emulator_token_v1(APP_ID),
        &activity("emulator"),
    )
    .await;
    assert_eq!(idp.emulator_jwks_fetches(), 1);
    assert_eq!(
        idp.channel_jwks_fetches(),
        0,
        "Emulator tokens use the AAD keys only"
    );
}

#[tokio::test]
async fn an_emulator_v2_token_is_accepted() {
    let (_idp, auth) = setup().await;
    accept(
        &auth,
        &idp::emulator_token_v2(APP_ID),
        &activity("emulator"),
    )
    .await;
}

#[tokio::test]
async fn a_single_tenant_bot_accepts_its_own_tenants_issuers_and_others_do_not() {
    let idp = TestIdp::start().await;
    let tenant = "11111111-2222-3333-4444-555555555555";
    let mut v1 = idp::emulator_v1_claims(APP_ID);
    v1["iss"] = json!(format!("https://sts.windows.net/{tenant}/"));
    let mut v2 = idp::emulator_v2_claims(APP_ID);
    v2["iss"] = json!(format!("https://login.microsoftonline.com/{tenant}/v2.0"));
    let v1 = idp::sign(idp::emulator_key(), EMULATOR_KID, Algorithm::RS256, &v1);
    let v2 = idp::sign(idp::emulator_key(), EMULATOR_KID, Algorithm::RS256, &v2);

    let single = AuthConfig {
        app_type: AppType::SingleTenant,
        tenant_id: Some(tenant.to_owned()),
        ..idp.auth_config(APP_ID)
    };
    let auth = ChannelAuthenticator::new(&single, reqwest::Client::new());
    accept(&auth, &v1, &activity("emulator")).await;
    accept(&auth, &v2, &activity("emulator")).await;

    let multi = ChannelAuthenticator::new(&idp.auth_config(APP_ID), reqwest::Client::new());
    // Not an Emulator issuer here, so it is taken for a channel token and fails as one.
    let failure = refuse(&multi, Some(&bearer(&v1)), &activity("emulator")).await;
    assert!(
        matches!(failure, AuthFailure::UnknownKey | AuthFailure::WrongIssuer),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_token_expired_within_five_minutes_is_accepted() {
    let (_idp, auth) = setup().await;
    let token = channel_token_with(|c| c["exp"] = json!(idp::now() - 240));
    accept(&auth, &token, &activity("msteams")).await;
}

#[tokio::test]
async fn a_token_valid_from_within_five_minutes_is_accepted() {
    let (_idp, auth) = setup().await;
    let token = channel_token_with(|c| c["nbf"] = json!(idp::now() + 240));
    accept(&auth, &token, &activity("msteams")).await;
}

#[tokio::test]
async fn a_key_without_endorsements_signs_for_any_channel() {
    let (_idp, auth) = setup().await;
    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    let token = idp::sign(
        idp::channel_key(),
        UNENDORSED_KID,
        Algorithm::RS256,
        &claims,
    );
    accept(&auth, &token, &activity("somechannel")).await;
}

#[tokio::test]
async fn authentication_is_off_without_an_app_id() {
    let config = AuthConfig::from_lookup(|name| (name == "MicrosoftAppId").then(String::new))
        .expect("config");
    let auth = Auth::new(&config, reqwest::Client::new());
    assert!(!auth.authenticator.is_enabled());
    auth.authenticator
        .authenticate(None, &activity("emulator"))
        .await
        .expect("no app id: no authentication");
}

// Refused.

#[tokio::test]
async fn a_request_without_an_authorization_header_is_refused() {
    let (idp, auth) = setup().await;
    assert_eq!(
        refuse(&auth, None, &activity("msteams")).await,
        AuthFailure::MissingHeader
    );
    no_fetch_happened(&idp);
}

#[tokio::test]
async fn a_scheme_other_than_bearer_is_refused() {
    let (idp, auth) = setup().await;
    let token = idp::channel_token(APP_ID, SERVICE_URL);
    for header in [
        format!("Basic {token}"),
        format!("bearer {token}"),
        format!("BEARER {token}"),
        token.clone(),
    ] {
        assert_eq!(
            refuse(&auth, Some(&header), &activity("msteams")).await,
            AuthFailure::WrongScheme
        );
    }
    no_fetch_happened(&idp);
}

#[tokio::test]
async fn garbage_is_refused() {
    let (_idp, auth) = setup().await;
    for header in [
        "Bearer ",
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer ....",
        "Bearer e30.e30.e30",
    ] {
        let failure = refuse(&auth, Some(header), &activity("msteams")).await;
        assert!(
            matches!(
                failure,
                AuthFailure::Malformed | AuthFailure::AlgorithmNotAllowed
            ),
            "{header}: {failure:?}"
        );
    }
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_refused() {
    let (_idp, auth) = setup().await;
    let forged = idp::sign(
        idp::other_key(),
        CHANNEL_KID,
        Algorithm::RS256,
        &idp::channel_claims(APP_ID, SERVICE_URL),
    );
    assert_eq!(
        refuse(&auth, Some(&bearer(&forged)), &activity("msteams")).await,
        AuthFailure::BadSignature
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_exactly_one_refresh_and_not_refetched_within_the_hour() {
    let (idp, auth) = setup().await;
    accept(
        &auth,
        &idp::channel_token(APP_ID, SERVICE_URL),
        &activity("msteams"),
    )
    .await;
    assert_eq!(
        (idp.channel_metadata_fetches(), idp.channel_jwks_fetches()),
        (1, 1)
    );

    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    let unknown = idp::sign(idp::other_key(), "unknown-kid", Algorithm::RS256, &claims);
    assert_eq!(
        refuse(&auth, Some(&bearer(&unknown)), &activity("msteams")).await,
        AuthFailure::UnknownKey
    );
    assert_eq!(
        (idp.channel_metadata_fetches(), idp.channel_jwks_fetches()),
        (2, 2)
    );

    let another = idp::sign(
        idp::other_key(),
        "another-unknown-kid",
        Algorithm::RS256,
        &claims,
    );
    assert_eq!(
        refuse(&auth, Some(&bearer(&another)), &activity("msteams")).await,
        AuthFailure::UnknownKey
    );
    assert_eq!(
        (idp.channel_metadata_fetches(), idp.channel_jwks_fetches()),
        (2, 2),
        "a second unknown kid within the hour does not refetch"
    );
    // Known keys keep working from the cache.
    accept(
        &auth,
        &idp::channel_token(APP_ID, SERVICE_URL),
        &activity("msteams"),
    )
    .await;
    assert_eq!(idp.channel_jwks_fetches(), 2);
}

#[tokio::test]
async fn a_newly_published_key_is_found_by_one_refresh() {
    let (idp, auth) = setup().await;
    accept(
        &auth,
        &idp::channel_token(APP_ID, SERVICE_URL),
        &activity("msteams"),
    )
    .await;
    idp.add_channel_key(idp::other_key(), "rotated-key", Some(&["msteams"]));
    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    let token = idp::sign(idp::other_key(), "rotated-key", Algorithm::RS256, &claims);
    accept(&auth, &token, &activity("msteams")).await;
    assert_eq!(idp.channel_jwks_fetches(), 2);
}

#[tokio::test]
async fn a_token_expired_beyond_the_tolerance_is_refused() {
    let (_idp, auth) = setup().await;
    let token = channel_token_with(|c| {
        c["exp"] = json!(idp::now() - 360);
        c["nbf"] = json!(idp::now() - 4000);
    });
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::Expired
    );
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let (_idp, auth) = setup().await;
    let token = channel_token_with(|c| {
        c.as_object_mut().expect("object").remove("exp");
    });
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::MissingClaim
    );
}

#[tokio::test]
async fn a_token_not_valid_before_a_time_beyond_the_tolerance_is_refused() {
    let (_idp, auth) = setup().await;
    let token = channel_token_with(|c| c["nbf"] = json!(idp::now() + 360));
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::NotYetValid
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (_idp, auth) = setup().await;
    let token = idp::channel_token("some-other-bot", SERVICE_URL);
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::WrongAudience
    );
    let token = channel_token_with(|c| {
        c.as_object_mut().expect("object").remove("aud");
    });
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::MissingClaim
    );
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let (_idp, auth) = setup().await;
    let token = channel_token_with(|c| c["iss"] = json!("https://evil.example.com"));
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::WrongIssuer
    );
}

#[tokio::test]
async fn an_alg_none_token_is_refused_before_any_key_lookup() {
    let (idp, auth) = setup().await;
    let token = idp::unsigned(
        &json!({"alg": "none", "typ": "JWT", "kid": CHANNEL_KID}),
        &idp::channel_claims(APP_ID, SERVICE_URL),
    );
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::AlgorithmNotAllowed
    );
    no_fetch_happened(&idp);
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused_before_any_key_lookup() {
    let (idp, auth) = setup().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(CHANNEL_KID.to_owned());
    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    let token = idp::sign_with(
        &header,
        &claims,
        &EncodingKey::from_secret(idp::channel_key().public_der()),
    );
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::AlgorithmNotAllowed
    );
    no_fetch_happened(&idp);
}

#[tokio::test]
async fn a_serviceurl_claim_differing_from_the_activity_is_refused() {
    let (_idp, auth) = setup().await;
    let token = idp::channel_token(APP_ID, "https://evil.example.com/");
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::ServiceUrlMismatch
    );
    let token = channel_token_with(|c| {
        c.as_object_mut().expect("object").remove("serviceurl");
    });
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::ServiceUrlMismatch
    );
    let mut no_service_url = activity("msteams");
    no_service_url.service_url = None;
    let token = idp::channel_token(APP_ID, SERVICE_URL);
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &no_service_url).await,
        AuthFailure::ServiceUrlMismatch
    );
}

#[tokio::test]
async fn a_key_not_endorsed_for_the_activitys_channel_is_refused() {
    let (_idp, auth) = setup().await;
    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    let token = idp::sign(
        idp::channel_key(),
        TEAMS_ONLY_KID,
        Algorithm::RS256,
        &claims,
    );
    accept(&auth, &token, &activity("msteams")).await;
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("webchat")).await,
        AuthFailure::NotEndorsed
    );
    let mut no_channel = activity("msteams");
    no_channel.channel_id = None;
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &no_channel).await,
        AuthFailure::NotEndorsed
    );
}

#[tokio::test]
async fn an_emulator_token_for_another_app_id_is_refused() {
    let (_idp, auth) = setup().await;
    // Right audience, but issued to another app.
    let mut v1 = idp::emulator_v1_claims(APP_ID);
    v1["appid"] = json!("another-app");
    let mut v2 = idp::emulator_v2_claims(APP_ID);
    v2["azp"] = json!("another-app");
    let mut v2_with_appid_only = idp::emulator_v2_claims(APP_ID);
    v2_with_appid_only
        .as_object_mut()
        .expect("object")
        .remove("azp");
    v2_with_appid_only["appid"] = json!(APP_ID);
    for claims in [v1, v2, v2_with_appid_only] {
        let token = idp::sign(idp::emulator_key(), EMULATOR_KID, Algorithm::RS256, &claims);
        assert_eq!(
            refuse(&auth, Some(&bearer(&token)), &activity("emulator")).await,
            AuthFailure::WrongAppId
        );
    }
    // Entirely for another app.
    let token = idp::emulator_token_v2("another-app");
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("emulator")).await,
        AuthFailure::WrongAudience
    );
    // An unknown token version.
    let mut v3 = idp::emulator_v2_claims(APP_ID);
    v3["ver"] = json!("3.0");
    let token = idp::sign(idp::emulator_key(), EMULATOR_KID, Algorithm::RS256, &v3);
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("emulator")).await,
        AuthFailure::UnknownVersion
    );
}

#[tokio::test]
async fn an_emulator_issued_token_signed_with_a_channel_key_is_refused() {
    let (_idp, auth) = setup().await;
    let token = idp::sign(
        idp::channel_key(),
        CHANNEL_KID,
        Algorithm::RS256,
        &idp::emulator_v1_claims(APP_ID),
    );
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("emulator")).await,
        AuthFailure::UnknownKey
    );
}

#[tokio::test]
async fn unreachable_keys_refuse_the_request() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let config = AuthConfig {
        app_id: Some(APP_ID.to_owned()),
        openid_metadata_url: format!("http://127.0.0.1:{port}/metadata"),
        emulator_openid_metadata_url: format!("http://127.0.0.1:{port}/metadata"),
        ..AuthConfig::default()
    };
    let auth = ChannelAuthenticator::new(&config, reqwest::Client::new());
    let token = idp::channel_token(APP_ID, SERVICE_URL);
    assert_eq!(
        refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await,
        AuthFailure::KeysUnavailable
    );
}

// Key cache.

#[tokio::test]
async fn two_validations_fetch_the_metadata_and_keys_once() {
    let (idp, auth) = setup().await;
    let token = idp::channel_token(APP_ID, SERVICE_URL);
    accept(&auth, &token, &activity("msteams")).await;
    accept(&auth, &token, &activity("webchat")).await;
    assert_eq!(idp.channel_metadata_fetches(), 1);
    assert_eq!(idp.channel_jwks_fetches(), 1);
    accept(
        &auth,
        &idp::emulator_token_v1(APP_ID),
        &activity("emulator"),
    )
    .await;
    accept(
        &auth,
        &idp::emulator_token_v2(APP_ID),
        &activity("emulator"),
    )
    .await;
    assert_eq!(idp.emulator_metadata_fetches(), 1);
    assert_eq!(idp.emulator_jwks_fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_validations_on_a_cold_cache_fetch_once() {
    let (idp, auth) = setup().await;
    idp.set_delay(Duration::from_millis(150));
    let token = idp::channel_token(APP_ID, SERVICE_URL);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let auth = auth.clone();
            let token = token.clone();
            tokio::spawn(async move {
                auth.authenticate(Some(&bearer(&token)), &activity("msteams"))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("accepted");
    }
    assert_eq!(idp.channel_metadata_fetches(), 1);
    assert_eq!(idp.channel_jwks_fetches(), 1);
}

// Logging.

#[tokio::test]
async fn the_reason_is_logged_at_warn_and_the_token_never() {
    let (captured, _guard) = proactive_bot::testing::logs::capture();

    let (_idp, auth) = setup().await;
    let token = idp::channel_token(APP_ID, "https://evil.example.com/");
    refuse(&auth, Some(&bearer(&token)), &activity("msteams")).await;
    let unknown = idp::sign(
        idp::other_key(),
        "unknown-kid",
        Algorithm::RS256,
        &idp::channel_claims(APP_ID, SERVICE_URL),
    );
    refuse(&auth, Some(&bearer(&unknown)), &activity("msteams")).await;

    let logs = captured.text();
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("serviceurl claim does not match"), "{logs}");
    assert!(logs.contains("not a known signing key"), "{logs}");
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!logs.contains(signature), "the token must never be logged");
    assert!(
        !logs.contains(&token[..40]),
        "the token must never be logged"
    );
}

// The two steps: the token alone, then the token against the activity.

#[tokio::test]
async fn the_token_alone_is_verified_without_an_activity_and_the_activity_checked_after() {
    let (_idp, auth) = setup().await;
    // A genuine token for another serviceUrl passes the first step...
    let token = idp::channel_token(APP_ID, "https://evil.example.com/");
    let verified = auth
        .verify_token(Some(&bearer(&token)))
        .await
        .expect("signature, issuer, audience and lifetime are fine");
    let claims = verified.claims().expect("authentication is on");
    assert_eq!(claims["serviceurl"], "https://evil.example.com/");
    assert_eq!(claims["aud"], APP_ID);
    // ...and is refused by the second, against the activity it came with.
    let error = verified
        .check_activity(&activity("msteams"))
        .expect_err("serviceUrl differs");
    assert_eq!(*error.failure(), AuthFailure::ServiceUrlMismatch);
    let mut forged = activity("msteams");
    forged.service_url = Some("https://evil.example.com/".to_owned());
    verified.check_activity(&forged).expect("same serviceUrl");
}

#[tokio::test]
async fn endorsements_are_checked_in_the_second_step() {
    let (_idp, auth) = setup().await;
    let claims = idp::channel_claims(APP_ID, SERVICE_URL);
    let token = idp::sign(
        idp::channel_key(),
        TEAMS_ONLY_KID,
        Algorithm::RS256,
        &claims,
    );
    let verified = auth
        .verify_token(Some(&bearer(&token)))
        .await
        .expect("valid");
    verified
        .check_activity(&activity("msteams"))
        .expect("endorsed");
    assert_eq!(
        *verified
            .check_activity(&activity("webchat"))
            .expect_err("not endorsed")
            .failure(),
        AuthFailure::NotEndorsed
    );
}

#[tokio::test]
async fn a_bad_token_fails_the_first_step() {
    let (_idp, auth) = setup().await;
    let expired = channel_token_with(|c| {
        c["exp"] = json!(idp::now() - 600);
        c["nbf"] = json!(idp::now() - 4000);
    });
    // Right audience, issued to another app: the app id needs no activity either.
    let mut other_app = idp::emulator_v2_claims(APP_ID);
    other_app["azp"] = json!("another-app");
    let other_app = idp::sign(
        idp::emulator_key(),
        EMULATOR_KID,
        Algorithm::RS256,
        &other_app,
    );
    for (name, header, failure) in [
        ("none", None, AuthFailure::MissingHeader),
        (
            "garbage",
            Some("Bearer garbage".to_owned()),
            AuthFailure::Malformed,
        ),
        ("expired", Some(bearer(&expired)), AuthFailure::Expired),
        (
            "other app",
            Some(bearer(&other_app)),
            AuthFailure::WrongAppId,
        ),
    ] {
        let error = auth
            .verify_token(header.as_deref())
            .await
            .expect_err("refused");
        assert_eq!(*error.failure(), failure, "{name}");
    }
}

#[tokio::test]
async fn with_authentication_off_both_steps_pass() {
    let auth = ChannelAuthenticator::disabled();
    let verified = auth.verify_token(None).await.expect("off");
    assert!(verified.claims().is_none());
    verified.check_activity(&activity("emulator")).expect("off");
}
