//! Request bodies read under a memory budget shared by every request of a process.
//!
//! A body limit bounds one request; it does not bound a process that serves many at
//! once, and a gzip body is small on the wire and large in memory. [`ByteBudget`] is a
//! count of bytes that in-flight requests may hold, shared by all of them. A request
//! takes a [`Lease`] and grows it *before* each buffer grows (the body as sent, then
//! the body as decoded, in steps), so the buffers of all requests together never
//! exceed the budget. When the budget is spent, a request waits a moment for others to
//! finish; if it is still spent, the request is answered 503 with `Retry-After`,
//! having buffered at most what it already held. Dropping the lease returns its bytes.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode, header},
};
use futures::StreamExt as _;
use tokio::sync::Semaphore;

use crate::http::Problem;

/// Bytes that in-flight requests of this process may hold, together.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    wait: Duration,
}

impl ByteBudget {
    /// `total` bytes in all; a request that finds them spent waits at most `wait`.
    /// Registers the body metrics ([`crate::metrics::HTTP_BODY`]).
    pub fn new(total: usize, wait: Duration) -> Self {
        crate::metrics::register(&[crate::metrics::HTTP_BODY]);
        let total = total.min(Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            wait,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not held by any lease right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// An empty lease: it holds nothing until it grows.
    pub fn lease(&self) -> Lease {
        Lease {
            budget: self.clone(),
            held: 0,
            patience: self.wait,
        }
    }
}

/// Part of a [`ByteBudget`] held by one request; returned when dropped.
#[derive(Debug)]
pub struct Lease {
    budget: ByteBudget,
    held: usize,
    /// What is left of the budget's wait: a request waits that long in all, not per step.
    patience: Duration,
}

impl Lease {
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes `more` bytes of the budget, waiting for them at most what is left of the
    /// budget's wait (over all the lease's steps). On failure the lease keeps what it
    /// held and the answer is 503 + `Retry-After`.
    pub async fn grow(&mut self, more: usize) -> Result<(), Problem> {
        if more == 0 {
            return Ok(());
        }
        let budget = &self.budget;
        let n = u32::try_from(more)
            .ok()
            .filter(|n| *n as usize <= budget.total)
            .ok_or_else(|| busy(budget))?;
        let started = tokio::time::Instant::now();
        let acquired = tokio::time::timeout(self.patience, budget.bytes.acquire_many(n)).await;
        self.patience = self.patience.saturating_sub(started.elapsed());
        match acquired {
            Ok(Ok(permit)) => {
                permit.forget();
                self.held += more;
                Ok(())
            }
            _ => {
                metrics::counter!(crate::metrics::HTTP_BODY_BUDGET_EXHAUSTED).increment(1);
                tracing::info!(
                    wanted = more,
                    held = self.held,
                    total = budget.total,
                    "body budget exhausted"
                );
                Err(busy(budget))
            }
        }
    }

    /// Holds exactly `bytes` from now on: grows (possibly waiting) or gives back.
    pub async fn resize(&mut self, bytes: usize) -> Result<(), Problem> {
        if bytes > self.held {
            return self.grow(bytes - self.held).await;
        }
        self.budget.bytes.add_permits(self.held - bytes);
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.bytes.add_permits(self.held);
    }
}

/// 503 with `Retry-After`: the process is at its budget, not the request at fault.
fn busy(budget: &ByteBudget) -> Problem {
    let retry = budget.wait.as_secs().clamp(1, 60);
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "Too much data in flight, try again shortly",
    )
    .detail(format!(
        "the bodies being processed hold the in-flight budget of {} bytes; nothing from \
         this request was stored; retry after the number of seconds in Retry-After",
        budget.total
    ))
    .errors(serde_json::json!({ "limit": "in_flight_bytes", "max": budget.total }))
    .retry_after(retry)
}

/// Size limits of one body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// As sent (before `Content-Encoding` is undone).
    pub max_sent: usize,
    /// After `Content-Encoding` is undone.
    pub max_decoded: usize,
}

/// Bytes are decompressed this many at a time, each step paid for before it is made.
const STEP: usize = 64 * 1024;

