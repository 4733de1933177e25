//! Prometheus metrics: the one recorder of the process (its buckets and its `service`
//! label), the metrics every service shares, and how a service declares what it
//! exports so that each series is present, with its HELP text, from start (value 0).
//!
//! Names follow the Prometheus form of the OpenTelemetry semantic conventions
//! (`http.server.request.duration` → `http_server_request_duration_seconds`). Each
//! name is spelled once, as a constant used both by its [`Metric`] descriptor and by
//! the code that records it. Label values are never raw user input: routes are matched
//! templates, methods and status codes come from closed lists (see
//! docs/ARCHITECTURE.md, "Metrics", for every name, label and its cardinality).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// `beacon_build_info{service,version,commit}` = 1.
pub const BUILD_INFO: &str = "beacon_build_info";
/// When this process started, in seconds since the Unix epoch (the standard Prometheus
/// process metric): every restart changes it, which is how alerts see restarts without
/// a Kubernetes API token.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
/// HTTP server request duration, by `method`, `route` (matched template) and `status_class`.
pub const HTTP_SERVER_DURATION: &str = "http_server_request_duration_seconds";
/// gRPC server call duration, by `rpc_service`, `rpc_method` and `grpc_code`.
pub const RPC_SERVER_DURATION: &str = "rpc_server_duration_seconds";
/// gRPC client call duration, by `rpc_service`, `rpc_method` and `grpc_code`.
pub const RPC_CLIENT_DURATION: &str = "rpc_client_duration_seconds";
/// Duration of one named database operation, by `operation`.
pub const DB_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// Connections of the pool by `state` (`idle`, `used`).
pub const DB_CONNECTIONS_USAGE: &str = "db_client_connections_usage";
/// The pool's maximum number of connections.
pub const DB_CONNECTIONS_MAX: &str = "db_client_connections_max";
/// Request bodies refused because the process-wide body budget was spent.
pub const HTTP_BODY_BUDGET_EXHAUSTED: &str = "http_body_budget_exhausted_total";
/// Compressed request bodies refused (unsupported or over the decompression limits).
pub const HTTP_DECOMPRESSION_REFUSED: &str = "http_decompression_refused_total";

/// The `route` label of a request no route matched (any unknown path): one series,
/// whatever the path, so a caller cannot create series.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The label value of a method, RPC service or RPC method outside the known lists.
pub const OTHER: &str = "_OTHER";
/// The operation of the readiness query (`SELECT 1`) every database-backed service runs.
pub const READY_CHECK_OPERATION: &str = "ready_check";

/// Request and RPC durations, in seconds (the contract's buckets; also the default of
/// every histogram without buckets of its own).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Database operation durations, in seconds (from 1 ms).
pub const DB_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The version every Beacon binary reports (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from: `BEACON_COMMIT` at build time (set by the
/// image build and CI), `unknown` otherwise. Anything but 7 to 40 hex digits is
/// reported as `unknown` (the label stays short and plain).
pub fn commit() -> &'static str {
    match option_env!("BEACON_COMMIT") {
        Some(c) if (7..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()) => c,
        _ => "unknown",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Label pairs of one series.
pub type Labels = &'static [(&'static str, &'static str)];

/// The series a metric has from start.
#[derive(Debug, Clone, Copy)]
pub enum Series {
    /// One series without labels.
    Unlabelled,
    /// These labelled series.
    Labelled(&'static [Labels]),
    /// Labels known only at run time: registered by the code that knows them.
    Dynamic,
}

/// One metric a service exports: its name, kind, HELP text and its series from start.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub series: Series,
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Counter, help)
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Gauge, help)
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Kind::Histogram, help)
    }

    const fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            series: Series::Unlabelled,
        }
    }

    /// The same metric starting with these labelled series.
    pub const fn with_series(mut self, series: &'static [Labels]) -> Self {
        self.series = Series::Labelled(series);
        self
    }

    /// The same metric, its series registered by the code that knows their labels.
    pub const fn dynamic(mut self) -> Self {
        self.series = Series::Dynamic;
        self
    }

    /// Its HELP text and its series from start (value 0). Idempotent.
    pub fn register(&self) {
        match self.kind {
            Kind::Counter => metrics::describe_counter!(self.name, self.help),
            Kind::Gauge => metrics::describe_gauge!(self.name, self.help),
            Kind::Histogram => metrics::describe_histogram!(self.name, self.help),
        }
        match self.series {
            Series::Unlabelled => self.series_with(Vec::new()),
            Series::Labelled(series) => {
                for labels in series {
                    self.series_with(
                        labels
                            .iter()
                            .map(|(k, v)| metrics::Label::new(*k, *v))
                            .collect(),
                    );
                }
            }
            Series::Dynamic => {}
        }
    }

    /// Registers one series of this metric (value 0 until recorded).
    pub fn series_with(&self, labels: Vec<metrics::Label>) {
        match self.kind {
            Kind::Counter => drop(metrics::counter!(self.name, labels)),
            Kind::Gauge => drop(metrics::gauge!(self.name, labels)),
            Kind::Histogram => drop(metrics::histogram!(self.name, labels)),
        }
    }
}

/// Registers every metric of `lists` (a service's declaration of what it exports).
pub fn register(lists: &[&[Metric]]) {
    for metric in lists.iter().flat_map(|l| l.iter()) {
        metric.register();
    }
}

