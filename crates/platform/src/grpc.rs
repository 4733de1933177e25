//! gRPC call metrics, one tower layer for servers and clients alike:
//! `rpc_server_duration_seconds` and `rpc_client_duration_seconds` by `rpc_service`,
//! `rpc_method` and `grpc_code`, from the request until the status arrives (in the
//! response head for an error, in the trailers after the message otherwise).
//!
//! The method path is chosen by the caller, so it is never a label as such: only
//! methods of the known services (from their file descriptor sets) are named, any
//! other path counts as `_OTHER`/`_OTHER`. Codes are the 17 of gRPC.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use prost::Message as _;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use crate::{
    metrics::{self as m, Metric, OTHER},
    telemetry::GrpcTracePropagation,
};

/// The gRPC server metric (analytics).
pub const RPC_SERVER: &[Metric] = &[Metric::histogram(
    m::RPC_SERVER_DURATION,
    "Duration of gRPC calls served, until their status, by service, method and gRPC status code.",
)
.dynamic()];

/// The gRPC client metric (api).
pub const RPC_CLIENT: &[Metric] = &[Metric::histogram(
    m::RPC_CLIENT_DURATION,
    "Duration of gRPC calls made, until their status, by service, method and gRPC status code.",
)
.dynamic()];

/// The methods that get their own label values, by path (`/package.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct Methods(HashMap<String, (String, String)>);

impl Methods {
    /// Every method of every service in these encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> anyhow::Result<Self> {
        let mut methods = HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(*set)?;
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let full = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    for method in &service.method {
                        methods.insert(
                            format!("/{full}/{}", method.name()),
                            (full.clone(), method.name().to_owned()),
                        );
                    }
                }
            }
        }
        Ok(Self(methods))
    }

    /// Every known method, as (service, method).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.values().map(|(s, m)| (s.as_str(), m.as_str()))
    }

    /// The `rpc_service` and `rpc_method` labels of a request path.
    fn labels(&self, path: &str) -> (String, String) {
        self.0
            .get(path)
            .cloned()
            .unwrap_or_else(|| (OTHER.to_owned(), OTHER.to_owned()))
    }
}

/// The layer timing gRPC calls into one of the two histograms.
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    histogram: &'static str,
    methods: Arc<Methods>,
}

impl RpcMetricsLayer {
    /// Server side: registers [`RPC_SERVER`] with a series (`OK`) per known method.
    pub fn server(methods: Methods) -> Self {
        Self::new(RPC_SERVER, methods)
    }

    /// Client side: registers [`RPC_CLIENT`] with a series (`OK`) per known method.
    pub fn client(methods: Methods) -> Self {
        Self::new(RPC_CLIENT, methods)
    }

    fn new(metric: &'static [Metric], methods: Methods) -> Self {
        m::register(&[metric]);
        for (service, method) in methods.iter() {
            metric[0].series_with(vec![
                metrics::Label::new("rpc_service", service.to_owned()),
                metrics::Label::new("rpc_method", method.to_owned()),
                metrics::Label::new("grpc_code", "OK"),
            ]);
        }
        Self {
            histogram: metric[0].name,
            methods: Arc::new(methods),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// A gRPC client of one channel: calls timed, trace context propagated.
pub type Client = InterceptedService<RpcMetrics<Channel>, GrpcTracePropagation>;

/// The standard client stack over `channel`, for calls to the services of `methods`.
pub fn client(channel: Channel, methods: &RpcMetricsLayer) -> Client {
    InterceptedService::new(tower::Layer::layer(methods, channel), GrpcTracePropagation)
}

/// A service whose calls are timed.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TimedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = self.layer.methods.labels(request.uri().path());
        let call = Call {
            histogram: self.layer.histogram,
            service,
            method,
            started: Instant::now(),
            done: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    let call = match response.headers().get(GRPC_STATUS) {
                        Some(code) => {
                            call.finish(code_name(code.as_bytes()));
                            None
                        }
                        None => Some(call),
                    };
                    Ok(response.map(|inner| TimedBody { inner, call }))
                }
                Err(e) => {
                    // No answer at all (the channel could not reach the server).
                    call.finish("UNAVAILABLE");
                    Err(e)
                }
            }
        })
    }
}

const GRPC_STATUS: &str = "grpc-status";

/// One call being timed; recorded once: with its code, or `CANCELLED` if dropped first.
#[derive(Debug)]
struct Call {
    histogram: &'static str,
    service: String,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(mut self, code: &'static str) {
        self.record(code);
    }

    fn record(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        metrics::histogram!(
            self.histogram,
            "rpc_service" => std::mem::take(&mut self.service),
            "rpc_method" => std::mem::take(&mut self.method),
            "grpc_code" => code,
        )
        .record(self.started.elapsed());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record("CANCELLED");
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the status arrives in the trailers.
    #[derive(Debug)]
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: http_body::Body> http_body::Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                trailers
                    .get(GRPC_STATUS)
                    .map_or("UNKNOWN", |c| code_name(c.as_bytes()))
            }),
            // Broken off, or ended without a status.
            Poll::Ready(Some(Err(_)) | None) => Some("UNKNOWN"),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The name of a gRPC status code (`grpc-status` value), `UNKNOWN` for anything else.
pub fn code_name(code: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_named_from_a_closed_list() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"7"), "PERMISSION_DENIED");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        for odd in [&b"17"[..], b"-1", b"x", b"", b"99999999999999999999999"] {
            assert_eq!(code_name(odd), "UNKNOWN", "{odd:?}");
        }
    }

    /// A real tonic server and client on loopback, both timed: the call counts once on
    /// each side with its code; an unknown method counts as `_OTHER`.
    #[tokio::test]
    async fn calls_are_timed_on_both_sides_until_their_status() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let handle = m::handle();
        let methods =
            || Methods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET]).unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("known", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(RpcMetricsLayer::server(methods()))
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut client = HealthClient::new(client(channel, &RpcMetricsLayer::client(methods())));
        let ok = client
            .check(HealthCheckRequest {
                service: "known".into(),
            })
            .await;
        assert!(ok.is_ok(), "{ok:?}");
        let missing = client
            .check(HealthCheckRequest {
                service: "unknown".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let text = handle.render();
        for side in ["server", "client"] {
            for code in ["OK", "NOT_FOUND"] {
                let line = format!(
                    "rpc_{side}_duration_seconds_count{{rpc_service=\"grpc.health.v1.Health\",rpc_method=\"Check\",grpc_code=\"{code}\"}} 1"
                );
                assert!(text.contains(&line), "{line} in\n{text}");
            }
        }
    }

    #[test]
    fn only_known_methods_are_named() {
        let methods = Methods::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET])
            .expect("health descriptors");
        assert_eq!(
            methods.labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health".to_owned(), "Check".to_owned())
        );
        for path in [
            "/grpc.health.v1.Health/Nope",
            "/evil.Service/Check",
            "/",
            "",
            "/grpc.health.v1.Health/Check/extra",
        ] {
            assert_eq!(
                methods.labels(path),
                (OTHER.to_owned(), OTHER.to_owned()),
                "{path}"
            );
        }
    }
}
