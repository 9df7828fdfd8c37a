//! The delivery function reads the same settings as the messages function, so it refuses the
//! same things: inside Lambda, no `MicrosoftAppId` stops it at init unless
//! `ALLOW_ANONYMOUS_EMULATOR_MODE=true`. It would otherwise send, without a token, to whatever
//! conversations an unauthenticated endpoint registered.

use std::time::Duration;

use proactive_bot::testing::process::{LambdaStart, start_in_lambda};

fn start_binary(env: &[(&str, &str)]) -> LambdaStart {
    start_in_lambda(
        std::path::Path::new(env!("CARGO_BIN_EXE_delivery")),
        env,
        Duration::from_secs(30),
    )
}

#[test]
fn without_an_app_id_the_function_exits_at_init_and_logs_why() {
    match start_binary(&[]) {
        LambdaStart::Exited { success, output } => {
            assert!(!success, "a refusal is a failed init: {output}");
            assert!(output.contains("refusing to start"), "{output}");
            assert!(
                output.contains("ALLOW_ANONYMOUS_EMULATOR_MODE=true"),
                "{output}"
            );
        }
        polled => panic!("it must not ask for an invocation: {polled:?}"),
    }
}

#[test]
fn with_an_app_id_or_the_explicit_permission_the_function_starts() {
    for env in [
        &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")][..],
        &[
            ("MicrosoftAppId", "00000000-0000-0000-0000-000000000001"),
            ("MicrosoftAppPassword", "secret"),
            ("MicrosoftAppType", "MultiTenant"),
        ],
    ] {
        match start_binary(env) {
            LambdaStart::Polled { request_line } => assert!(
                request_line.starts_with("GET /2018-06-01/runtime/invocation/next"),
                "{request_line}"
            ),
            exited => panic!("{env:?}: it must start: {exited:?}"),
        }
    }
}
