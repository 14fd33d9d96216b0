use super::*;
use crate::store::Retention;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const T0: UnixMillis = 1_700_000_000_000 / HOUR * HOUR;

fn key(namespace: &str, name: &str) -> DeploymentKey {
    DeploymentKey::new(namespace, name)
}

fn anomaly(k: &DeploymentKey, kind: AnomalyKind, started_at: UnixMillis) -> Anomaly {
    Anomaly {
        key: k.clone(),
        kind,
        severity: Severity::Warning,
        started_at,
        last_seen_at: started_at,
        ended_at: None,
        expected: 41.5,
        actual: 93.25,
        score: 0.97,
        summary: format!("CPU 93.25% where 41.5% was expected ({k})"),
    }
}

fn seen(mut a: Anomaly, at: UnixMillis) -> Anomaly {
    a.last_seen_at = at;
    a
}

fn ended(mut a: Anomaly, at: UnixMillis) -> Anomaly {
    a.last_seen_at = at;
    a.ended_at = Some(at);
    a
}

fn all() -> AnomalyQuery {
    AnomalyQuery::default()
}

#[test]
fn values_round_trip_and_bad_bytes_are_errors_not_misreads() {
    let k = key("shop", "api");
    let mut a = ended(anomaly(&k, AnomalyKind::ScalingThrash, T0), T0 + 7 * MINUTE);
    a.severity = Severity::Critical;
    a.summary = "16 replica changes in 30 minutes — ünïcode kept".into();
    let bytes = encode(&a);
    assert_eq!(bytes.len(), FIXED_LEN + a.summary.len());
    assert_eq!(
        decode(k.clone(), a.kind, a.started_at, &bytes),
        Ok(a.clone())
    );
    let open = anomaly(&k, AnomalyKind::Learned, T0);
    assert_eq!(
        decode(k.clone(), open.kind, T0, &encode(&open)),
        Ok(open.clone())
    );

    assert_eq!(decode(k.clone(), a.kind, T0, &[]), Err(CodecError::Empty));
    let mut newer = bytes.clone();
    newer[0] = 9;
    assert_eq!(
        decode(k.clone(), a.kind, T0, &newer),
        Err(CodecError::Version(9))
    );
    assert!(matches!(
        decode(k.clone(), a.kind, T0, &bytes[..bytes.len() - 1]),
        Err(CodecError::Length { .. })
    ));
    let mut bad_severity = bytes.clone();
    bad_severity[1] = 0;
    assert_eq!(
        decode(k.clone(), a.kind, T0, &bad_severity),
        Err(CodecError::Invalid("severity code"))
    );
    // Keys: the kind code after the usual id and time; an unknown code is refused.
    let mut k13 = anomaly_key(7, T0, AnomalyKind::PatternDeviation);
    assert_eq!(
        split_anomaly_key(&k13),
        Ok((7, T0, AnomalyKind::PatternDeviation))
    );
    k13[KEY_LEN] = 200;
    assert!(split_anomaly_key(&k13).is_err());
    assert!(split_anomaly_key(&k13[..KEY_LEN]).is_err());
    // Every kind and severity has its own code.
    let kinds: HashSet<u8> = AnomalyKind::ALL.into_iter().map(kind_code).collect();
    assert_eq!(kinds.len(), AnomalyKind::ALL.len());
    assert!(
        AnomalyKind::ALL
            .into_iter()
            .all(|k| kind_of(kind_code(k)) == Some(k))
    );
    assert!(
        Severity::ALL
            .into_iter()
            .all(|s| severity_of(severity_code(s)) == Some(s))
    );
}

