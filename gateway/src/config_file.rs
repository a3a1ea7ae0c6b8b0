//! File mode (APISIX's standalone mode): the configuration comes from one YAML or JSON
//! file instead of etcd. The same resources, as top-level lists (`routes`, `upstreams`,
//! …); a YAML file must end with a `#END` line, so that a file caught halfway through a
//! write is never applied; `${{NAME}}` and `${{NAME:=default}}` in its strings (keys and
//! values) are replaced from the environment. The file is read again when it changes, and what changed is applied as
//! etcd events would be (`State::apply`, then one snapshot swap): a file edit is as
//! zero-downtime as an etcd write. A file that does not load changes nothing; the reason
//! is logged and counted (`gateway_config_file_errors_total`).
use crate::state::{Applied, Change, State};
use crate::watch::DnsLink;
use crate::Shared;
use model::Kind;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The prefix the file's resources are keyed under in `State` (never written anywhere).
pub const PREFIX: &str = "/file";
/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// The resources of a configuration file: etcd-style key → JSON value.
pub type Resources = BTreeMap<String, Vec<u8>>;

/// Reads a configuration file's text. `json`: the file is JSON (no `#END` needed).
/// Errors name where the problem is (`routes[2].id`).
pub fn parse(
    text: &str,
    json: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resources, String> {
    if !json
        && text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::trim)
            != Some("#END")
    {
        return Err("the file does not end with a #END line (it may be half written)".into());
    }
    let doc: Value = if json {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?
    };
    // In the parsed strings (keys too: nodes are keyed by address), never in the raw
    // text: a value with quotes or `#` cannot change the document, a comment is a comment.
    let doc = substitute_in(doc, env)?;
    let top = match doc {
        Value::Object(m) => m,
        // An empty YAML document: no resources.
        Value::Null => Default::default(),
        _ => return Err("the file must be a mapping of resource kinds to lists".into()),
    };
    let mut out = Resources::new();
    for (name, list) in top {
        let Some(kind) = Kind::parse(&name) else {
            return Err(format!("{name}: not a resource kind (routes, services, upstreams, ssls, consumers, global_rules, plugin_configs, consumer_groups, plugin_metadata)"));
        };
        let items = match list {
            Value::Array(items) => items,
            Value::Null => continue,
            _ => return Err(format!("{name}: must be a list")),
        };
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(mut fields) = item else {
                return Err(format!("{name}[{i}]: must be a mapping"));
            };
            let id_field = match kind {
                Kind::Consumers => "username",
                _ => "id",
            };
            let id = match fields.get(id_field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(format!(
                        "{name}[{i}].{id_field}: required (a string or number)"
                    ))
                }
            };
            let id = model::Id::parse(&id).map_err(|e| format!("{name}[{i}].{id_field}: {e}"))?;
            if kind != Kind::Consumers {
                fields.insert("id".into(), Value::String(id.to_string()));
            }
            let key = model::key::resource_key(PREFIX, kind, &id);
            let value = serde_json::to_vec(&Value::Object(fields)).map_err(|e| e.to_string())?;
            if out.insert(key, value).is_some() {
                return Err(format!("{name}[{i}].{id_field}: {id} appears twice"));
            }
        }
    }
    Ok(out)
}

fn substitute_in(v: Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if s.contains("${{") => Value::String(substitute(&s, env)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| substitute_in(i, env))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = if k.contains("${{") {
                        substitute(&k, env)?
                    } else {
                        k
                    };
                    Ok((k, substitute_in(v, env)?))
                })
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

/// `${{NAME}}` → the variable's value; `${{NAME:=default}}` → the default when unset.
fn substitute(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let end = after.find("}}").ok_or_else(|| {
            let near: String = rest[at..].chars().take(20).collect();
            format!("unclosed ${{{{ near {near:?}")
        })?;
        let inner = after[..end].trim();
        let (name, default) = match inner.split_once(":=") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner, None),
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!("${{{{{inner}}}}}: not a variable name"));
        }
        match env(name).or_else(|| default.map(str::to_string)) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "${{{{{name}}}}}: the environment variable is not set and has no default"
                ))
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The changes that turn `old` into `new`.
pub fn diff(old: &Resources, new: &Resources) -> Vec<Change> {
    let mut changes: Vec<Change> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| Change::Delete { key: k.clone() })
        .collect();
    changes.extend(
        new.iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(k, v)| Change::Put {
                key: k.clone(),
                value: v.clone(),
            }),
    );
    changes
}

/// Loads the file now, then whenever it changes, until `shutdown`.
pub async fn run(
    path: PathBuf,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut dns: DnsLink,
    keyring: Arc<model::Keyring>,
) {
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let mut state = State::with_keyring(keyring);
    let mut loaded = Resources::new();
    let mut last_text: Option<String> = None;
    let mut generation = 0i64;
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((name, addrs)) = dns.updates.recv() => {
                if state.apply_dns(&name, addrs) == Applied::Changed {
                    crate::watch::publish(&shared, &mut state, generation);
                }
                continue;
            }
            _ = crate::stopped(&mut shutdown) => return,
        }
        let text = match read(&path).await {
            Ok(t) => t,
            Err(e) => {
                if last_text.is_some() || generation == 0 {
                    failed(&shared, &path, &e);
                }
                last_text = None;
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_text = Some(text.clone());
        let env = |name: &str| std::env::var(name).ok();
        let resources = match parse(&text, json, &env) {
            Ok(r) => r,
            Err(e) => {
                failed(&shared, &path, &e);
                continue;
            }
        };
        let changes = diff(&loaded, &resources);
        let mut changed = generation == 0;
        for change in changes {
            changed |= state.apply(PREFIX, change) == Applied::Changed;
        }
        loaded = resources;
        generation += 1;
        if changed {
            crate::watch::publish(&shared, &mut state, generation);
        }
        shared
            .metrics
            .config_file_loads
            .fetch_add(1, Ordering::Relaxed);
        shared.ready.store(true, Ordering::Relaxed);
        shared.metrics.ready.store(1, Ordering::Relaxed);
        tracing::info!(path = %path.display(), generation, resources = loaded.len(), "configuration file loaded");
    }
}

