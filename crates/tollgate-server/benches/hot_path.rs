//! Micro-benchmarks of the hot path's own work, without the network: key verification (a cached hit, a miss that
//! reads the store, a malformed key refused before any I/O) and the hold estimate. `cargo bench -p tollgate-server`;
//! results and method in BENCHMARKS.md.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark setup: a failing step should stop the run; criterion's macros generate undocumented items"
)]

use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use std::sync::Arc;
use tollgate_core::catalog::ModelSpec;
use tollgate_core::credits::estimate;
use tollgate_core::key::{KeyKind, KeyPrefixes};
use tollgate_core::ports::Store;
use tollgate_core::tenant::NewTenant;
use tollgate_openai::ChatCompletionRequest;
use tollgate_server::key_cache::KeyCache;

/// The request `bench/chat.lua` sends.
const CHAT_BODY: &str = r#"{"model":"fast","messages":[{"role":"user","content":"Benchmark prompt of a typical short size for a chat request."}],"max_tokens":16}"#;

fn key_verification(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let prefixes = KeyPrefixes::new("sk_live_", "sk_admin_").unwrap();
    let (store, admin_key) = runtime.block_on(async {
        let store: Arc<dyn Store> = tollgate_store::connect(&url).await.unwrap();
        let (tenant, admin_key) = NewTenant::build(
            &prefixes,
            "Bench".into(),
            "pro".into(),
            "b@example.com".into(),
            None,
            1,
        );
        store.create_tenant(&tenant, &[]).await.unwrap();
        (store, admin_key)
    });
    let cache = KeyCache::new();
    let known = admin_key.expose_secret().to_owned();
    let mut group = c.benchmark_group("key verification");
    // What `authenticate` does for a key it has seen: format and checksum, digest, cache.
    group.bench_function("cached hit", |b| {
        b.to_async(&runtime).iter(|| async {
            let (_, key) = prefixes.parse(black_box(&known)).unwrap();
            cache.lookup(&key.digest(), store.as_ref()).await.unwrap()
        });
    });
    // A well-formed key never seen: one store read (each iteration a fresh key, so no negative-cache hit).
    group.bench_function("miss (store read)", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                prefixes
                    .generate(KeyKind::Project)
                    .expose_secret()
                    .to_owned()
            },
            |fresh| {
                let (cache, store, prefixes) = (&cache, &store, &prefixes);
                async move {
                    let (_, key) = prefixes.parse(&fresh).unwrap();
                    cache.lookup(&key.digest(), store.as_ref()).await.unwrap()
                }
            },
            BatchSize::SmallInput,
        );
    });
    // A typo'd key: refused by its checksum, with no digest and no I/O.
    let mut malformed = known.clone();
    malformed.replace_range(20..21, if &known[20..21] == "a" { "b" } else { "a" });
    group.bench_function("malformed", |b| {
        b.iter(|| prefixes.parse(black_box(&malformed)).is_err());
    });
    group.finish();
}

fn hold_estimate(c: &mut Criterion) {
    let model = ModelSpec {
        input_cents_per_million_tokens: 15,
        output_cents_per_million_tokens: 60,
        max_image_tokens: Some(1105),
        ..ModelSpec::echo(0)
    };
    let request: ChatCompletionRequest = serde_json::from_str(CHAT_BODY).unwrap();
    c.bench_function("hold estimate", |b| {
        b.iter(|| estimate(black_box(&request), CHAT_BODY.len(), &model, 8).unwrap());
    });
}

criterion_group!(benches, key_verification, hold_estimate);
criterion_main!(benches);
