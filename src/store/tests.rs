use super::*;
use crate::clock::Clock;
use crate::domain::model::DeploymentInputs;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// An hour boundary, so the arithmetic in the tests is readable.
const T0: UnixMillis = 1_700_000_000_000 / HOUR * HOUR;

fn inputs(key: &DeploymentKey, cpu: f64, memory: Option<f64>, replicas: u32) -> DeploymentInputs {
    crate::domain::testing::inputs()
        .key(key)
        .cpu(cpu)
        .memory(memory)
        .replicas(replicas)
        .pool("all", Some(50.0), 60.0)
        .build()
}

fn tick(at: UnixMillis, rows: &[(&DeploymentKey, f64)]) -> Observation {
    Observation {
        at,
        measured_at: at,
        unmeasured: vec![],
        deployments: rows
            .iter()
            .map(|(k, cpu)| inputs(k, *cpu, Some(cpu / 2.0), 3))
            .collect(),
        nodes: vec![],
    }
}

fn api() -> DeploymentKey {
    DeploymentKey::new("shop", "api")
}

fn web() -> DeploymentKey {
    DeploymentKey::new("shop", "web")
}

#[tokio::test]
async fn a_restart_resumes_from_the_stored_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path, Retention::default()).await.unwrap();
        for i in 0..10 {
            let at = T0 + i * MINUTE;
            store
                .record_tick(&tick(at, &[(&api(), 10.0 + i as f64), (&web(), 50.0)]))
                .await
                .unwrap();
        }
        store
            .put_decision(&api(), T0, br#"{"served":71.5}"#)
            .await
            .unwrap();
        store
            .put_prediction(
                &api(),
                T0,
                &Prediction {
                    horizon_seconds: 600,
                    value: 80.0,
                    lower: 70.0,
                    upper: 90.0,
                },
            )
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(&path, Retention::default()).await.unwrap();
    assert_eq!(store.deployments(), vec![api(), web()]);
    let samples = store.samples(&api(), T0, T0 + HOUR).await.unwrap();
    assert_eq!(samples.len(), 10);
    assert_eq!(
        samples[3],
        Sample {
            at: T0 + 3 * MINUTE,
            cpu_percent: 13.0,
            memory_percent: Some(6.5),
            replicas: Some(3),
        }
    );
    assert_eq!(
        store.samples(&web(), T0, T0 + HOUR).await.unwrap().len(),
        10
    );
    assert_eq!(
        store.decisions(&api(), T0, T0 + 1).await.unwrap(),
        vec![(T0, br#"{"served":71.5}"#.to_vec())]
    );
    assert_eq!(
        store.predictions(&api(), T0, T0 + 1).await.unwrap()[0]
            .1
            .horizon_seconds,
        600
    );
    // A deployment first seen after the restart gets a fresh id: its data does not mix with the others'.
    let new = DeploymentKey::new("ops", "new");
    store.record_tick(&tick(T0, &[(&new, 99.0)])).await.unwrap();
    assert_eq!(store.samples(&new, T0, T0 + HOUR).await.unwrap().len(), 1);
    assert_eq!(
        store.samples(&api(), T0, T0 + HOUR).await.unwrap().len(),
        10
    );
    assert_eq!(
        store.samples(&web(), T0, T0 + HOUR).await.unwrap()[0].cpu_percent,
        50.0
    );
}

#[tokio::test]
async fn ranges_are_half_open_and_per_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Retention::default())
        .await
        .unwrap();
    for i in 0..5 {
        store
            .record_tick(&tick(
                T0 + i * MINUTE,
                &[(&api(), i as f64), (&web(), 100.0)],
            ))
            .await
            .unwrap();
    }
    let s = store
        .samples(&api(), T0 + MINUTE, T0 + 3 * MINUTE)
        .await
        .unwrap();
    assert_eq!(
        s.iter().map(|s| s.cpu_percent).collect::<Vec<_>>(),
        vec![1.0, 2.0]
    );
    assert!(
        store
            .samples(&api(), T0 + 3 * MINUTE, T0)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .samples(&DeploymentKey::new("x", "y"), T0, T0 + HOUR)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn old_samples_are_rolled_up_then_expired() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        samples: Duration::from_secs(2 * 3600),
        rollups: Duration::from_secs(6 * 3600),
        ..Retention::default()
    };
    let store = Store::open(dir.path().join("s"), retention).await.unwrap();
    // Three hours of one-minute ticks; CPU = minute of the hour.
    for i in 0..180 {
        let at = T0 + i * MINUTE;
        store
            .record_tick(&tick(at, &[(&api(), (i % 60) as f64)]))
            .await
            .unwrap();
    }
    store
        .put_decision(&api(), T0 + 5 * MINUTE, b"{}")
        .await
        .unwrap();
    let before = store.rollups(&api(), T0, T0 + 3 * HOUR).await.unwrap();
    assert_eq!(before.len(), 36, "aggregated on the fly from samples");

    // At T0 + 3h30m the sample cutoff is T0 + 1h30m: only the first hour is entirely past it.
    let now = T0 + 3 * HOUR + 30 * MINUTE;
    let report = store.enforce_retention(now).await.unwrap();
    assert_eq!(report.samples_rolled_up, 60);
    assert_eq!(report.rollup_hours_written, 1);
    assert_eq!(report.expired, 0);
    assert!(
        store
            .samples(&api(), T0, T0 + HOUR)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.samples(&api(), T0 + HOUR, now).await.unwrap().len(),
        120
    );

    let after = store.rollups(&api(), T0, T0 + 3 * HOUR).await.unwrap();
    assert_eq!(
        after.len(),
        36,
        "stored and on-the-fly rollups make one series"
    );
    let first = after[1];
    assert_eq!(first.start, T0 + 5 * MINUTE);
    assert_eq!(first.samples, 5);
    assert_eq!(first.cpu_mean, 7.0);
    assert_eq!(first.cpu_max, 9.0);
    assert_eq!(first.cpu_p95, 9.0);
    assert_eq!(first.memory_mean, Some(3.5));
    assert_eq!(first.replicas_max, Some(3));
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.start, a.start);
        assert!((b.cpu_mean - a.cpu_mean).abs() < 1e-4);
        assert_eq!(b.cpu_p95, a.cpu_p95);
    }
    // A range starting mid-bucket includes that bucket.
    let mid = store
        .rollups(&api(), T0 + 7 * MINUTE, T0 + 15 * MINUTE)
        .await
        .unwrap();
    assert_eq!(
        mid.iter().map(|r| r.start).collect::<Vec<_>>(),
        vec![T0 + 5 * MINUTE, T0 + 10 * MINUTE]
    );

    // A second pass at the same time does nothing.
    assert_eq!(
        store.enforce_retention(now).await.unwrap(),
        RetentionReport::default()
    );

    // Much later everything is past the rollup retention.
    let later = T0 + 20 * HOUR;
    let report = store.enforce_retention(later).await.unwrap();
    assert_eq!(report.samples_rolled_up, 120);
    assert_eq!(
        report.rollup_hours_written, 0,
        "expired hours are not written"
    );
    assert!(store.rollups(&api(), T0, later).await.unwrap().is_empty());
    assert!(store.samples(&api(), T0, later).await.unwrap().is_empty());
    assert!(store.decisions(&api(), T0, later).await.unwrap().is_empty());
}

