//! Leader election on a Kubernetes `Lease` (coordination.k8s.io/v1), so that of several replicas serving reads
//! only one performs side effects (alert delivery today; reports, Events and tuned targets as they come).
//!
//! Acquisition and renewal are `kube-lease-manager`'s (server-side apply, so two candidates cannot both take a
//! free lease). Its view alone is not enough to stop side effects in time: while the API server does not answer,
//! it keeps reporting the leadership it last saw. So leadership here also needs a fresh confirmation: every
//! `check` interval the lease is read, and leadership holds only while a read within the last
//! `duration - grace` showed this identity holding an unexpired lease. A leader cut off from the API server thus
//! stops its side effects before its lease can expire and another replica take over.

use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Leader election flags of `serve`.
#[derive(Debug, Clone, Args)]
pub struct LeaderArgs {
    /// Turn leader election off: this replica then performs every side effect (alerts) itself. Only for a
    /// single replica; two replicas without it would both send every alert.
    #[arg(long, env = "SMART_AUTOSCALER_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,

    /// Namespace of the Lease; default the pod's own namespace (`POD_NAMESPACE`, set by the manifests from the
    /// downward API), else `smart-autoscaler`.
    #[arg(long, env = "SMART_AUTOSCALER_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the Lease the replicas compete for.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_LEADER_ELECTION_LEASE",
        default_value = "smart-autoscaler"
    )]
    pub leader_election_lease: String,

    /// This replica's identity in the Lease; default the pod name (`POD_NAME`), else the host name.
    #[arg(long, env = "SMART_AUTOSCALER_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,

    /// How long a lease holds without renewal (seconds): after a leader dies, another replica takes over within
    /// about this long.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_LEADER_ELECTION_DURATION",
        default_value_t = 15
    )]
    pub leader_election_duration: u64,

    /// Seconds before expiry the leader renews, and by which it stops its side effects first when it cannot
    /// confirm its lease. Below --leader-election-duration.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_LEADER_ELECTION_GRACE",
        default_value_t = 5
    )]
    pub leader_election_grace: u64,
}

/// Checked leader election settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderSettings {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub lease: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration.
    pub duration: Duration,
    /// Renewal grace.
    pub grace: Duration,
}

/// A leader election flag that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LeaderSettingsError {
    /// Grace not below duration, or either zero.
    #[error(
        "invalid --leader-election-grace: {grace} s must be above 0 and below --leader-election-duration ({duration} s)"
    )]
    Grace {
        /// The grace given.
        grace: u64,
        /// The duration given.
        duration: u64,
    },
    /// No identity could be found.
    #[error(
        "invalid --leader-election-identity: none given, POD_NAME is unset and the host name is unknown; set it"
    )]
    Identity,
}

impl LeaderArgs {
    /// The checked settings, or `None` with `--no-leader-election`.
    pub fn settings(&self) -> Result<Option<LeaderSettings>, LeaderSettingsError> {
        if self.no_leader_election {
            return Ok(None);
        }
        let (duration, grace) = (self.leader_election_duration, self.leader_election_grace);
        if duration == 0 || grace == 0 || grace >= duration {
            return Err(LeaderSettingsError::Grace { grace, duration });
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let identity = self
            .leader_election_identity
            .clone()
            .or_else(|| env("POD_NAME"))
            .or_else(|| env("HOSTNAME"))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .ok_or(LeaderSettingsError::Identity)?;
        Ok(Some(LeaderSettings {
            namespace: self
                .leader_election_namespace
                .clone()
                .or_else(|| env("POD_NAMESPACE"))
                .unwrap_or_else(|| "smart-autoscaler".to_string()),
            lease: self.leader_election_lease.clone(),
            identity,
            duration: Duration::from_secs(duration),
            grace: Duration::from_secs(grace),
        }))
    }
}

/// Whether this replica may perform side effects now.
pub type Leadership = watch::Receiver<bool>;

/// Leadership for a replica that runs alone (`demo`, `--no-leader-election`): always the leader.
pub fn always() -> Leadership {
    let (tx, rx) = watch::channel(true);
    // The receiver keeps the value after the sender is gone.
    drop(tx);
    rx
}

/// Competes for the lease until `cancel`, then releases it if held. Returns at once; leadership starts false.
/// The returned task ends once the lease is released (await it, bounded, before exiting so the next leader need
/// not wait for expiry).
pub fn spawn(
    client: Client,
    settings: LeaderSettings,
    cancel: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(client, settings, tx, cancel));
    (rx, task)
}

