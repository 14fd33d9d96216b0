//! Kubernetes label selectors in their string form (`labelSelector=` query parameter).
//!
//! Follows apimachinery's `pkg/labels/selector.go` grammar: comma-joined requirements of the forms `k=v`,
//! `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`, with the same key and value
//! validation, so a selector the apiserver would reject is rejected here with a message that says why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A parsed selector: the conjunction of its requirements. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    op: Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

/// Why a selector string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(String);

impl Selector {
    /// Parses a selector string. Whitespace around tokens is ignored; an empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser::new(input).parse()
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the selector that selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value this selector pins `key` to, if it has an `=`/`==` or single-value `in` requirement on it.
    pub fn pinned_value(&self, key: &str) -> Option<&str> {
        self.requirements.iter().find_map(|r| match &r.op {
            Operator::Equals(v) if r.key == key => Some(v.as_str()),
            Operator::In(set) if r.key == key && set.len() == 1 => {
                set.iter().next().map(String::as_str)
            }
            _ => None,
        })
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(set) => value.is_some_and(|x| set.contains(x)),
            Operator::NotIn(set) => value.is_none_or(|x| !set.contains(x)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan(n) => value
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Operator::LessThan(n) => value
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

impl fmt::Display for Selector {
    /// Prints the canonical form apimachinery prints: requirements sorted by key, set values sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reqs: Vec<&Requirement> = self.requirements.iter().collect();
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        for (i, r) in reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
            match &r.op {
                Operator::Equals(v) => write!(f, "{}={}", r.key, v)?,
                Operator::NotEquals(v) => write!(f, "{}!={}", r.key, v)?,
                Operator::In(s) => write!(f, "{} in ({})", r.key, join(s))?,
                Operator::NotIn(s) => write!(f, "{} notin ({})", r.key, join(s))?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
                Operator::GreaterThan(n) => write!(f, "{}>{}", r.key, n)?,
                Operator::LessThan(n) => write!(f, "{}<{}", r.key, n)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "'{s}'"),
            Token::Bang => f.write_str("'!'"),
            Token::Eq => f.write_str("'='"),
            Token::DoubleEq => f.write_str("'=='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Gt => f.write_str("'>'"),
            Token::Lt => f.write_str("'<'"),
            Token::In => f.write_str("'in'"),
            Token::NotIn => f.write_str("'notin'"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
            Token::End => f.write_str("end of string"),
        }
    }
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>')
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (token, width) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '!' if next == Some('=') => (Token::NotEq, 2),
            '!' => (Token::Bang, 1),
            '=' if next == Some('=') => (Token::DoubleEq, 2),
            '=' => (Token::Eq, 1),
            '>' => (Token::Gt, 1),
            '<' => (Token::Lt, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            _ => {
                let start = i;
                while i < chars.len() && !is_special(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                });
                continue;
            }
        };
        tokens.push(token);
        i += width;
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Parser {
            tokens: lex(input),
            pos: 0,
        }
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.pos]
    }

    fn next(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if *self.peek() == Token::End {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(self.requirement()?);
            match self.next() {
                Token::End => break,
                Token::Comma => {
                    if *self.peek() == Token::End {
                        return Err(SelectorError(
                            "found end of string, expected a key after ','".into(),
                        ));
                    }
                }
                other => {
                    return Err(SelectorError(format!(
                        "found {other}, expected ',' or end of string"
                    )));
                }
            }
        }
        Ok(Selector { requirements })
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = if *self.peek() == Token::Bang {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Token::Ident(k) => k,
            other => return Err(SelectorError(format!("found {other}, expected a key"))),
        };
        validate_key(&key)?;
        if negated {
            return match self.peek() {
                Token::Comma | Token::End => Ok(Requirement {
                    key,
                    op: Operator::DoesNotExist,
                }),
                other => Err(SelectorError(format!(
                    "found {other}, expected ',' or end of string after '!{key}'"
                ))),
            };
        }
        if matches!(self.peek(), Token::Comma | Token::End) {
            return Ok(Requirement {
                key,
                op: Operator::Exists,
            });
        }
        let op = match self.next() {
            Token::Eq | Token::DoubleEq => Operator::Equals(self.single_value(&key)?),
            Token::NotEq => Operator::NotEquals(self.single_value(&key)?),
            Token::Gt => Operator::GreaterThan(self.integer_value(&key)?),
            Token::Lt => Operator::LessThan(self.integer_value(&key)?),
            Token::In => Operator::In(self.value_set(&key)?),
            Token::NotIn => Operator::NotIn(self.value_set(&key)?),
            other => {
                return Err(SelectorError(format!(
                    "found {other}, expected one of '=', '==', '!=', 'in', 'notin', '>', '<' after key '{key}'"
                )));
            }
        };
        Ok(Requirement { key, op })
    }

    fn single_value(&mut self, key: &str) -> Result<String, SelectorError> {
        match self.peek().clone() {
            Token::Ident(v) => {
                self.next();
                validate_value(key, &v)?;
                Ok(v)
            }
            // `k=` selects the empty value, as upstream.
            Token::Comma | Token::End => Ok(String::new()),
            other => Err(SelectorError(format!(
                "found {other}, expected a value for key '{key}'"
            ))),
        }
    }

    fn integer_value(&mut self, key: &str) -> Result<i64, SelectorError> {
        match self.next() {
            Token::Ident(v) => v.parse::<i64>().map_err(|_| {
                SelectorError(format!(
                    "for '>' and '<' on key '{key}', value '{v}' must be an integer"
                ))
            }),
            other => Err(SelectorError(format!(
                "found {other}, expected an integer for key '{key}'"
            ))),
        }
    }