#[tokio::test]
async fn rolling_up_twice_does_not_double_count() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        samples: Duration::from_secs(3600),
        rollups: Duration::from_secs(24 * 3600),
        ..Retention::default()
    };
    let store = Store::open(dir.path().join("s"), retention).await.unwrap();
    for i in 0..60 {
        store
            .record_tick(&tick(T0 + i * MINUTE, &[(&api(), 10.0)]))
            .await
            .unwrap();
    }
    let now = T0 + 3 * HOUR;
    store.enforce_retention(now).await.unwrap();
    // Samples of an hour already rolled up, as after a crash between writing the rollup and removing them.
    for i in 0..60 {
        store
            .record_tick(&tick(T0 + i * MINUTE, &[(&api(), 90.0)]))
            .await
            .unwrap();
    }
    let report = store.enforce_retention(now).await.unwrap();
    assert_eq!(report.samples_rolled_up, 60);
    let r = store.rollups(&api(), T0, T0 + HOUR).await.unwrap();
    assert_eq!(r.len(), 12);
    assert!(
        r.iter().all(|r| r.samples == 5 && r.cpu_mean == 10.0),
        "{r:?}"
    );
}

struct Fixed(UnixMillis);

impl Clock for Fixed {
    fn now_millis(&self) -> UnixMillis {
        self.0
    }
}

#[tokio::test]
async fn old_history_is_imported_straight_into_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        samples: Duration::from_secs(2 * 3600),
        rollups: Duration::from_secs(24 * 3600),
        ..Retention::default()
    };
    let now = T0 + 30 * HOUR;
    let store = Store::open(dir.path().join("s"), retention)
        .await
        .unwrap()
        .with_clock(Arc::new(Fixed(now)));
    // A real sample in an old hour that has not been rolled up yet.
    store
        .record_tick(&tick(T0 + 20 * HOUR, &[(&api(), 1.0)]))
        .await
        .unwrap();
    // 30 hours of one-minute history: hours 0-5 are past the rollup retention, hours 6-27 past the sample
    // retention, hours 28-29 recent.
    let points: Vec<(UnixMillis, f64)> = (0..30 * 60)
        .map(|i| (T0 + i * MINUTE, 50.0 + (i % 5) as f64))
        .collect();
    let kept = store.import_history(&api(), &points).await.unwrap();
    assert_eq!(
        kept,
        24 * 60 - 1,
        "expired hours dropped, the existing sample kept"
    );
    assert_eq!(
        store.samples(&api(), T0, now).await.unwrap().len(),
        60 + 2 * 60,
        "the hour holding a real sample, and the recent hours"
    );
    let stored = store.rollups(&api(), T0, T0 + 28 * HOUR).await.unwrap();
    assert_eq!(stored.len(), 22 * 12);
    assert_eq!(stored[0].start, T0 + 6 * HOUR);
    // Every bucket is 50..54 once, except the first of hour 20, which holds the real sample instead of 50.
    for r in &stored {
        let mean = if r.start == T0 + 20 * HOUR {
            52.0 - 49.0 / 5.0
        } else {
            52.0
        };
        assert_eq!((r.samples, r.cpu_mean, r.cpu_max), (5, mean, 54.0), "{r:?}");
    }
    // Importing again changes nothing.
    let again = store.import_history(&api(), &points).await.unwrap();
    assert_eq!(
        again,
        21 * 60,
        "stored slots win; existing samples are skipped"
    );
    assert_eq!(
        store.rollups(&api(), T0, T0 + 28 * HOUR).await.unwrap(),
        stored
    );
    // The retention pass rolls the hour with the real sample up with the imported points.
    store.enforce_retention(now).await.unwrap();
    let hour20 = store
        .rollups(&api(), T0 + 20 * HOUR, T0 + 21 * HOUR)
        .await
        .unwrap();
    assert_eq!(
        hour20[0].samples, 5,
        "the real sample's minute was not imported"
    );
    // Stored as half precision: 42.2 reads back as 42.1875.
    assert!((hour20[0].cpu_mean - (1.0 + 51.0 + 52.0 + 53.0 + 54.0) / 5.0).abs() < 0.02);
}

