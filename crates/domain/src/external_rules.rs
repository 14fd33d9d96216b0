//! PromQL-backed external metrics: the rules file's model (prometheus-adapter's `externalRules` convention), its
//! validation, the expansion of `metricsQuery` templates, and the in-memory table of evaluated series that metric
//! reads are answered from.
//!
//! Pure: reading the file and querying Prometheus belong to the adapter (`src/prom/rules.rs`). A rule is evaluated
//! once per tick for every namespace at once, so the template fields cannot carry one HPA's namespace and selector
//! as prometheus-adapter's per-request query does: `<<.LabelMatchers>>` is the seriesQuery's own matchers and
//! `<<.GroupBy>>` the namespace label plus the rule's `selectorLabels`, the labels kept per series so that an HPA's
//! `labelSelector` can be applied to the cached series in memory. The HPA sums the items it receives, so a `sum`
//! rule served per series sums to what prometheus-adapter's filtered `sum` would give.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::model::{FailSafe, UnixMillis};
use crate::selector::Selector;

/// prometheus-adapter's default `metricsQuery`.
pub const DEFAULT_METRICS_QUERY: &str = "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)";

/// The template fields a `metricsQuery` may use.
pub const TEMPLATE_FIELDS: [&str; 3] = [".Series", ".LabelMatchers", ".GroupBy"];

/// A rules file: prometheus-adapter's configuration shape. Only `externalRules` is used; `rules` and
/// `resourceRules` (custom and resource metrics, which this server does not serve) are accepted and ignored, so
/// an adapter's file can be used as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RulesFile {
    /// The external metric rules.
    #[serde(default)]
    pub external_rules: Vec<RuleSpec>,
    /// Custom metric rules: ignored.
    #[serde(default)]
    pub rules: Option<IgnoredAny>,
    /// Resource metric rules: ignored.
    #[serde(default)]
    pub resource_rules: Option<IgnoredAny>,
}

/// One `externalRules` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// A series selector naming one metric: `name{label="v",...}` or `{__name__="name",...}`.
    pub series_query: String,
    /// prometheus-adapter's series filters: only an empty list is accepted (the series is named, not discovered).
    #[serde(default)]
    pub series_filters: Vec<IgnoredAny>,
    /// The PromQL evaluated on every tick, a template over [`TEMPLATE_FIELDS`]; default
    /// [`DEFAULT_METRICS_QUERY`].
    #[serde(default)]
    pub metrics_query: Option<String>,
    /// How the series name becomes the metric name.
    #[serde(default)]
    pub name: Option<NameSpec>,
    /// Which label holds the namespace.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Labels kept per series (in `<<.GroupBy>>`, after the namespace label) so HPA selectors can match them.
    #[serde(default)]
    pub selector_labels: Vec<String>,
}

/// `name:` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameSpec {
    /// Regular expression over the series name; empty matches everything.
    #[serde(default)]
    pub matches: String,
    /// Replacement (`$1`, `${name}`); empty: `$1` when `matches` has exactly one group, else `$0`.
    #[serde(default, rename = "as")]
    pub as_: String,
}

/// `resources:` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// Label name → Kubernetes resource; exactly one must be the namespace.
    #[serde(default)]
    pub overrides: BTreeMap<String, ResourceOverride>,
    /// prometheus-adapter's label template: not supported (an error names it).
    #[serde(default)]
    pub template: Option<String>,
    /// prometheus-adapter's non-namespaced external metrics: not supported (an error names it).
    #[serde(default)]
    pub namespaced: Option<bool>,
}

/// One `resources.overrides` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceOverride {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Resource, e.g. `namespace`.
    pub resource: String,
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Position in `externalRules`, from 0.
    pub index: usize,
    /// The external metric name served.
    pub metric: String,
    /// The series name from `seriesQuery`.
    pub series: String,
    /// The expanded `metricsQuery`.
    pub query: String,
    /// The label holding the namespace in the query's results.
    pub namespace_label: String,
}

impl Rule {
    /// How errors and logs name the rule: `externalRules[2] (queue_depth)`.
    pub fn label(&self) -> String {
        format!("externalRules[{}] ({})", self.index, self.metric)
    }
}

