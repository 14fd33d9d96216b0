//! PromQL-backed external metrics, the adapter side: the `--external-rules` file (prometheus-adapter's
//! `externalRules`, YAML or TOML), checked at start (syntax with the file's line, each rule by
//! [`crate::domain::external_rules::compile_all`], then a dry query per rule against Prometheus), and the
//! evaluation of every rule on each tick, in concurrent batches, into the in-memory
//! [`ExternalTable`] that metric reads are answered from. A read never queries Prometheus.
//!
//! Rules are evaluated off the tick's path (a task the tick starts, one at a time), so a slow rule never delays the
//! built-in metric; a rule that fails keeps its last values, which age into the same fail-safe as the built-in
//! metric. They do not feed the circuit breaker (a bad rule must not stop the built-in metric's queries) but
//! respect it: while it is open no rule is sent either.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{BreakerState, PromClient, PromError};
use crate::domain::external_rules::{self, ExternalTable, Rule, RulesFile};
use crate::domain::model::{FailSafe, UnixMillis};
use crate::health::Health;

/// Rules whose queries are in flight at once; the next batch starts when one finishes.
pub const RULES_PER_BATCH: usize = 8;

/// The `--external-rules` flag of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExternalRulesArgs {
    /// YAML (or `.toml`) file of PromQL-backed external metrics in prometheus-adapter's `externalRules` form
    /// (seriesQuery, metricsQuery with <<.Series>>, <<.LabelMatchers>>, <<.GroupBy>>, name.matches/as,
    /// resources.overrides for the namespace label; see docs/custom-metrics.md). Evaluated on every tick and served
    /// from memory; a rule that cannot work stops the start with its name and the reason.
    #[arg(long, env = "SMART_AUTOSCALER_EXTERNAL_RULES")]
    pub external_rules: Option<PathBuf>,
}

/// Why the rules file cannot be used: every problem, each with the rule and, where known, the file's line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --external-rules {}: {}", file.display(), problems.join("; "))]
pub struct RulesFileError {
    /// The file.
    pub file: PathBuf,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// Reads and checks a rules file. An empty `externalRules` list is an error: the flag would do nothing.
pub fn load(path: &Path) -> Result<Vec<Rule>, RulesFileError> {
    let fail = |problems: Vec<String>| RulesFileError {
        file: path.to_path_buf(),
        problems,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(vec![format!("cannot read: {e}")]))?;
    parse(path, &text).map_err(fail)
}

/// Checks rules file `text` as if read from `path` (`.toml` is TOML, anything else YAML).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Rule>, Vec<String>> {
    let toml = path.extension().is_some_and(|e| e == "toml");
    let file: RulesFile = if toml {
        let de = toml::de::Deserializer::parse(text).map_err(|e| {
            vec![format!(
                "line {}: {}",
                e.span().map_or(0, |s| line_of(text, s.start)),
                e.message()
            )]
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| format!("line {}: ", line_of(text, s.start)))
                .unwrap_or_default();
            vec![format!("{line}{at}: {}", inner.message())]
        })?
    } else {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            vec![format!("{line}{at}: {inner}")]
        })?
    };
    if file.external_rules.is_empty() {
        return Err(vec!["no externalRules: the file defines no metric".into()]);
    }
    external_rules::compile_all(&file.external_rules, &crate::domain::contract::METRICS).map_err(
        |errors| {
            errors
                .iter()
                .map(|e| match rule_line(text, e.index) {
                    Some(line) => format!("line {line}: {e}"),
                    None => e.to_string(),
                })
                .collect()
        },
    )
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// The line of the `index`-th `seriesQuery` key: where the rule starts in YAML and TOML alike.
fn rule_line(text: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches('-').trim_start();
            l.starts_with("seriesQuery") || l.starts_with("\"seriesQuery\"")
        })
        .nth(index)
        .map(|(i, _)| i + 1)
}

/// What the dry query at start found wrong with a rule.
#[derive(Debug)]
pub enum DryRun {
    /// Prometheus parsed and ran every query.
    Ok,
    /// Prometheus could not be asked (down, timeout, auth): nothing is known, start anyway.
    Unchecked(String),
    /// Prometheus refused these queries (`bad_data`: a PromQL error), with the rule and the reason.
    Invalid(Vec<String>),
}

