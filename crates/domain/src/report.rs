//! The weekly report: per deployment, what it cost and wasted over the week, what right-sizing would save, the
//! anomalies it had, the changes of its target (tuning included) and how good its forecasts were; with totals,
//! a few sentences that say where to look first, a text rendering (the `report` command, the alert) and the
//! alert's short form. Assembled from figures the adapters gather; nothing here reads anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::model::UnixMillis;

/// How good a deployment's forecasts were (the forecaster's recent scores at the lead window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastWeek {
    /// Forecasts scored against what happened.
    pub scored: usize,
    /// Mean absolute percentage error, 0-1.
    pub mape: Option<f64>,
    /// Mean absolute scaled error (below 1 beats a seasonal-naive guess).
    pub mase: Option<f64>,
    /// Whether the forecast is trusted (allowed to raise the served value) now.
    pub trusted: bool,
}

/// One deployment's week. Every figure is `None` when its source had nothing (no store, too little history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentWeek {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// What its pods cost over the week, $ (max of request and usage).
    pub cost_usd: Option<f64>,
    /// What they requested and did not use, $.
    pub waste_usd: Option<f64>,
    /// Pod-hours.
    pub pod_hours: Option<f64>,
    /// Hours of cost history the cost covers (less than a week on a server younger than that).
    pub cost_hours: Option<f64>,
    /// What the right-sizing recommendation would save per month, $ (0 when it says keep).
    pub savings_usd_month: Option<f64>,
    /// The recommendation in words, or why there is none.
    pub recommendation: Option<String>,
    /// Anomalies that started in the week, by severity (`info`, `warning`, `critical`).
    pub anomalies: BTreeMap<String, u32>,
    /// The same anomalies by type.
    pub anomaly_types: BTreeMap<String, u32>,
    /// Times the effective target changed (decisions stored).
    pub target_changes: u32,
    /// Tuning of the base target in the week, in words (applied or advised).
    pub tuning: Vec<String>,
    /// Forecast quality, when the deployment has a forecaster.
    pub forecast: Option<ForecastWeek>,
    /// Replica-hours a week the recommended scaling schedule holds above minReplicas 1, when there is one.
    pub schedule_extra_replica_hours: Option<u64>,
}

/// Totals over the deployments of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Deployments.
    pub deployments: usize,
    /// Cost, $.
    pub cost_usd: f64,
    /// Waste, $.
    pub waste_usd: f64,
    /// Right-sizing savings, $/month.
    pub savings_usd_month: f64,
    /// Anomalies by severity.
    pub anomalies: BTreeMap<String, u32>,
    /// Target changes.
    pub target_changes: u32,
    /// Deployments whose forecast is trusted now.
    pub forecasts_trusted: usize,
}

/// The weekly report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklyReport {
    /// Start of the week reported on.
    pub from: UnixMillis,
    /// Its end (when the report was made).
    pub to: UnixMillis,
    /// The namespace it is limited to, if any.
    pub namespace: Option<String>,
    /// Totals.
    pub totals: Totals,
    /// Where to look first, in sentences.
    pub highlights: Vec<String>,
    /// Every deployment, most expensive first.
    pub deployments: Vec<DeploymentWeek>,
}

/// Highlights listed at most.
const MAX_HIGHLIGHTS: usize = 6;

/// The report over `deployments` for `[from, to)`: sorted by cost, totalled, with highlights.
pub fn assemble(
    from: UnixMillis,
    to: UnixMillis,
    namespace: Option<String>,
    mut deployments: Vec<DeploymentWeek>,
) -> WeeklyReport {
    deployments.sort_by(|a, b| {
        b.cost_usd
            .unwrap_or(0.0)
            .total_cmp(&a.cost_usd.unwrap_or(0.0))
            .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
    });
    let mut totals = Totals {
        deployments: deployments.len(),
        ..Totals::default()
    };
    for d in &deployments {
        totals.cost_usd += d.cost_usd.unwrap_or(0.0);
        totals.waste_usd += d.waste_usd.unwrap_or(0.0);
        totals.savings_usd_month += d.savings_usd_month.unwrap_or(0.0);
        for (severity, n) in &d.anomalies {
            *totals.anomalies.entry(severity.clone()).or_default() += n;
        }
        totals.target_changes += d.target_changes;
        totals.forecasts_trusted += usize::from(d.forecast.as_ref().is_some_and(|f| f.trusted));
    }
    let highlights = highlights(&deployments);
    WeeklyReport {
        from,
        to,
        namespace,
        totals,
        highlights,
        deployments,
    }
}