#[tokio::test]
async fn import_skips_existing_samples_and_non_finite_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Retention::default())
        .await
        .unwrap()
        .with_clock(Arc::new(Fixed(T0 + HOUR)));
    store
        .record_tick(&tick(T0, &[(&api(), 42.0)]))
        .await
        .unwrap();
    let written = store
        .import_history(
            &api(),
            &[(T0 - MINUTE, 1.0), (T0, 2.0), (T0 + MINUTE, f64::NAN)],
        )
        .await
        .unwrap();
    assert_eq!(written, 1);
    let s = store.samples(&api(), T0 - HOUR, T0 + HOUR).await.unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(
        s[0],
        Sample {
            at: T0 - MINUTE,
            cpu_percent: 1.0,
            memory_percent: None,
            replicas: None
        }
    );
    assert_eq!(s[1].cpu_percent, 42.0, "a real sample is not overwritten");
}

#[tokio::test]
async fn open_errors_name_the_path_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = Store::open(&file, Retention::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("not a directory"), "{e}");

    let path = dir.path().join("s");
    let first = Store::open(&path, Retention::default()).await.unwrap();
    let e = Store::open(&path, Retention::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("another process"), "{e}");
    drop(first);

    // A store written by a newer format is refused, not misread.
    {
        let store = Store::open(&path, Retention::default()).await.unwrap();
        store.inner().db.insert(FORMAT_KEY, &[9]).unwrap();
        store.flush().await.unwrap();
    }
    let e = Store::open(&path, Retention::default()).await.unwrap_err();
    assert!(matches!(e, StoreError::Version { found: 9, .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()));
}

#[tokio::test]
async fn corrupt_values_are_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Retention::default())
        .await
        .unwrap();
    store
        .record_tick(&tick(T0, &[(&api(), 1.0)]))
        .await
        .unwrap();
    let id = store.inner().known_id(&api()).unwrap();
    store
        .inner()
        .tree(Kind::Samples)
        .insert(codec::key(id, T0 + 1), &[2u8, 0, 0][..])
        .unwrap();
    let e = store
        .samples(&api(), T0, T0 + 10)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("samples") && e.contains("format version 2"),
        "{e}"
    );
}

