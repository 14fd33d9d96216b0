//! Scaling schedules: from a deployment's demand history, the `minReplicas` each hour of the week reliably needs,
//! and that floor written out as a table, as a KEDA `ScaledObject` with cron triggers, or as CronJobs that patch
//! the HPA. A floor makes capacity wait for nobody at a predictable rise; the HPA (fed the smart metric) still
//! scales above it.
//!
//! The floor of an hour is the demand that came in that hour *every* time it was seen, not the mean: a low
//! quantile of the hour's daily peaks (the minimum until there are six of them). A floor set from a mean would
//! hold pods on a quiet Monday because most Mondays are busy; the HPA covers that difference in minutes, while
//! a floor above the need is paid every week.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::forecast::Calendar;
use crate::model::UnixMillis;

/// Hours in a week; hour-of-week 0 is Monday 00:00 local time.
pub const HOURS_PER_WEEK: usize = 168;
const HOUR_MILLIS: i64 = 3_600_000;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Settings of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// Business time zone as an offset from UTC, minutes: the table's hours and days are local.
    pub utc_offset_minutes: i32,
    /// Quantile (0-1) of an hour's daily peaks taken as its floor.
    pub quantile: f64,
    /// Share (0-1) of an hour's expected points that must be present for that day's hour to count.
    pub min_coverage: f64,
    /// Days with data below which there is no schedule.
    pub min_days: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            utc_offset_minutes: 0,
            quantile: 0.2,
            min_coverage: 0.5,
            min_days: 2,
        }
    }
}

/// Why there is no schedule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// Too little history.
    #[error(
        "not enough data: {days} day(s) with usable history, a schedule needs at least {needed} (history is kept \
         as five-minute rollups; it grows by itself)"
    )]
    NotEnoughData {
        /// Days with at least one usable hour.
        days: usize,
        /// Days needed.
        needed: usize,
    },
    /// A setting out of range.
    #[error("invalid schedule setting: {0}")]
    Invalid(String),
}

/// Which cell an hour's level comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The same hour on the same day of the week, seen at least twice.
    DayOfWeek,
    /// The same hour on days of the same type (weekdays or weekend days), seen at least twice.
    DayType,
}

/// The recurring demand of one hour of the week.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Level {
    /// Demand, in percent-pods (CPU utilization percent of request × pods).
    pub demand: f64,
    /// Daily peaks it was taken from.
    pub observations: usize,
    /// Where they came from.
    pub basis: Basis,
}

/// The recurring demand of each hour of the week, learned from history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeeklyLevels {
    /// Per hour of the week (0 = Monday 00:00 local): its level, or `None` when never seen twice.
    pub levels: Vec<Option<Level>>,
    /// Days with usable history.
    pub days: usize,
    /// First and last point used.
    pub from: UnixMillis,
    /// Last point used.
    pub to: UnixMillis,
    /// Offset of the local time zone, minutes.
    pub utc_offset_minutes: i32,
}