fn name(d: &DeploymentWeek) -> String {
    format!("{}/{}", d.namespace, d.name)
}

/// The few things worth a look: the biggest savings, critical anomalies, forecasts that do badly, tuning.
fn highlights(deployments: &[DeploymentWeek]) -> Vec<String> {
    let mut out = Vec::new();
    let mut savers: Vec<&DeploymentWeek> = deployments
        .iter()
        .filter(|d| d.savings_usd_month.is_some_and(|s| s >= 1.0))
        .collect();
    savers.sort_by(|a, b| {
        b.savings_usd_month
            .unwrap_or(0.0)
            .total_cmp(&a.savings_usd_month.unwrap_or(0.0))
    });
    for d in savers.iter().take(3) {
        out.push(format!(
            "{}: right-sizing would save ${:.2}/month ({}).",
            name(d),
            d.savings_usd_month.unwrap_or(0.0),
            d.recommendation
                .as_deref()
                .unwrap_or("see /api/v1/recommendations")
        ));
    }
    for d in deployments {
        let critical = d.anomalies.get("critical").copied().unwrap_or(0);
        if critical > 0 {
            out.push(format!(
                "{}: {critical} critical anomal{} this week.",
                name(d),
                if critical == 1 { "y" } else { "ies" }
            ));
        }
    }
    for d in deployments {
        if let Some(f) = &d.forecast
            && f.scored >= 12
            && f.mase.is_some_and(|m| m > 1.0)
        {
            out.push(format!(
                "{}: forecasts did worse than a seasonal-naive guess (MASE {:.2}); they are {}.",
                name(d),
                f.mase.unwrap_or(0.0),
                if f.trusted {
                    "still trusted"
                } else {
                    "not trusted, so not applied"
                }
            ));
        }
    }
    for d in deployments {
        for t in &d.tuning {
            out.push(format!("{}: {t}", name(d)));
        }
    }
    out.truncate(MAX_HIGHLIGHTS);
    out
}

fn money(v: Option<f64>) -> String {
    v.map_or("-".into(), dollars)
}

/// Dollars with cents, and with four decimals under a dollar so a young server's costs do not read as zero.
fn dollars(v: f64) -> String {
    if v.abs() >= 1.0 || v == 0.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

fn day(t: UnixMillis) -> String {
    // Days since the epoch to a civil date (Howard Hinnant's algorithm), so this crate needs no date library.
    let z = t.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl WeeklyReport {
    /// The report as text: a heading, the totals, the highlights and a table of deployments.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(
            s,
            "smart-autoscaler weekly report, {} to {}{}",
            day(self.from),
            day(self.to),
            self.namespace
                .as_deref()
                .map(|n| format!(", namespace {n}"))
                .unwrap_or_default()
        );
        let hours = self
            .deployments
            .iter()
            .filter_map(|d| d.cost_hours)
            .fold(0.0f64, f64::max);
        let _ = writeln!(
            s,
            "{} deployment(s): cost {} over {:.1} h of cost history, waste {}, right-sizing savings {}/month, \
             anomalies {}, target changes {}, forecasts trusted {}",
            t.deployments,
            dollars(t.cost_usd),
            hours,
            dollars(t.waste_usd),
            dollars(t.savings_usd_month),
            severity_words(&t.anomalies),
            t.target_changes,
            t.forecasts_trusted
        );
        if self.highlights.is_empty() {
            s.push_str("\nNothing stands out this week.\n");
        } else {
            s.push_str("\nWorth a look:\n");
            for h in &self.highlights {
                let _ = writeln!(s, "- {h}");
            }
        }
        let _ = writeln!(
            s,
            "\n{:<36} {:>10} {:>10} {:>12} {:>14} {:>8} {:>10} {:>8}",
            "deployment",
            "cost",
            "waste",
            "save/month",
            "anomalies",
            "targets",
            "fc MAPE",
            "trusted"
        );
        for d in &self.deployments {
            let anomalies: u32 = d.anomalies.values().sum();
            let (mape, trusted) = match &d.forecast {
                Some(f) => (
                    f.mape.map_or("-".into(), |m| format!("{:.0}%", m * 100.0)),
                    if f.trusted { "yes" } else { "no" },
                ),
                None => ("-".into(), "-"),
            };
            let _ = writeln!(
                s,
                "{:<36} {:>10} {:>10} {:>12} {:>14} {:>8} {:>10} {:>8}",
                name(d),
                money(d.cost_usd),
                money(d.waste_usd),
                money(d.savings_usd_month),
                anomalies,
                d.target_changes,
                mape,
                trusted
            );
        }
        s
    }

    /// The alert's title, one-sentence summary and details (the highlights).
    pub fn alert(&self) -> (String, String, Vec<(String, String)>) {
        let t = &self.totals;
        let title = format!(
            "Weekly report: {} spent, {}/month to save",
            dollars(t.cost_usd),
            dollars(t.savings_usd_month)
        );
        let summary = format!(
            "{} to {}: {} deployment(s) cost {} ({} requested and unused); anomalies {}; {} target \
             change(s).",
            day(self.from),
            day(self.to),
            t.deployments,
            dollars(t.cost_usd),
            dollars(t.waste_usd),
            severity_words(&t.anomalies),
            t.target_changes
        );
        let details = self
            .highlights
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("highlight_{}", i + 1), h.clone()))
            .collect();
        (title, summary, details)
    }
}

