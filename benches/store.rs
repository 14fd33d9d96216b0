//! Store benchmark: the write time of one tick for 2,000 deployments, sled's bytes on disk per sample once
//! samples are rolled up to five-minute aggregates, and the time to open a month of history after a crash at
//! each point of a compaction. `cargo bench --bench store` (or hack/bench-store.sh) runs it in full and prints a
//! table; `cargo test` runs it on a tiny size as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smart_autoscaler::clock::Clock;
use smart_autoscaler::domain::model::{DeploymentKey, Observation, UnixMillis};
use smart_autoscaler::domain::testing;
use smart_autoscaler::store::{COMPACTION_COMPLETE, Retention, Store};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

fn observation(at: UnixMillis, keys: &[DeploymentKey], tick: i64) -> Observation {
    Observation {
        at,
        measured_at: at,
        unmeasured: vec![],
        deployments: keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                testing::inputs()
                    .key(key)
                    .cpu(40.0 + ((i as i64 * 7 + tick) % 50) as f64 * 0.731)
                    .memory(Some(55.0 + (i % 13) as f64))
                    .replicas(3 + (i % 20) as u32)
                    .ready(3)
                    .pool("all", Some(50.0), 60.0)
                    .nodes(10)
                    .at(at)
                    .build()
            })
            .collect(),
        nodes: vec![],
    }
}

