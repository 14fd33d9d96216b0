//! Forecast fitting cost on one core: for one deployment with 30 days of 1-minute demand (bucketed to the
//! five-minute series the models fit on), the time of each member's fit and of the whole ensemble refit; then
//! the refit of 1,000 deployments one after the other, as the server's background task does them. The series
//! are the Azure 2019 trace (30 days at 5 minutes, interpolated to 1 minute) with a per-deployment phase shift,
//! scale and deterministic noise, so no two fits see the same data. Last, the memory a warmed-up forecaster
//! holds (the server's: 8 days of history, fitted models, scorecards), as live heap bytes counted by this
//! benchmark's global allocator over 100 of them. `cargo bench --bench forecast` prints a table of medians;
//! `cargo test` runs it on a tiny size as a smoke test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use smart_autoscaler::domain::forecast::ensemble::{EnsembleConfig, Fitted};
use smart_autoscaler::domain::forecast::online::{Forecaster, ForecasterConfig};
use smart_autoscaler::domain::forecast::profile::{ProfileConfig, SeasonalProfile};
use smart_autoscaler::domain::forecast::spike::{SpikeConfig, SpikeForest};
use smart_autoscaler::domain::forecast::{History, STEP_MILLIS, STEPS_PER_DAY, mstl};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the same arguments; the counter does not touch memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/traces/datacenter/azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv"
);
const START: i64 = 1_790_000_000_000;

/// The Azure trace's cpu_usage column, or a synthetic daily shape when the trace is not there.
fn base_series() -> Vec<f64> {
    match std::fs::read_to_string(TRACE) {
        Ok(text) => text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').nth(1)?.trim().parse::<f64>().ok())
            .collect(),
        Err(_) => {
            eprintln!("note: {TRACE} not found; using a synthetic daily series");
            (0..8640)
                .map(|i| 100.0 + 50.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin())
                .collect()
        }
    }
}

/// 30 days of 1-minute points for deployment `d`: the base shifted by `d` hours, scaled, with noise.
fn minute_points(base: &[f64], d: usize, days: usize) -> Vec<(i64, f64)> {
    let mean = base.iter().sum::<f64>() / base.len() as f64;
    let scale = (50.0 + (d % 17) as f64 * 10.0) / mean;
    (0..days * 1440)
        .map(|m| {
            let pos = (m as f64 / 5.0 + d as f64 * 12.0) % base.len() as f64;
            let i = pos.floor() as usize;
            let frac = pos - i as f64;
            let v = base[i] * (1.0 - frac) + base[(i + 1) % base.len()] * frac;
            let z = ((m as u64 + d as u64 * 7919).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1000;
            let noise = 1.0 + (z as f64 / 1000.0 - 0.5) * 0.1;
            (START + m as i64 * 60_000, v * scale * noise)
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (days, runs, fleet) = if full { (30, 15, 1000) } else { (3, 2, 3) };
    let base = base_series();
    let config = EnsembleConfig::default();
    let (mut bucket, mut profile, mut mstl_t, mut spike, mut whole) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let points = minute_points(&base, r, days);
        let t0 = Instant::now();
        let history = History::from_points(&points, STEP_MILLIS);
        let t1 = Instant::now();
        let p = SeasonalProfile::fit(&history, &ProfileConfig::default());
        let t2 = Instant::now();
        let m = mstl::forecast(&history, 24);
        let t3 = Instant::now();
        let s = SpikeForest::train(&history, &SpikeConfig::default());
        let t4 = Instant::now();
        let fitted = Fitted::fit(&history, &config, 12);
        let t5 = Instant::now();
        assert!(
            p.is_ok() && m.is_ok() && s.is_ok(),
            "a member failed to fit"
        );
        assert!(fitted.profile().is_some());
        bucket.push(t1 - t0);
        profile.push(t2 - t1);
        mstl_t.push(t3 - t2);
        spike.push(t4 - t3);
        whole.push(t5 - t4 + (t1 - t0));
    }
    println!(
        "forecast fitting, one thread: {days} days of 1-minute demand ({} points, {} five-minute buckets), median of {runs}",
        days * 1440,
        days * 288
    );
    println!("| step                                  | median     | aim      |");
    println!("|---------------------------------------|------------|----------|");
    for (name, v) in [
        ("bucket 1-minute points to 5 minutes", bucket),
        ("seasonal profile fit", profile),
        ("MSTL + ETS fit and forecast (augurs)", mstl_t),
        ("spike forest train (linfa-trees)", spike),
    ] {
        println!("| {name:<37} | {:>7.2} ms |          |", ms(median(v)));
    }
    println!(
        "| whole ensemble refit per deployment   | {:>7.2} ms | < 50 ms  |",
        ms(median(whole))
    );
    // The server's task: one deployment after another on one blocking thread.
    let histories: Vec<History> = (0..fleet)
        .map(|d| History::from_points(&minute_points(&base, d, days), STEP_MILLIS))
        .collect();
    let t0 = Instant::now();
    for h in &histories {
        std::hint::black_box(Fitted::fit(h, &config, 12));
    }
    let total = t0.elapsed();
    println!(
        "| refit of {fleet} deployments, sequential | {:>7.2} s  |          |",
        total.as_secs_f64()
    );
    // Memory held per deployment by serve's forecasting task once warmed up on its stored history.
    let sample = if full { 100 } else { 2 };
    let mut config = ForecasterConfig {
        max_history_steps: ForecasterConfig::SERVER_HISTORY_STEPS,
        ..ForecasterConfig::default()
    };
    // serve's default --forecast-trust-window.
    config.trust.window = 144;
    let before = LIVE.load(Ordering::Relaxed);
    let warmed: Vec<Forecaster> = histories
        .iter()
        .take(sample)
        .map(|h| {
            let mut f = Forecaster::new(config.clone());
            f.warm_up(h, STEPS_PER_DAY);
            f
        })
        .collect();
    let per = LIVE.load(Ordering::Relaxed).saturating_sub(before) as f64 / warmed.len() as f64;
    println!(
        "| live heap per warmed-up forecaster     | {:>7.1} KiB |          |",
        per / 1024.0
    );
    println!(
        "| ... for 2,000 deployments              | {:>7.1} MiB |          |",
        per * 2000.0 / 1_048_576.0
    );
    drop(warmed);
}
