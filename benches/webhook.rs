//! The webhook's pure handler, `http::webhook::review` (decode the AdmissionReview, decide, encode the answer),
//! on every review of `tests/fixtures/admission/` in-process: no TLS, no HTTP, so a change to the envelope's
//! decoding shows undiluted. `cargo bench --bench webhook` prints the median microseconds per review of each
//! fixture; `cargo test` runs it a few times as a smoke test. `hack/bench-webhook.sh` measures the whole path.

use std::time::{Duration, Instant};

use smart_autoscaler::domain::admission::AdmissionConfig;
use smart_autoscaler::http::webhook::review;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (batches, per_batch) = if full { (41, 2_000) } else { (3, 3) };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut fixtures: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| {
            let path = e.expect("entry").path();
            let value: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
            // Compacted, as the apiserver sends it.
            let body = serde_json::to_vec(&value).expect("encode");
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, body)
        })
        .collect();
    fixtures.sort();
    let config = AdmissionConfig::default();
    println!("{:<32} {:>8} {:>14}", "fixture", "bytes", "median µs");
    let mut all = Vec::new();
    for (name, body) in &fixtures {
        let mut medians = Vec::new();
        for _ in 0..batches {
            let start = Instant::now();
            for _ in 0..per_batch {
                std::hint::black_box(
                    review(std::hint::black_box(body), &config)
                        .map(|r| r.to_json())
                        .ok(),
                );
            }
            medians.push(start.elapsed() / per_batch);
        }
        let m = median(medians);
        all.push(m);
        println!(
            "{name:<32} {:>8} {:>14.2}",
            body.len(),
            m.as_secs_f64() * 1e6
        );
    }
    println!(
        "{:<32} {:>8} {:>14.2}",
        "median of fixtures",
        "",
        median(all).as_secs_f64() * 1e6
    );
}