/// Reads `body` under `lease` and undoes its `Content-Encoding`: identity as is,
/// `gzip` decompressed as a stream, [`STEP`] bytes at a time, refused with 413 as
/// soon as it passes `limits.max_decoded` (a gzip bomb costs at most that much);
/// any other encoding is 415 before anything is read. The lease holds the capacity
/// of the returned buffer; what was sent compressed is given back.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: BodyLimits,
    lease: &mut Lease,
) -> Result<Vec<u8>, Problem> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let gzip = match encoding.as_deref() {
        None | Some("identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => return Err(unsupported_encoding(other)),
    };
    let max_sent = if gzip {
        limits.max_sent
    } else {
        limits.max_sent.min(limits.max_decoded)
    };
    // `Content-Length` only caps the buffer's growth: bytes are paid for as they
    // arrive, so a client that announces much and sends little holds little.
    let hint = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if hint.is_some_and(|n| n > max_sent) {
        return Err(too_large(gzip, max_sent));
    }
    let ceiling = hint.unwrap_or(max_sent).min(max_sent);
    let mut sent = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| read_error(&e, gzip, max_sent))?;
        let len = sent.len() + chunk.len();
        if len > max_sent {
            return Err(too_large(gzip, max_sent));
        }
        let wanted = grown(sent.capacity()).min(ceiling).max(len);
        if let Err(busy) = grow_to(&mut sent, wanted, lease).await {
            // Answering before the body is read makes the client's write fail and
            // hides the 503. Hold nothing, read the rest (bounded) and discard it.
            drop(sent);
            let _ = lease.resize(0).await;
            drain(stream, max_sent - len + chunk.len()).await;
            return Err(busy);
        }
        sent.extend_from_slice(&chunk);
    }
    if !gzip {
        return Ok(sent);
    }
    let decoded = gunzip(&sent, limits.max_decoded, lease).await?;
    let given_back = lease.held() - sent.capacity();
    drop(sent);
    lease.resize(given_back).await?;
    Ok(decoded)
}

/// The next capacity of a growing buffer: half as much again (doubling would leave up
/// to half of a large buffer paid for and unused).
fn grown(capacity: usize) -> usize {
    capacity.saturating_add(capacity / 2).max(STEP)
}

/// Reads and discards at most `max` more bytes of a body.
async fn drain(mut stream: axum::body::BodyDataStream, max: usize) {
    let mut left = max;
    while let Some(Ok(chunk)) = stream.next().await {
        if chunk.len() > left {
            return;
        }
        left -= chunk.len();
    }
}

/// Gives `buf` a capacity of at least `capacity`, paying the lease first.
async fn grow_to(buf: &mut Vec<u8>, capacity: usize, lease: &mut Lease) -> Result<(), Problem> {
    if capacity <= buf.capacity() {
        return Ok(());
    }
    lease.grow(capacity - buf.capacity()).await?;
    buf.reserve_exact(capacity - buf.len());
    // `reserve_exact` may round up; the lease pays for what was really allocated.
    lease.grow(buf.capacity().saturating_sub(capacity)).await
}

async fn gunzip(sent: &[u8], max: usize, lease: &mut Lease) -> Result<Vec<u8>, Problem> {
    use std::io::Read as _;
    let mut decoder = flate2::read::MultiGzDecoder::new(sent);
    let mut out = Vec::new();
    loop {
        let len = out.len();
        if len > max {
            metrics::counter!(crate::metrics::HTTP_DECOMPRESSION_REFUSED).increment(1);
            return Err(too_large(true, max));
        }
        // One byte past the limit is enough to know the body is too large.
        let step = STEP.min(max + 1 - len);
        if out.capacity() - len < step {
            let wanted = (len + step).max(grown(out.capacity())).min(max + 1);
            grow_to(&mut out, wanted, lease).await?;
        }
        out.resize(len + step, 0);
        let n = decoder.read(&mut out[len..]).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-encoding",
                "Invalid gzip body",
            )
            .detail(format!("the body is not valid gzip: {e}"))
        })?;
        out.truncate(len + n);
        if n == 0 {
            return Ok(out);
        }
    }
}

fn read_error(e: &axum::Error, gzip: bool, max_sent: usize) -> Problem {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return too_large(gzip, max_sent);
        }
        source = err.source();
    }
    Problem::new(
        StatusCode::BAD_REQUEST,
        "unreadable-body",
        "The request body could not be read",
    )
}