/// Learns [`WeeklyLevels`] from demand points `(time, percent-pods)` spaced `step_millis` apart (gaps allowed;
/// non-finite or negative values are gaps).
pub fn weekly_levels(
    points: &[(UnixMillis, f64)],
    step_millis: i64,
    config: &ScheduleConfig,
) -> Result<WeeklyLevels, ScheduleError> {
    if !(0.0..=1.0).contains(&config.quantile) || !(0.0..=1.0).contains(&config.min_coverage) {
        return Err(ScheduleError::Invalid(
            "quantile and min_coverage must be within 0-1".into(),
        ));
    }
    if step_millis <= 0 || step_millis > HOUR_MILLIS {
        return Err(ScheduleError::Invalid(format!(
            "step {step_millis} ms must be within 1 ms and an hour"
        )));
    }
    let offset = i64::from(config.utc_offset_minutes) * 60_000;
    // (local day number, hour) -> (peak, points).
    let mut hours: BTreeMap<(i64, u8), (f64, usize)> = BTreeMap::new();
    let (mut from, mut to) = (i64::MAX, i64::MIN);
    for &(t, v) in points {
        if !v.is_finite() || v < 0.0 {
            continue;
        }
        let day = (t + offset).div_euclid(86_400_000);
        let hour = Calendar::of(t, config.utc_offset_minutes).hour();
        let cell = hours.entry((day, hour)).or_insert((0.0, 0));
        cell.0 = cell.0.max(v);
        cell.1 += 1;
        from = from.min(t);
        to = to.max(t);
    }
    let expected = (HOUR_MILLIS / step_millis) as f64;
    let needed = (expected * config.min_coverage).ceil().max(1.0) as usize;
    hours.retain(|_, (_, n)| *n >= needed);
    let days = {
        let mut d: Vec<i64> = hours.keys().map(|(day, _)| *day).collect();
        d.dedup();
        d.len()
    };
    if days < config.min_days {
        return Err(ScheduleError::NotEnoughData {
            days,
            needed: config.min_days,
        });
    }
    // Peaks by (day of week, hour) and by (weekend?, hour).
    let mut by_dow: BTreeMap<(u8, u8), Vec<f64>> = BTreeMap::new();
    let mut by_type: BTreeMap<(bool, u8), Vec<f64>> = BTreeMap::new();
    for (&(day, hour), &(peak, _)) in &hours {
        let dow = (day + 3).rem_euclid(7) as u8;
        by_dow.entry((dow, hour)).or_default().push(peak);
        by_type.entry((dow >= 5, hour)).or_default().push(peak);
    }
    let levels = (0..HOURS_PER_WEEK)
        .map(|how| {
            let (dow, hour) = ((how / 24) as u8, (how % 24) as u8);
            let (peaks, basis) = match by_dow.get(&(dow, hour)) {
                Some(p) if p.len() >= 2 => (p, Basis::DayOfWeek),
                _ => match by_type.get(&(dow >= 5, hour)) {
                    Some(p) if p.len() >= 2 => (p, Basis::DayType),
                    _ => return None,
                },
            };
            Some(Level {
                demand: lower_quantile(peaks, config.quantile),
                observations: peaks.len(),
                basis,
            })
        })
        .collect();
    Ok(WeeklyLevels {
        levels,
        days,
        from,
        to,
        utc_offset_minutes: config.utc_offset_minutes,
    })
}

/// The nearest-rank quantile rounded down: with few observations it is their minimum, so one busy day does not
/// make a floor.
fn lower_quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = (q * (v.len() - 1) as f64).floor() as usize;
    v[i.min(v.len() - 1)]
}

/// The HPA bounds and target a schedule is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// The HPA's target for the metric, percent.
    pub target_percent: f64,
    /// The HPA's own `minReplicas`: the floor outside the schedule.
    pub min_replicas: u32,
    /// The HPA's `maxReplicas`, when known: no floor goes above it.
    pub max_replicas: Option<u32>,
    /// Minutes before an hour that a higher floor starts, so pods are Ready when the demand comes.
    pub lead_minutes: u32,
}

/// One hour of the week in a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HourFloor {
    /// Hour of the week, 0 = Monday 00:00 local.
    pub hour_of_week: usize,
    /// Recommended minReplicas.
    pub replicas: u32,
    /// The level it comes from (`None`: no history for this hour, the HPA's own minimum).
    pub level: Option<Level>,
}

/// A run of hours with the same floor, above the HPA's own minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First hour of the week (local).
    pub start_hour: usize,
    /// Hours it lasts (it may wrap past Sunday midnight).
    pub hours: usize,
    /// minReplicas during it.
    pub replicas: u32,
}

/// A recommended minReplicas per hour of the week.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// What it was computed for.
    pub bounds: Bounds,
    /// Every hour of the week.
    pub hours: Vec<HourFloor>,
    /// The runs above `bounds.min_replicas`, in week order.
    pub windows: Vec<Window>,
    /// Days of history it was learned from.
    pub days: usize,
    /// Offset of the local time zone, minutes.
    pub utc_offset_minutes: i32,
}

