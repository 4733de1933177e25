//! One telemetry init for every service: `RUST_LOG` filter, JSON logs (or pretty with
//! `BEACON_LOG_FORMAT=pretty`), OpenTelemetry spans exported over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace-context propagation helpers for
//! HTTP and gRPC, server and client side. Database operations (spans named
//! `db.query` with a `db.operation` field: the named query functions and the tenant
//! transactions) are timed into `db_client_operation_duration_seconds`, whatever the
//! log filter says.

use std::sync::OnceLock;

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, filter::filter_fn, layer::SubscriberExt, registry::LookupSpan,
    util::SubscriberInitExt,
};

/// Flushes and shuts the tracer provider down when dropped (at the end of `main`).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.force_flush() {
            eprintln!("telemetry flush failed: {e}");
        }
        let _ = self.provider.shutdown();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Telemetry settings, read from the standard variables.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub service: String,
    pub format: LogFormat,
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    pub fn from_env(service: &str) -> crate::config::Result<Self> {
        let format = match crate::config::or::<String>("BEACON_LOG_FORMAT", "json".into())?.as_str()
        {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(crate::config::ConfigError::new(
                    "BEACON_LOG_FORMAT",
                    format!("must be json or pretty, not {other:?}"),
                ));
            }
        };
        Ok(Self {
            service: service.to_owned(),
            format,
            otlp_endpoint: crate::config::optional("OTEL_EXPORTER_OTLP_ENDPOINT")?,
        })
    }
}

/// Builds a tracer provider: with an OTLP exporter when an endpoint is configured,
/// otherwise one that only mints span ids so trace context still propagates.
pub fn tracer_provider(
    service: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(&config.service, config.otlp_endpoint.as_deref())?;
    global::set_tracer_provider(provider.clone());
    let tracer = provider.tracer(config.service.clone());
    // One filter per layer: logs and exported spans follow `RUST_LOG`, while the
    // database timings see their spans whatever it says.
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn,hyper=warn"))
    };
    let fmt = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter()),
        )
        .with(
            DbOperationTimer
                .with_filter(filter_fn(|meta| meta.is_span() && meta.name() == DB_SPAN)),
        )
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// The name of the span every named database operation runs in, with the field
/// [`DB_OPERATION_FIELD`] naming the operation (a literal of the code, never input).
pub const DB_SPAN: &str = "db.query";
pub const DB_OPERATION_FIELD: &str = "db.operation";

/// Times `db.query` spans from creation to close into
/// `db_client_operation_duration_seconds{operation}`: the one place database
/// durations are recorded, for every query function that declares its span.
#[derive(Debug, Clone, Copy)]
pub struct DbOperationTimer;

struct DbTiming {
    started: std::time::Instant,
    operation: String,
}

#[derive(Default)]
struct OperationVisitor(Option<String>);

impl tracing::field::Visit for OperationVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == DB_OPERATION_FIELD {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == DB_OPERATION_FIELD {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S> Layer<S> for DbOperationTimer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut visitor = OperationVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(operation), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(DbTiming {
                started: std::time::Instant::now(),
                operation,
            });
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(timing) = span.extensions_mut().remove::<DbTiming>()
        {
            crate::metrics::record_db_operation(timing.operation.into(), timing.started.elapsed());
        }
    }
}

/// Installs the W3C propagator without a subscriber (tests that build apps in-process).
pub fn init_propagator() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| global::set_text_map_propagator(TraceContextPropagator::new()));
}

/// Server side (HTTP and gRPC alike: both arrive as HTTP requests): make `span` a child
/// of the caller's span from the `traceparent` header, if any.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// Client side: the headers that carry the current span's context to the next hop.
pub fn current_context_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(&mut headers)));
    headers
}

/// gRPC client side: a tonic interceptor that adds the current trace context.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcTracePropagation;

impl tonic::service::Interceptor for GrpcTracePropagation {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (name, value) in current_context_headers().iter() {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_bytes()),
            ) {
                request.metadata_mut().insert(key, value);
            }
        }
        Ok(request)
    }
}

/// gRPC server side: a span per call, named by the method path and parented on the
/// caller's `traceparent` metadata. Use as `Server::builder().layer(grpc_trace_layer())`.
pub fn grpc_trace_layer() -> tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    GrpcMakeSpan,
> {
    tower_http::trace::TraceLayer::new_for_grpc().make_span_with(GrpcMakeSpan)
}

#[derive(Clone, Copy, Debug)]
pub struct GrpcMakeSpan;

impl<B> tower_http::trace::MakeSpan<B> for GrpcMakeSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> tracing::Span {
        let path = request.uri().path();
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %path,
        );
        set_parent_from_headers(&span, request.headers());
        span
    }
}
