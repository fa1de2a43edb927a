//! Per-request overhead of the full HTTP stack (trace, overall timeout, retry, static auth,
//! throttle, attempt timeout) over a no-op service, with the budget never binding.
//!
//! Run: `cargo bench --bench http_stack -- --warm-up-time 1 --measurement-time 3`.
//! The overhead is `full stack` minus `no-op service`.
// Setup failures may abort a benchmark; the macro-generated functions carry no docs.
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use pandora_sync::Error;
use pandora_sync::http::{Budget, Limiter, Preset, StaticAuth, ThrottleConfig, ThrottleLayer};
use secrecy::SecretString;
use tower::{Layer, Service, ServiceExt, service_fn};

fn noop() -> impl Service<
    Request<Bytes>,
    Response = Response<Bytes>,
    Error = Error,
    Future = std::future::Ready<Result<Response<Bytes>, Error>>,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(|_req: Request<Bytes>| std::future::ready(Ok(Response::new(Bytes::new()))))
}

fn request() -> Request<Bytes> {
    Request::get("https://api.example.com/crm/v3/objects/deals?limit=100")
        .header("accept", "application/json")
        .body(Bytes::new())
        .expect("static request")
}

/// A budget that never binds at benchmark speed: a million starts per 10 ms.
fn roomy() -> Budget {
    Budget::new(1_000_000, Duration::from_millis(10))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let req = request();

    let mut group = c.benchmark_group("http_stack");

    group.bench_function("no-op service", |b| {
        let svc = noop();
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = req.clone();
            async move {
                let resp = svc.ready().await?.call(req).await?;
                Ok::<_, Error>(black_box(resp))
            }
        });
    });

    group.bench_function("throttle only", |b| {
        let limiter = rt.block_on(async {
            Limiter::new("bench", ThrottleConfig::new(roomy())).expect("limiter")
        });
        let svc = ThrottleLayer::new(limiter).layer(noop());
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            let req = req.clone();
            async move {
                let resp = svc.ready().await?.call(req).await?;
                Ok::<_, Error>(black_box(resp))
            }
        });
    });

    group.bench_function("full stack", |b| {
        let stack = rt.block_on(async {
            Preset::new("bench", roomy())
                .build(
                    StaticAuth::bearer(&SecretString::from("token")).expect("auth"),
                    noop(),
                )
                .expect("stack")
        });
        b.to_async(&rt).iter(|| {
            let mut svc = stack.clone();
            let req = req.clone();
            async move {
                let resp = svc.ready().await?.call(req).await?;
                Ok::<_, Error>(black_box(resp))
            }
        });
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