/// The schedule for `bounds`: per hour, enough replicas to hold the hour's recurring demand at the target.
pub fn schedule(levels: &WeeklyLevels, bounds: Bounds) -> Result<Schedule, ScheduleError> {
    if !(bounds.target_percent.is_finite() && bounds.target_percent > 0.0) {
        return Err(ScheduleError::Invalid(format!(
            "target {} must be a positive percentage",
            bounds.target_percent
        )));
    }
    if bounds.min_replicas == 0 || bounds.max_replicas.is_some_and(|m| m < bounds.min_replicas) {
        return Err(ScheduleError::Invalid(format!(
            "min replicas {} must be at least 1 and at most max replicas {}",
            bounds.min_replicas,
            bounds
                .max_replicas
                .map_or("(none)".into(), |m| m.to_string())
        )));
    }
    if bounds.lead_minutes > 120 {
        return Err(ScheduleError::Invalid(format!(
            "lead {} minutes is over the 120 a schedule allows",
            bounds.lead_minutes
        )));
    }
    let hours: Vec<HourFloor> = levels
        .levels
        .iter()
        .enumerate()
        .map(|(how, level)| {
            let needed = level.map_or(0.0, |l| (l.demand / bounds.target_percent - 1e-9).ceil());
            let mut replicas = (needed.max(0.0) as u32).max(bounds.min_replicas);
            if let Some(max) = bounds.max_replicas {
                replicas = replicas.min(max);
            }
            HourFloor {
                hour_of_week: how,
                replicas,
                level: *level,
            }
        })
        .collect();
    Ok(Schedule {
        windows: windows(&hours, bounds.min_replicas),
        hours,
        bounds,
        days: levels.days,
        utc_offset_minutes: levels.utc_offset_minutes,
    })
}

/// Runs of equal floors above `min`, joined across Sunday midnight.
fn windows(hours: &[HourFloor], min: u32) -> Vec<Window> {
    let n = hours.len();
    if hours.iter().all(|h| h.replicas == hours[0].replicas) {
        return if hours[0].replicas > min {
            vec![Window {
                start_hour: 0,
                hours: n,
                replicas: hours[0].replicas,
            }]
        } else {
            Vec::new()
        };
    }
    // Start at a change so no run is cut at hour 0.
    let first = (0..n)
        .find(|&i| hours[i].replicas != hours[(i + n - 1) % n].replicas)
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let start = (first + i) % n;
        let replicas = hours[start].replicas;
        let mut len = 1;
        while i + len < n && hours[(first + i + len) % n].replicas == replicas {
            len += 1;
        }
        if replicas > min {
            out.push(Window {
                start_hour: start,
                hours: len,
                replicas,
            });
        }
        i += len;
    }
    out.sort_by_key(|w| w.start_hour);
    out
}

impl Schedule {
    /// The floor at time `t`.
    pub fn replicas_at(&self, t: UnixMillis) -> u32 {
        let c = Calendar::of(t, self.utc_offset_minutes);
        self.hours[usize::from(c.day_of_week) * 24 + usize::from(c.hour())].replicas
    }

    /// The floor in force at `t` as the exports apply it: a rise `lead_minutes` early, a fall on the hour.
    pub fn floor_at(&self, t: UnixMillis) -> u32 {
        let lead = i64::from(self.bounds.lead_minutes) * 60_000;
        self.replicas_at(t).max(self.replicas_at(t + lead))
    }

    /// Replica-hours per week the floors hold above the HPA's own minimum (an upper bound on what the schedule
    /// can add to the bill: the HPA would often have run those pods anyway).
    pub fn extra_replica_hours(&self) -> u64 {
        self.hours
            .iter()
            .map(|h| u64::from(h.replicas - self.bounds.min_replicas))
            .sum()
    }

