//! The HTTP-triggered function: `POST /api/messages`, in Lambda or locally.
//!
//! Inside Lambda (or `cargo lambda watch`) `lambda_http` calls [`handle`], which serves each
//! request with the router and flushes the invocation's metrics. Anywhere else the same router
//! is served on `127.0.0.1:$PORT` by [`local`], which also consumes the delivery queue
//! in-process with the delivery function's handler; it writes no metrics (see
//! [`proactive_bot::metrics`]).

pub mod local;

use std::time::Instant;

use axum::Router;
use axum::response::Response;
use proactive_bot::config::Settings;
use proactive_bot::metrics::{self, Function, Metrics, TurnKind};
use proactive_bot::notify::api::IamCaller;
use proactive_bot::wiring::Services;
use tower::ServiceExt;

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

/// The Lambda function's handler: the request (its IAM caller marked) through `router`, then
/// this invocation's metrics, flushed once: a turn counted by its activity's kind, with its
/// duration; any other request (refused, or the notify API) as no turn.
pub async fn handle(router: Router, metrics: &Metrics, request: lambda_http::Request) -> Response {
    let started = Instant::now();
    let mut invocation = metrics.invocation();
    let response = match router.oneshot(mark_iam_caller(request)).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let kind = response.extensions().get::<TurnKind>().copied();
    metrics::record_turn(&mut invocation, kind, started.elapsed());
    metrics.flush(invocation);
    response
}

/// Runs the function: Lambda's runtime when inside Lambda, the local runner otherwise.
pub async fn run() -> Result<(), Error> {
    let lambda = proactive_bot::telemetry::in_lambda();
    proactive_bot::telemetry::init(lambda);
    // Inside Lambda a refusal is an init error: logged, then a non-zero exit.
    let settings =
        Settings::from_env().inspect_err(|e| tracing::error!("refusing to start: {e}"))?;
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
        let metrics = std::sync::Arc::new(Metrics::stdout(Function::Messages));
        lambda_http::run(lambda_http::service_fn(move |request| {
            let router = router.clone();
            let metrics = metrics.clone();
            async move {
                Ok::<_, std::convert::Infallible>(handle(router, &metrics, request).await)
            }
        }))
        .await
    } else {
        local::run(settings).await
    }
}
