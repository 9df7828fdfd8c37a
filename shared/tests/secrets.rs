//! The app password read from Secrets Manager at start, over the real wire protocol (moto).

use aws_sdk_secretsmanager::Client;
use proactive_bot::testing::moto::MotoServer;
use proactive_bot::wiring::read_app_password;

#[tokio::test]
async fn the_app_password_is_read_from_a_plain_or_json_secret() {
    let moto = MotoServer::shared();
    let (config, _) = moto.sdk_config().await;
    let client = Client::new(&config);
    let suffix = format!("{:x}", std::process::id());
    let plain = client
        .create_secret()
        .name(format!("bot/plain-{suffix}"))
        .secret_string("plain-s3cret")
        .send()
        .await
        .expect("create the plain secret on moto");
    let json = client
        .create_secret()
        .name(format!("bot/json-{suffix}"))
        .secret_string(r#"{"MicrosoftAppPassword":"json-s3cret"}"#)
        .send()
        .await
        .expect("create the JSON secret on moto");

    let read = read_app_password(&config, plain.arn().unwrap())
        .await
        .unwrap();
    assert_eq!(read, "plain-s3cret");
    let read = read_app_password(&config, json.arn().unwrap())
        .await
        .unwrap();
    assert_eq!(read, "json-s3cret");

    let missing = read_app_password(
        &config,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(missing.contains("Secrets Manager"), "{missing}");
}
