//! The request bodies each receiver kind expects, built from alert events: pure functions of the event (and, for
//! Alertmanager and PagerDuty, the time and key they need). Every length limit a service documents is applied
//! here, by truncating with an ellipsis, so a long summary never gets an alert rejected.

use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::domain::anomaly::Severity;
use crate::domain::model::UnixMillis;

use super::router::{Alert, Event, Status};

/// Version of the generic webhook's schema (`version` in every body); docs/alerting.md documents it.
pub const WEBHOOK_SCHEMA_VERSION: &str = "1";

/// Discord's documented limits.
pub mod discord_limits {
    /// `content`.
    pub const CONTENT: usize = 2000;
    /// An embed's title.
    pub const TITLE: usize = 256;
    /// An embed's description.
    pub const DESCRIPTION: usize = 4096;
    /// Fields per embed.
    pub const FIELDS: usize = 25;
    /// A field's name.
    pub const FIELD_NAME: usize = 256;
    /// A field's value.
    pub const FIELD_VALUE: usize = 1024;
    /// A footer's text.
    pub const FOOTER: usize = 2048;
    /// All text of all embeds of a message.
    pub const TOTAL: usize = 6000;
}

/// Slack's documented limits for the blocks used.
pub mod slack_limits {
    /// A header block's text.
    pub const HEADER: usize = 150;
    /// A section's text.
    pub const SECTION: usize = 3000;
    /// Fields of a section.
    pub const FIELDS: usize = 10;
    /// One field's text.
    pub const FIELD: usize = 2000;
    /// The top-level `text` (Slack truncates past 40 000; kept well below).
    pub const TEXT: usize = 4000;
}

/// PagerDuty's `payload.summary` limit.
pub const PAGERDUTY_SUMMARY: usize = 1024;

/// `text` cut to at most `max` characters (not bytes), ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn headline(event: &Event) -> String {
    let a = &event.alert;
    let state = match event.status {
        Status::Firing => "FIRING",
        Status::Resolved => "RESOLVED",
    };
    format!("[{state}] {} {}", a.severity.as_str(), a.title)
}

fn deployment(a: &Alert) -> String {
    format!("{}/{}", a.subject.key.namespace, a.subject.key.name)
}

/// Name/value facts every chat card shows, evidence last.
fn facts(event: &Event) -> Vec<(String, String)> {
    let a = &event.alert;
    let mut facts = vec![
        ("deployment".to_string(), deployment(a)),
        ("type".to_string(), a.subject.type_name().to_string()),
        ("severity".to_string(), a.severity.as_str().to_string()),
        ("started".to_string(), rfc3339(a.started_at)),
    ];
    if let Some(end) = a.ended_at {
        facts.push(("ended".into(), rfc3339(end)));
    }
    facts.extend(a.details.iter().cloned());
    facts
}

/// Alertmanager's `alertname` for an alert: `SmartAutoscaler` + the type in CamelCase.
pub fn alertname(alert: &Alert) -> String {
    let camel: String = alert
        .subject
        .type_name()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("SmartAutoscaler{camel}")
}

/// One element of Alertmanager's `POST /api/v2/alerts` array. `now` is the wall clock: `startsAt` is never in
/// the future (a demo's simulated clock runs ahead), and a resolved alert ends at `now` so Alertmanager resolves
/// it at once.
pub fn alertmanager_alert(alert: &Alert, resolved: bool, now: UnixMillis) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(alertname(alert)));
    labels.insert("namespace".into(), json!(alert.subject.key.namespace));
    labels.insert("deployment".into(), json!(alert.subject.key.name));
    labels.insert("type".into(), json!(alert.subject.type_name()));
    labels.insert("kind".into(), json!(alert.subject.kind.as_str()));
    labels.insert("severity".into(), json!(alert.severity.as_str()));
    labels.insert("source".into(), json!("smart-autoscaler"));
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), json!(alert.title));
    annotations.insert("description".into(), json!(alert.summary));
    for (k, v) in &alert.details {
        annotations.insert(k.clone(), json!(v));
    }
    let mut body = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(alert.started_at.min(now)),
    });
    if resolved {
        body["endsAt"] = json!(rfc3339(now));
    }
    body
}

