//! The floor for the cold-start benchmark (`benches/lambda_cold_start.rs`): lambda_http's
//! hello world, built in the same profile, with the same crate features, as the functions.
//! Not deployed; `cargo run` runs the bot (`default-run`).

use lambda_http::{Body, Error, Request, Response, service_fn};

async fn hello(_request: Request) -> Result<Response<Body>, Error> {
    Ok(Response::new(Body::from("Hello, world")))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    lambda_http::run(service_fn(hello)).await
}