async fn read(path: &Path) -> Result<String, String> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read it: {e}"))
}

fn failed(shared: &Shared, path: &Path, why: &str) {
    shared
        .metrics
        .config_file_errors
        .fetch_add(1, Ordering::Relaxed);
    tracing::error!(path = %path.display(), error = %why, "configuration file not applied; serving the last good one");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PORT").then(|| "1980".to_string())
    }

    #[test]
    fn files_table() {
        let ok: &[(&str, bool, &[&str])] = &[
            ("routes:\n  - id: 1\n    uri: /a\n#END\n", false, &["/file/routes/1"]),
            (
                "routes:\n  -\n    id: r1\n    uri: /a\n    upstream_id: u\nupstreams:\n  - id: u\n    nodes:\n      \"127.0.0.1:${{PORT}}\": 1\nconsumers:\n  - username: jack\nplugin_metadata:\n  - id: http-logger\n#END",
                false,
                &["/file/consumers/jack", "/file/plugin_metadata/http-logger", "/file/routes/r1", "/file/upstreams/u"],
            ),
            ("#END\n", false, &[]),
            ("routes: []\n#END\n\n", false, &[]),
            ("{\"routes\": [{\"id\": 7, \"uri\": \"/j\"}]}", true, &["/file/routes/7"]),
        ];
        for (text, json, keys) in ok {
            let got = parse(text, *json, &env).unwrap();
            assert_eq!(
                got.keys().map(String::as_str).collect::<Vec<_>>(),
                *keys,
                "{text}"
            );
        }
        let r = parse("upstreams:\n  - id: u\n    nodes:\n      \"h:${{PORT}}\": 1\n      \"h:${{MISSING:=8080}}\": 1\n#END", false, &env).unwrap();
        let v: Value = serde_json::from_slice(&r["/file/upstreams/u"]).unwrap();
        assert_eq!(v["nodes"]["h:1980"], 1);
        assert_eq!(v["nodes"]["h:8080"], 1);
        // In the parsed strings only: a commented line is a comment, a value with quotes
        // or `#` stays one value.
        let quoted = |name: &str| (name == "Q").then(|| r#"a "b" # c: d"#.to_string());
        let r = parse(
            "# old: ${{UNSET}}\nroutes:\n  - id: 1\n    desc: \"${{Q}}\"\n#END",
            false,
            &quoted,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r["/file/routes/1"]).unwrap();
        assert_eq!(v["desc"], r#"a "b" # c: d"#);
        let r = parse(
            r#"{"routes": [{"id": 1, "desc": "${{Q}}"}]}"#,
            true,
            &quoted,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&r["/file/routes/1"]).unwrap();
        assert_eq!(v["desc"], r#"a "b" # c: d"#);
        let bad: &[(&str, bool, &str)] = &[
            ("routes:\n  - id: 1\n", false, "#END"),
            ("routes:\n  - id: 1\n#END\nmore: 1\n", false, "#END"),
            ("routes: [\n#END\n", false, "invalid YAML"),
            ("hosts:\n  - id: 1\n#END\n", false, "hosts"),
            ("routes:\n  - uri: /a\n#END\n", false, "routes[0].id"),
            (
                "routes:\n  - id: 1\n  - id: 1\n#END\n",
                false,
                "routes[1].id",
            ),
            ("routes: 3\n#END\n", false, "routes: must be a list"),
            ("routes:\n  - 3\n#END\n", false, "routes[0]"),
            ("routes:\n  - id: \"a/b\"\n#END\n", false, "routes[0].id"),
            ("x: ${{NOPE}}\n#END\n", false, "NOPE"),
            ("x: ${{ bad-name }}\n#END\n", false, "not a variable"),
            ("x: ${{PORT\n#END\n", false, "unclosed"),
            // Cut inside a multi-byte character, the message must not panic.
            ("x: ${{ABCDEFGHIJKLMNOPé\n#END\n", false, "unclosed"),
            ("[1, 2]", true, "mapping"),
            ("{", true, "invalid JSON"),
        ];
        for (text, json, named) in bad {
            let e = parse(text, *json, &env).unwrap_err();
            assert!(e.contains(named), "{text:?}: {e}");
        }
    }

    #[test]
    fn diff_table() {
        let m = |pairs: &[(&str, &str)]| -> Resources {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let old = m(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let new = m(&[("a", "1"), ("b", "22"), ("d", "4")]);
        let shown: Vec<String> = diff(&old, &new)
            .into_iter()
            .map(|c| match c {
                Change::Put { key, value } => {
                    format!("put {key}={}", String::from_utf8(value).unwrap())
                }
                Change::Delete { key } => format!("delete {key}"),
            })
            .collect();
        assert_eq!(shown, ["delete c", "put b=22", "put d=4"]);
        assert!(diff(&old, &old).is_empty());
    }
}