/// Why a rule cannot be used: names the rule and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("externalRules[{index}]{}: {reason}", metric.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
pub struct RuleError {
    /// Position in `externalRules`, from 0.
    pub index: usize,
    /// The metric name, when it could be worked out.
    pub metric: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// Why a template cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `<<` without `>>`.
    #[error("unclosed template action at byte {0}: '<<' without '>>'")]
    Unclosed(usize),
    /// A field this server does not fill.
    #[error(
        "unknown template field <<{0}>>; known fields: <<.Series>>, <<.LabelMatchers>>, <<.GroupBy>>"
    )]
    UnknownField(String),
    /// A Go template action (range, if, ...), not a field.
    #[error(
        "unsupported template action <<{0}>>: only the fields <<.Series>>, <<.LabelMatchers>>, <<.GroupBy>> are expanded"
    )]
    Action(String),
}

/// Values of the template fields.
#[derive(Debug, Clone, Copy)]
pub struct TemplateFields<'a> {
    /// `<<.Series>>`.
    pub series: &'a str,
    /// `<<.LabelMatchers>>`.
    pub label_matchers: &'a str,
    /// `<<.GroupBy>>`.
    pub group_by: &'a str,
}

/// Expands `<<.Series>>`, `<<.LabelMatchers>>` and `<<.GroupBy>>` (spaces inside the brackets allowed); anything
/// else between `<<` and `>>` is an error.
pub fn render(template: &str, fields: TemplateFields<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("<<") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find(">>")
            .ok_or(TemplateError::Unclosed(offset + start))?;
        let action = after[..end].trim();
        out.push_str(match action {
            ".Series" => fields.series,
            ".LabelMatchers" => fields.label_matchers,
            ".GroupBy" => fields.group_by,
            a if a.starts_with('.') => return Err(TemplateError::UnknownField(a.to_string())),
            a => return Err(TemplateError::Action(a.to_string())),
        });
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One label matcher of a series selector, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Label name.
    pub label: String,
    /// `=`, `!=`, `=~` or `!~`.
    pub op: &'static str,
    /// The value with its quotes, as written.
    pub quoted: String,
    /// The value without quotes (escapes resolved).
    pub value: String,
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.label, self.op, self.quoted)
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a series selector (`name`, `name{matchers}`, `{__name__="name", matchers}`) into the series name and
/// the other matchers. The name must be given exactly: a rule serves one series name.
pub fn parse_series_query(query: &str) -> Result<(String, Vec<Matcher>), String> {
    let s = query.trim();
    let name_end = s
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(s.len(), |(i, _)| i);
    let mut name = s[..name_end].to_string();
    let rest = s[name_end..].trim_start();
    let mut matchers = Vec::new();
    if !rest.is_empty() {
        let body = rest
            .strip_prefix('{')
            .and_then(|r| r.trim_end().strip_suffix('}'))
            .ok_or_else(|| {
                format!(
                    "seriesQuery {query:?} is not a series selector (name{{label=\"value\",...}})"
                )
            })?;
        matchers = parse_matchers(body).map_err(|e| format!("seriesQuery {query:?}: {e}"))?;
    }
    let mut kept = Vec::with_capacity(matchers.len());
    for m in matchers {
        if m.label != "__name__" {
            kept.push(m);
        } else if m.op == "=" && name.is_empty() {
            name = m.value;
        } else if m.op == "=" {
            return Err(format!("seriesQuery {query:?} names the series twice"));
        } else {
            return Err(format!(
                "seriesQuery {query:?}: __name__{}{} selects series by pattern; this server evaluates one \
                 query per rule, so each rule must name exactly one series (__name__=\"...\" or name{{...}})",
                m.op, m.quoted
            ));
        }
    }
    if name.is_empty() {
        return Err(format!(
            "seriesQuery {query:?} names no series: write name{{...}} or {{__name__=\"name\",...}}"
        ));
    }
    Ok((name, kept))
}