/// Runs each rule's query once against Prometheus: a query Prometheus rejects as bad data is invalid PromQL.
pub async fn dry_run(prom: &PromClient, rules: &[Rule], now: UnixMillis) -> DryRun {
    let mut invalid = Vec::new();
    let mut unchecked = None;
    for rule in rules {
        match prom.rule_query(&rule.query, now).await {
            Ok(_) => {}
            Err(PromError::Rejected {
                error_type,
                message,
                ..
            }) if error_type == "bad_data" => invalid.push(format!(
                "{}: Prometheus rejects its query {:?}: {message}",
                rule.label(),
                rule.query
            )),
            Err(e) => {
                unchecked.get_or_insert_with(|| e.to_string());
            }
        }
    }
    match (invalid.is_empty(), unchecked) {
        (false, _) => DryRun::Invalid(invalid),
        (true, Some(e)) => DryRun::Unchecked(e),
        (true, None) => DryRun::Ok,
    }
}

/// Evaluates the rules on each tick into the table published on a `watch` channel.
pub struct RuleEvaluator {
    prom: Arc<PromClient>,
    rules: Arc<Vec<Rule>>,
    table: Arc<watch::Sender<Arc<ExternalTable>>>,
    health: Arc<Health>,
    task: Option<JoinHandle<()>>,
}

impl RuleEvaluator {
    /// An evaluator with an empty table (every read a 503 until the first answer), and the table's receiving end.
    pub fn new(
        prom: Arc<PromClient>,
        rules: Vec<Rule>,
        failsafe: FailSafe,
        health: Arc<Health>,
    ) -> (Self, watch::Receiver<Arc<ExternalTable>>) {
        let (tx, rx) = watch::channel(Arc::new(ExternalTable::new(&rules, failsafe)));
        let evaluator = RuleEvaluator {
            prom,
            rules: Arc::new(rules),
            table: Arc::new(tx),
            health,
            task: None,
        };
        (evaluator, rx)
    }

    /// Starts evaluating every rule at `now` unless the previous round is still running (then this tick's is
    /// skipped: the values age, the fail-safe judges them).
    pub fn tick(&mut self, now: UnixMillis) {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            tracing::debug!(
                "external rules: previous evaluation still running; skipping this tick"
            );
            return;
        }
        let (prom, rules, table, health) = (
            self.prom.clone(),
            self.rules.clone(),
            self.table.clone(),
            self.health.clone(),
        );
        self.task = Some(tokio::spawn(async move {
            evaluate(&prom, &rules, &table, &health, now).await;
        }));
    }

    /// Evaluates every rule at `now` and waits for the answers (tests and benchmarks).
    pub async fn evaluate_now(&self, now: UnixMillis) {
        evaluate(&self.prom, &self.rules, &self.table, &self.health, now).await;
    }
}

type Answer = Result<Vec<(BTreeMap<String, String>, f64)>, PromError>;

async fn evaluate(
    prom: &Arc<PromClient>,
    rules: &Arc<Vec<Rule>>,
    table: &watch::Sender<Arc<ExternalTable>>,
    health: &Health,
    now: UnixMillis,
) {
    let mut failed = Vec::new();
    let mut dropped = 0;
    for batch in rules.chunks(RULES_PER_BATCH) {
        let mut set = tokio::task::JoinSet::new();
        for (i, rule) in batch.iter().enumerate() {
            let (prom, query) = (prom.clone(), rule.query.clone());
            set.spawn(async move {
                let answer: Answer = prom.rule_query(&query, now).await.map(|v| {
                    v.into_iter()
                        .map(|s| {
                            let value = s.sample().value();
                            let (labels, _) = s.into_inner();
                            (labels.into_iter().collect(), value)
                        })
                        .collect()
                });
                (i, answer)
            });
        }
        let mut answers: Vec<(usize, Answer)> = Vec::with_capacity(batch.len());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(a) => answers.push(a),
                Err(e) => tracing::warn!(error = %e, "external rule evaluation task failed"),
            }
        }
        // One copy of the table per batch, not per rule; readers keep the Arc they hold.
        table.send_modify(|t| {
            let t = Arc::make_mut(t);
            for (i, answer) in answers {
                let rule = &batch[i];
                match answer {
                    Ok(series) => {
                        t.record_success(&rule.metric, &rule.namespace_label, now, series);
                        dropped += t.metrics[&rule.metric].dropped;
                    }
                    Err(e) => {
                        tracing::warn!(rule = %rule.label(), error = %e, "external rule evaluation failed");
                        t.record_failure(&rule.metric, now, e.to_string());
                        failed.push(format!("{}: {e}", rule.label()));
                    }
                }
            }
        });
    }
    let notes = if dropped > 0 {
        format!(
            "; {dropped} series without a namespace label or with a NaN/infinite value left out"
        )
    } else {
        String::new()
    };
    if failed.is_empty() {
        health.ok(
            "external-rules",
            format!("{} rules evaluated{notes}", rules.len()),
            now,
        );
        health.data_at("external-rules", now);
    } else {
        health.error(
            "external-rules",
            format!(
                "{} of {} rules failed, their last values age into the fail-safe: {}{notes}",
                failed.len(),
                rules.len(),
                failed.join("; ")
            ),
            now,
        );
    }
}

