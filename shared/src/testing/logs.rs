//! Captures what the code under test logs, to check what is (and is never) written.
//!
//! tracing caches each call site's interest process-wide, decided when the site is first
//! reached, by whatever subscribers exist then. With a scoped subscriber per capturing test
//! (`set_default`), a site that another test's thread reached first — with no subscriber of
//! its own, or while ours was being installed — could stay cached as uninteresting, and the
//! capturing test never saw its event (`auth_incoming`'s logging test failed 4 times in 40
//! under load). So one process-wide subscriber is installed on the first capture, every call
//! site's interest is asked again after it, and its filter is asked at every event whether
//! the logging thread is capturing; each event goes to that thread's capture.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::subscriber::DefaultGuard;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Everything logged on this thread while the guard returned by [`capture`] lives.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// The capture of this thread, while a [`CaptureGuard`] lives.
    static CAPTURE: RefCell<Option<CapturedLogs>> = const { RefCell::new(None) };
}

fn current() -> Option<CapturedLogs> {
    CAPTURE.with(|capture| capture.borrow().clone())
}

/// Writes to the logging thread's capture; nowhere when it has none.
struct ThreadCapture;

impl<'a> MakeWriter<'a> for ThreadCapture {
    type Writer = Box<dyn Write + 'a>;
    fn make_writer(&'a self) -> Self::Writer {
        match current() {
            Some(captured) => Box::new(captured),
            None => Box::new(std::io::sink()),
        }
    }
}

/// Stops this thread's capture when dropped.
pub struct CaptureGuard {
    /// Only when another global subscriber was installed first: capture through a scoped one.
    _scoped: Option<DefaultGuard>,
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|capture| *capture.borrow_mut() = None);
    }
}

/// Starts capturing every level on the current thread (use a current-thread test runtime).
pub fn capture() -> (CapturedLogs, CaptureGuard) {
    static GLOBAL: OnceLock<bool> = OnceLock::new();
    let global = *GLOBAL.get_or_init(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(ThreadCapture)
            // Asked at every event (never cached): is the logging thread capturing?
            .with_filter(tracing_subscriber::filter::filter_fn(|_| {
                current().is_some()
            }));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).is_ok()
    });
    // A call site first reached by another thread while the subscriber was being installed
    // may have cached the interest of none: ask every call site again, now that it is.
    tracing::callsite::rebuild_interest_cache();
    let captured = CapturedLogs::default();
    CAPTURE.with(|capture| *capture.borrow_mut() = Some(captured.clone()));
    let scoped = (!global).then(|| {
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    });
    (captured, CaptureGuard { _scoped: scoped })
}