fn too_large(decoded: bool, max: usize) -> Problem {
    let (limit, what) = if decoded {
        ("decoded_body_bytes", "the decompressed body")
    } else {
        ("body_bytes", "the body")
    };
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Request body too large",
    )
    .detail(format!("{what} is larger than {max} bytes"))
    .errors(serde_json::json!({ "limit": limit, "max": max }))
}

fn unsupported_encoding(encoding: &str) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-encoding",
        "Unsupported content encoding",
    )
    .detail(format!(
        "Content-Encoding {:?} is not supported; send gzip or no encoding",
        encoding.chars().take(32).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn with_encoding(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, value.parse().unwrap());
        h
    }

    const LIMITS: BodyLimits = BodyLimits {
        max_sent: 1 << 20,
        max_decoded: 4 << 20,
    };

    fn budget(total: usize) -> ByteBudget {
        ByteBudget::new(total, Duration::from_millis(50))
    }

    #[tokio::test]
    async fn gzip_is_decoded_within_the_limit_and_the_lease_pays_for_it() {
        let budget = budget(16 << 20);
        let plain = b"hello\n".repeat(100_000);
        let mut lease = budget.lease();
        let decoded = read_body(
            &with_encoding("gzip"),
            Body::from(gzip(&plain)),
            LIMITS,
            &mut lease,
        )
        .await
        .unwrap();
        assert_eq!(decoded, plain);
        assert!(lease.held() >= decoded.capacity(), "{}", lease.held());
        assert_eq!(budget.available(), budget.total() - lease.held());
        drop(lease);
        assert_eq!(budget.available(), budget.total());
        let mut lease = budget.lease();
        let same = read_body(
            &HeaderMap::new(),
            Body::from(plain.clone()),
            LIMITS,
            &mut lease,
        )
        .await
        .unwrap();
        assert_eq!(same, plain);
    }

    #[tokio::test]
    async fn gzip_bomb_and_bad_encodings_are_refused() {
        let budget = budget(64 << 20);
        // 64 MiB of zeros compresses to ~64 KiB.
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 128 * 1024);
        let mut lease = budget.lease();
        let p = read_body(&with_encoding("gzip"), Body::from(bomb), LIMITS, &mut lease)
            .await
            .unwrap_err();
        assert_eq!(p.status, 413);
        assert!(p.detail.unwrap().contains(&(4 << 20).to_string()));
        // It never held much more than the decoded limit.
        assert!(
            lease.held() <= (4 << 20) + (1 << 20) + STEP,
            "{}",
            lease.held()
        );
        let status = |headers: HeaderMap, body: Body| {
            let budget = budget.clone();
            async move {
                read_body(&headers, body, LIMITS, &mut budget.lease())
                    .await
                    .unwrap_err()
                    .status
            }
        };
        assert_eq!(status(with_encoding("gzip"), Body::from("nope")).await, 400);
        assert_eq!(status(with_encoding("br"), Body::from("x")).await, 415);
        let over = Body::from(vec![b'x'; (1 << 20) + 1]);
        assert_eq!(status(HeaderMap::new(), over).await, 413);
        let p = Problem::too_many_requests(Duration::from_millis(1200));
        assert_eq!((p.status, p.retry_after), (429, Some(2)));
    }

    #[tokio::test]
    async fn a_spent_budget_waits_then_answers_503_with_retry_after() {
        let budget = budget(1 << 20);
        let mut hog = budget.lease();
        hog.grow(900 * 1024).await.unwrap();
        let mut lease = budget.lease();
        let p = read_body(
            &HeaderMap::new(),
            Body::from(vec![b'x'; 200 * 1024]),
            LIMITS,
            &mut lease,
        )
        .await
        .unwrap_err();
        assert_eq!((p.status, p.retry_after), (503, Some(1)));
        assert_eq!(p.kind, "busy");
        drop(lease);
        // The hog finishes while another request waits: that one goes through.
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.lease().grow(500 * 1024).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(hog);
        waiter.await.unwrap().unwrap();
        assert_eq!(budget.available(), budget.total());
        // Asking for more than the whole budget is refused at once, never granted.
        assert_eq!(
            budget.lease().grow((1 << 20) + 1).await.unwrap_err().status,
            503
        );
    }
}