#[test]
fn store_args_convert_to_a_config() {
    let mut args = StoreArgs {
        store_sample_retention: Duration::from_secs(48 * 3600),
        store_rollup_retention: Duration::from_secs(30 * 86400),
        store_anomaly_retention: Duration::from_secs(30 * 86400),
        store_cache_mib: DEFAULT_CACHE_MIB,
    };
    assert_eq!(
        StoreConfig::try_from(&args),
        Ok(StoreConfig::from(Retention::default()))
    );
    args.store_cache_mib = 0;
    assert_eq!(
        StoreConfig::try_from(&args),
        Err(StoreSettingsError::CacheMib(0))
    );
    args.store_cache_mib = 8;
    assert_eq!(StoreConfig::try_from(&args).unwrap().cache_bytes, 8 << 20);
    args.store_anomaly_retention = Duration::from_secs(60);
    assert_eq!(
        StoreConfig::try_from(&args),
        Err(StoreSettingsError::AnomalyRetention(Duration::from_secs(
            60
        )))
    );
    args.store_anomaly_retention = Duration::from_secs(7 * 86400);
    assert_eq!(
        StoreConfig::try_from(&args).unwrap().retention.anomalies,
        Duration::from_secs(7 * 86400)
    );
    // The cross-flag rule: rollups must outlive the samples they are made from.
    args.store_rollup_retention = Duration::from_secs(3600);
    let err = StoreConfig::try_from(&args).unwrap_err();
    assert!(
        matches!(err, StoreSettingsError::RollupRetention { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("invalid --store-rollup-retention"),
        "{err}"
    );
    assert!(
        err.to_string().contains("--store-sample-retention"),
        "{err}"
    );
    args.store_sample_retention = Duration::from_secs(60);
    assert_eq!(
        StoreConfig::try_from(&args),
        Err(StoreSettingsError::SampleRetention(Duration::from_secs(60)))
    );
    // Equal retentions are fine.
    args.store_sample_retention = Duration::from_secs(3600);
    assert!(StoreConfig::try_from(&args).is_ok());
}

#[tokio::test]
async fn the_journal_is_replayed_after_a_crash_while_closing_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    {
        let store = Store::open(&path, Retention::default()).await.unwrap();
        for i in 0..90 {
            store
                .record_tick(&tick(T0 + i * MINUTE, &[(&api(), i as f64)]))
                .await
                .unwrap();
        }
        // Hour T0 was closed into a block when the first tick of T0 + 1 h came; its journal records were
        // dropped. Put one back, as if the process died between writing the blocks and dropping the records.
        let id = store.inner().known_id(&api()).unwrap();
        let again = codec::encode_journal(&[(
            id,
            codec::SampleValue {
                cpu_percent: 5.0,
                memory_percent: Some(2.5),
                replicas: Some(3),
            },
        )]);
        store
            .inner()
            .journal
            .insert(codec::key(0, T0 + 5 * MINUTE), again)
            .unwrap();
        assert_eq!(store.inner().journal.len(), 31);
        store.flush().await.unwrap();
    }
    let store = Store::open(&path, Retention::default()).await.unwrap();
    let samples = store.samples(&api(), T0, T0 + 2 * HOUR).await.unwrap();
    assert_eq!(samples.len(), 90, "no sample lost or doubled");
    assert!(
        samples
            .iter()
            .enumerate()
            .all(|(i, s)| s.at == T0 + i as i64 * MINUTE && s.cpu_percent == i as f64)
    );
    assert_eq!(
        store.inner().journal.len(),
        30,
        "only the open hour is journalled"
    );
    // The open hour goes on where it stopped.
    store
        .record_tick(&tick(T0 + 90 * MINUTE, &[(&api(), 90.0)]))
        .await
        .unwrap();
    assert_eq!(
        store
            .samples(&api(), T0, T0 + 2 * HOUR)
            .await
            .unwrap()
            .len(),
        91
    );
}

#[tokio::test]
async fn compaction_keeps_every_record_gives_back_space_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Retention::default()).await.unwrap();
    let retention = Retention::default();
    let samples_ms = retention.samples.as_millis() as i64;
    // Three days of minute ticks for two deployments, rolled up as they age: the churn that leaves sled's log
    // behind (closed hours, deleted journal records and sample blocks). The last tick stays in the open hour.
    let ticks = 3 * 24 * 60 + 30;
    for i in 0..ticks {
        let at = T0 + i * MINUTE;
        store
            .record_tick(&tick(at, &[(&api(), (i % 97) as f64), (&web(), 50.0)]))
            .await
            .unwrap();
        if i % 60 == 59 {
            store.enforce_retention(at).await.unwrap();
        }
    }
    let end = T0 + ticks * MINUTE;
    store
        .put_decision(&api(), T0, br#"{"served":71.5}"#)
        .await
        .unwrap();
    store.flush().await.unwrap();
    let read = |store: Store| async move {
        (
            store.samples(&api(), end - samples_ms, end).await.unwrap(),
            store.rollups(&api(), T0, end).await.unwrap(),
            store.rollups(&web(), T0, end).await.unwrap(),
            store.decisions(&api(), T0, T0 + 1).await.unwrap(),
            store.deployments(),
        )
    };
    let before = read(store.clone()).await;
    assert!(before.0.len() > 2_000 && !before.1.is_empty() && !before.3.is_empty());

    let report = store.compact().await.unwrap();
    assert!(
        report.after_bytes < report.before_bytes,
        "compaction gave nothing back: {report:?}"
    );
    assert_eq!(read(store.clone()).await, before);
    assert_eq!(store.size_on_disk().await.unwrap(), report.after_bytes);
    // No copy or old directory is left beside the store.
    let mut entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["store"]);
    // Just compacted: not grown, so nothing to do.
    assert_eq!(store.compact_if_grown().await.unwrap(), None);

    // The open hour survived (it lives in the journal), and the store takes writes and reopens as usual.
    store
        .record_tick(&tick(end, &[(&api(), 12.0)]))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let last_hour = store
        .samples(&api(), end - 30 * MINUTE, end + 1)
        .await
        .unwrap();
    assert_eq!(last_hour.len(), 31);
    drop(store);
    let reopened = Store::open(&path, Retention::default()).await.unwrap();
    assert_eq!(
        reopened
            .samples(&api(), end - 30 * MINUTE, end + 1)
            .await
            .unwrap(),
        last_hour
    );
    assert_eq!(
        reopened.decisions(&api(), T0, T0 + 1).await.unwrap(),
        before.3
    );
}

