//! A moto server for integration tests: DynamoDB, SQS and EventBridge Scheduler over their real
//! wire protocols, on 127.0.0.1, with the tables, queues and schedule group created from
//! `template.yaml` by `scripts/local_resources.py` (so the template stays the single source of
//! truth): the jobs table, the delivery table, the notifications FIFO queue with its
//! dead-letter queue, and the reminders' schedule group and dead-letter queue. (moto stores
//! schedules but never fires them: a test plays the scheduler's part by sending a schedule's
//! input to its target.)
//!
//! ```text
//! let moto = MotoServer::shared();
//! let resources = moto.create_resources("store").await; // fresh, uniquely named
//! let (config, counter) = moto.sdk_config().await;
//! let dynamodb = moto::dynamodb_client(&config, &counter);
//! // … counter.count("DynamoDB", "PutItem") …
//! ```
//!
//! Moto's server is required, never optional. It runs from the project's own Python virtual
//! environment, `.tools/moto` (created with `python3 -m venv` and filled from
//! `scripts/requirements-moto.txt` on first use, reused after; `PROACTIVE_BOT_PYTHON` names
//! another interpreter), never from the machine's global one; if that cannot be made, the
//! test panics saying so.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Credentials, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

const INSTALL_HINT: &str = "these tests need moto's server (DynamoDB, SQS and EventBridge \
     Scheduler on 127.0.0.1) from a Python virtual environment: they make `.tools/moto` with \
     `python3 -m venv` and `pip install -r scripts/requirements-moto.txt`; run those by hand to \
     see what fails, or set PROACTIVE_BOT_PYTHON to a Python that has moto[server]";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `moto_server -H 127.0.0.1 -p PORT`, stopped on drop.
///
/// On Unix the server runs under a tiny `sh` watchdog that stops it when its stdin (a pipe
/// held by this process) closes, so even the [`MotoServer::shared`] server, which is never
/// dropped, goes away when the test binary exits, however it exits.
#[derive(Debug)]
pub struct MotoServer {
    endpoint: String,
    log: PathBuf,
    process: Mutex<Option<Child>>,
    keepalive: Mutex<Option<ChildStdin>>,
}

/// The tables and queues of `template.yaml`, created on moto for one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResources {
    /// The unique prefix of every name (`{prefix}-{LogicalId}`, plus `.fifo` for a FIFO queue).
    pub prefix: String,
    /// `JobsTable`: the jobs.
    pub table_name: String,
    /// `DeliveryTable`: notifications, rate-limit state and registered conversations.
    pub delivery_table_name: String,
    /// `NotificationsQueue` (FIFO).
    pub queue_url: String,
    /// `NotificationsDeadLetterQueue` (FIFO).
    pub dead_letter_queue_url: String,
    /// `ReminderScheduleGroup`: the reminders' EventBridge Scheduler group.
    pub schedule_group: String,
    /// `ReminderDeadLetterQueue` (standard): the scheduler's dead-letter queue.
    pub reminder_dead_letter_queue_url: String,
    /// Every created resource: logical id → table name or queue URL.
    pub all: BTreeMap<String, String>,
}

impl LocalResources {
    /// The backend these resources make.
    pub fn backend(&self) -> crate::config::Backend {
        crate::config::Backend::Aws {
            jobs_table: self.table_name.clone(),
            delivery_table: self.delivery_table_name.clone(),
            queue_url: self.queue_url.clone(),
            dead_letter_queue_url: self.dead_letter_queue_url.clone(),
        }
    }

    /// Where EventBridge schedules of these resources go: the group, the notifications queue,
    /// the scheduler's dead-letter queue (their ARNs as moto names them) and a role ARN (moto
    /// does not check it).
    pub fn eventbridge_target(&self) -> crate::adapters::eventbridge::EventBridgeTarget {
        crate::adapters::eventbridge::EventBridgeTarget {
            group: self.schedule_group.clone(),
            queue_arn: queue_arn(&self.queue_url),
            role_arn: format!(
                "arn:aws:iam::{MOTO_ACCOUNT}:role/{}-ReminderSchedulerRole",
                self.prefix
            ),
            dead_letter_queue_arn: queue_arn(&self.reminder_dead_letter_queue_url),
        }
    }