fn parse_matchers(body: &str) -> Result<Vec<Matcher>, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            return Ok(out);
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        if !is_label_name(&label) {
            return Err(format!("expected a label name at character {start}"));
        }
        skip_ws(&mut i);
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "=~" => "=~",
            "!~" => "!~",
            "!=" => "!=",
            _ if two.starts_with('=') => "=",
            _ => return Err(format!("expected =, !=, =~ or !~ after {label}")),
        };
        i += op.len();
        skip_ws(&mut i);
        let quote = *chars
            .get(i)
            .filter(|c| matches!(c, '"' | '\'' | '`'))
            .ok_or_else(|| format!("expected a quoted value after {label}{op}"))?;
        let qstart = i;
        i += 1;
        let mut value = String::new();
        loop {
            let c = *chars
                .get(i)
                .ok_or_else(|| format!("unterminated string after {label}{op}"))?;
            i += 1;
            if c == quote {
                break;
            }
            if c == '\\' && quote != '`' {
                let e = *chars
                    .get(i)
                    .ok_or_else(|| format!("unterminated string after {label}{op}"))?;
                i += 1;
                value.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
            } else {
                value.push(c);
            }
        }
        out.push(Matcher {
            label,
            op,
            quoted: chars[qstart..i].iter().collect(),
            value,
        });
        skip_ws(&mut i);
        match chars.get(i) {
            None => return Ok(out),
            Some(',') => i += 1,
            Some(c) => return Err(format!("expected ',' or '}}', found {c:?}")),
        }
    }
}

/// The metric name `name:` makes of `series`.
fn metric_name(spec: Option<&NameSpec>, series: &str) -> Result<String, String> {
    let (matches, as_) = spec.map_or(("", ""), |n| (n.matches.as_str(), n.as_.as_str()));
    if matches.is_empty() && as_.is_empty() {
        return Ok(series.to_string());
    }
    let pattern = if matches.is_empty() { ".*" } else { matches };
    let re = regex::Regex::new(pattern)
        .map_err(|e| format!("name.matches {matches:?} is not a valid regular expression: {e}"))?;
    let caps = re.captures(series).ok_or_else(|| {
        format!("name.matches {pattern:?} does not match the series name {series:?}")
    })?;
    let replacement = match as_ {
        "" if re.captures_len() == 2 => "$1",
        "" => "$0",
        a => a,
    };
    let mut name = String::new();
    caps.expand(replacement, &mut name);
    Ok(name)
}

/// Whether `name` can be a metric name in the URL path the HPA requests (one path segment, no escaping).
pub fn is_metric_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