/// A Slack incoming-webhook message: `text` (the notification's fallback) and `blocks`.
pub fn slack(event: &Event) -> Value {
    use slack_limits as l;
    let a = &event.alert;
    let fields: Vec<Value> = facts(event)
        .into_iter()
        .take(l::FIELDS)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": truncate(&format!("*{k}*\n{v}"), l::FIELD)}))
        .collect();
    json!({
        "text": truncate(&format!("{}: {}", headline(event), a.summary), l::TEXT),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&headline(event), l::HEADER), "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&a.summary, l::SECTION)}, "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("smart-autoscaler · {}", a.subject.id())}]}
        ]
    })
}

/// A Microsoft Teams Workflows webhook message: one Adaptive Card 1.4 attachment.
pub fn teams(event: &Event) -> Value {
    let a = &event.alert;
    let color = match (event.status, a.severity) {
        (Status::Resolved, _) => "Good",
        (_, Severity::Critical) => "Attention",
        (_, Severity::Warning) => "Warning",
        (_, Severity::Info) => "Accent",
    };
    let facts: Vec<Value> = facts(event)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": headline(event), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": a.summary, "wrap": true},
                    {"type": "FactSet", "facts": facts}
                ]
            }
        }]
    })
}

/// A Discord webhook message: `content` and one embed, within every documented limit (the 6000-character total
/// included: the description is shortened first, then fields are dropped from the end).
pub fn discord(event: &Event) -> Value {
    use discord_limits as l;
    let a = &event.alert;
    let color = match (event.status, a.severity) {
        (Status::Resolved, _) => 0x2e_cc71,
        (_, Severity::Critical) => 0xe7_4c3c,
        (_, Severity::Warning) => 0xf1_c40f,
        (_, Severity::Info) => 0x34_98db,
    };
    let title = truncate(&headline(event), l::TITLE);
    let footer = truncate(&format!("smart-autoscaler · {}", a.subject.id()), l::FOOTER);
    let mut fields: Vec<(String, String)> = facts(event)
        .into_iter()
        .take(l::FIELDS)
        .map(|(k, v)| (truncate(&k, l::FIELD_NAME), truncate(&v, l::FIELD_VALUE)))
        .collect();
    let len = |s: &str| s.chars().count();
    let fixed = len(&title) + len(&footer);
    let mut fields_len: usize = fields.iter().map(|(k, v)| len(k) + len(v)).sum();
    while fixed + fields_len > l::TOTAL - 100 {
        let Some((k, v)) = fields.pop() else { break };
        fields_len -= len(&k) + len(&v);
    }
    let description = truncate(
        &a.summary,
        l::DESCRIPTION.min(l::TOTAL - fixed - fields_len),
    );
    let fields: Vec<Value> = fields
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v, "inline": v.len() < 40}))
        .collect();
    json!({
        "content": truncate(&format!("{}: {}", headline(event), a.summary), l::CONTENT),
        "allowed_mentions": {"parse": []},
        "embeds": [{
            "title": title,
            "description": description,
            "color": color,
            "fields": fields,
            "footer": {"text": footer},
            "timestamp": rfc3339(a.ended_at.unwrap_or(a.started_at)),
        }]
    })
}

/// A PagerDuty Events API v2 event: `trigger` (with the payload) or `resolve`, both with the alert's stable
/// `dedup_key`, so a re-fire updates the same incident and a resolve closes it.
pub fn pagerduty(event: &Event, routing_key: &str) -> Value {
    let a = &event.alert;
    match event.status {
        Status::Resolved => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": a.subject.id(),
        }),
        Status::Firing => {
            let details: serde_json::Map<String, Value> = facts(event)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": a.subject.id(),
                "client": "smart-autoscaler",
                "payload": {
                    "summary": truncate(&format!("{}: {}", a.title, a.summary), PAGERDUTY_SUMMARY),
                    "source": deployment(a),
                    "severity": a.severity.as_str(),
                    "timestamp": rfc3339(a.started_at),
                    "component": a.subject.key.name,
                    "group": a.subject.key.namespace,
                    "class": a.subject.type_name(),
                    "custom_details": details,
                }
            })
        }
    }
}