    /// The AWS ports over these resources, every request counted by `counter`.
    pub fn ports(&self, config: &SdkConfig, counter: &RequestCounter) -> crate::wiring::Ports {
        crate::wiring::Ports::aws(
            dynamodb_client(config, counter),
            sqs_client(config, counter),
            &self.backend(),
            chrono::Duration::days(30),
            crate::registry::RegistryRetention::default(),
        )
        .expect("an AWS backend has AWS ports")
    }

    /// [`LocalResources::ports`] with reminders scheduled on EventBridge Scheduler (moto).
    pub fn ports_with_eventbridge(
        &self,
        config: &SdkConfig,
        counter: &RequestCounter,
    ) -> crate::wiring::Ports {
        self.ports(config, counter)
            .with_scheduler(std::sync::Arc::new(
                crate::adapters::eventbridge::EventBridgeScheduler::new(
                    scheduler_client(config, counter),
                    self.eventbridge_target(),
                ),
            ))
    }
}

/// The account moto answers as.
pub const MOTO_ACCOUNT: &str = "123456789012";

/// The ARN of a moto queue, from its URL (`http://host/123456789012/name`).
pub fn queue_arn(url: &str) -> String {
    let name = url.rsplit('/').next().unwrap_or_default();
    format!("arn:aws:sqs:us-east-1:{MOTO_ACCOUNT}:{name}")
}

impl MotoServer {
    /// Starts a server of its own (most tests share one: [`MotoServer::shared`]).
    ///
    /// # Panics
    /// When moto's server cannot be found, installed or started.
    pub fn start() -> MotoServer {
        let launcher = launcher();
        let mut failures = Vec::new();
        // A free port can be taken between choosing it and moto binding it: try a few.
        for _ in 0..3 {
            match Self::try_start(&launcher) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "could not start moto's server ({}):\n{}\n{INSTALL_HINT}",
            launcher.describe(),
            failures.join("\n")
        );
    }

    /// One server for the whole test binary, started on first use. Tests sharing it must
    /// use fresh resources ([`MotoServer::create_resources`] names them uniquely).
    pub fn shared() -> &'static MotoServer {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(MotoServer::start)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// An SDK configuration for moto (region us-east-1, static test credentials, endpoint
    /// URL = moto, the product's HTTP client: [`crate::tls::sdk_http_client`]) and a fresh
    /// [`RequestCounter`]. `SdkConfig` cannot carry interceptors:
    /// build clients with [`dynamodb_client`] and [`sqs_client`] to have them counted.
    pub async fn sdk_config(&self) -> (SdkConfig, RequestCounter) {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .endpoint_url(self.endpoint())
            .http_client(crate::tls::sdk_http_client(crate::tls::client_config()))
            .load()
            .await;
        (config, RequestCounter::default())
    }