/// Checks one rule and expands its query.
pub fn compile(index: usize, spec: &RuleSpec) -> Result<Rule, RuleError> {
    let mut metric = None;
    let fail = |metric: &Option<String>, reason: String| RuleError {
        index,
        metric: metric.clone(),
        reason,
    };
    let (series, matchers) =
        parse_series_query(&spec.series_query).map_err(|r| fail(&metric, r))?;
    let name = metric_name(spec.name.as_ref(), &series).map_err(|r| fail(&metric, r))?;
    metric = Some(name.clone());
    if !is_metric_name(&name) {
        return Err(fail(
            &metric,
            format!(
                "metric name {name:?} cannot be a URL path segment: use letters, digits, '_', '-', '.', ':' \
                 (set name.as)"
            ),
        ));
    }
    if !spec.series_filters.is_empty() {
        return Err(fail(
            &metric,
            "seriesFilters is not supported: put the filter in seriesQuery's matchers".into(),
        ));
    }
    if spec.resources.template.is_some() {
        return Err(fail(
            &metric,
            "resources.template is not supported: map the namespace label with resources.overrides, e.g. \
             overrides: {namespace: {resource: namespace}}"
                .into(),
        ));
    }
    if spec.resources.namespaced == Some(false) {
        return Err(fail(
            &metric,
            "resources.namespaced: false is not supported: every series must carry its namespace"
                .into(),
        ));
    }
    let namespace_labels: Vec<&String> = spec
        .resources
        .overrides
        .iter()
        .filter(|(_, o)| {
            matches!(o.resource.as_str(), "namespace" | "namespaces")
                && matches!(o.group.as_str(), "" | "core")
        })
        .map(|(label, _)| label)
        .collect();
    let namespace_label = match namespace_labels.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(fail(
                &metric,
                "no namespace mapping: resources.overrides must map the label holding the namespace, e.g. \
                 overrides: {namespace: {resource: namespace}}"
                    .into(),
            ));
        }
        many => {
            return Err(fail(
                &metric,
                format!(
                    "resources.overrides maps {} labels to the namespace ({}); map exactly one",
                    many.len(),
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    };
    if !is_label_name(&namespace_label) {
        return Err(fail(
            &metric,
            format!("resources.overrides key {namespace_label:?} is not a Prometheus label name"),
        ));
    }
    let mut group_by = vec![namespace_label.clone()];
    for label in &spec.selector_labels {
        if !is_label_name(label) {
            return Err(fail(
                &metric,
                format!("selectorLabels entry {label:?} is not a Prometheus label name"),
            ));
        }
        if !group_by.contains(label) {
            group_by.push(label.clone());
        }
    }
    let label_matchers = matchers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let template = spec
        .metrics_query
        .as_deref()
        .unwrap_or(DEFAULT_METRICS_QUERY);
    let query = render(
        template,
        TemplateFields {
            series: &series,
            label_matchers: &label_matchers,
            group_by: &group_by.join(","),
        },
    )
    .map_err(|e| fail(&metric, format!("metricsQuery: {e}")))?;
    if query.trim().is_empty() {
        return Err(fail(&metric, "metricsQuery is empty".into()));
    }
    Ok(Rule {
        index,
        metric: name,
        series,
        query,
        namespace_label,
    })
}

/// Checks every rule: each one alone, then that no two serve the same metric and none takes a `reserved` name
/// (the built-in metrics). Gives every problem found, not only the first.
pub fn compile_all(specs: &[RuleSpec], reserved: &[&str]) -> Result<Vec<Rule>, Vec<RuleError>> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut errors = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        match compile(index, spec) {
            Ok(rule) if reserved.contains(&rule.metric.as_str()) => errors.push(RuleError {
                index,
                metric: Some(rule.metric.clone()),
                reason:
                    "this name is a built-in metric of this server; choose another with name.as"
                        .into(),
            }),
            Ok(rule) => match rules.iter().find(|r| r.metric == rule.metric) {
                Some(first) => errors.push(RuleError {
                    index,
                    metric: Some(rule.metric.clone()),
                    reason: format!(
                        "{} already serves this metric; each name needs one rule",
                        first.label()
                    ),
                }),
                None => rules.push(rule),
            },
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

/// One evaluated series.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalSeries {
    /// Its labels as Prometheus returned them (namespace label included).
    pub labels: BTreeMap<String, String>,
    /// Its value (always finite).
    pub value: f64,
}

/// What the last evaluations of one rule left in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricValues {
    /// When the values below were measured: the time of the last successful evaluation.
    pub evaluated_at: Option<UnixMillis>,
    /// The last failed evaluation since then, with its time and reason.
    pub last_error: Option<(UnixMillis, String)>,
    /// Series per namespace.
    pub namespaces: BTreeMap<String, Vec<ExternalSeries>>,
    /// Series of the last answer left out: no namespace label, or a NaN or infinite value.
    pub dropped: usize,
}

/// The rule-backed metrics in memory: what a metric read is answered from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExternalTable {
    /// Per metric name.
    pub metrics: BTreeMap<String, MetricValues>,
    /// The staleness limits (the built-in metric's): values older than `error_after_millis` are refused.
    pub failsafe: FailSafe,
}

/// A series served for one read.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedSeries<'a> {
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
    /// When it was measured.
    pub at: UnixMillis,
}

/// Why a read of a rule-backed metric has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No rule serves this name.
    #[error("external metric {0:?} is not served by any rule")]
    UnknownMetric(String),
    /// No value yet, or values past the fail-safe limit: a 503.
    #[error("{0}")]
    Unavailable(String),
    /// The namespace or selector matches no series: a 404.
    #[error("{0}")]
    NotFound(String),
}

impl ExternalTable {
    /// A table with the rules' metrics and no values yet.
    pub fn new(rules: &[Rule], failsafe: FailSafe) -> Self {
        ExternalTable {
            metrics: rules
                .iter()
                .map(|r| (r.metric.clone(), MetricValues::default()))
                .collect(),
            failsafe,
        }
    }

    /// Replaces a metric's values with a fresh answer measured at `at`: series grouped by `namespace_label`;
    /// series without it or with a non-finite value are dropped (counted).
    pub fn record_success(
        &mut self,
        metric: &str,
        namespace_label: &str,
        at: UnixMillis,
        series: impl IntoIterator<Item = (BTreeMap<String, String>, f64)>,
    ) {
        let entry = self.metrics.entry(metric.to_string()).or_default();
        let mut namespaces: BTreeMap<String, Vec<ExternalSeries>> = BTreeMap::new();
        let mut dropped = 0;
        for (mut labels, value) in series {
            labels.remove("__name__");
            match labels.get(namespace_label) {
                Some(ns) if value.is_finite() && !ns.is_empty() => namespaces
                    .entry(ns.clone())
                    .or_default()
                    .push(ExternalSeries { labels, value }),
                _ => dropped += 1,
            }
        }
        *entry = MetricValues {
            evaluated_at: Some(at),
            last_error: None,
            namespaces,
            dropped,
        };
    }