impl PromClient {
    /// One instant query of an external rule at `at`, with the usual time limit and retries. It does not count
    /// for the circuit breaker (a broken rule must not stop the built-in queries) but is not sent while the
    /// breaker is open.
    pub async fn rule_query(
        &self,
        promql: &str,
        at: UnixMillis,
    ) -> Result<Vec<prometheus_http_query::response::InstantVector>, PromError> {
        if let BreakerState::Open { until } = self.breaker_state()
            && at < until
        {
            return Err(PromError::CircuitOpen { retry_at: until });
        }
        let auth = self.authorization().await?;
        self.instant("external_rule", promql, at, &auth).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
rules: []
externalRules:
- seriesQuery: 'queue_depth{job="mq"}'
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)
  selectorLabels: [queue]
  resources:
    overrides:
      namespace: {resource: namespace}
- seriesQuery: '{__name__="kafka_consumergroup_lag"}'
  name: {matches: "^kafka_(.*)$", as: "${1}"}
  resources:
    overrides:
      kubernetes_namespace: {resource: namespace}
"#;

    #[test]
    fn a_prometheus_adapter_yaml_file_gives_its_rules() {
        let rules = parse(Path::new("rules.yaml"), YAML).unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(names, ["queue_depth", "consumergroup_lag"]);
        assert_eq!(
            rules[0].query,
            r#"sum(queue_depth{job="mq"}) by (namespace,queue)"#
        );
        assert_eq!(rules[1].namespace_label, "kubernetes_namespace");
        assert_eq!(
            rules[1].query,
            "sum(kafka_consumergroup_lag{}) by (kubernetes_namespace)"
        );
    }

    #[test]
    fn toml_works_too() {
        let text = r#"
[[externalRules]]
seriesQuery = "queue_depth"
resources.overrides.namespace.resource = "namespace"
"#;
        let rules = parse(Path::new("rules.toml"), text).unwrap();
        assert_eq!(rules[0].metric, "queue_depth");
        let bad = text.replace("seriesQuery", "seriesQuerry");
        let e = parse(Path::new("rules.toml"), &bad).unwrap_err().join("\n");
        assert!(e.contains("line 3") && e.contains("seriesQuerry"), "{e}");
    }

    #[test]
    fn problems_name_the_rule_and_the_line() {
        let bad = YAML.replace("<<.GroupBy>>", "<<.Groupby>>").replace(
            "kubernetes_namespace: {resource: namespace}",
            "service: {resource: service}",
        );
        let e = parse(Path::new("rules.yaml"), &bad).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("line 4: externalRules[0] (queue_depth): metricsQuery: unknown template field <<.Groupby>>"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("line 10: externalRules[1] (consumergroup_lag): no namespace mapping"),
            "{e:?}"
        );
        let e = parse(
            Path::new("r.yaml"),
            "externalRules:\n- seriesQuery: x\n  metricQuery: y\n",
        )
        .unwrap_err();
        assert!(
            e[0].starts_with("line 3") && e[0].contains("metricQuery"),
            "{e:?}"
        );
        let e = parse(Path::new("r.yaml"), "externalRules: []\n").unwrap_err();
        assert!(e[0].contains("no externalRules"), "{e:?}");
        let e = load(Path::new("/nonexistent/rules.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid --external-rules /nonexistent/rules.yaml: cannot read"),
            "{e}"
        );
    }
}