    fn value_set(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            other => {
                return Err(SelectorError(format!(
                    "found {other}, expected '(' after 'in'/'notin'"
                )));
            }
        }
        let mut values = BTreeSet::new();
        loop {
            match self.next() {
                Token::Ident(v) => {
                    validate_value(key, &v)?;
                    values.insert(v);
                    match self.next() {
                        Token::Comma => continue,
                        Token::Close => break,
                        other => {
                            return Err(SelectorError(format!(
                                "found {other}, expected ',' or ')'"
                            )));
                        }
                    }
                }
                // Upstream accepts empty members such as `(a,)`; they select the empty value.
                Token::Comma => {
                    values.insert(String::new());
                }
                Token::Close => {
                    if !values.is_empty() {
                        values.insert(String::new());
                    }
                    break;
                }
                other => return Err(SelectorError(format!("found {other}, expected a value"))),
            }
        }
        if values.is_empty() {
            return Err(SelectorError(format!(
                "for 'in', 'notin' operators, values set can't be empty (key '{key}')"
            )));
        }
        Ok(values)
    }
}

fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    };
    if valid {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "invalid label key '{key}': name part must be at most 63 characters of [A-Za-z0-9_.-] starting and \
             ending with an alphanumeric, with an optional DNS subdomain prefix and '/'"
        )))
    }
}

fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "invalid label value '{value}' for key '{key}': must be at most 63 characters of [A-Za-z0-9_.-] \
             starting and ending with an alphanumeric"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selects_everything() {
        let s = Selector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&labels(&[])));
        assert!(
            Selector::parse("   ")
                .unwrap()
                .matches(&labels(&[("a", "b")]))
        );
    }

    #[test]
    fn equality_forms() {
        let l = labels(&[("deployment", "api"), ("tier", "web")]);
        assert!(Selector::parse("deployment=api").unwrap().matches(&l));
        assert!(Selector::parse("deployment==api").unwrap().matches(&l));
        assert!(
            Selector::parse("deployment = api , tier=web")
                .unwrap()
                .matches(&l)
        );
        assert!(!Selector::parse("deployment=web").unwrap().matches(&l));
        assert!(Selector::parse("deployment!=web").unwrap().matches(&l));
        assert!(!Selector::parse("deployment!=api").unwrap().matches(&l));
        // != holds when the label is absent, as upstream.
        assert!(Selector::parse("missing!=x").unwrap().matches(&l));
    }

    #[test]
    fn set_forms() {
        let l = labels(&[("queue", "orders")]);
        assert!(
            Selector::parse("queue in (orders,payments)")
                .unwrap()
                .matches(&l)
        );
        assert!(!Selector::parse("queue in (payments)").unwrap().matches(&l));
        assert!(
            Selector::parse("queue notin (payments)")
                .unwrap()
                .matches(&l)
        );
        assert!(
            !Selector::parse("queue notin (orders, payments)")
                .unwrap()
                .matches(&l)
        );
        assert!(Selector::parse("region notin (eu)").unwrap().matches(&l));
        assert!(!Selector::parse("region in (eu)").unwrap().matches(&l));
    }

    #[test]
    fn existence_forms() {
        let l = labels(&[("queue", "orders")]);
        assert!(Selector::parse("queue").unwrap().matches(&l));
        assert!(!Selector::parse("!queue").unwrap().matches(&l));
        assert!(Selector::parse("!region").unwrap().matches(&l));
        assert!(Selector::parse("queue,!region").unwrap().matches(&l));
    }

    #[test]
    fn numeric_comparisons() {
        let l = labels(&[("replicas", "7")]);
        assert!(Selector::parse("replicas>5").unwrap().matches(&l));
        assert!(!Selector::parse("replicas<5").unwrap().matches(&l));
        assert!(Selector::parse("replicas>x").is_err());
    }

    #[test]
    fn prefixed_keys() {
        let l = labels(&[("app.kubernetes.io/name", "shop")]);
        assert!(
            Selector::parse("app.kubernetes.io/name=shop")
                .unwrap()
                .matches(&l)
        );
        assert!(Selector::parse("Bad_Prefix/name=shop").is_err());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "=x",
            "a=b=c",
            "a in b",
            "a in ()",
            "a in (b",
            "a,",
            ",a",
            "!a=b",
            "a=(b)",
            "-bad=x",
            "a=-bad",
            "a b",
            &format!("a={}", "x".repeat(64)),
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn empty_value_is_allowed() {
        let s = Selector::parse("a=").unwrap();
        assert!(s.matches(&labels(&[("a", "")])));
        assert!(!s.matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn canonical_display_sorts() {
        let s = Selector::parse("z=1, a in (c,b), !m").unwrap();
        assert_eq!(s.to_string(), "a in (b,c),!m,z=1");
    }

    #[test]
    fn pinned_value() {
        assert_eq!(
            Selector::parse("deployment=api")
                .unwrap()
                .pinned_value("deployment"),
            Some("api")
        );
        assert_eq!(
            Selector::parse("deployment in (api)")
                .unwrap()
                .pinned_value("deployment"),
            Some("api")
        );
        assert_eq!(
            Selector::parse("deployment in (a,b)")
                .unwrap()
                .pinned_value("deployment"),
            None
        );
    }
}