/// Exported by every service (registered by its admin server).
pub const COMMON: &[Metric] = &[
    Metric::gauge(
        BUILD_INFO,
        "Always 1; the labels say which version and commit of Beacon this service runs.",
    )
    .dynamic(),
    Metric::gauge(
        PROCESS_START_TIME,
        "Start time of the process since the Unix epoch, in seconds.",
    ),
];

/// Exported by every HTTP service (registered with the standard layers).
pub const HTTP_SERVER: &[Metric] = &[Metric::histogram(
    HTTP_SERVER_DURATION,
    "Duration of HTTP requests until the response head, by method, matched route template (unmatched for any unknown path) and status class.",
)
.with_series(&[&[
    ("method", "GET"),
    ("route", UNMATCHED_ROUTE),
    ("status_class", "4xx"),
]])];

/// Exported by every service with a database pool (registered by its admin server,
/// which samples the pool on each scrape).
pub const DB_CLIENT: &[Metric] = &[
    Metric::histogram(
        DB_OPERATION_DURATION,
        "Duration of named database operations (the query functions and tenant transactions), by operation.",
    )
    .with_series(&[&[("operation", READY_CHECK_OPERATION)]]),
    Metric::gauge(
        DB_CONNECTIONS_USAGE,
        "Connections of the database pool, by state (idle, used), sampled at each scrape.",
    )
    .with_series(&[&[("state", "idle")], &[("state", "used")]]),
    Metric::gauge(
        DB_CONNECTIONS_MAX,
        "The database pool's maximum number of connections; saturation = used / max.",
    ),
];

/// Exported by services that read bodies through `platform::body`.
pub const HTTP_BODY: &[Metric] = &[
    Metric::counter(
        HTTP_BODY_BUDGET_EXHAUSTED,
        "Request bodies refused (503) because the process-wide body memory budget stayed spent.",
    ),
    Metric::counter(
        HTTP_DECOMPRESSION_REFUSED,
        "Compressed request bodies refused (unsupported encoding or over the decompressed size or ratio limit).",
    ),
];

/// Installs the process's recorder with the `service` label on every series (the
/// service binaries, from `platform::service::main`). Call before anything is recorded.
pub fn install(service: &str) -> PrometheusHandle {
    let mut installed = false;
    let handle = HANDLE
        .get_or_init(|| {
            installed = true;
            build(Some(service))
        })
        .clone();
    if !installed {
        tracing::warn!(
            service,
            "metrics recorder already installed: no service label"
        );
    }
    handle
}

/// The process-wide recorder: the installed one, or (apps built in-process by tests)
/// one without a `service` label, installed on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE.get_or_init(|| build(None)).clone()
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn build(service: Option<&str>) -> PrometheusHandle {
    let mut builder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(DB_OPERATION_DURATION.to_owned()),
                DB_DURATION_BUCKETS,
            )
        })
        .expect("bucket lists are not empty");
    if let Some(service) = service {
        builder = builder.add_global_label("service", service);
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Fails only if another recorder is installed (then that one records and this
    // handle renders nothing): the process installs through here only.
    if metrics::set_global_recorder(recorder).is_err() {
        eprintln!("warning: a metrics recorder was already installed");
    }
    handle
}

/// Registers [`COMMON`], sets `beacon_build_info` to 1 and `process_start_time_seconds`
/// to now (called once, as the service starts).
pub fn register_build_info() {
    register(&[COMMON]);
    metrics::gauge!(BUILD_INFO, "version" => VERSION, "commit" => commit()).set(1.0);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(PROCESS_START_TIME).set(started);
}

/// Registers a `2xx` series of `http_server_request_duration_seconds` per route of a
/// route table (method, template), so dashboards list every route from start.
pub fn register_http_routes<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (method, route) in routes {
        HTTP_SERVER[0].series_with(vec![
            metrics::Label::new("method", method.to_owned()),
            metrics::Label::new("route", route.to_owned()),
            metrics::Label::new("status_class", "2xx"),
        ]);
    }
}

/// Records one database operation's duration (`db_client_operation_duration_seconds`).
pub fn record_db_operation(operation: metrics::SharedString, took: std::time::Duration) {
    metrics::histogram!(DB_OPERATION_DURATION, "operation" => operation).record(took);
}

/// The `status_class` label of an HTTP status: `1xx` to `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The `method` label: the standard methods as they are, any other as `_OTHER`
/// (OpenTelemetry's rule), so a caller cannot create series with made-up methods.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_closed_lists() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(599), "5xx");
        assert_eq!(method_label(&http::Method::POST), "POST");
        let made_up = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&made_up), OTHER);
    }

    #[test]
    fn the_commit_is_hex_or_unknown() {
        let c = commit();
        assert!(
            c == "unknown" || c.bytes().all(|b| b.is_ascii_hexdigit()),
            "{c}"
        );
    }

    #[test]
    fn buckets_ascend() {
        for buckets in [DURATION_BUCKETS, DB_DURATION_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(DURATION_BUCKETS.first(), Some(&0.005));
        assert_eq!(DURATION_BUCKETS.last(), Some(&10.0));
        assert_eq!(DB_DURATION_BUCKETS.first(), Some(&0.001));
    }
}
