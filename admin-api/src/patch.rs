//! PATCH semantics as pure functions: RFC 7386 JSON merge patch, and APISIX's sub-path
//! patch (`PATCH /routes/1/upstream/nodes` replaces the value at that path).
use serde_json::{Map, Value};

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (name, value) in patch {
            if value.is_null() {
                target.remove(name);
            } else {
                merge(target.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Deepest sub-path accepted. The deepest field of any resource is far shallower
/// (`plugins/traffic-split/rules/0/weighted_upstreams/0/upstream/nodes` is 8); the bound
/// keeps the document that results shallow enough to validate, store and drop without
/// deep recursion (3,000 segments once overflowed the stack).
pub const MAX_SUB_PATH_SEGMENTS: usize = 32;

/// Replaces the value at `path` (`a/b/c`) with `value`, creating missing objects on the
/// way as APISIX does; `null` removes the field. A numeric segment indexes an existing
/// array element. The error is a message for the client that names the failing prefix.
pub fn set_path(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let depth = path.split('/').count();
    if depth > MAX_SUB_PATH_SEGMENTS {
        return Err(format!(
            "invalid sub-path: {depth} segments, at most {MAX_SUB_PATH_SEGMENTS} are allowed"
        ));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!("invalid sub-path {path:?}: empty segment"));
    }
    let Some((last, parents)) = segments.split_last() else {
        return Err(format!("invalid sub-path {path:?}"));
    };
    let mut current = target;
    for (i, segment) in parents.iter().enumerate() {
        let here = || segments[..=i].join("/");
        current = match current {
            Value::Object(map) => map
                .entry(segment.to_string())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => {
                let index = array_index(segment, items.len())
                    .ok_or_else(|| format!("invalid sub-path {:?}: no such element", here()))?;
                &mut items[index]
            }
            _ => return Err(format!("invalid sub-path {:?}: not an object", here())),
        };
    }
    match current {
        Value::Object(map) => {
            if value.is_null() {
                map.remove(*last);
            } else {
                map.insert(last.to_string(), value);
            }
            Ok(())
        }
        Value::Array(items) => {
            let index = array_index(last, items.len())
                .ok_or_else(|| format!("invalid sub-path {path:?}: no such element"))?;
            items[index] = value;
            Ok(())
        }
        _ => Err(format!(
            "invalid sub-path {path:?}: {:?} is not an object",
            parents.join("/")
        )),
    }
}

fn array_index(segment: &str, len: usize) -> Option<usize> {
    segment.parse::<usize>().ok().filter(|i| *i < len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(target: Value, patch: Value, expected: Value) {
        let mut got = target.clone();
        merge(&mut got, &patch);
        assert_eq!(got, expected, "merge({target}, {patch})");
    }

    /// The examples of RFC 7386, appendix A, and a few of ours.
    #[test]
    fn merge_patch() {
        check(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
        check(
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        );
        check(json!({"a": "b"}), json!({"a": null}), json!({}));
        check(
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        );
        check(json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"}));
        check(json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]}));
        check(
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        );
        check(
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        );
        check(json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"]));
        check(json!({"a": "b"}), json!(["c"]), json!(["c"]));
        check(json!({"a": "foo"}), json!(null), json!(null));
        check(json!({"a": "foo"}), json!("bar"), json!("bar"));
        check(
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        );
        check(
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        );
        check(
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        );
        // Ours: a missing key is created, nested nulls prune only what they name.
        check(
            json!({"uri": "/a", "upstream": {"nodes": {"h:1": 1, "h:2": 1}}}),
            json!({"upstream": {"nodes": {"h:1": null, "h:3": 2}}, "desc": "x"}),
            json!({"uri": "/a", "upstream": {"nodes": {"h:2": 1, "h:3": 2}}, "desc": "x"}),
        );
    }

    fn check_path(target: Value, path: &str, value: Value, expected: Result<Value, &str>) {
        let mut got = target.clone();
        let result = set_path(&mut got, path, value.clone());
        match expected {
            Ok(want) => {
                assert_eq!(result, Ok(()), "{path}");
                assert_eq!(got, want, "set_path({target}, {path}, {value})");
            }
            Err(needle) => {
                let err = result.expect_err(path);
                assert!(err.contains(needle), "{path}: {err}");
            }
        }
    }

    #[test]
    fn sub_path() {
        let route =
            json!({"uri": "/a", "methods": ["GET", "POST"], "upstream": {"nodes": {"h:1": 1}}});
        check_path(
            route.clone(),
            "methods",
            json!(["GET"]),
            Ok(json!({"uri": "/a", "methods": ["GET"], "upstream": {"nodes": {"h:1": 1}}})),
        );
        check_path(
            route.clone(),
            "upstream/nodes",
            json!({"h:2": 3}),
            Ok(json!({"uri": "/a", "methods": ["GET", "POST"], "upstream": {"nodes": {"h:2": 3}}})),
        );
        check_path(
            route.clone(),
            "methods/1",
            json!("PUT"),
            Ok(json!({"uri": "/a", "methods": ["GET", "PUT"], "upstream": {"nodes": {"h:1": 1}}})),
        );
        check_path(route.clone(), "desc", json!(null), Ok(route.clone()));
        check_path(
            json!({"uri": "/a"}),
            "labels/team",
            json!("x"),
            Ok(json!({"uri": "/a", "labels": {"team": "x"}})),
        );
        check_path(json!({"uri": "/a"}), "uri", json!(null), Ok(json!({})));
        check_path(
            route.clone(),
            "uri/x",
            json!(1),
            Err("\"uri\" is not an object"),
        );
        let deep = |n: usize| vec!["a"; n].join("/");
        check_path(
            json!({}),
            &deep(MAX_SUB_PATH_SEGMENTS + 1),
            json!("x"),
            Err("33 segments, at most 32"),
        );
        check_path(json!({}), &deep(3000), json!("x"), Err("at most 32"));
        let mut nested = json!("x");
        for _ in 1..MAX_SUB_PATH_SEGMENTS {
            nested = json!({ "a": nested });
        }
        check_path(
            json!({}),
            &deep(MAX_SUB_PATH_SEGMENTS),
            json!("x"),
            Ok(json!({ "a": nested })),
        );
        check_path(
            route.clone(),
            "methods/5",
            json!("GET"),
            Err("no such element"),
        );
        check_path(
            route.clone(),
            "methods/x/y",
            json!(1),
            Err("\"methods/x\": no such element"),
        );
        check_path(route, "upstream//nodes", json!(1), Err("empty segment"));
    }
}