#[test]
fn the_open_hour_keeps_samples_packed_in_order_and_reads_them_as_stored() {
    let hour = 10 * HOUR_MILLIS;
    let value = |cpu: f64, replicas: Option<u32>| SampleValue {
        cpu_percent: cpu,
        memory_percent: None,
        replicas,
    };
    let mut rows = HourRows::default();
    rows.insert(hour, hour + 2 * MINUTE, value(2.0, Some(2)));
    rows.insert(hour, hour + MINUTE, value(1.0, Some(1)));
    rows.insert(hour, hour + 3 * MINUTE, value(3.1, Some(70_000)));
    // A second tick at the same time replaces the first.
    rows.insert(hour, hour + 2 * MINUTE, value(2.5, None));
    let all: Vec<(UnixMillis, SampleValue)> = rows.range(hour, hour, hour + HOUR_MILLIS).collect();
    assert_eq!(
        all.iter()
            .map(|(at, _)| (at - hour) / MINUTE)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(all[1].1, value(2.5, None));
    // What the codec would give back after the hour is written: f32 values, replicas saturated.
    let block = codec::encode_block(hour, &[(hour + 3 * MINUTE, value(3.1, Some(70_000)))]);
    assert_eq!(all[2].1, codec::decode_block(hour, &block).unwrap()[0].1);
    assert!(rows.contains(hour, hour + MINUTE) && !rows.contains(hour, hour + 4 * MINUTE));
    assert!(!rows.contains(hour, hour - MINUTE));
    assert_eq!(
        rows.range(hour, hour + 2 * MINUTE, hour + 3 * MINUTE)
            .count(),
        1
    );
    assert_eq!(std::mem::size_of::<(u32, codec::PackedSample)>(), 16);
}

/// Ticks of the history a crash must not lose: three closed hours and the open hour's first half.
const HISTORY_TICKS: i64 = 3 * 60 + 30;

/// Writes that history (two deployments at one-minute ticks, so closed hours are blocks and the open hour is in
/// the journal, plus a decision and a prediction) and flushes it.
async fn write_history(store: &Store) {
    for i in 0..HISTORY_TICKS {
        store
            .record_tick(&tick(
                T0 + i * MINUTE,
                &[(&api(), (i % 97) as f64), (&web(), 50.0)],
            ))
            .await
            .unwrap();
    }
    store
        .put_decision(&api(), T0, br#"{"served":71.5}"#)
        .await
        .unwrap();
    store
        .put_prediction(
            &web(),
            T0,
            &Prediction {
                horizon_seconds: 900,
                value: 65.0,
                lower: 60.0,
                upper: 70.0,
            },
        )
        .await
        .unwrap();
    store.flush().await.unwrap();
}

/// Asserts `store` holds everything [`write_history`] wrote.
async fn assert_history(store: &Store) {
    let end = T0 + HISTORY_TICKS * MINUTE;
    let api_samples = store.samples(&api(), T0, end).await.unwrap();
    assert_eq!(api_samples.len(), HISTORY_TICKS as usize, "api samples");
    assert!(
        api_samples
            .iter()
            .enumerate()
            .all(|(i, s)| s.at == T0 + i as i64 * MINUTE && s.cpu_percent == (i % 97) as f64)
    );
    assert_eq!(
        store.samples(&web(), T0, end).await.unwrap().len(),
        HISTORY_TICKS as usize,
        "web samples"
    );
    assert_eq!(
        store.decisions(&api(), T0, T0 + 1).await.unwrap(),
        [(T0, br#"{"served":71.5}"#.to_vec())]
    );
    assert_eq!(
        store
            .predictions(&web(), T0, T0 + 1)
            .await
            .unwrap()
            .iter()
            .map(|(at, p)| (*at, p.value))
            .collect::<Vec<_>>(),
        [(T0, 65.0)]
    );
    assert_eq!(store.deployments(), [api(), web()]);
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The store's figures as `/metrics` shows them.
fn exposition(store: &Store) -> String {
    let telemetry = crate::telemetry::Telemetry::new();
    store.register_metrics(&telemetry);
    telemetry.encode()
}

/// The value of the sample `name{labels}` (or of `name` alone) in an exposition.
fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// What a compaction leaves at `copy` once its copy is complete: the live data, flushed and marked.
fn copy_marked(store: &Store, copy: &Path) {
    store
        .shared
        .copy_live_data(&store.inner().db, copy)
        .unwrap();
}

/// A store holding [`write_history`] at `<dir>/store`, and the paths of a compaction's copy and old database.
async fn crashed_store(dir: &Path) -> (Store, PathBuf, PathBuf, PathBuf) {
    let path = dir.join("store");
    let store = Store::open(&path, Retention::default()).await.unwrap();
    write_history(&store).await;
    (
        store,
        path,
        dir.join("store.compacting"),
        dir.join("store.old"),
    )
}

/// Reopens the store at `path` after a crash and checks what the recovery did: `action` counted (or nothing),
/// every record there, and nothing but the store left in `dir`.
async fn reopen_after_crash(dir: &Path, path: &Path, action: Option<&str>) -> Store {
    let store = Store::open(path, Retention::default()).await.unwrap();
    assert_history(&store).await;
    assert_eq!(entries(dir), ["store"], "leftovers are cleaned up");
    let metrics = exposition(&store);
    for label in Recovery::ALL.map(Recovery::label) {
        let want = if action == Some(label) { 1.0 } else { 0.0 };
        assert_eq!(
            metric(
                &metrics,
                &format!("smart_autoscaler_store_recoveries_total{{action=\"{label}\"}}")
            ),
            Some(want),
            "{label}:\n{metrics}"
        );
    }
    // The recovered store takes writes and compacts as usual.
    store
        .record_tick(&tick(
            T0 + HISTORY_TICKS * MINUTE,
            &[(&api(), 1.0), (&web(), 1.0)],
        ))
        .await
        .unwrap();
    store.compact().await.unwrap();
    assert_eq!(
        store
            .samples(&api(), T0, T0 + 4 * HOUR)
            .await
            .unwrap()
            .len(),
        HISTORY_TICKS as usize + 1
    );
    store
}

/// Crash while copying: the store is in place, a copy cut short beside it (some trees only, no completion
/// marker). The store in place is kept and the copy removed.
#[tokio::test]
async fn crash_while_copying_keeps_the_store_and_drops_the_partial_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, copy, _) = crashed_store(dir.path()).await;
    {
        let partial = sled_config(&copy, 1 << 20).open().unwrap();
        let export = store.inner().db.export();
        let half = export.len() / 2;
        partial.import(export.into_iter().take(half).collect());
        partial.flush().unwrap();
    }
    assert!(!copy.join(COMPACTION_COMPLETE).exists());
    drop(store);
    reopen_after_crash(dir.path(), &path, Some("discarded_copy")).await;
}

/// Crash after the copy is complete, before the first rename: the store in place is kept, the copy removed.
#[tokio::test]
async fn crash_after_copying_before_the_swap_keeps_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, copy, _) = crashed_store(dir.path()).await;
    copy_marked(&store, &copy);
    assert!(copy.join(COMPACTION_COMPLETE).is_file());
    drop(store);
    reopen_after_crash(dir.path(), &path, Some("discarded_copy")).await;
}

/// Crash between the two renames (issue 22): the store moved to `store.old`, the complete copy still at
/// `store.compacting`. Today's code opened an empty store there; the swap is finished instead.
#[tokio::test]
async fn crash_between_the_renames_finishes_the_swap() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, copy, old) = crashed_store(dir.path()).await;
    copy_marked(&store, &copy);
    drop(store);
    std::fs::rename(&path, &old).unwrap();
    reopen_after_crash(dir.path(), &path, Some("finished_swap")).await;
    assert!(
        path.join(COMPACTION_COMPLETE).is_file(),
        "the copy is what is in place"
    );
}