fn keys(n: usize) -> Vec<DeploymentKey> {
    (0..n)
        .map(|i| DeploymentKey::new(format!("team-{:02}", i % 40), format!("service-{i:04}")))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let meta = e.metadata().ok();
                    match meta {
                        Some(m) if m.is_dir() => dir_bytes(&e.path()),
                        Some(m) => m.len(),
                        None => 0,
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Copies the directory `from` to `to` (a closed sled database is a directory of plain files).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct Row(String, String, &'static str);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // Tick-write size, ticks timed, and the rollup data set (deployments x hours of one-minute ticks).
    let (
        deployments,
        timed_ticks,
        rollup_deployments,
        rollup_hours,
        history_deployments,
        history_days,
        steady_deployments,
        steady_days,
        month_deployments,
    ) = if full {
        (2_000, 120, 2_000, 6, 500, 28, 200, 30, 2_000)
    } else {
        (20, 3, 5, 2, 3, 28, 3, 3, 3)
    };
    // STORE_BENCH_ROLLUP=DEPLOYMENTS,HOURS overrides the tick-path data set.
    let (rollup_deployments, rollup_hours) = std::env::var("STORE_BENCH_ROLLUP")
        .ok()
        .and_then(|v| {
            let (d, h) = v.split_once(',')?;
            Some((d.trim().parse().ok()?, h.trim().parse().ok()?))
        })
        .unwrap_or((rollup_deployments, rollup_hours));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(run(Sizes {
        deployments,
        timed_ticks,
        rollup_deployments,
        rollup_hours,
        history_deployments,
        history_days,
        steady_deployments,
        steady_days,
        month_deployments,
    }));
    println!("store benchmark ({})", if full { "full" } else { "smoke" });
    println!("| {:<68} | {:>14} | {:<8} |", "measurement", "value", "aim");
    println!("|{:-<70}|{:-<16}|{:-<10}|", "", "", "");
    for Row(name, value, aim) in rows {
        println!("| {name:<68} | {value:>14} | {aim:<8} |");
    }
}

struct Sizes {
    deployments: usize,
    timed_ticks: usize,
    rollup_deployments: usize,
    rollup_hours: i64,
    history_deployments: usize,
    history_days: i64,
    steady_deployments: usize,
    steady_days: i64,
    month_deployments: usize,
}

struct Fixed(UnixMillis);

impl Clock for Fixed {
    fn now_millis(&self) -> UnixMillis {
        self.0
    }
}

async fn run(sizes: Sizes) -> Vec<Row> {
    // STORE_BENCH_MONTH_ONLY=1: only the month of history and its recovery times (section 5).
    if std::env::var("STORE_BENCH_MONTH_ONLY").is_ok_and(|v| v == "1") {
        return recovery(1_750_000_000_000 / HOUR * HOUR, sizes.month_deployments).await;
    }
    let Sizes {
        deployments,
        timed_ticks,
        rollup_deployments,
        rollup_hours,
        history_deployments,
        history_days,
        steady_deployments,
        steady_days,
        month_deployments,
    } = sizes;
    let mut rows = Vec::new();
    let t0: UnixMillis = 1_750_000_000_000 / HOUR * HOUR;

    // 1. Tick writes.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap();
    let keys_a = keys(deployments);
    // First sight assigns ids; time the steady state after it.
    store
        .record_tick(&observation(t0 - MINUTE, &keys_a, 0))
        .await
        .unwrap();
    let mut times = Vec::with_capacity(timed_ticks);
    for tick in 0..timed_ticks {
        let obs = observation(t0 + tick as i64 * MINUTE, &keys_a, tick as i64);
        let started = Instant::now();
        store.record_tick(&obs).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    rows.push(Row(
        format!("record_tick, {deployments} deployments: mean ({timed_ticks} ticks)"),
        ms(mean),
        "< 50 ms",
    ));
    rows.push(Row(
        "record_tick: p95".into(),
        ms(percentile(&times, 0.95)),
        "< 50 ms",
    ));
    rows.push(Row(
        "record_tick: max".into(),
        ms(percentile(&times, 1.0)),
        "",
    ));
    let started = Instant::now();
    store.flush().await.unwrap();
    rows.push(Row(
        "flush after the timed ticks".into(),
        ms(started.elapsed()),
        "",
    ));
    drop(store);

    // 2. The tick path: samples written tick by tick, then rolled up by a retention pass.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Retention::default()).await.unwrap();
    let keys_b = keys(rollup_deployments);
    let ticks = rollup_hours * 60;
    let started = Instant::now();
    for tick in 0..ticks {
        store
            .record_tick(&observation(t0 + tick * MINUTE, &keys_b, tick))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let write_time = started.elapsed();
    let samples = (ticks as usize * rollup_deployments) as f64;
    let before = store.size_on_disk().await.unwrap();
    // Every sample is now past the 48 h sample retention.
    let now = t0 + (rollup_hours + 50) * HOUR;
    let started = Instant::now();
    let report = store.enforce_retention(now).await.unwrap();
    store.flush().await.unwrap();
    let rollup_time = started.elapsed();
    assert_eq!(report.samples_rolled_up as f64, samples);
    let after = store.size_on_disk().await.unwrap();
    let check = store
        .rollups(&keys_b[0], t0, t0 + rollup_hours * HOUR)
        .await
        .unwrap();
    assert_eq!(check.len() as i64, rollup_hours * 12);
    drop(store);
    let label = format!("{rollup_deployments} deployments x {rollup_hours} h of 60 s ticks");
    rows.push(Row(
        format!("tick path: {label}: write"),
        ms(write_time),
        "",
    ));
    rows.push(Row(
        "tick path: bytes on disk per sample before rollup".into(),
        format!("{:.2}", before as f64 / samples),
        "",
    ));
    rows.push(Row(
        "tick path: retention pass rolling all of them up".into(),
        ms(rollup_time),
        "",
    ));
    rows.push(Row(
        "tick path: bytes on disk per sample after rollup".into(),
        format!("{:.2}", after as f64 / samples),
        "< 8",
    ));

    // 3. Rolled-up history: 28 days of one-minute CPU history per deployment imported (bootstrap), all of it
    // past the 48 h sample retention and within the 30 d rollup retention (what the rollup tree holds in steady
    // state), so it is stored as rollups only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let end = t0 + history_days * 24 * HOUR;
    let store = Store::open(&path, Retention::default())
        .await
        .unwrap()
        .with_clock(Arc::new(Fixed(end + 48 * HOUR + 30 * MINUTE)));
    let keys_c = keys(history_deployments);
    let points_per = (history_days * 24 * 60) as usize;
    let started = Instant::now();
    for (d, key) in keys_c.iter().enumerate() {
        let points: Vec<(UnixMillis, f64)> = (0..points_per as i64)
            .map(|i| {
                (
                    t0 + i * MINUTE,
                    30.0 + ((i * 7 + d as i64) % 61) as f64 * 0.9,
                )
            })
            .collect();
        let kept = store.import_history(key, &points).await.unwrap();
        assert_eq!(kept, points_per);
    }
    store.flush().await.unwrap();
    let import_time = started.elapsed();
    let imported = (points_per * history_deployments) as f64;
    let size = store.size_on_disk().await.unwrap();
    drop(store);
    let files = dir_bytes(&path);
    rows.push(Row(
        format!("history: {history_deployments} deployments x {history_days} d at 60 s: import"),
        ms(import_time),
        "",
    ));
    rows.push(Row(
        "history: bytes on disk per sample, rolled up".into(),
        format!("{:.2}", size as f64 / imported),
        "< 8",
    ));
    rows.push(Row(
        "history: same, all files in the store directory".into(),
        format!("{:.2}", files as f64 / imported),
        "",
    ));
    rows.push(Row(
        "encoded rollup bytes per sample (12 B key + 169 B/hour)".into(),
        format!("{:.2}", (12.0 + 169.0) / 60.0),
        "",
    ));

    // 4. The tick path in steady state: a month of 60 s ticks with the retention pass every hour (serve runs it
    // every minute), once without compaction and once with the check serve runs after each retention pass
    // (`Store::compact_if_grown`). Disk bytes over every sample written (each still stored, raw or rolled up).
    let written = (steady_days * 24 * 60) as f64 * steady_deployments as f64;
    let label = format!("{steady_deployments} deployments x {steady_days} d of 60 s ticks");
    for compaction in [false, true] {
        let run = steady_state(t0, &keys(steady_deployments), steady_days, compaction).await;
        let name = if compaction {
            "with compaction"
        } else {
            "no compaction"
        };
        rows.push(Row(
            format!("steady state, {name}: {label}: run"),
            ms(run.time),
            "",
        ));
        rows.push(Row(
            format!("steady state, {name}: bytes/sample at the end"),
            format!("{:.2}", run.end as f64 / written),
            "< 8",
        ));
        rows.push(Row(
            format!("steady state, {name}: size on disk, days 1/3/7/14/30"),
            [1, 3, 7, 14, 30]
                .iter()
                .filter_map(|d| run.daily.get(d - 1))
                .map(|b| format!("{}", b >> 20))
                .collect::<Vec<_>>()
                .join("/")
                + " MiB",
            "",
        ));
        if compaction {
            rows.push(Row(
                format!("steady state, {name}: compactions, longest"),
                format!("{}, {}", run.compactions, ms(run.longest)),
                "",
            ));
        }
    }

    // 5. Opening a month of history: cleanly, and after a crash at each point of a compaction (the on-disk state
    // built by copying the closed database, as the compaction's copy would be).
    rows.extend(recovery(t0, month_deployments).await);
    rows
}

/// A month of five-minute history for `deployments` (as serve's bootstrap imports it, and as the RSS
/// benchmark, benches/rss, seeds it), then the open times.
async fn recovery(t0: UnixMillis, deployments: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let copy = dir.path().join("store.compacting");
    let old = dir.path().join("store.old");
    let step = 5 * MINUTE;
    let steps = 30 * 24 * HOUR / step;
    let end = t0 + 30 * 24 * HOUR;
    let keys = keys(deployments);
    let store = Store::open(&path, Retention::default())
        .await
        .unwrap()
        .with_clock(Arc::new(Fixed(end)));
    let started = Instant::now();
    for (d, key) in keys.iter().enumerate() {
        let points: Vec<(UnixMillis, f64, Option<u32>)> = (0..steps)
            .map(|s| {
                (
                    t0 + s * step,
                    30.0 + ((s * 7 + d as i64) % 61) as f64 * 0.9,
                    Some(3),
                )
            })
            .collect();
        store.import_history_with_pods(key, &points).await.unwrap();
    }
    store.flush().await.unwrap();
    let import = started.elapsed();
    drop(store);
    let label = format!("{deployments} deployments x 30 d at 5 min");
    rows.push(Row(
        format!("month: {label}: import, size on disk"),
        format!("{}, {} MiB", ms(import), dir_bytes(&path) >> 20),
        "",
    ));
    // Opens the store, checks the history is all there and nothing is left beside it; the time of the open.
    let open = |what: &'static str| {
        let (path, dir, key) = (path.clone(), dir.path().to_path_buf(), keys[0].clone());
        async move {
            let started = Instant::now();
            let store = Store::open(&path, Retention::default())
                .await
                .unwrap()
                .with_clock(Arc::new(Fixed(end)));
            let took = started.elapsed();
            let rollups = store.rollups(&key, t0, end).await.unwrap();
            assert_eq!(rollups.len() as i64, steps, "{what}: history lost");
            let left: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(left, ["store"], "{what}");
            (store, took)
        }
    };
    let (store, clean) = open("clean").await;
    rows.push(Row("month: open, nothing to recover".into(), ms(clean), ""));
    let started = Instant::now();
    store.refresh_stats().await.unwrap();
    rows.push(Row(
        "month: count every tree's records (Store::refresh_stats)".into(),
        ms(started.elapsed()),
        "",
    ));
    drop(store);

    // Crash while copying or before the swap: the copy is removed.
    copy_dir(&path, &copy);
    let (store, took) = open("copy beside the store").await;
    drop(store);
    rows.push(Row(
        "month: open after a crash before the swap (copy removed)".into(),
        ms(took),
        "",
    ));
    // Crash between the renames, the copy complete: the swap is finished.
    copy_dir(&path, &copy);
    std::fs::write(copy.join(COMPACTION_COMPLETE), b"").unwrap();
    std::fs::rename(&path, &old).unwrap();
    let (store, took) = open("between the renames").await;
    drop(store);
    rows.push(Row(
        "month: open after a crash between the renames (swap finished)".into(),
        ms(took),
        "",
    ));
    // The same with a copy not marked complete: rolled back.
    copy_dir(&path, &copy);
    std::fs::remove_file(copy.join(COMPACTION_COMPLETE)).unwrap();
    std::fs::rename(&path, &old).unwrap();
    let (store, took) = open("between the renames, unmarked").await;
    drop(store);
    rows.push(Row(
        "month: same, copy unmarked (rolled back)".into(),
        ms(took),
        "",
    ));
    // Crash after the swap: the old database is removed (the store in place is marked as a copy).
    copy_dir(&path, &old);
    let (store, took) = open("after the swap").await;
    drop(store);
    rows.push(Row(
        "month: open after a crash after the swap (old removed)".into(),
        ms(took),
        "",
    ));
    // The clean open again, now comparable with the ones above (the first open after the import also replays
    // the import's log).
    let (store, took) = open("clean, again").await;
    drop(store);
    rows.push(Row(
        "month: open again, nothing to recover".into(),
        ms(took),
        "",
    ));
    rows
}

/// What a month of ticks did to the store.
struct Steady {
    time: Duration,
    end: u64,
    daily: Vec<u64>,
    compactions: usize,
    longest: Duration,
}

async fn steady_state(
    t0: UnixMillis,
    keys: &[DeploymentKey],
    days: i64,
    compaction: bool,
) -> Steady {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap();
    let started = Instant::now();
    let (mut daily, mut compactions, mut longest) = (Vec::new(), 0, Duration::ZERO);
    for tick in 0..days * 24 * 60 {
        let at = t0 + tick * MINUTE;
        store
            .record_tick(&observation(at, keys, tick))
            .await
            .unwrap();
        if tick % 60 == 59 {
            store.enforce_retention(at).await.unwrap();
            if compaction && let Some(report) = store.compact_if_grown().await.unwrap() {
                compactions += 1;
                longest = longest.max(Duration::from_millis(report.millis));
            }
        }
        if tick % (24 * 60) == 24 * 60 - 1 {
            store.flush().await.unwrap();
            daily.push(store.size_on_disk().await.unwrap());
        }
    }
    store.flush().await.unwrap();
    Steady {
        time: started.elapsed(),
        end: store.size_on_disk().await.unwrap(),
        daily,
        compactions,
        longest,
    }
}
