//! Two `serve` replicas competing for one Lease on the stand-in Kubernetes API (the fake apiserver answers the
//! Lease calls `kube-lease-manager` makes: get, create, strategic-merge patch and server-side apply with its
//! conflict on `spec.holderIdentity`; there is no kube-apiserver on these machines). Both serve reads; exactly
//! one leads (`smart_autoscaler_leader` 1), the other takes over after a `kill -9` of the leader, and a leader cut
//! off from the API server stops leading before its lease could pass to another.

mod common;

use std::time::{Duration, Instant};

use common::fake_apiserver;
use common::serve::Serve;

/// A port nothing listens on: these replicas have no Prometheus, which leader election does not need.
const NO_PROMETHEUS: &str = "http://127.0.0.1:9";

async fn leads(http: &reqwest::Client, serve: &Serve) -> Option<bool> {
    let text = http
        .get(serve.metrics_url("/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    common::sample(&text, "smart_autoscaler_leader").map(|v| v == 1.0)
}

fn replica(api: &fake_apiserver::Harness, identity: &str) -> Serve {
    Serve::start(
        NO_PROMETHEUS,
        &api.kubeconfig,
        &[
            "--leader-election-identity",
            identity,
            "--leader-election-duration",
            "4",
            "--leader-election-grace",
            "2",
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_leads_and_the_other_takes_over() {
    let api = fake_apiserver::start(vec![]).await;
    api.release.send(true).unwrap();
    let http = reqwest::Client::new();
    let mut a = replica(&api, "replica-a");
    let mut b = replica(&api, "replica-b");

    // Within 15 s one leads; over the next 6 s (more than a lease) never both, never neither once one led.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (la, lb) = (leads(&http, &a).await, leads(&http, &b).await);
        if la == Some(true) || lb == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "nobody leads: a={la:?} b={lb:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let watch_until = Instant::now() + Duration::from_secs(6);
    let mut leader_is_a = None;
    while Instant::now() < watch_until {
        let (la, lb) = (leads(&http, &a).await, leads(&http, &b).await);
        assert!(
            !(la == Some(true) && lb == Some(true)),
            "both lead: a={la:?} b={lb:?}"
        );
        if let Some(now_a) = la
            .filter(|l| *l)
            .map(|_| true)
            .or(lb.filter(|l| *l).map(|_| false))
        {
            assert!(
                leader_is_a.is_none_or(|was| was == now_a),
                "leadership moved while both were up"
            );
            leader_is_a = Some(now_a);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader_is_a = leader_is_a.expect("a leader");
    let lease = api
        .api
        .leases
        .lock()
        .unwrap()
        .values()
        .next()
        .map(|l| l.object["spec"]["holderIdentity"].clone())
        .expect("the lease exists");
    let holder = if leader_is_a {
        "replica-a"
    } else {
        "replica-b"
    };
    assert_eq!(lease, holder);

    // kill -9 of the leader: no release, so the other takes over after the 4 s lease expires.
    let killed = Instant::now();
    let follower = if leader_is_a {
        a.kill();
        &b
    } else {
        b.kill();
        &a
    };
    let deadline = killed + Duration::from_secs(15);
    while leads(&http, follower).await != Some(true) {
        assert!(Instant::now() < deadline, "no takeover within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let takeover = killed.elapsed();
    eprintln!("takeover after kill -9: {takeover:?}");
    assert!(
        takeover >= Duration::from_secs(2),
        "took over before the lease could expire: {takeover:?}"
    );

    // The API server hangs: the new leader cannot confirm its lease and stops leading within the 4 s lease.
    api.pause.send(true).unwrap();
    let paused = Instant::now();
    let deadline = paused + Duration::from_secs(4);
    while leads(&http, follower).await != Some(false) {
        assert!(
            Instant::now() < deadline,
            "still leading {:?} after the API server went silent",
            paused.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "side effects off {:?} after the API server went silent",
        paused.elapsed()
    );
    api.pause.send(false).unwrap();
}