/// The same crash with a copy not marked complete (a build before the marker, or a copy cut short, which the
/// compaction never swaps in but a crash must not promote either): the old database is moved back.
#[tokio::test]
async fn crash_between_the_renames_with_an_unmarked_copy_rolls_back() {
    for cut_short in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, copy, old) = crashed_store(dir.path()).await;
        if cut_short {
            let partial = sled_config(&copy, 1 << 20).open().unwrap();
            partial.import(store.inner().db.export().into_iter().take(2).collect());
            partial.flush().unwrap();
        } else {
            copy_marked(&store, &copy);
            std::fs::remove_file(copy.join(COMPACTION_COMPLETE)).unwrap();
        }
        drop(store);
        std::fs::rename(&path, &old).unwrap();
        reopen_after_crash(dir.path(), &path, Some("rolled_back")).await;
    }
}

/// Crash after the second rename, before the old database was removed: the copy in place is kept (it may
/// have taken writes since), the old database removed.
#[tokio::test]
async fn crash_after_the_swap_removes_the_old_database() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, copy, old) = crashed_store(dir.path()).await;
    copy_marked(&store, &copy);
    drop(store);
    std::fs::rename(&path, &old).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    reopen_after_crash(dir.path(), &path, Some("removed_old")).await;
}

/// What today's build left after a crash between the renames: it opened an empty store in the store's place
/// (which has taken writes since) beside the old database holding the history. The history is not removed: the
/// old database is kept for the operator, who can move it back.
#[tokio::test]
async fn an_empty_store_an_older_build_opened_after_a_crash_keeps_the_history_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, copy, old) = crashed_store(dir.path()).await;
    copy_marked(&store, &copy);
    std::fs::remove_file(copy.join(COMPACTION_COMPLETE)).unwrap();
    drop(store);
    std::fs::rename(&path, &old).unwrap();
    // The older build's start: a new store, with no recovery (as if the two directories were not there).
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    std::fs::rename(&old, aside.join("old")).unwrap();
    std::fs::rename(&copy, aside.join("copy")).unwrap();
    let later = T0 + 10 * HOUR;
    {
        let fresh = Store::open(&path, Retention::default()).await.unwrap();
        fresh
            .record_tick(&tick(later, &[(&api(), 7.0)]))
            .await
            .unwrap();
        fresh.flush().await.unwrap();
    }
    std::fs::rename(aside.join("old"), &old).unwrap();
    std::fs::rename(aside.join("copy"), &copy).unwrap();
    std::fs::remove_dir(&aside).unwrap();

    let store = Store::open(&path, Retention::default()).await.unwrap();
    assert_eq!(
        store.samples(&api(), T0, later + 1).await.unwrap().len(),
        1,
        "the store in place is kept"
    );
    assert_eq!(entries(dir.path()), ["store", "store.old"]);
    let metrics = exposition(&store);
    assert_eq!(
        metric(
            &metrics,
            "smart_autoscaler_store_recoveries_total{action=\"kept_old\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // A compaction moves it out of its way but does not remove it.
    store.compact().await.unwrap();
    let kept = dir.path().join("store.old.kept");
    assert_eq!(entries(dir.path()), ["store", "store.old.kept"]);
    assert!(path.join(COMPACTION_COMPLETE).is_file());
    // The operator's way back to the history.
    drop(store);
    std::fs::rename(&path, dir.path().join("after-the-crash")).unwrap();
    std::fs::rename(&kept, &path).unwrap();
    let store = Store::open(&path, Retention::default()).await.unwrap();
    assert_history(&store).await;
}

/// No crash: nothing to recover, nothing counted.
#[tokio::test]
async fn a_clean_store_opens_without_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, _, _) = crashed_store(dir.path()).await;
    drop(store);
    reopen_after_crash(dir.path(), &path, None).await;
}