    /// A 7 × 24 table of floors, local time, a row per day.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# minReplicas per hour (local time, UTC{:+03}:{:02}); target {}%, HPA minReplicas {}, {} day(s) \
             of history; '.' = the HPA's minimum",
            self.utc_offset_minutes / 60,
            (self.utc_offset_minutes % 60).abs(),
            trim(self.bounds.target_percent),
            self.bounds.min_replicas,
            self.days
        );
        let _ = write!(s, "day ");
        for h in 0..24 {
            let _ = write!(s, "{h:>4}");
        }
        s.push('\n');
        for (d, name) in DAY_NAMES.iter().enumerate() {
            let _ = write!(s, "{name} ");
            for h in 0..24 {
                let r = self.hours[d * 24 + h].replicas;
                if r > self.bounds.min_replicas {
                    let _ = write!(s, "{r:>4}");
                } else {
                    let _ = write!(s, "{:>4}", ".");
                }
            }
            s.push('\n');
        }
        s
    }

    /// Cron entries (UTC) for the windows: for each, when it starts (lead included) and ends, grouped across days
    /// that share the same times and floor.
    pub fn cron_windows(&self) -> Vec<CronWindow> {
        let week = (HOURS_PER_WEEK * 60) as i64;
        let to_utc = |local_minute: i64| {
            (local_minute - i64::from(self.utc_offset_minutes)).rem_euclid(week)
        };
        // (start minute of day, end minute of day, days from start to end, replicas) -> start days.
        let mut groups: BTreeMap<(i64, i64, i64, u32), Vec<u8>> = BTreeMap::new();
        for w in &self.windows {
            let start = to_utc(w.start_hour as i64 * 60 - i64::from(self.bounds.lead_minutes));
            let end = to_utc((w.start_hour + w.hours) as i64 * 60);
            let span_days = (end.div_euclid(1440) - start.div_euclid(1440)).rem_euclid(7);
            groups
                .entry((start % 1440, end % 1440, span_days, w.replicas))
                .or_default()
                .push((start / 1440) as u8);
        }
        groups
            .into_iter()
            .map(|((start, end, span, replicas), days)| {
                let end_days: Vec<u8> = days
                    .iter()
                    .map(|d| ((i64::from(*d) + span) % 7) as u8)
                    .collect();
                CronWindow {
                    start: cron(start, &days),
                    end: cron(end, &end_days),
                    replicas,
                }
            })
            .collect()
    }

    /// A KEDA `ScaledObject` for `deployment`: one cron trigger per window group, and the smart metric (read from
    /// Prometheus, where the server exports it) as the scaling trigger, so KEDA's HPA keeps what the HPA had.
    pub fn keda_scaled_object(&self, namespace: &str, deployment: &str, prometheus: &str) -> Value {
        let mut triggers: Vec<Value> = self
            .cron_windows()
            .into_iter()
            .map(|c| {
                json!({
                    "type": "cron",
                    "metadata": {
                        "timezone": "Etc/UTC",
                        "start": c.start,
                        "end": c.end,
                        "desiredReplicas": c.replicas.to_string(),
                    }
                })
            })
            .collect();
        triggers.push(json!({
            "type": "prometheus",
            "metricType": "Value",
            "metadata": {
                "serverAddress": prometheus,
                "query": format!(
                    "max(smart_autoscaler_deployment_served_percent{{namespace=\"{namespace}\",deployment=\"{deployment}\"}})"
                ),
                "threshold": trim(self.bounds.target_percent),
            }
        }));
        let mut spec = json!({
            "scaleTargetRef": {"name": deployment},
            "minReplicaCount": self.bounds.min_replicas,
            "triggers": triggers,
        });
        if let Some(max) = self.bounds.max_replicas {
            spec["maxReplicaCount"] = json!(max);
        }
        json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": format!("{deployment}-schedule"),
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "smart-autoscaler"},
            },
            "spec": spec,
        })
    }

    /// Plain Kubernetes objects that apply the schedule to an existing HPA: a ServiceAccount allowed to patch
    /// that one HPA, and one CronJob per change of floor (grouped across days), each setting `minReplicas`.
    pub fn cronjobs(&self, namespace: &str, hpa: &str, image: &str) -> Vec<Value> {
        let account = format!("{hpa}-schedule");
        let labels = json!({"app.kubernetes.io/managed-by": "smart-autoscaler", "smart-autoscaler.io/schedule-for": hpa});
        let mut objects = vec![
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": namespace, "labels": labels},
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": account, "namespace": namespace, "labels": labels},
                "rules": [{
                    "apiGroups": ["autoscaling"],
                    "resources": ["horizontalpodautoscalers"],
                    "resourceNames": [hpa],
                    "verbs": ["get", "patch"],
                }],
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": account, "namespace": namespace, "labels": labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            }),
        ];
        for (i, change) in self.changes().into_iter().enumerate() {
            let patch = format!("{{\"spec\":{{\"minReplicas\":{}}}}}", change.replicas);
            objects.push(json!({
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {
                    "name": format!("{hpa}-min-{}-{}", change.replicas, i),
                    "namespace": namespace,
                    "labels": labels,
                },
                "spec": {
                    "schedule": change.cron,
                    "timeZone": "Etc/UTC",
                    "concurrencyPolicy": "Replace",
                    "startingDeadlineSeconds": 300,
                    "successfulJobsHistoryLimit": 1,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": {
                        "backoffLimit": 3,
                        "activeDeadlineSeconds": 240,
                        "template": {"spec": {
                            "serviceAccountName": account,
                            "restartPolicy": "OnFailure",
                            "containers": [{
                                "name": "kubectl",
                                "image": image,
                                "args": ["patch", "horizontalpodautoscaler", hpa, "--namespace", namespace,
                                         "--type", "merge", "--patch", patch],
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "runAsNonRoot": true,
                                    "runAsUser": 65532,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }],
                        }},
                    }},
                },
            }));
        }
        objects
    }

    /// Every change of floor in the week as a cron time (UTC; rises moved earlier by the lead), grouped across
    /// days that change to the same floor at the same time.
    pub fn changes(&self) -> Vec<Change> {
        let n = self.hours.len();
        if self.windows.is_empty()
            && self
                .hours
                .iter()
                .all(|h| h.replicas == self.bounds.min_replicas)
        {
            return Vec::new();
        }
        let week = (HOURS_PER_WEEK * 60) as i64;
        let mut groups: BTreeMap<(i64, u32), Vec<u8>> = BTreeMap::new();
        for i in 0..n {
            let (before, now) = (self.hours[(i + n - 1) % n].replicas, self.hours[i].replicas);
            if before == now {
                continue;
            }
            let lead = if now > before {
                i64::from(self.bounds.lead_minutes)
            } else {
                0
            };
            let utc = (i as i64 * 60 - lead - i64::from(self.utc_offset_minutes)).rem_euclid(week);
            groups
                .entry((utc % 1440, now))
                .or_default()
                .push((utc / 1440) as u8);
        }
        groups
            .into_iter()
            .map(|((minute, replicas), days)| Change {
                cron: cron(minute, &days),
                replicas,
            })
            .collect()
    }
}