#[tokio::test]
async fn writes_are_idempotent_by_deployment_kind_and_start_and_queries_filter_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Retention::default())
        .await
        .unwrap();
    let (api, web, other) = (key("shop", "api"), key("shop", "web"), key("other", "api"));
    let spike = anomaly(&api, AnomalyKind::CpuSpike, T0);
    store.put_anomalies(vec![spike.clone()]).await.unwrap();
    // The same anomaly again, its severity raised, then ended: still one record, the last write.
    let mut raised = seen(spike.clone(), T0 + MINUTE);
    raised.severity = Severity::Critical;
    store.put_anomalies(vec![raised.clone()]).await.unwrap();
    let over = ended(raised.clone(), T0 + 5 * MINUTE);
    store.put_anomalies(vec![over.clone()]).await.unwrap();
    assert_eq!(store.anomalies(&all()).await.unwrap(), vec![over.clone()]);

    // Same deployment and start, another kind: another record.
    let thrash = anomaly(&api, AnomalyKind::ScalingThrash, T0);
    let web_late = anomaly(&web, AnomalyKind::PersistentHighCpu, T0 + 2 * HOUR);
    let other_mid = ended(anomaly(&other, AnomalyKind::Learned, T0 + HOUR), T0 + HOUR);
    store
        .put_anomalies(vec![thrash.clone(), web_late.clone(), other_mid.clone()])
        .await
        .unwrap();

    // Newest start first; equal starts by deployment then kind.
    assert_eq!(
        store.anomalies(&all()).await.unwrap(),
        vec![
            web_late.clone(),
            other_mid.clone(),
            over.clone(),
            thrash.clone()
        ]
    );
    let q = |namespace: Option<&str>, deployment: Option<&str>, since: Option<i64>| AnomalyQuery {
        namespace: namespace.map(str::to_string),
        deployment: deployment.map(str::to_string),
        since,
        limit: MAX_ANOMALIES,
    };
    assert_eq!(
        store.anomalies(&q(Some("shop"), None, None)).await.unwrap(),
        vec![web_late.clone(), over.clone(), thrash.clone()]
    );
    // A name alone matches it in every namespace.
    assert_eq!(
        store.anomalies(&q(None, Some("api"), None)).await.unwrap(),
        vec![other_mid.clone(), over.clone(), thrash.clone()]
    );
    assert_eq!(
        store
            .anomalies(&q(Some("shop"), Some("api"), None))
            .await
            .unwrap(),
        vec![over.clone(), thrash.clone()]
    );
    // Since: open ones, and ended ones that ended then or later.
    assert_eq!(
        store
            .anomalies(&q(None, None, Some(T0 + 5 * MINUTE)))
            .await
            .unwrap(),
        vec![
            web_late.clone(),
            other_mid.clone(),
            over.clone(),
            thrash.clone()
        ]
    );
    assert_eq!(
        store
            .anomalies(&q(None, None, Some(T0 + 5 * MINUTE + 1)))
            .await
            .unwrap(),
        vec![web_late.clone(), other_mid.clone(), thrash.clone()]
    );
    assert_eq!(
        store
            .anomalies(&q(None, None, Some(T0 + HOUR + 1)))
            .await
            .unwrap(),
        vec![web_late.clone(), thrash.clone()]
    );
    assert!(
        store
            .anomalies(&q(Some("none"), None, None))
            .await
            .unwrap()
            .is_empty()
    );
    // The limit keeps the newest.
    let two = AnomalyQuery { limit: 2, ..all() };
    assert_eq!(
        store.anomalies(&two).await.unwrap(),
        vec![web_late, other_mid]
    );
}

#[tokio::test]
async fn retention_removes_what_last_held_before_the_cutoff_and_what_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention {
        anomalies: Duration::from_secs(2 * 24 * 3600),
        ..Retention::default()
    };
    let store = Store::open(dir.path().join("s"), retention).await.unwrap();
    let api = key("shop", "api");
    let now = T0 + 10 * DAY;
    // Ended three days ago: gone. Started long ago but ended a day ago: kept. Open, seen 3 days ago: gone.
    // Open and seen an hour ago: kept.
    let old = ended(
        anomaly(&api, AnomalyKind::CpuSpike, now - 4 * DAY),
        now - 3 * DAY,
    );
    let long = ended(
        anomaly(&api, AnomalyKind::PatternDeviation, now - 9 * DAY),
        now - DAY,
    );
    let stale_open = seen(
        anomaly(&api, AnomalyKind::ScalingThrash, now - 4 * DAY),
        now - 3 * DAY,
    );
    let fresh_open = seen(
        anomaly(&api, AnomalyKind::Learned, now - 2 * HOUR),
        now - HOUR,
    );
    store
        .put_anomalies(vec![
            old.clone(),
            long.clone(),
            stale_open.clone(),
            fresh_open.clone(),
        ])
        .await
        .unwrap();
    // Damage: a value that does not decode under a valid key, and a key of the wrong shape.
    let inner = store.inner();
    let id = inner.known_id(&api).unwrap();
    let tree = inner.tree(Kind::Anomalies);
    tree.insert(
        &anomaly_key(id, now - 30 * MINUTE, AnomalyKind::CpuSpike)[..],
        &[codec::VERSION, 77][..],
    )
    .unwrap();
    tree.insert(&codec::key(id, now)[..], &b"junk"[..]).unwrap();
    drop(inner);

    // Reads skip the damage rather than fail.
    assert_eq!(
        store.anomalies(&all()).await.unwrap(),
        vec![fresh_open.clone(), old, stale_open, long.clone()]
    );
    let report = store.enforce_retention(now).await.unwrap();
    assert_eq!(report.anomalies_expired, 4, "{report:?}");
    assert_eq!(
        store.anomalies(&all()).await.unwrap(),
        vec![fresh_open, long]
    );
    assert_eq!(store.inner().tree(Kind::Anomalies).len(), 2);
}

