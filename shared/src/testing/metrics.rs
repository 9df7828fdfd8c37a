//! Reads what [`crate::metrics::Metrics`] writes: a buffer to hand it instead of stdout, and
//! a check of each line against the Embedded Metric Format's rules.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Everything a [`crate::metrics::Metrics`] built with it wrote (clones share the buffer).
#[derive(Clone, Default)]
pub struct CapturedMetrics(Arc<Mutex<Vec<u8>>>);

impl CapturedMetrics {
    /// The lines written so far, each parsed as JSON (a line that is not JSON panics).
    pub fn documents(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let text = String::from_utf8(bytes).expect("metrics are UTF-8");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "every line is whole: {text}"
        );
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }
}

impl Write for CapturedMetrics {
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

/// The units CloudWatch accepts.
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Panics unless `document` is a valid EMF document, as CloudWatch reads one: `_aws` with an
/// integer `Timestamp` and directives, each with a namespace, dimension sets (at most 30
/// names each) whose names are top-level strings, and metrics (at most 100, known units) whose
/// names are top-level numbers or arrays of at most 100 numbers.
pub fn check_emf(document: &Value) {
    let fail = |why: &str| -> ! { panic!("not EMF: {why}: {document}") };
    let root = document
        .as_object()
        .unwrap_or_else(|| fail("not an object"));
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .unwrap_or_else(|| fail("no _aws object"));
    if !aws.get("Timestamp").is_some_and(Value::is_u64) {
        fail("_aws.Timestamp is not an integer (ms since the epoch)");
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| fail("no CloudWatchMetrics directive"));
    for directive in directives {
        let namespace = directive["Namespace"].as_str().unwrap_or_default();
        if namespace.is_empty() || namespace.len() > 255 {
            fail("bad Namespace");
        }
        let sets = directive["Dimensions"]
            .as_array()
            .unwrap_or_else(|| fail("Dimensions is not an array"));
        for set in sets {
            let names = set
                .as_array()
                .filter(|names| names.len() <= 30)
                .unwrap_or_else(|| fail("a dimension set is not an array of at most 30"));
            for name in names {
                let name = name.as_str().unwrap_or_else(|| fail("a dimension name"));
                if !root.get(name).is_some_and(Value::is_string) {
                    fail(&format!("dimension {name} has no string value"));
                }
            }
        }
        let metrics = directive["Metrics"]
            .as_array()
            .filter(|metrics| metrics.len() <= 100)
            .unwrap_or_else(|| fail("Metrics is not an array of at most 100"));
        for metric in metrics {
            let name = metric["Name"]
                .as_str()
                .filter(|name| !name.is_empty() && name.len() <= 255)
                .unwrap_or_else(|| fail("a metric without a Name"));
            if let Some(unit) = metric.get("Unit")
                && !unit.as_str().is_some_and(|unit| UNITS.contains(&unit))
            {
                fail(&format!("{name}: unknown unit {unit}"));
            }
            let valid = match root.get(name) {
                Some(Value::Number(_)) => true,
                Some(Value::Array(values)) => {
                    !values.is_empty() && values.len() <= 100 && values.iter().all(Value::is_number)
                }
                _ => false,
            };
            if !valid {
                fail(&format!("metric {name} has no numeric value"));
            }
        }
    }
}