fn severity_words(counts: &BTreeMap<String, u32>) -> String {
    let total: u32 = counts.values().sum();
    if total == 0 {
        return "none".into();
    }
    let parts: Vec<String> = ["critical", "warning", "info"]
        .iter()
        .filter_map(|s| {
            counts
                .get(*s)
                .filter(|n| **n > 0)
                .map(|n| format!("{n} {s}"))
        })
        .collect();
    parts.join(", ")
}

/// When the weekly report is due: a day of the week and a time of day, local to `utc_offset_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyAt {
    /// 0 = Monday.
    pub day_of_week: u8,
    /// Second of the day.
    pub second_of_day: u32,
    /// Offset of the local time from UTC, minutes.
    pub utc_offset_minutes: i32,
}

impl WeeklyAt {
    /// Parses `mon 09:00` or `mon 09:00:30` (the day's first three letters, any case).
    pub fn parse(text: &str, utc_offset_minutes: i32) -> Result<WeeklyAt, String> {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let bad = || format!("{text:?} is not a day and a time such as \"mon 09:00\"");
        let (day, time) = text.trim().split_once(' ').ok_or_else(bad)?;
        let day = day.to_ascii_lowercase();
        let day_of_week = DAYS
            .iter()
            .position(|d| day.len() >= 3 && d.starts_with(&day[..3]))
            .ok_or_else(bad)? as u8;
        let parts: Vec<u32> = time
            .trim()
            .split(':')
            .map(|p| p.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let (h, m, sec) = match parts.as_slice() {
            [h, m] => (*h, *m, 0),
            [h, m, s] => (*h, *m, *s),
            _ => return Err(bad()),
        };
        if h > 23 || m > 59 || sec > 59 {
            return Err(bad());
        }
        Ok(WeeklyAt {
            day_of_week,
            second_of_day: h * 3600 + m * 60 + sec,
            utc_offset_minutes,
        })
    }

    /// The first time it is due after `t`.
    pub fn next_after(&self, t: UnixMillis) -> UnixMillis {
        const WEEK: i64 = 7 * 86_400_000;
        let offset = i64::from(self.utc_offset_minutes) * 60_000;
        let local = t + offset;
        // Monday 00:00 local of `t`'s week (1970-01-01 was a Thursday: Monday is 3 days earlier).
        let monday = (local + 3 * 86_400_000).div_euclid(WEEK) * WEEK - 3 * 86_400_000;
        let mut due = monday
            + i64::from(self.day_of_week) * 86_400_000
            + i64::from(self.second_of_day) * 1000;
        if due <= local {
            due += WEEK;
        }
        due - offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday 2026-11-30 00:00 UTC.
    const MONDAY: i64 = 1_795_996_800_000;
    const WEEK: i64 = 7 * 86_400_000;

    fn week(ns: &str, name: &str, cost: f64, savings: f64) -> DeploymentWeek {
        DeploymentWeek {
            namespace: ns.into(),
            name: name.into(),
            cost_usd: Some(cost),
            waste_usd: Some(cost / 4.0),
            pod_hours: Some(cost * 10.0),
            cost_hours: Some(168.0),
            savings_usd_month: Some(savings),
            recommendation: Some("cpu 500m -> 250m".into()),
            anomalies: BTreeMap::new(),
            anomaly_types: BTreeMap::new(),
            target_changes: 2,
            tuning: Vec::new(),
            forecast: None,
            schedule_extra_replica_hours: None,
        }
    }

    #[test]
    fn totals_sort_and_highlights() {
        let mut a = week("shop", "api", 10.0, 0.0);
        a.anomalies.insert("critical".into(), 2);
        a.anomalies.insert("info".into(), 1);
        a.forecast = Some(ForecastWeek {
            scored: 100,
            mape: Some(0.3),
            mase: Some(1.4),
            trusted: false,
        });
        let mut b = week("shop", "batch", 30.0, 12.5);
        b.tuning.push("tuned from 70% to 64%".into());
        let c = DeploymentWeek {
            cost_usd: None,
            waste_usd: None,
            savings_usd_month: None,
            ..week("web", "front", 0.0, 0.0)
        };
        let r = assemble(MONDAY, MONDAY + WEEK, None, vec![a, b, c]);
        assert_eq!(
            r.deployments
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            ["batch", "api", "front"]
        );
        assert_eq!(r.totals.deployments, 3);
        assert!((r.totals.cost_usd - 40.0).abs() < 1e-9);
        assert!((r.totals.waste_usd - 10.0).abs() < 1e-9);
        assert!((r.totals.savings_usd_month - 12.5).abs() < 1e-9);
        assert_eq!(r.totals.anomalies["critical"], 2);
        assert_eq!(r.totals.target_changes, 6);
        assert_eq!(
            r.highlights,
            [
                "shop/batch: right-sizing would save $12.50/month (cpu 500m -> 250m).",
                "shop/api: 2 critical anomalies this week.",
                "shop/api: forecasts did worse than a seasonal-naive guess (MASE 1.40); they are not trusted, so \
                 not applied.",
                "shop/batch: tuned from 70% to 64%",
            ]
        );
        let text = r.text();
        assert!(
            text.starts_with("smart-autoscaler weekly report, 2026-11-30 to 2026-12-07\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "cost $40.00 over 168.0 h of cost history, waste $10.00, right-sizing savings $12.50/month, \
                 anomalies 2 critical, 1 info"
            ),
            "{text}"
        );
        assert!(text.contains("web/front"), "{text}");
        let (title, summary, details) = r.alert();
        assert_eq!(title, "Weekly report: $40.00 spent, $12.50/month to save");
        assert!(summary.contains("3 deployment(s) cost $40.00"), "{summary}");
        assert_eq!(details.len(), 4);
        // The CLI renders what the API sent.
        let json = serde_json::to_string(&r).unwrap();
        let back: WeeklyReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_empty_week_says_so() {
        let r = assemble(MONDAY, MONDAY + WEEK, Some("shop".into()), Vec::new());
        assert!(r.highlights.is_empty());
        let text = r.text();
        assert!(text.contains("namespace shop"));
        assert!(
            text.contains("0 deployment(s): cost $0.00 over 0.0 h"),
            "{text}"
        );
        assert_eq!(dollars(0.004167), "$0.0042");
        assert_eq!(dollars(12.345), "$12.35");
        assert!(text.contains("anomalies none"));
        assert!(text.contains("Nothing stands out this week."));
    }

    #[test]
    fn due_times_follow_the_day_time_and_offset() {
        let at = WeeklyAt::parse("Mon 09:00", 0).unwrap();
        assert_eq!(at.next_after(MONDAY), MONDAY + 9 * 3_600_000);
        assert_eq!(
            at.next_after(MONDAY + 9 * 3_600_000),
            MONDAY + WEEK + 9 * 3_600_000
        );
        let fri = WeeklyAt::parse("friday 17:30:15", 60).unwrap();
        // 17:30:15 at UTC+1 is 16:30:15 UTC.
        assert_eq!(
            fri.next_after(MONDAY),
            MONDAY + 4 * 86_400_000 + 16 * 3_600_000 + 30 * 60_000 + 15_000
        );
        // Sunday 23:30 local at UTC-2 is Monday 01:30 UTC.
        let sun = WeeklyAt::parse("sun 23:30", -120).unwrap();
        assert_eq!(sun.next_after(MONDAY), MONDAY + 3_600_000 + 30 * 60_000);
        for bad in [
            "",
            "mon",
            "xyz 09:00",
            "mon 24:00",
            "mon 9",
            "mon 09:60",
            "mo 09:00",
            "mon 09:00:00:00",
        ] {
            assert!(WeeklyAt::parse(bad, 0).is_err(), "{bad:?}");
        }
    }
}