/// A fresh store (no database at the path, none moved aside) does not remove a copy it cannot place, though
/// it would promote a complete one.
#[tokio::test]
async fn a_new_store_promotes_a_complete_copy_and_leaves_an_unplaceable_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, path, copy, _) = crashed_store(dir.path()).await;
    copy_marked(&store, &copy);
    drop(store);
    std::fs::remove_dir_all(&path).unwrap();
    reopen_after_crash(dir.path(), &path, Some("finished_swap")).await;

    let other = tempfile::tempdir().unwrap();
    let stray = other.path().join("store.compacting");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("db"), b"not a database").unwrap();
    let store = Store::open(other.path().join("store"), Retention::default())
        .await
        .unwrap();
    assert!(store.deployments().is_empty());
    assert!(stray.join("db").is_file(), "left alone");
}

/// A clock the test moves.
struct Manual(std::sync::atomic::AtomicI64);

impl Clock for Manual {
    fn now_millis(&self) -> UnixMillis {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Issue 22, item 7: size, records by tree, compactions, last flush reach the exposition.
#[tokio::test]
async fn store_figures_reach_the_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Manual(T0.into()));
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap()
        .with_clock(clock.clone());
    let telemetry = crate::telemetry::Telemetry::new();
    store.register_metrics(&telemetry);
    let value = |series: &str| metric(&telemetry.encode(), series);
    assert!(value("smart_autoscaler_store_size_bytes").is_some());
    assert_eq!(
        value("smart_autoscaler_store_compactions_total{outcome=\"ok\"}"),
        Some(0.0),
        "every series is there from the start"
    );
    assert_eq!(
        value("smart_autoscaler_store_records{tree=\"decisions\"}"),
        None,
        "not counted before the first refresh"
    );

