//! Label and field selectors, as the real server parses them.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector: requirements ANDed. Label selectors support `=`, `==`,
/// `!=`, `key`, `!key`, `in (...)` and `notin (...)`; field selectors `=`,
/// `==` and `!=` over any dotted path (`metadata.name`, `status.phase`).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Selector {
    reqs: Vec<Req>,
    fields: bool,
}

/// Splits on commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn parse_term(t: &str, fields: bool) -> Result<Req, String> {
    let err = || format!("unable to parse requirement: {t:?}");
    if let Some(open) = t.find('(') {
        if fields {
            return Err(err());
        }
        let head = t[..open].trim_end();
        let close = t.rfind(')').filter(|&c| c > open).ok_or_else(err)?;
        if !t[close + 1..].trim().is_empty() {
            return Err(err());
        }
        let values: Vec<String> = t[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .collect();
        let (key, notin) = if let Some(k) = head.strip_suffix("notin") {
            (k.trim(), true)
        } else if let Some(k) = head.strip_suffix("in") {
            (k.trim(), false)
        } else {
            return Err(err());
        };
        if !valid_key(key) || !head[key.len()..].starts_with(char::is_whitespace) {
            return Err(err());
        }
        return Ok(if notin {
            Req::NotIn(key.into(), values)
        } else {
            Req::In(key.into(), values)
        });
    }
    let (key, value, op) = if let Some((k, v)) = t.split_once("!=") {
        (k, Some(v), "!=")
    } else if let Some((k, v)) = t.split_once("==") {
        (k, Some(v), "=")
    } else if let Some((k, v)) = t.split_once('=') {
        (k, Some(v), "=")
    } else {
        (t, None, "")
    };
    let key = key.trim();
    match value {
        Some(v) => {
            let v = v.trim().to_string();
            if !valid_key(key) || v.contains(['=', '!']) {
                return Err(err());
            }
            Ok(if op == "!=" {
                Req::NotEq(key.into(), v)
            } else {
                Req::Eq(key.into(), v)
            })
        }
        None if fields => Err(err()),
        None => match key.strip_prefix('!') {
            Some(k) if valid_key(k.trim()) => Ok(Req::NotExists(k.trim().into())),
            None if valid_key(key) => Ok(Req::Exists(key.into())),
            _ => Err(err()),
        },
    }
}

impl Selector {
    fn parse(s: Option<&str>, fields: bool) -> Result<Self, String> {
        let s = s.unwrap_or("").trim();
        let reqs = if s.is_empty() {
            Vec::new()
        } else {
            terms(s)
                .into_iter()
                .map(|t| parse_term(t.trim(), fields))
                .collect::<Result<_, _>>()?
        };
        Ok(Self { reqs, fields })
    }

    pub fn labels(s: Option<&str>) -> Result<Self, String> {
        Self::parse(s, false)
    }

    pub fn fields(s: Option<&str>) -> Result<Self, String> {
        Self::parse(s, true)
    }

    fn lookup(&self, obj: &Value, key: &str) -> Option<String> {
        if self.fields {
            let mut v = obj;
            for part in key.split('.') {
                v = v.get(part)?;
            }
            Some(match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
        } else {
            obj.get("metadata")?
                .get("labels")?
                .get(key)?
                .as_str()
                .map(str::to_string)
        }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::Exists(k) => self.lookup(obj, k).is_some(),
            Req::NotExists(k) => self.lookup(obj, k).is_none(),
            Req::Eq(k, v) => {
                self.lookup(obj, k).unwrap_or_default() == *v && {
                    // a label must exist to equal anything, a field is "" if unset
                    self.fields || self.lookup(obj, k).is_some()
                }
            }
            Req::NotEq(k, v) => {
                self.lookup(obj, k).unwrap_or_default() != *v
                    || (!self.fields && self.lookup(obj, k).is_none())
            }
            Req::In(k, vs) => self.lookup(obj, k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => self.lookup(obj, k).is_none_or(|x| !vs.contains(&x)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Selector;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let m = |s: &str| Selector::labels(Some(s)).expect(s).matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("app in (db, web)"));
        assert!(!m("app notin (db,web)"));
        assert!(m("missing notin (a)"));
        assert!(!m("missing in (a)"));
        assert!(!m("app=web,tier=back"));
        assert!(m(""));
        for bad in ["app in db", "=x", "a=b=c", "a,,b", "app in (a"] {
            assert!(Selector::labels(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "status": {"phase": "Running"}});
        let m = |s: &str| Selector::fields(Some(s)).expect(s).matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=ns"));
        assert!(m("metadata.name!=b"));
        assert!(m("status.phase=Running"));
        assert!(!m("metadata.namespace=other"));
        assert!(m("spec.nodeName="));
        assert!(Selector::fields(Some("metadata.name")).is_err());
    }
}