async fn run(
    client: Client,
    settings: LeaderSettings,
    tx: watch::Sender<bool>,
    cancel: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    // The manager creates the lease when it is missing; retried until the API server answers.
    let mut wait = Duration::from_millis(500);
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &settings.lease)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration.as_secs())
            .with_grace(settings.grace.as_secs())
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    lease = %format!("{}/{}", settings.namespace, settings.lease),
                    retry_in = ?wait,
                    "leader election: cannot reach the lease; this replica performs no side effects"
                );
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(settings.grace);
            }
        }
    };
    let (claimed, manager_task) = manager.watch().await;
    let check = (settings.grace / 2).max(Duration::from_millis(500));
    let confirm_window = settings.duration - settings.grace;
    let mut confirmed_at: Option<Instant> = None;
    let mut ticker = tokio::time::interval(check);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let read = tokio::time::timeout(check, leases.get(&settings.lease)).await;
        match read {
            Ok(Ok(lease)) if holds(&lease, &settings.identity, SystemTime::now()) => {
                confirmed_at = Some(Instant::now());
            }
            Ok(Ok(_)) => confirmed_at = None,
            // Unanswered: the last confirmation ages out below.
            Ok(Err(_)) | Err(_) => {}
        }
        let leader =
            *claimed.borrow() && confirmed_at.is_some_and(|t| t.elapsed() < confirm_window);
        tx.send_if_modified(|was| {
            if *was == leader {
                return false;
            }
            if leader {
                tracing::info!(identity = %settings.identity, lease = %settings.lease, "leader election: this replica leads; side effects on");
            } else {
                tracing::warn!(identity = %settings.identity, lease = %settings.lease, "leader election: this replica does not lead (lost, or not confirmed); side effects off");
            }
            *was = leader;
            true
        });
    }
    tx.send_replace(false);
    // Dropping the manager's receiver makes it release the lease and end.
    drop(claimed);
    match tokio::time::timeout(Duration::from_secs(3), manager_task).await {
        Ok(Ok(Ok(_))) => tracing::info!(lease = %settings.lease, "leader election: lease released"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "leader election: releasing the lease failed"),
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(
                "leader election: the lease was not released within 3 s; it expires instead"
            )
        }
    }
}

/// Whether `lease` shows `identity` holding it unexpired at `now`.
fn holds(lease: &Lease, identity: &str, now: SystemTime) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return false;
    }
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return false;
    };
    let renewed: SystemTime = renewed.0.into();
    renewed + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)) > now
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: SystemTime, seconds: i32) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: Some(MicroTime(renewed.try_into().unwrap())),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn holds_only_its_own_unexpired_lease() {
        let now = SystemTime::now();
        let ago = |s| now - Duration::from_secs(s);
        assert!(holds(&lease(Some("a"), ago(5), 15), "a", now));
        assert!(!holds(&lease(Some("a"), ago(16), 15), "a", now));
        assert!(!holds(&lease(Some("b"), ago(5), 15), "a", now));
        assert!(!holds(&lease(None, ago(5), 15), "a", now));
        assert!(!holds(&Lease::default(), "a", now));
    }

    fn args(line: &[&str]) -> LeaderArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            leader: LeaderArgs,
        }
        use clap::Parser;
        Cli::try_parse_from([&["x"], line].concat()).unwrap().leader
    }

    #[test]
    fn settings_check_grace_and_find_an_identity() {
        let s = args(&[
            "--leader-election-identity",
            "pod-a",
            "--leader-election-namespace",
            "ops",
        ])
        .settings()
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.identity.as_str(), s.namespace.as_str()),
            ("pod-a", "ops")
        );
        assert_eq!(
            (s.duration, s.grace),
            (Duration::from_secs(15), Duration::from_secs(5))
        );
        assert_eq!(args(&["--no-leader-election"]).settings().unwrap(), None);
        let err = args(&[
            "--leader-election-duration",
            "5",
            "--leader-election-grace",
            "5",
        ])
        .settings()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --leader-election-grace: 5 s must be above 0 and below --leader-election-duration (5 s)"
        );
    }
}