/// A cron trigger's times (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronWindow {
    /// When the floor starts.
    pub start: String,
    /// When it ends.
    pub end: String,
    /// The floor.
    pub replicas: u32,
}

/// A change of floor at a cron time (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// When.
    pub cron: String,
    /// The new minReplicas.
    pub replicas: u32,
}

/// A cron expression at `minute` of the day on `days` (0 = Monday; cron counts 0 = Sunday).
fn cron(minute: i64, days: &[u8]) -> String {
    let mut cron_days: Vec<u8> = days.iter().map(|d| (d + 1) % 7).collect();
    cron_days.sort_unstable();
    cron_days.dedup();
    format!(
        "{} {} * * {}",
        minute % 60,
        minute / 60,
        day_list(&cron_days)
    )
}

/// `1,2,3,4,5` as `1-5`; all seven as `*`.
fn day_list(days: &[u8]) -> String {
    if days.len() == 7 {
        return "*".into();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut j = i;
        while j + 1 < days.len() && days[j + 1] == days[j] + 1 {
            j += 1;
        }
        parts.push(if j >= i + 2 {
            format!("{}-{}", days[i], days[j])
        } else {
            (i..=j)
                .map(|k| days[k].to_string())
                .collect::<Vec<_>>()
                .join(",")
        });
        i = j + 1;
    }
    parts.join(",")
}

