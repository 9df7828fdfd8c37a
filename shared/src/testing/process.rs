//! Child processes: reading their memory (for the benchmarks), and starting a function's
//! binary as Lambda would (for the start-up tests).

/// A `/proc/{pid}/status` field in KiB, such as `VmRSS:` (resident now) or `VmHWM:` (peak
/// resident). `None` where `/proc` is not available or the process has gone.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// How a function's binary started in a stand-in for Lambda's environment
/// ([`start_in_lambda`]).
#[derive(Debug)]
pub enum LambdaStart {
    /// It exited before asking for an invocation: whether it exited with success, and what
    /// it printed (stdout, then stderr).
    Exited { success: bool, output: String },
    /// It asked the Runtime API for its first invocation: the first line of that request.
    Polled { request_line: String },
}

/// Runs `binary` with Lambda's variables (`AWS_LAMBDA_RUNTIME_API` pointing at a listener of
/// this process, `AWS_LAMBDA_FUNCTION_NAME`, …) plus `env`, and nothing else of this
/// process's environment, until it either exits or asks the Runtime API for an invocation
/// (then it is killed). Panics if neither happens within `timeout`.
pub fn start_in_lambda(
    binary: &std::path::Path,
    env: &[(&str, &str)],
    timeout: std::time::Duration,
) -> LambdaStart {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API");
    listener.set_nonblocking(true).expect("non-blocking");
    let runtime_api = listener.local_addr().expect("address").to_string();
    let mut child = Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "function")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("AWS_REGION", "us-east-1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let output = |stdout: std::thread::JoinHandle<String>,
                  stderr: std::thread::JoinHandle<String>| {
        format!(
            "{}{}",
            stdout.join().unwrap_or_default(),
            stderr.join().unwrap_or_default()
        )
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return LambdaStart::Exited {
                success: status.success(),
                output: output(stdout, stderr),
            };
        }
        if let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .expect("read timeout");
            let mut request_line = String::new();
            let _ = BufReader::new(stream).read_line(&mut request_line);
            let _ = child.kill();
            let _ = child.wait();
            return LambdaStart::Polled {
                request_line: request_line.trim_end().to_owned(),
            };
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} neither exited nor polled the Runtime API within {timeout:?}; it printed:\n{}",
                binary.display(),
                output(stdout, stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