/// The generic webhook's body (schema version [`WEBHOOK_SCHEMA_VERSION`], documented in docs/alerting.md).
pub fn webhook(event: &Event, now: UnixMillis) -> Value {
    let a = &event.alert;
    let details: serde_json::Map<String, Value> = a
        .details
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "version": WEBHOOK_SCHEMA_VERSION,
        "source": "smart-autoscaler",
        "status": event.status.as_str(),
        "sent_at": rfc3339(now),
        "alert": {
            "id": a.subject.id(),
            "kind": a.subject.kind.as_str(),
            "type": a.subject.type_name(),
            "severity": a.severity.as_str(),
            "escalated_from": event.escalated_from.map(Severity::as_str),
            "namespace": a.subject.key.namespace,
            "deployment": a.subject.key.name,
            "title": a.title,
            "summary": a.summary,
            "started_at": rfc3339(a.started_at),
            "ended_at": a.ended_at.map(rfc3339),
            "details": details,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::router::Router;
    use crate::alerting::router::tests::{anomaly, snapshot};
    use crate::domain::anomaly::AnomalyKind;

    fn firing(summary_len: usize) -> Event {
        let mut a = anomaly(
            "api",
            AnomalyKind::CpuSpike,
            Severity::Critical,
            1_000,
            None,
        );
        a.summary = "x".repeat(summary_len);
        Router::new().observe(&snapshot(1_000, vec![a])).remove(0)
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo", 4), "hél…");
        assert_eq!(truncate("héllo", 4).chars().count(), 4);
    }

    #[test]
    fn discord_stays_within_its_limits() {
        for len in [10, 5_000, 20_000] {
            let body = discord(&firing(len));
            let content = body["content"].as_str().unwrap();
            assert!(content.chars().count() <= discord_limits::CONTENT);
            let embed = &body["embeds"][0];
            let count = |v: &Value| v.as_str().unwrap().chars().count();
            let mut total = count(&embed["title"])
                + count(&embed["description"])
                + count(&embed["footer"]["text"]);
            for f in embed["fields"].as_array().unwrap() {
                total += count(&f["name"]) + count(&f["value"]);
            }
            assert!(total <= discord_limits::TOTAL, "{total}");
            assert!(count(&embed["description"]) <= discord_limits::DESCRIPTION);
        }
    }

    #[test]
    fn pagerduty_keys_are_stable_and_resolve_carries_no_payload() {
        let mut router = Router::new();
        let a = anomaly("api", AnomalyKind::CpuSpike, Severity::Warning, 1_000, None);
        let fire = router.observe(&snapshot(1_000, vec![a.clone()])).remove(0);
        let mut ended = a;
        ended.ended_at = Some(2_000);
        let resolve = router.observe(&snapshot(2_000, vec![ended])).remove(0);
        let t = pagerduty(&fire, "k");
        let r = pagerduty(&resolve, "k");
        assert_eq!(t["dedup_key"], r["dedup_key"]);
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(r["event_action"], "resolve");
        assert!(r.get("payload").is_none());
        assert_eq!(t["payload"]["severity"], "warning");
    }

    #[test]
    fn alertmanager_never_starts_in_the_future() {
        let e = firing(10);
        let body = alertmanager_alert(&e.alert, false, 500);
        assert_eq!(body["startsAt"], rfc3339(500));
        assert!(body.get("endsAt").is_none());
        assert_eq!(body["labels"]["alertname"], "SmartAutoscalerCpuSpike");
        let body = alertmanager_alert(&e.alert, true, 60_000);
        assert_eq!(body["endsAt"], rfc3339(60_000));
    }
}