/// A percentage without a trailing `.0`.
fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 5 * 60_000;
    /// Monday 2026-11-30 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800_000;

    /// `weeks` of five-minute points: `busy` percent-pods on weekdays 09:00-17:00 local, `quiet` otherwise.
    fn office(weeks: i64, busy: f64, quiet: f64, offset_minutes: i32) -> Vec<(UnixMillis, f64)> {
        let offset = i64::from(offset_minutes) * 60_000;
        (0..weeks * 7 * 288)
            .map(|i| {
                let t = MONDAY - offset + i * STEP;
                let c = Calendar::of(t, offset_minutes);
                let work = !c.is_weekend() && (9..17).contains(&c.hour());
                (t, if work { busy } else { quiet })
            })
            .collect()
    }

    fn bounds(target: f64, min: u32) -> Bounds {
        Bounds {
            target_percent: target,
            min_replicas: min,
            max_replicas: None,
            lead_minutes: 10,
        }
    }

    #[test]
    fn the_test_week_starts_on_a_monday() {
        assert_eq!(Calendar::of(MONDAY, 0).day_of_week, 0);
        assert_eq!(Calendar::of(MONDAY, 0).minute_of_day, 0);
    }

    #[test]
    fn office_hours_get_a_floor_of_demand_over_target() {
        // 420 percent-pods at a 70% target need 6 pods; 70 need 1.
        let levels =
            weekly_levels(&office(2, 420.0, 70.0, 0), STEP, &ScheduleConfig::default()).unwrap();
        assert_eq!(levels.days, 14);
        let s = schedule(&levels, bounds(70.0, 2)).unwrap();
        assert_eq!(s.hours[9].replicas, 6, "Monday 09:00");
        assert_eq!(s.hours[16].replicas, 6, "Monday 16:00");
        assert_eq!(
            s.hours[17].replicas, 2,
            "Monday 17:00 back to the HPA's minimum"
        );
        assert_eq!(s.hours[5 * 24 + 10].replicas, 2, "Saturday");
        assert_eq!(s.windows.len(), 5);
        assert_eq!(
            s.windows[0],
            Window {
                start_hour: 9,
                hours: 8,
                replicas: 6
            }
        );
        assert_eq!(s.extra_replica_hours(), 5 * 8 * 4);
        assert_eq!(s.hours[9].level.unwrap().basis, Basis::DayOfWeek);
        // One trigger for the five weekdays: from 08:50 to 17:00.
        assert_eq!(
            s.cron_windows(),
            vec![CronWindow {
                start: "50 8 * * 1-5".into(),
                end: "0 17 * * 1-5".into(),
                replicas: 6
            }]
        );
        assert_eq!(
            s.changes(),
            vec![
                Change {
                    cron: "50 8 * * 1-5".into(),
                    replicas: 6
                },
                Change {
                    cron: "0 17 * * 1-5".into(),
                    replicas: 2
                },
            ]
        );
        assert!(
            s.table()
                .lines()
                .nth(2)
                .unwrap()
                .starts_with("Mon    .   .   .   .   .   .   .   .   .   6")
        );
    }

    #[test]
    fn local_hours_become_utc_cron_times() {
        // UTC+01:00: 09:00 local is 08:00 UTC, so the rise (10 minutes early) is at 07:50 UTC.
        let levels = weekly_levels(
            &office(2, 420.0, 70.0, 60),
            STEP,
            &ScheduleConfig {
                utc_offset_minutes: 60,
                ..ScheduleConfig::default()
            },
        )
        .unwrap();
        let s = schedule(&levels, bounds(70.0, 1)).unwrap();
        assert_eq!(s.hours[9].replicas, 6);
        assert_eq!(s.cron_windows()[0].start, "50 7 * * 1-5");
        assert_eq!(s.cron_windows()[0].end, "0 16 * * 1-5");
        assert_eq!(
            s.replicas_at(MONDAY + 8 * HOUR_MILLIS + 30 * 60_000),
            6,
            "08:30 UTC is 09:30 local"
        );
        let seven_fifty_five = MONDAY + 7 * HOUR_MILLIS + 55 * 60_000;
        assert_eq!(s.replicas_at(seven_fifty_five), 1);
        assert_eq!(
            s.floor_at(seven_fifty_five),
            6,
            "the rise starts 10 minutes early"
        );
        assert_eq!(
            s.floor_at(MONDAY + 16 * HOUR_MILLIS + 5 * 60_000),
            1,
            "and the fall is on the hour (17:00 local)"
        );
    }

    #[test]
    fn a_rise_near_midnight_utc_moves_to_the_previous_day() {
        // Busy from 00:00 local on weekdays (UTC offset 0), lead 10 minutes: the trigger starts 23:50 the day before.
        let points: Vec<(UnixMillis, f64)> = (0..14 * 288)
            .map(|i| {
                let t = MONDAY + i * STEP;
                let c = Calendar::of(t, 0);
                (
                    t,
                    if !c.is_weekend() && c.hour() < 2 {
                        300.0
                    } else {
                        10.0
                    },
                )
            })
            .collect();
        let s = schedule(
            &weekly_levels(&points, STEP, &ScheduleConfig::default()).unwrap(),
            bounds(100.0, 1),
        )
        .unwrap();
        let c = s.cron_windows();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].start, "50 23 * * 0-4", "Sunday to Thursday 23:50");
        assert_eq!(c[0].end, "0 2 * * 1-5");
        assert_eq!(c[0].replicas, 3);
    }

    #[test]
    fn one_busy_day_does_not_make_a_floor() {
        // Two weeks; the first Monday was busy at 09:00, the second was not: the floor is the quiet one.
        let mut points = office(2, 70.0, 70.0, 0);
        for p in points.iter_mut() {
            let c = Calendar::of(p.0, 0);
            if p.0 < MONDAY + 86_400_000 && c.hour() == 9 {
                p.1 = 700.0;
            }
        }
        let s = schedule(
            &weekly_levels(&points, STEP, &ScheduleConfig::default()).unwrap(),
            bounds(70.0, 1),
        )
        .unwrap();
        assert_eq!(s.hours[9].replicas, 1);
        assert!(s.windows.is_empty());
        assert!(s.changes().is_empty());
        assert!(s.cron_windows().is_empty());
    }

    #[test]
    fn day_type_stands_in_until_a_weekday_was_seen_twice() {
        // Four days from Monday: each weekday seen once, so weekdays borrow from each other.
        let points: Vec<_> = office(1, 420.0, 70.0, 0)
            .into_iter()
            .take(4 * 288)
            .collect();
        let levels = weekly_levels(&points, STEP, &ScheduleConfig::default()).unwrap();
        assert_eq!(levels.days, 4);
        let l = levels.levels[4 * 24 + 10].unwrap();
        assert_eq!(
            (l.basis, l.observations),
            (Basis::DayType, 4),
            "Friday 10:00 from Mon-Thu"
        );
        assert!(levels.levels[5 * 24 + 10].is_none(), "no weekend day seen");
        let s = schedule(&levels, bounds(70.0, 1)).unwrap();
        assert_eq!(
            s.hours[5 * 24 + 10].replicas,
            1,
            "unseen hours keep the HPA's minimum"
        );
    }

    #[test]
    fn short_or_broken_history_is_not_enough_data() {
        let hour: Vec<_> = office(1, 420.0, 70.0, 0).into_iter().take(12).collect();
        assert_eq!(
            weekly_levels(&hour, STEP, &ScheduleConfig::default()),
            Err(ScheduleError::NotEnoughData { days: 1, needed: 2 })
        );
        let gaps: Vec<_> = office(2, f64::NAN, -1.0, 0);
        assert!(matches!(
            weekly_levels(&gaps, STEP, &ScheduleConfig::default()),
            Err(ScheduleError::NotEnoughData { days: 0, .. })
        ));
        assert!(weekly_levels(&[], STEP, &ScheduleConfig::default()).is_err());
        // Hours with too few points do not count.
        let sparse: Vec<_> = office(2, 420.0, 70.0, 0).into_iter().step_by(12).collect();
        assert!(weekly_levels(&sparse, STEP, &ScheduleConfig::default()).is_err());
    }

    #[test]
    fn bounds_are_checked_and_respected() {
        let levels = weekly_levels(
            &office(2, 4200.0, 70.0, 0),
            STEP,
            &ScheduleConfig::default(),
        )
        .unwrap();
        let capped = schedule(
            &levels,
            Bounds {
                max_replicas: Some(20),
                ..bounds(70.0, 2)
            },
        )
        .unwrap();
        assert_eq!(capped.hours[9].replicas, 20);
        for bad in [
            bounds(0.0, 1),
            bounds(f64::NAN, 1),
            bounds(70.0, 0),
            Bounds {
                max_replicas: Some(1),
                ..bounds(70.0, 2)
            },
            Bounds {
                lead_minutes: 500,
                ..bounds(70.0, 1)
            },
        ] {
            assert!(
                matches!(schedule(&levels, bad), Err(ScheduleError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_floor_that_never_changes_is_one_window_and_no_change() {
        let levels = weekly_levels(
            &office(2, 350.0, 350.0, 0),
            STEP,
            &ScheduleConfig::default(),
        )
        .unwrap();
        let s = schedule(&levels, bounds(70.0, 1)).unwrap();
        assert_eq!(
            s.windows,
            vec![Window {
                start_hour: 0,
                hours: 168,
                replicas: 5
            }]
        );
        assert!(
            s.changes().is_empty(),
            "the HPA's own minReplicas should be raised instead"
        );
    }

    #[test]
    fn exports_name_the_deployment_and_the_floors() {
        let levels =
            weekly_levels(&office(2, 420.0, 70.0, 0), STEP, &ScheduleConfig::default()).unwrap();
        let s = schedule(
            &levels,
            Bounds {
                max_replicas: Some(10),
                ..bounds(70.0, 2)
            },
        )
        .unwrap();
        let so = s.keda_scaled_object("shop", "api", "http://prometheus:9090");
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], "api");
        assert_eq!(so["spec"]["minReplicaCount"], 2);
        assert_eq!(so["spec"]["maxReplicaCount"], 10);
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 2);
        assert_eq!(triggers[0]["metadata"]["desiredReplicas"], "6");
        assert_eq!(triggers[1]["metadata"]["threshold"], "70");
        let jobs = s.cronjobs("shop", "api-hpa", "registry.k8s.io/kubectl:v1.32.4");
        assert_eq!(jobs.len(), 3 + 2);
        assert_eq!(jobs[3]["spec"]["schedule"], "50 8 * * 1-5");
        let args =
            jobs[3]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
                .clone();
        assert_eq!(args[2], "api-hpa");
        assert_eq!(args[8], "{\"spec\":{\"minReplicas\":6}}");
        assert_eq!(jobs[4]["spec"]["schedule"], "0 17 * * 1-5");
    }

    #[test]
    fn day_lists_compress_runs() {
        assert_eq!(day_list(&[1, 2, 3, 4, 5]), "1-5");
        assert_eq!(day_list(&[0, 1, 3, 5, 6]), "0,1,3,5,6");
        assert_eq!(day_list(&[0, 1, 2, 4, 5, 6]), "0-2,4-6");
        assert_eq!(day_list(&[0, 1, 2, 3, 4, 5, 6]), "*");
    }
}