    /// Records a failed evaluation: the values stay, with their own time, and age into the fail-safe.
    pub fn record_failure(&mut self, metric: &str, at: UnixMillis, reason: String) {
        self.metrics
            .entry(metric.to_string())
            .or_default()
            .last_error = Some((at, reason));
    }

    /// The series of `metric` in `namespace` that `selector` matches, as of `now`; refused (503) when no answer
    /// has come yet or the last one is older than the fail-safe's error limit, with the reason.
    pub fn lookup<'a>(
        &'a self,
        metric: &str,
        namespace: &str,
        selector: &Selector,
        now: UnixMillis,
    ) -> Result<Vec<ServedSeries<'a>>, LookupError> {
        let values = self
            .metrics
            .get(metric)
            .ok_or_else(|| LookupError::UnknownMetric(metric.to_string()))?;
        let why = |v: &MetricValues| match &v.last_error {
            Some((at, e)) => format!(
                " (last evaluation failed {}s ago: {e})",
                (now - at).max(0) / 1000
            ),
            None => String::new(),
        };
        let Some(at) = values.evaluated_at else {
            return Err(LookupError::Unavailable(format!(
                "no value for external metric {metric:?} yet: its rule's query has not been answered{}",
                why(values)
            )));
        };
        let age = (now - at).max(0);
        if age > self.failsafe.error_after_millis {
            return Err(LookupError::Unavailable(format!(
                "values of external metric {metric:?} are {}s old, past the {}s fail-safe limit; refusing to \
                 serve a stale value{}",
                age / 1000,
                self.failsafe.error_after_millis / 1000,
                why(values)
            )));
        }
        let served: Vec<ServedSeries<'a>> = values
            .namespaces
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|s| selector.matches(&s.labels))
            .map(|s| ServedSeries {
                labels: &s.labels,
                value: s.value,
                at,
            })
            .collect();
        if served.is_empty() {
            return Err(LookupError::NotFound(format!(
                "external metric {metric:?} with selector {:?} not found in namespace {namespace:?}",
                selector.to_string()
            )));
        }
        Ok(served)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(series_query: &str, metrics_query: Option<&str>) -> RuleSpec {
        RuleSpec {
            series_query: series_query.into(),
            metrics_query: metrics_query.map(Into::into),
            resources: ResourcesSpec {
                overrides: BTreeMap::from([(
                    "namespace".to_string(),
                    ResourceOverride {
                        group: String::new(),
                        resource: "namespace".into(),
                    },
                )]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn templates_expand_the_three_fields_and_reject_anything_else() {
        let f = TemplateFields {
            series: "queue_depth",
            label_matchers: r#"job="q""#,
            group_by: "namespace,queue",
        };
        assert_eq!(
            render(DEFAULT_METRICS_QUERY, f).unwrap(),
            r#"sum(queue_depth{job="q"}) by (namespace,queue)"#
        );
        assert_eq!(render("max(<< .Series >>)", f).unwrap(), "max(queue_depth)");
        assert_eq!(render("up", f).unwrap(), "up");
        assert_eq!(
            render("sum(<<.Serie>>)", f),
            Err(TemplateError::UnknownField(".Serie".into()))
        );
        assert_eq!(
            render("sum(<<.LabelValuesByName>>)", f),
            Err(TemplateError::UnknownField(".LabelValuesByName".into()))
        );
        assert_eq!(
            render("<<range .GroupBySlice>>x<<end>>", f),
            Err(TemplateError::Action("range .GroupBySlice".into()))
        );
        assert_eq!(render("a <<.Series", f), Err(TemplateError::Unclosed(2)));
    }

    #[test]
    fn series_queries_give_one_name_and_the_other_matchers() {
        let (name, m) = parse_series_query(r#"queue_depth{job="q", env!~'dev|test',}"#).unwrap();
        assert_eq!(name, "queue_depth");
        let shown: Vec<String> = m.iter().map(ToString::to_string).collect();
        assert_eq!(shown, [r#"job="q""#, "env!~'dev|test'"]);
        let (name, m) = parse_series_query(r#"{__name__="kafka_lag", topic=~"orders.*"}"#).unwrap();
        assert_eq!((name.as_str(), m.len()), ("kafka_lag", 1));
        assert_eq!(m[0].value, "orders.*");
        assert_eq!(
            parse_series_query("up").unwrap(),
            ("up".to_string(), vec![])
        );
        let escaped = parse_series_query(r#"x{a="say \"hi\""}"#).unwrap().1;
        assert_eq!(escaped[0].value, r#"say "hi""#);
        for bad in [
            r#"{__name__=~".*_queue"}"#,
            r#"{job="q"}"#,
            "",
            r#"x{job="q"#,
            r#"x{job=q}"#,
            r#"x{1a="q"}"#,
            r#"x{a="1" b="2"}"#,
            "rate(x[5m])",
        ] {
            assert!(parse_series_query(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(
            parse_series_query(r#"{__name__=~".*_queue"}"#)
                .unwrap_err()
                .contains("exactly one series")
        );
    }

    #[test]
    fn a_rule_compiles_to_its_name_and_query() {
        let mut s = spec(r#"{__name__="queue_messages_total",job="mq"}"#, None);
        s.name = Some(NameSpec {
            matches: "^(.*)_total$".into(),
            as_: String::new(),
        });
        s.selector_labels = vec!["queue".into(), "namespace".into()];
        let rule = compile(0, &s).unwrap();
        assert_eq!(rule.metric, "queue_messages");
        assert_eq!(rule.series, "queue_messages_total");
        assert_eq!(
            rule.query,
            r#"sum(queue_messages_total{job="mq"}) by (namespace,queue)"#
        );
        assert_eq!(rule.label(), "externalRules[0] (queue_messages)");

        s.name = Some(NameSpec {
            matches: "^queue_(.*)_total$".into(),
            as_: "mq_${1}_per_second".into(),
        });
        s.metrics_query =
            Some("sum(rate(<<.Series>>{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)".into());
        let rule = compile(3, &s).unwrap();
        assert_eq!(rule.metric, "mq_messages_per_second");
        assert_eq!(
            rule.query,
            r#"sum(rate(queue_messages_total{job="mq"}[2m])) by (namespace,queue)"#
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule_and_the_reason() {
        let reason = |s: &RuleSpec| compile(4, s).unwrap_err().to_string();

        let e = reason(&spec("queue_depth", Some("sum(<<.Sereis>>)")));
        assert!(
            e.starts_with(
                "externalRules[4] (queue_depth): metricsQuery: unknown template field <<.Sereis>>"
            ),
            "{e}"
        );

        let mut s = spec("queue_depth", None);
        s.name = Some(NameSpec {
            matches: "^(queue".into(),
            as_: String::new(),
        });
        let e = reason(&s);
        assert!(
            e.starts_with(
                "externalRules[4]: name.matches \"^(queue\" is not a valid regular expression"
            ),
            "{e}"
        );

        s.name = Some(NameSpec {
            matches: "^kafka_".into(),
            as_: String::new(),
        });
        assert!(reason(&s).contains("does not match the series name \"queue_depth\""));

        let mut s = spec("queue_depth", None);
        s.resources.overrides.clear();
        let e = reason(&s);
        assert!(
            e.starts_with("externalRules[4] (queue_depth): no namespace mapping"),
            "{e}"
        );
        s.resources.overrides.insert(
            "service".into(),
            ResourceOverride {
                group: String::new(),
                resource: "service".into(),
            },
        );
        assert!(reason(&s).contains("no namespace mapping"));

        let mut s = spec("queue_depth", None);
        s.resources.template = Some("<<.Resource>>".into());
        assert!(reason(&s).contains("resources.template is not supported"));

        let mut s = spec("queue_depth", None);
        s.selector_labels = vec!["bad-label".into()];
        assert!(reason(&s).contains("selectorLabels entry \"bad-label\""));

        let mut s = spec("queue_depth", None);
        s.name = Some(NameSpec {
            matches: String::new(),
            as_: "queue/depth".into(),
        });
        assert!(reason(&s).contains("cannot be a URL path segment"));

        let e = reason(&spec(r#"{__name__=~"q.*"}"#, None));
        assert!(e.starts_with("externalRules[4]: seriesQuery"), "{e}");
    }

    #[test]
    fn duplicate_and_built_in_names_are_refused_with_every_problem() {
        let specs = vec![
            spec("queue_depth", None),
            spec("queue_depth", None),
            spec("smart_cpu_utilization", None),
            spec("lag", Some("<<.Nope>>")),
            spec("lag", None),
        ];
        let errors = compile_all(&specs, &["smart_cpu_utilization"]).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(
            text[0].contains("externalRules[1]")
                && text[0].contains("externalRules[0] (queue_depth) already serves")
        );
        assert!(text[1].contains("externalRules[2]") && text[1].contains("built-in"));
        assert!(text[2].contains("externalRules[3]") && text[2].contains("<<.Nope>>"));
        assert_eq!(compile_all(&specs[..1], &[]).unwrap().len(), 1);
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_filter_cached_series_by_namespace_and_selector_and_age_into_the_failsafe() {
        let rule = compile(0, &spec("queue_depth", None)).unwrap();
        let failsafe = FailSafe {
            raw_after_millis: 3_000,
            error_after_millis: 10_000,
        };
        let mut table = ExternalTable::new(std::slice::from_ref(&rule), failsafe);
        let all = Selector::parse("").unwrap();
        let e = table.lookup("queue_depth", "shop", &all, 0).unwrap_err();
        assert!(
            matches!(&e, LookupError::Unavailable(m) if m.contains("not been answered")),
            "{e}"
        );
        table.record_failure("queue_depth", 500, "Prometheus query timed out".into());
        let e = table
            .lookup("queue_depth", "shop", &all, 1_000)
            .unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");

        table.record_success(
            "queue_depth",
            "namespace",
            1_000,
            [
                (
                    labels(&[
                        ("namespace", "shop"),
                        ("queue", "orders"),
                        ("__name__", "x"),
                    ]),
                    12.5,
                ),
                (labels(&[("namespace", "shop"), ("queue", "returns")]), 3.0),
                (labels(&[("namespace", "bank"), ("queue", "orders")]), 7.0),
                (labels(&[("queue", "orphan")]), 1.0),
                (labels(&[("namespace", "shop"), ("queue", "nan")]), f64::NAN),
            ],
        );
        assert_eq!(table.metrics["queue_depth"].dropped, 2);
        let got = table.lookup("queue_depth", "shop", &all, 2_000).unwrap();
        assert_eq!(got.len(), 2);
        assert!(!got[0].labels.contains_key("__name__"));
        let orders = Selector::parse("queue in (orders,payments)").unwrap();
        let got = table.lookup("queue_depth", "shop", &orders, 2_000).unwrap();
        assert_eq!((got.len(), got[0].value, got[0].at), (1, 12.5, 1_000));
        let none = Selector::parse("queue=nope").unwrap();
        assert!(matches!(
            table.lookup("queue_depth", "shop", &none, 2_000),
            Err(LookupError::NotFound(_))
        ));
        assert!(matches!(
            table.lookup("queue_depth", "empty", &all, 2_000),
            Err(LookupError::NotFound(_))
        ));
        assert!(matches!(
            table.lookup("other", "shop", &all, 2_000),
            Err(LookupError::UnknownMetric(_))
        ));

        // A failure keeps the values, which are served until the error limit, then refused with the reason.
        table.record_failure("queue_depth", 5_000, "cannot reach Prometheus".into());
        assert_eq!(
            table
                .lookup("queue_depth", "shop", &orders, 11_000)
                .unwrap()[0]
                .value,
            12.5
        );
        let e = table
            .lookup("queue_depth", "shop", &orders, 11_001)
            .unwrap_err();
        let LookupError::Unavailable(m) = &e else {
            panic!("{e}")
        };
        assert!(
            m.contains("10s old") && m.contains("cannot reach Prometheus"),
            "{m}"
        );

        // A fresh answer replaces everything: a namespace gone from it is gone.
        table.record_success(
            "queue_depth",
            "namespace",
            20_000,
            [(labels(&[("namespace", "bank")]), 1.0)],
        );
        assert!(table.lookup("queue_depth", "shop", &all, 20_000).is_err());
        assert!(table.metrics["queue_depth"].last_error.is_none());
    }
}
