//! A client-side token bucket for requests to the Kubernetes API, in the spirit of client-go's `--kube-api-qps`
//! and `--kube-api-burst`.
//!
//! Every request *start* takes one token: the initial lists, each watch (re)connection and any other call. An
//! open watch stream costs nothing while it streams, so in steady state the five watches use no tokens at
//! all; the bucket matters when watches reconnect together (an apiserver restart) or when lists are retried.
//! Requests wait for a token rather than fail.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// Token bucket state: `burst` tokens at most, refilled at `qps` per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. `qps` must be positive and finite and `burst` at least 1 (checked by
    /// [`super::K8sSettings`]); other values are clamped so the bucket never stalls forever.
    pub fn new(qps: f32, burst: u32, now: Instant) -> Self {
        let qps = if qps.is_finite() && qps > 0.0 {
            f64::from(qps)
        } else {
            1.0
        };
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes a token at `now`, or says how long to wait until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }
}

/// Layer that puts a [`TokenBucket`] in front of a service.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucketLayer {
    qps: f32,
    burst: u32,
}

impl TokenBucketLayer {
    /// `qps` tokens per second, at most `burst` at once.
    pub fn new(qps: f32, burst: u32) -> Self {
        TokenBucketLayer { qps, burst }
    }
}

impl<S> Layer<S> for TokenBucketLayer {
    type Service = TokenBucketService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenBucketService {
            inner,
            bucket: TokenBucket::new(self.qps, self.burst, Instant::now()),
            wait: None,
            holding: false,
        }
    }
}

/// Service that is not ready until it holds a token. kube's client drives it from one `Buffer` worker, so one
/// bucket covers the whole client.
pub struct TokenBucketService<S> {
    inner: S,
    bucket: TokenBucket,
    wait: Option<Pin<Box<Sleep>>>,
    holding: bool,
}

impl<S, R> Service<R> for TokenBucketService<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.holding {
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            match self.bucket.try_take(Instant::now()) {
                Ok(()) => self.holding = true,
                Err(delay) => {
                    tracing::debug!(?delay, "kube client rate limit: waiting for a token");
                    self.wait = Some(Box::pin(tokio::time::sleep(delay)));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // `call` must follow a successful `poll_ready`, which took the token.
        debug_assert!(self.holding, "call without poll_ready");
        self.holding = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_qps() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        assert_eq!(bucket.try_take(start), Err(Duration::from_millis(500)));
        assert_eq!(bucket.try_take(start + Duration::from_millis(500)), Ok(()));
        // Idle time refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[tokio::test]
    async fn service_waits_for_tokens() {
        use tower::ServiceExt;
        let service =
            tower::service_fn(|()| async { Ok::<_, std::convert::Infallible>(Instant::now()) });
        let mut limited = TokenBucketLayer::new(20.0, 2).layer(service);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..4 {
            times.push(limited.ready().await.unwrap().call(()).await.unwrap() - start);
        }
        // Two from the burst at once, then one every 50 ms.
        assert!(times[1] < Duration::from_millis(40), "{times:?}");
        assert!(times[2] >= Duration::from_millis(45), "{times:?}");
        assert!(times[3] >= Duration::from_millis(95), "{times:?}");
    }
}