    /// Creates the template's tables and queues under a fresh prefix derived from `prefix`
    /// (kept short: SQS names are limited to 80 characters).
    ///
    /// # Panics
    /// When the script fails.
    pub async fn create_resources(&self, prefix: &str) -> LocalResources {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(32)
            .collect();
        if clean.is_empty() {
            clean.push('t');
        }
        let unique = format!(
            "{clean}-{}{:06x}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..0x100_0000)
        );

        let root = workspace_root();
        let mut command = Command::new(python());
        command
            .arg(root.join("scripts/local_resources.py"))
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .arg("--template")
            .arg(root.join("template.yaml"))
            .arg("--prefix")
            .arg(&unique)
            .arg("--region")
            .arg("us-east-1")
            // Never real credentials, even if the environment has some.
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE");
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the resource script's thread panicked")
            .unwrap_or_else(|e| panic!("could not run scripts/local_resources.py: {e}"));
        assert!(
            output.status.success(),
            "scripts/local_resources.py failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let all: BTreeMap<String, String> =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "scripts/local_resources.py printed no JSON object ({e}): {}",
                    String::from_utf8_lossy(&output.stdout)
                )
            });
        let take = |id: &str| {
            all.get(id)
                .cloned()
                .unwrap_or_else(|| panic!("template.yaml defines no {id}; created: {all:?}"))
        };
        LocalResources {
            prefix: unique.clone(),
            table_name: take("JobsTable"),
            delivery_table_name: take("DeliveryTable"),
            queue_url: take("NotificationsQueue"),
            dead_letter_queue_url: take("NotificationsDeadLetterQueue"),
            schedule_group: take("ReminderScheduleGroup"),
            reminder_dead_letter_queue_url: take("ReminderDeadLetterQueue"),
            all: all.clone(),
        }
    }

    fn try_start(launcher: &Launcher) -> Result<MotoServer, String> {
        let port = free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
        let log =
            std::env::temp_dir().join(format!("moto-server-{}-{port}.log", std::process::id()));
        let mut args: Vec<String> = launcher.args.clone();
        args.extend(["-H", "127.0.0.1", "-p"].map(String::from));
        args.push(port.to_string());

        let mut command = watchdog_command(&launcher.program, &args, &log);
        let mut child = command
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", launcher.describe()))?;
        let keepalive = child.stdin.take();
        let mut server = MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            process: Mutex::new(Some(child)),
            keepalive: Mutex::new(keepalive),
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if answers_http(address) {
                return Ok(server);
            }
            if let Some(status) = server.exited() {
                let log = server.log_tail();
                server.stop();
                return Err(format!(
                    "moto's server exited ({status}) on port {port}:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                let log = server.log_tail();
                server.stop();
                return Err(format!(
                    "moto's server did not answer on port {port} within {READY_TIMEOUT:?}:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exited(&mut self) -> Option<String> {
        let process = self.process.get_mut().unwrap_or_else(|p| p.into_inner());
        match process.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(&mut self) {
        // Closing the watchdog's stdin makes it stop moto and exit.
        drop(
            self.keepalive
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let process = self.process.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = process.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts the requests the SDK clients it is attached to put on the wire (every attempt,
/// retries included), per service and operation, e.g. `count("DynamoDB", "PutItem")`.
/// Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl RequestCounter {
    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests of one operation, e.g. `("DynamoDB", "Query")`, `("SQS", "SendMessage")`.
    pub fn count(&self, service: &str, operation: &str) -> usize {
        self.counts()
            .get(&format!("{service}.{operation}"))
            .copied()
            .unwrap_or(0)
    }

    /// Requests to one service, all operations.
    pub fn service_total(&self, service: &str) -> usize {
        let prefix = format!("{service}.");
        self.counts()
            .iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> usize {
        self.counts().values().sum()
    }

    pub fn reset(&self) {
        self.counts().clear();
    }

    /// `"Service.Operation"` → requests.
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.counts().clone()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = cfg
            .load::<Metadata>()
            .map(|m| format!("{}.{}", m.service(), m.name()))
            .unwrap_or_else(|| "unknown.unknown".to_owned());
        *self.counts().entry(key).or_default() += 1;
        Ok(())
    }
}

/// A DynamoDB client for `config` whose requests `counter` counts.
pub fn dynamodb_client(config: &SdkConfig, counter: &RequestCounter) -> aws_sdk_dynamodb::Client {
    // The endpoint set on the service itself, so no AWS_ENDPOINT_URL_* variable can win.
    let mut builder = aws_sdk_dynamodb::config::Builder::from(config);
    builder.set_endpoint_url(config.endpoint_url().map(str::to_owned));
    let config = builder.interceptor(counter.clone()).build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// An SQS client for `config` whose requests `counter` counts.
pub fn sqs_client(config: &SdkConfig, counter: &RequestCounter) -> aws_sdk_sqs::Client {
    // The endpoint set on the service itself, so no AWS_ENDPOINT_URL_* variable can win.
    let mut builder = aws_sdk_sqs::config::Builder::from(config);
    builder.set_endpoint_url(config.endpoint_url().map(str::to_owned));
    let config = builder.interceptor(counter.clone()).build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// An EventBridge Scheduler client for `config` whose requests `counter` counts.
pub fn scheduler_client(config: &SdkConfig, counter: &RequestCounter) -> aws_sdk_scheduler::Client {
    let mut builder = aws_sdk_scheduler::config::Builder::from(config);
    builder.set_endpoint_url(config.endpoint_url().map(str::to_owned));
    let config = builder.interceptor(counter.clone()).build();
    aws_sdk_scheduler::Client::from_conf(config)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("shared/ lives in the workspace")
        .to_path_buf()
}

/// How to run moto's server: `moto_server`, or `python3 -m moto.server`.
#[derive(Debug, Clone)]
struct Launcher {
    program: PathBuf,
    args: Vec<String>,
}

impl Launcher {
    fn describe(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The Python the tests use for moto and `scripts/local_resources.py`: `$PROACTIVE_BOT_PYTHON`
/// when set, otherwise the project's own virtual environment `.tools/moto` (made with
/// `python3 -m venv` and filled with `scripts/requirements-moto.txt` on first use, reused
/// after; never the machine's global interpreter).
fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("PROACTIVE_BOT_PYTHON") {
            return Ok(PathBuf::from(python));
        }
        let root = workspace_root();
        let venv = root.join(".tools/moto");
        let python = venv.join("bin/python");
        if ready(&python) {
            return Ok(python);
        }
        eprintln!(
            "creating the tests' Python environment {} (moto[server], boto3, PyYAML)",
            venv.display()
        );
        run("python3", &["-m", "venv", &venv.display().to_string()])?;
        let requirements = root.join("scripts/requirements-moto.txt");
        run(
            &python.display().to_string(),
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                &requirements.display().to_string(),
            ],
        )?;
        if ready(&python) {
            Ok(python)
        } else {
            Err(format!(
                "{} was filled but cannot import moto.server, boto3 and yaml",
                venv.display()
            ))
        }
    });
    match python {
        Ok(python) => python.clone(),
        Err(e) => panic!("moto's server is missing and installing it failed: {e}\n{INSTALL_HINT}"),
    }
}

/// `python` imports what the tests need.
fn ready(python: &Path) -> bool {
    python.is_file()
        && Command::new(python)
            .args(["-c", "import moto.server, boto3, yaml"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("could not run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {} failed ({status})", args.join(" ")))
    }
}

/// Moto's server, from the tests' Python environment.
fn launcher() -> Launcher {
    Launcher {
        program: python(),
        args: ["-m", "moto.server"].map(String::from).to_vec(),
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The server under a watchdog: `sh` starts it in the background (its stdin /dev/null, its
/// output in `log`), waits for its own stdin to close, then stops it.
#[cfg(unix)]
fn watchdog_command(program: &Path, args: &[String], log: &Path) -> Command {
    const SCRIPT: &str = r#"log="$1"; shift
"$@" >"$log" 2>&1 &
server=$!
read _ || true
kill "$server" 2>/dev/null
wait "$server"
exit 0"#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SCRIPT)
        .arg("moto-watchdog")
        .arg(log)
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[cfg(not(unix))]
fn watchdog_command(program: &Path, args: &[String], log: &Path) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    if let Ok(file) = std::fs::File::create(log) {
        if let Ok(copy) = file.try_clone() {
            command.stdout(copy);
        }
        command.stderr(file);
    }
    command
}

/// Whether something answering HTTP listens at `address`.
fn answers_http(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