    write_history(&store).await;
    clock.0.store(
        T0 + 3 * HOUR + 30 * MINUTE,
        std::sync::atomic::Ordering::Relaxed,
    );
    for i in 0..4 {
        store.put_decision(&web(), T0 + i, b"{}").await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(
        value("smart_autoscaler_store_last_flush_timestamp_seconds"),
        Some((T0 + 3 * HOUR + 30 * MINUTE) as f64 / 1000.0)
    );
    store.refresh_stats().await.unwrap();
    assert!(value("smart_autoscaler_store_size_bytes").is_some_and(|b| b > 0.0));
    let records = |tree: &str| {
        value(&format!(
            "smart_autoscaler_store_records{{tree=\"{tree}\"}}"
        ))
    };
    // Three closed hours of two deployments as blocks; the open hour's 30 ticks in the journal.
    assert_eq!(records("samples"), Some(6.0));
    assert_eq!(records("samples_journal"), Some(30.0));
    assert_eq!(records("decisions"), Some(5.0));
    assert_eq!(records("predictions"), Some(1.0));
    assert_eq!(records("deployments"), Some(2.0));
    assert_eq!(records("rollups"), Some(0.0));
    assert_eq!(
        value("smart_autoscaler_store_size_bytes"),
        Some(store.size_on_disk().await.unwrap() as f64)
    );

    let report = store.compact().await.unwrap();
    assert_eq!(
        value("smart_autoscaler_store_compactions_total{outcome=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        value("smart_autoscaler_store_compaction_duration_seconds_count"),
        Some(1.0)
    );
    assert!(
        value("smart_autoscaler_store_compaction_duration_seconds_sum")
            .is_some_and(|s| (0.0..600.0).contains(&s))
    );
    assert_eq!(
        value("smart_autoscaler_store_size_bytes"),
        Some(report.after_bytes as f64)
    );

    // Records are counted at most once per RECORD_COUNT_INTERVAL of the store's clock.
    store.put_decision(&web(), T0 + 10, b"{}").await.unwrap();
    store.refresh_stats().await.unwrap();
    assert_eq!(records("decisions"), Some(5.0), "counted a minute ago");
    clock.0.fetch_add(
        RECORD_COUNT_INTERVAL.as_millis() as i64,
        std::sync::atomic::Ordering::Relaxed,
    );
    store.refresh_stats().await.unwrap();
    assert_eq!(records("decisions"), Some(6.0));
    let text = telemetry.encode();
    for family in [
        "# TYPE smart_autoscaler_store_size_bytes gauge",
        "# TYPE smart_autoscaler_store_records gauge",
        "# TYPE smart_autoscaler_store_compactions counter",
        "# TYPE smart_autoscaler_store_compaction_duration_seconds histogram",
        "# TYPE smart_autoscaler_store_last_flush_timestamp_seconds gauge",
        "# TYPE smart_autoscaler_store_recoveries counter",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
}

#[tokio::test]
async fn hourly_costs_round_trip_replace_their_hour_and_expire_with_the_rollups() {
    use crate::domain::cost::{CostInput, Prices, deployment_cost};
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        rollups: Duration::from_secs(24 * 3600),
        ..Retention::default()
    };
    let store = Store::open(dir.path().join("store"), retention)
        .await
        .unwrap();
    let cost = |pods: u32| {
        deployment_cost(
            &CostInput {
                key: api(),
                window_millis: HOUR,
                pods,
                pod_cpu_request_milli: 1000,
                pod_memory_request_bytes: 0,
                cpu_usage_cores: None,
                memory_usage_bytes: None,
                pods_by_node: BTreeMap::new(),
            },
            &[],
            &Prices::default(),
        )
    };
    store.put_cost_hour(T0, &cost(1)).await.unwrap();
    store.put_cost_hour(T0 + HOUR, &cost(2)).await.unwrap();
    // The open hour written again: it replaces the record of its hour.
    store.put_cost_hour(T0 + HOUR, &cost(3)).await.unwrap();
    let hours = store.cost_hours(&api(), T0, T0 + 2 * HOUR).await.unwrap();
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[0], (T0, cost(1)));
    assert_eq!(hours[1].0, T0 + HOUR);
    assert!((hours[1].1.total_usd - 3.0 * 0.031611).abs() < 1e-12);
    assert!(
        store
            .cost_hours(&web(), T0, T0 + 2 * HOUR)
            .await
            .unwrap()
            .is_empty()
    );
    // Past the rollup retention (a day), the first hour goes; the second stays until it is a day old too.
    store
        .enforce_retention(T0 + HOUR + 24 * HOUR)
        .await
        .unwrap();
    let hours = store.cost_hours(&api(), T0, T0 + 2 * HOUR).await.unwrap();
    assert_eq!(
        hours.iter().map(|h| h.0).collect::<Vec<_>>(),
        vec![T0 + HOUR]
    );
}

/// Feeds `book` one-minute ticks of shop/api (2 pods of 1 core at 50%) for minutes `from..=to` after T0.
fn observe_minutes(book: &Arc<crate::cost::CostBook>, from: i64, to: i64) {
    use crate::domain::model::ServedDeployment;
    for i in from..=to {
        let at = T0 + i * MINUTE;
        let mut inputs = inputs(&api(), 50.0, None, 2);
        inputs.ready_pods = 2;
        inputs.pod_cpu_request_milli = 1000;
        inputs.observed_at = at;
        let explanation = crate::domain::decision::decide(
            &inputs,
            &Default::default(),
            None,
            Default::default(),
            at,
        )
        .0;
        book.observe(&crate::domain::model::Snapshot {
            collected_at: at,
            measured_at: at,
            interval_millis: MINUTE,
            deployments: [(
                api(),
                ServedDeployment {
                    inputs,
                    raw_percent: 50.0,
                    smart_percent: 50.0,
                    explanation,
                },
            )]
            .into(),
            ..Default::default()
        });
    }
}

/// Polls the store until the record of hour T0 covers `window` (the writes are queued to a task).
async fn cost_hour_with_window(store: &Store, window: i64) -> crate::domain::cost::DeploymentCost {
    for _ in 0..300 {
        let hours = store.cost_hours(&api(), T0, T0 + HOUR).await.unwrap();
        if let Some((_, c)) = hours
            .into_iter()
            .find(|(h, c)| *h == T0 && c.window_millis == window)
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no record of hour T0 over {window} ms: {:?}",
        store.cost_hours(&api(), T0, T0 + HOUR).await.unwrap()
    );
}

#[tokio::test]
async fn the_cost_book_writes_each_hour_and_a_restart_adds_to_the_stored_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap();
    let book = |store: &Store| {
        Arc::new(
            crate::cost::CostBook::new(crate::domain::cost::Prices::default())
                .with_store(store.clone()),
        )
    };
    // A first process: ticks of minutes 0 to 25; its last write (every 5 minutes) holds all 26.
    observe_minutes(&book(&store), 0, 25);
    let before = cost_hour_with_window(&store, 26 * MINUTE).await;
    assert!((before.pod_hours - 2.0 * 26.0 / 60.0).abs() < 1e-9);
    // A restart: the next process ticks on from minute 26, past the hour (T0 + 1h opens the next one).
    observe_minutes(&book(&store), 26, 60);
    let hour = cost_hour_with_window(&store, HOUR).await;
    // 60 ticks of a minute, 2 pods of 1 core: 2 core-hours at OpenCost's price.
    assert!((hour.total_usd - 2.0 * 0.031611).abs() < 1e-9, "{hour:?}");
    assert!((hour.pod_hours - 2.0).abs() < 1e-9);
}
