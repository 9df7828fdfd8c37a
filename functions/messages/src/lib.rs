//! The HTTP-triggered function: `POST /api/messages`, in Lambda or locally.
//!
//! Inside Lambda (or `cargo lambda watch`) the router is handed to `lambda_http`. Anywhere else
//! the same router is served on `127.0.0.1:$PORT` by [`local`], which also consumes the
//! delivery queue in-process with the delivery function's handler.

pub mod local;

use proactive_bot::config::Settings;
use proactive_bot::notify::api::IamCaller;
use proactive_bot::wiring::Services;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Tells the router that API Gateway authorized this request with IAM (SigV4), and as whom:
/// the notify API accepts only such requests inside Lambda. The request context comes from
/// API Gateway itself; a caller cannot put one there.
pub fn mark_iam_caller(mut request: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;
    let caller = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.iam.as_ref())
            .map(|iam| IamCaller {
                user_arn: iam.user_arn.clone().unwrap_or_default(),
            }),
        _ => None,
    };
    if let Some(caller) = caller {
        request.extensions_mut().insert(caller);
    }
    request
}

/// Runs the function: Lambda's runtime when inside Lambda, the local runner otherwise.
pub async fn run() -> Result<(), Error> {
    let lambda = proactive_bot::telemetry::in_lambda();
    proactive_bot::telemetry::init(lambda);
    let settings = Settings::from_env()?;
    if lambda {
        // Said once, here: the local runner says it in its own words (`local::run`), and the
        // delivery function, which has no endpoint, in its own.
        if !settings.auth.is_enabled() {
            tracing::warn!(
                "MicrosoftAppId is not set: authentication is off (Emulator mode); anyone who can reach the endpoint can talk to the bot"
            );
        }
        let services = Services::build(settings).await?;
        let router = services.router();
        lambda_http::run(
            tower::ServiceBuilder::new()
                .map_request(mark_iam_caller)
                .service(router),
        )
        .await
    } else {
        local::run(settings).await
    }
}
