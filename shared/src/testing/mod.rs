//! Test support for this workspace's integration tests (the `testing` feature): a Bot
//! Connector stand-in, a Teams simulator that enforces the channel's rate limits, a moto
//! server launcher for DynamoDB and SQS over the real wire protocol, a local identity provider
//! that signs tokens with test keys, a log capture, a metrics capture with an EMF check, a
//! Lambda Runtime API stand-in to run a function's binary against, HTTPS with a test CA, a
//! queue that counts its receives, and process memory readings for the benchmarks.

pub mod connector;
pub mod https;
pub mod idp;
pub mod logs;
pub mod metrics;
pub mod moto;
pub mod process;
pub mod queue;
pub mod runtime_api;
pub mod simulator;

/// Serves `router` on a free port of 127.0.0.1 until the returned task is aborted; `what`
/// names the server in the panic if no port can be had.
pub async fn serve_on_loopback(
    router: axum::Router,
    what: &str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind the {what} on 127.0.0.1: {e}"));
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, server)
}

/// A reference to `conversation` on the Emulator channel, from user `user` to bot `bot`,
/// reached at `service_url`.
pub fn reference(service_url: &str, conversation: &str) -> crate::schema::ConversationReference {
    use crate::schema::{ChannelAccount, ConversationAccount, ConversationReference};
    ConversationReference {
        user: ChannelAccount {
            id: "user".into(),
            ..Default::default()
        },
        bot: ChannelAccount {
            id: "bot".into(),
            ..Default::default()
        },
        conversation: ConversationAccount {
            id: conversation.into(),
            ..Default::default()
        },
        channel_id: "emulator".into(),
        service_url: service_url.into(),
        ..Default::default()
    }
}

/// A reference to the personal chat `conversation` on Teams (`msteams`) in `tenant`, from user
/// `user-<conversation>` to bot `bot`, reached at `service_url` (the benchmarks' recipients).
pub fn teams_reference(
    service_url: &str,
    conversation: &str,
    tenant: &str,
) -> crate::schema::ConversationReference {
    use crate::schema::{ChannelAccount, ConversationAccount, ConversationReference};
    ConversationReference {
        user: ChannelAccount {
            id: format!("user-{conversation}"),
            ..Default::default()
        },
        bot: ChannelAccount {
            id: "bot".into(),
            ..Default::default()
        },
        conversation: ConversationAccount {
            id: conversation.to_owned(),
            tenant_id: Some(tenant.to_owned()),
            conversation_type: Some("personal".into()),
            ..Default::default()
        },
        channel_id: "msteams".into(),
        service_url: service_url.to_owned(),
        ..Default::default()
    }
}