#[tokio::test]
async fn a_missing_tree_is_an_empty_history_and_a_restart_closes_what_was_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let api = key("shop", "api");
    let left_open = seen(anomaly(&api, AnomalyKind::CpuSpike, T0), T0 + 3 * MINUTE);
    let still_on = anomaly(&api, AnomalyKind::ScalingThrash, T0 + MINUTE);
    {
        let store = Store::open(&path, Retention::default()).await.unwrap();
        store
            .put_anomalies(vec![left_open.clone(), still_on.clone()])
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    // Reopen; the next run's first snapshot still has the thrash (same start), not the spike.
    let store = Store::open(&path, Retention::default()).await.unwrap();
    let mut writer = AnomalyWriter::new(AnomalyHistory::Stored(store.clone()));
    let now = T0 + 20 * MINUTE;
    writer.observe(&[seen(still_on.clone(), now)]);
    writer.flush().await;
    assert_eq!(
        store.anomalies(&all()).await.unwrap(),
        vec![
            seen(still_on.clone(), now),
            ended(left_open.clone(), T0 + 3 * MINUTE)
        ]
    );
    drop(writer);
    drop(store);

    // The tree gone altogether (a store from before anomalies were kept, or dropped by hand): the store opens,
    // the history is empty, and writing starts it again.
    {
        let db = sled::open(&path).unwrap();
        assert!(db.drop_tree("anomalies").unwrap());
        db.flush().unwrap();
    }
    let store = Store::open(&path, Retention::default()).await.unwrap();
    assert!(store.anomalies(&all()).await.unwrap().is_empty());
    let mut writer = AnomalyWriter::new(AnomalyHistory::Stored(store.clone()));
    writer.observe(&[seen(still_on.clone(), now + MINUTE)]);
    writer.flush().await;
    assert_eq!(
        store.anomalies(&all()).await.unwrap(),
        vec![seen(still_on, now + MINUTE)]
    );
}

#[test]
fn the_recorder_writes_starts_severity_changes_and_ends_not_every_tick() {
    let api = key("shop", "api");
    let web = key("shop", "web");
    let mut recorder = AnomalyRecorder::default();
    let spike = anomaly(&api, AnomalyKind::CpuSpike, T0);
    let thrash = anomaly(&web, AnomalyKind::ScalingThrash, T0);
    assert_eq!(
        recorder.changes(&[spike.clone(), thrash.clone()]),
        vec![spike.clone(), thrash.clone()]
    );
    // Still holding, nothing new: nothing to write.
    let t1 = T0 + MINUTE;
    assert!(
        recorder
            .changes(&[seen(spike.clone(), t1), seen(thrash.clone(), t1)])
            .is_empty()
    );
    // A severity change is written; so is an end.
    let t2 = T0 + 2 * MINUTE;
    let mut critical = seen(spike.clone(), t2);
    critical.severity = Severity::Critical;
    let thrash_over = ended(thrash.clone(), t2);
    assert_eq!(
        recorder.changes(&[critical.clone(), thrash_over.clone()]),
        vec![critical.clone(), thrash_over]
    );
    let t3 = T0 + 3 * MINUTE;
    assert!(recorder.changes(&[seen(critical.clone(), t3)]).is_empty());
    // Gone without an end (its deployment went away): closed at its last sighting.
    assert_eq!(recorder.changes(&[]), vec![ended(critical, t3)]);
    assert!(recorder.changes(&[]).is_empty());
}

#[test]
fn the_memory_history_is_bounded_and_queried_like_the_store() {
    let api = key("shop", "api");
    let mut log = MemoryLog::new(3);
    for i in 0..5 {
        log.put(&[anomaly(&api, AnomalyKind::CpuSpike, T0 + i * MINUTE)]);
    }
    assert_eq!(log.len(), 3);
    let starts: Vec<i64> = log
        .query(&all())
        .iter()
        .map(|a| (a.started_at - T0) / MINUTE)
        .collect();
    assert_eq!(starts, [4, 3, 2], "the oldest went first");
    // Writing the same identity replaces it.
    log.put(&[ended(
        anomaly(&api, AnomalyKind::CpuSpike, T0 + 4 * MINUTE),
        T0 + 6 * MINUTE,
    )]);
    assert_eq!(log.len(), 3);
    let since = AnomalyQuery {
        since: Some(T0 + 7 * MINUTE),
        ..all()
    };
    assert_eq!(log.query(&since).len(), 2, "the ended one is before since");

    // Through the writer: the memory history takes the writes at once.
    let history = AnomalyHistory::in_memory();
    let mut writer = AnomalyWriter::new(history.clone());
    writer.observe(&[anomaly(&api, AnomalyKind::Learned, T0)]);
    writer.observe(&[seen(anomaly(&api, AnomalyKind::Learned, T0), T0 + MINUTE)]);
    let AnomalyHistory::Memory(log) = &history else {
        unreachable!()
    };
    let held = log.lock().unwrap().query(&all());
    assert_eq!(held, vec![anomaly(&api, AnomalyKind::Learned, T0)]);
}
