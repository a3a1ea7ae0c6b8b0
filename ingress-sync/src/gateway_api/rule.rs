//! What a rule does with the requests it matched (pure): its filters as plugins, its
//! `backendRefs` as the route's upstream and `traffic-split` (a backendRef's own filters
//! as the plugins of its split target), the share of unresolved refs
//! (or a rule with none) answered 500 by `fault-injection`, its timeouts. Shared by
//! HTTPRoute and GRPCRoute rules.
use super::translate::{backend, backend_speaking, prefix_of, BackendProtocol, Placement};
use super::types::*;
use crate::translate::{upstream_id, BackendRef, Cluster};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// What a rule does with a request it matched: plugins, and the upstream(s).
#[derive(Debug, Default)]
pub(super) struct Action {
    plugins: Map<String, Value>,
    /// The backends with weights > 0.
    weighted: Vec<Weighted>,
    pub(super) backends: Vec<BackendRef>,
    /// Answer this request itself (a redirect): no upstream.
    answers: bool,
    /// Seconds: the rule's `request`/`backendRequest` timeout, the smaller one.
    timeout: Option<f64>,
    /// A backend speaks WebSocket (`appProtocol: kubernetes.io/ws`).
    websocket: bool,
    /// What was left out of the rule (a mirror that cannot be reached) and why.
    pub(super) warnings: Vec<String>,
}

#[derive(Debug)]
struct Weighted {
    backend: BackendRef,
    weight: u32,
    /// The backendRef's own filters, as the plugins of its `traffic-split` target: they
    /// run only for the requests sent to it, after the rule's.
    plugins: Map<String, Value>,
}

/// The model's bounds: `traffic-split` weights and route timeouts (seconds).
const MAX_WEIGHT: u64 = 100_000;
const MAX_TIMEOUT: f64 = 86_400.0;

impl Action {
    pub(super) fn fail(percent: u8) -> Action {
        let mut a = Action::default();
        a.add_failure(percent);
        a
    }

    fn add_failure(&mut self, percent: u8) {
        let mut abort = json!({"http_status": 500, "body": "no valid backend for this request\n"});
        if percent < 100 {
            abort["percentage"] = json!(percent);
        }
        self.plugins
            .insert("fault-injection".into(), json!({"abort": abort}));
        if percent >= 100 {
            self.answers = true;
            self.weighted.clear();
        }
    }

    pub(super) fn write(&self, r: &mut Map<String, Value>) {
        let mut plugins = self.plugins.clone();
        if !self.answers {
            if let Some((first, rest)) = self.weighted.split_first() {
                r.insert("upstream_id".into(), json!(upstream_id(&first.backend)));
                // One backend without filters of its own needs no split.
                if !rest.is_empty() || !first.plugins.is_empty() {
                    let target = |upstream: Option<&BackendRef>, w: &Weighted| {
                        let mut t = json!({"weight": w.weight});
                        if let Some(b) = upstream {
                            t["upstream_id"] = json!(upstream_id(b));
                        }
                        if !w.plugins.is_empty() {
                            t["plugins"] = Value::Object(w.plugins.clone());
                        }
                        t
                    };
                    let mut ups: Vec<Value> =
                        rest.iter().map(|w| target(Some(&w.backend), w)).collect();
                    ups.push(target(None, first));
                    plugins.insert(
                        "traffic-split".into(),
                        json!({"rules": [{"weighted_upstreams": ups}]}),
                    );
                }
            }
        }
        if !plugins.is_empty() {
            r.insert("plugins".into(), Value::Object(plugins));
        }
        if self.websocket && !self.answers {
            r.insert("enable_websocket".into(), json!(true));
        }
        if let Some(t) = self.timeout {
            r.insert(
                "timeout".into(),
                json!({"connect": t, "send": t, "read": t}),
            );
        }
    }
}

/// What one list of filters (a rule's, or a backendRef's) becomes.
#[derive(Default)]
struct Filtered {
    plugins: Map<String, Value>,
    /// A redirect: the request is answered, not forwarded.
    answers: bool,
    url_rewrite: bool,
    warnings: Vec<String>,
}

/// `grpc`: the rule is a GRPCRoute's, whose backends speak gRPC (HTTP/2 cleartext).
pub(super) fn rule_action(
    c: &Cluster,
    ns: &str,
    rule: &HttpRouteRule,
    at: &Placement,
    grpc: bool,
) -> Result<Action, String> {
    let mut a = Action::default();
    let own = filters(c, ns, &rule.filters, rule, at, false)?;
    a.plugins = own.plugins;
    a.answers = own.answers;
    a.warnings = own.warnings;
    if let Some(t) = &rule.timeouts {
        let secs = [&t.request, &t.backend_request]
            .into_iter()
            .flatten()
            .filter_map(|d| duration(d).ok())
            .filter(|s| *s > 0.0)
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.min(s))));
        a.timeout = secs.map(|s| s.min(MAX_TIMEOUT));
    }
    if a.answers {
        return Ok(a);
    }
    let (mut valid, mut invalid) = (0u64, 0u64);
    for b in &rule.backend_refs {
        let w = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        match backend_speaking(c, ns, b) {
            Ok((mut r, protocol)) => {
                r.grpc |= grpc;
                a.backends.push(r.clone());
                if w > 0 {
                    let mut theirs = filters(c, ns, &b.filters, rule, at, true)?;
                    if own.url_rewrite && theirs.url_rewrite {
                        return Err("URLRewrite on both the rule and its backend".into());
                    }
                    // One mirror per request, as within one list: the rule's comes first.
                    if a.plugins.contains_key("proxy-mirror")
                        && theirs.plugins.remove("proxy-mirror").is_some()
                    {
                        theirs
                            .warnings
                            .push("only the first RequestMirror is served (the rule's)".into());
                    }
                    let service = &b.name;
                    a.warnings.extend(
                        theirs
                            .warnings
                            .into_iter()
                            .map(|w| format!("backendRef {service}: {w}")),
                    );
                    a.websocket |= protocol == BackendProtocol::WebSocket;
                    valid += u64::from(w);
                    a.weighted.push(Weighted {
                        backend: r,
                        weight: w,
                        plugins: theirs.plugins,
                    });
                }
            }
            Err(_) => invalid += u64::from(w),
        }
    }
    scale_weights(&mut a.weighted);
    let total = valid + invalid;
    if total == 0 {
        // No backend, or every weight 0: nothing may receive the request.
        a.add_failure(100);
    } else if invalid > 0 {
        let percent = (invalid * 100).div_ceil(total).min(100) as u8;
        a.add_failure(percent);
    }
    Ok(a)
}

/// The plugins `list` becomes. A backendRef's (`of_backend`) act on the request as it is
/// forwarded to that backend: a redirect or CORS there is refused, as they answer the
/// request before any backend is chosen.
fn filters(
    c: &Cluster,
    ns: &str,
    list: &[HttpRouteFilter],
    rule: &HttpRouteRule,
    at: &Placement,
    of_backend: bool,
) -> Result<Filtered, String> {
    let mut out = Filtered::default();
    let mut rewrite = Map::new();
    let (mut request_headers, mut response_headers) =
        (None::<HeaderModifier>, None::<HeaderModifier>);
    // The plugin applies add, then set, then remove: two modifiers of one list changing
    // the same header would not end as written, so that is refused.
    let merge = |into: &mut Option<HeaderModifier>, m: &HeaderModifier| -> Result<(), String> {
        let all = into.get_or_insert_with(HeaderModifier::default);
        let names = |h: &HeaderModifier| -> BTreeSet<String> {
            h.set
                .iter()
                .chain(&h.add)
                .map(|nv| nv.name.to_ascii_lowercase())
                .chain(h.remove.iter().map(|n| n.to_ascii_lowercase()))
                .collect()
        };
        if let Some(both) = names(all).intersection(&names(m)).next() {
            return Err(format!("header {both:?} is changed by two filters"));
        }
        all.set.extend(m.set.iter().cloned());
        all.add.extend(m.add.iter().cloned());
        all.remove.extend(m.remove.iter().cloned());
        Ok(())
    };
    for f in list {
        match f.type_.as_str() {
            "RequestHeaderModifier" => {
                let m = f
                    .request_header_modifier
                    .as_ref()
                    .ok_or("RequestHeaderModifier without its settings")?;
                merge(&mut request_headers, m)?;
            }
            "ResponseHeaderModifier" => {
                let m = f
                    .response_header_modifier
                    .as_ref()
                    .ok_or("ResponseHeaderModifier without its settings")?;
                merge(&mut response_headers, m)?;
            }
            "URLRewrite" if out.url_rewrite => return Err("more than one URLRewrite".into()),
            "URLRewrite" => {
                out.url_rewrite = true;
                let u = f
                    .url_rewrite
                    .as_ref()
                    .ok_or("URLRewrite without its settings")?;
                if let Some(h) = &u.hostname {
                    rewrite.insert("host".into(), json!(template_literal(h)?));
                }
                if let Some(p) = &u.path {
                    match path_rewrite(p, rule)? {
                        PathRewrite::Full(uri) => {
                            rewrite.insert("uri".into(), json!(uri));
                        }
                        PathRewrite::Prefix(prefix, replacement) => {
                            rewrite.insert(
                                "regex_uri".into(),
                                json!(prefix_pairs(&prefix, &replacement)?),
                            );
                        }
                    }
                }
            }
            "RequestRedirect" | "CORS" if of_backend => {
                return Err(format!(
                    "filter {:?} on a backendRef is not supported (it answers before a backend is chosen; put it on the rule)",
                    f.type_
                ))
            }
            "RequestRedirect" => {
                let r = f
                    .request_redirect
                    .as_ref()
                    .ok_or("RequestRedirect without its settings")?;
                out.plugins.insert("redirect".into(), redirect(r, rule, at)?);
                out.answers = true;
            }
            "RequestMirror" => {
                let m = f
                    .request_mirror
                    .as_ref()
                    .ok_or("RequestMirror without its settings")?;
                // A mirror is a copy: when it cannot be had, the rule serves without it.
                if out.plugins.contains_key("proxy-mirror") {
                    out.warnings
                        .push("only the first RequestMirror is served".into());
                    continue;
                }
                let ratio = match (&m.percent, &m.fraction) {
                    (Some(p), _) => f64::from(*p) / 100.0,
                    (None, Some(fr)) => {
                        f64::from(fr.numerator) / f64::from(fr.denominator.unwrap_or(100).max(1))
                    }
                    (None, None) => 1.0,
                };
                if ratio <= 0.0 {
                    continue;
                }
                let host = backend(c, ns, &m.backend_ref)
                    .map_err(|(_, msg)| msg)
                    .and_then(|b| mirror_host(c, &b));
                match host {
                    Ok(host) => {
                        let mut conf = json!({ "host": host });
                        if ratio < 1.0 {
                            conf["sample_ratio"] = json!(ratio.clamp(0.00001, 1.0));
                        }
                        out.plugins.insert("proxy-mirror".into(), conf);
                    }
                    Err(e) => out.warnings.push(format!("mirror left out: {e}")),
                }
            }
            "CORS" => {
                let conf = f.cors.as_ref().ok_or("CORS without its settings")?;
                out.plugins.insert("cors".into(), cors(conf));
            }
            other => return Err(format!("filter {other:?} is not supported")),
        }
    }
    if let Some(m) = &request_headers {
        rewrite.insert("headers".into(), header_ops(m, false)?);
    }
    if let Some(m) = &response_headers {
        out.plugins.insert(
            "response-rewrite".into(),
            json!({"headers": header_ops(m, true)?}),
        );
    }
    if out.answers && out.url_rewrite {
        return Err("RequestRedirect cannot be combined with URLRewrite".into());
    }
    // A redirect answers before anything is forwarded: header changes have nothing to act on.
    if !rewrite.is_empty() && !out.answers {
        out.plugins
            .insert("proxy-rewrite".into(), Value::Object(rewrite));
    }
    Ok(out)
}

/// The CORS filter as the `cors` plugin: exact origins as `allow_origins`, or — when some
/// are wildcards (`https://*.example.com`) — all as `allow_origins_by_regex`; `*` as any origin (`**`, which
/// echoes the origin, when credentials are allowed: browsers refuse `*` with them).
fn cors(c: &CorsFilter) -> Value {
    let any = |list: &[String]| list.iter().any(|o| o == "*");
    let wildcard = if c.allow_credentials { "**" } else { "*" };
    let join = |list: &[String]| list.join(",");
    let mut conf = json!({
        "allow_credential": c.allow_credentials,
        "max_age": c.max_age.unwrap_or(5),
    });
    let exact: Vec<String> = c
        .allow_origins
        .iter()
        .filter(|o| !o.contains('*'))
        .cloned()
        .collect();
    // With any pattern, the plugin decides by the patterns alone: exact origins join them.
    let mut patterns: Vec<String> = c
        .allow_origins
        .iter()
        .filter(|o| o.contains('*') && *o != "*")
        .map(|o| format!("^{}$", regex::escape(o).replace("\\*", "[^/]+")))
        .collect();
    if !patterns.is_empty() {
        patterns.extend(exact.iter().map(|o| format!("^{}$", regex::escape(o))));
    }
    conf["allow_origins"] = json!(if any(&c.allow_origins) {
        wildcard.to_string()
    } else if !exact.is_empty() {
        join(&exact)
    } else {
        // Only patterns: an origin that cannot exist (`.invalid` is reserved; `null` is
        // what sandboxed pages send), so that nothing else is admitted.
        "https://cors.invalid".to_string()
    });
    if !patterns.is_empty() {
        conf["allow_origins_by_regex"] = json!(patterns);
    }
    conf["allow_methods"] = json!(if any(&c.allow_methods) {
        wildcard.to_string()
    } else if c.allow_methods.is_empty() {
        "GET,HEAD,POST".to_string()
    } else {
        join(&c.allow_methods)
    });
    conf["allow_headers"] = json!(if any(&c.allow_headers) {
        wildcard.to_string()
    } else if c.allow_headers.is_empty() {
        // None beyond the CORS-safelisted ones (which need no listing).
        "Accept,Accept-Language,Content-Language,Content-Type".to_string()
    } else {
        join(&c.allow_headers)
    });
    if !c.expose_headers.is_empty() {
        conf["expose_headers"] = json!(join(&c.expose_headers));
    }
    conf
}

/// Weights as `traffic-split` takes them (at most 100,000; the API allows 1,000,000):
/// divided by their common divisor, then scaled down if still too large (never to 0).
fn scale_weights(weighted: &mut [Weighted]) {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weighted
        .iter()
        .fold(0, |g, w| gcd(g, u64::from(w.weight)))
        .max(1);
    let max = weighted
        .iter()
        .map(|w| u64::from(w.weight) / g)
        .max()
        .unwrap_or(1);
    for w in weighted.iter_mut() {
        let mut v = u64::from(w.weight) / g;
        if max > MAX_WEIGHT {
            v = (v * MAX_WEIGHT / max).max(1);
        }
        w.weight = u32::try_from(v).unwrap_or(u32::MAX);
    }
}

/// The first node of a mirror backend, as `proxy-mirror`'s `host`.
fn mirror_host(c: &Cluster, b: &BackendRef) -> Result<String, String> {
    let (nodes, warning) = crate::translate::resolve(c, b, false);
    let node = nodes.first().ok_or_else(|| {
        format!(
            "mirror Service {}/{}: {}",
            b.namespace,
            b.service,
            warning.unwrap_or_else(|| "no endpoint".into())
        )
    })?;
    let host = node["host"].as_str().unwrap_or_default();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("http://{host}:{}", node["port"]))
}

/// `set`/`add`/`remove` for `proxy-rewrite` (objects) or `response-rewrite` (whose `add`
/// is a list of `name: value` lines).
fn header_ops(m: &HeaderModifier, response: bool) -> Result<Value, String> {
    for nv in m.set.iter().chain(&m.add) {
        template_literal(&nv.value)?;
    }
    let set: Map<String, Value> = m
        .set
        .iter()
        .map(|nv| (nv.name.clone(), json!(nv.value)))
        .collect();
    let add: Value = if response {
        json!(m
            .add
            .iter()
            .map(|nv| format!("{}: {}", nv.name, nv.value))
            .collect::<Vec<_>>())
    } else {
        Value::Object(
            m.add
                .iter()
                .map(|nv| (nv.name.clone(), json!(nv.value)))
                .collect(),
        )
    };
    let mut ops = Map::new();
    if !set.is_empty() {
        ops.insert("set".into(), Value::Object(set));
    }
    if !m.add.is_empty() {
        ops.insert("add".into(), add);
    }
    if !m.remove.is_empty() {
        ops.insert("remove".into(), json!(m.remove));
    }
    Ok(Value::Object(ops))
}

/// The single `PathPrefix` a prefix rewrite applies to (the spec allows it only there).
fn rule_prefix(rule: &HttpRouteRule) -> Result<String, String> {
    let prefixes: BTreeSet<String> = if rule.matches.is_empty() {
        ["/".to_string()].into()
    } else {
        rule.matches
            .iter()
            .map(|m| {
                let p = m.path.clone().unwrap_or_default();
                match p.type_.as_deref().unwrap_or("PathPrefix") {
                    "PathPrefix" => Ok(prefix_of(p.value.as_deref().unwrap_or("/"))),
                    _ => Err("ReplacePrefixMatch needs PathPrefix matches".to_string()),
                }
            })
            .collect::<Result<_, _>>()?
    };
    if prefixes.len() != 1 {
        return Err("ReplacePrefixMatch over several prefixes is not supported".into());
    }
    Ok(prefixes.into_iter().next().unwrap_or_default())
}

/// `$` starts a variable in the plugins' templates, and has no escape there.
fn template_literal(s: &str) -> Result<String, String> {
    if s.contains('$') {
        return Err(format!(
            "{s:?}: a \"$\" in a rewritten path, host or header value is not supported"
        ));
    }
    Ok(s.to_string())
}

/// A path the filters write must be one: absolute.
fn absolute(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?}: a rewritten path must start with \"/\""));
    }
    template_literal(s)
}

/// ReplacePrefixMatch as `regex_uri` pairs (the spec's table): the prefix alone becomes
/// the replacement (`/` if empty); the prefix and more path keeps that rest after the
/// replacement without its trailing slash (`/` + `/bar` gives `/bar`).
fn prefix_pairs(prefix: &str, replacement: &str) -> Result<Vec<String>, String> {
    let (base, trimmed) = prefix_parts(prefix, replacement)?;
    let alone = if replacement.is_empty() {
        "/"
    } else {
        replacement
    };
    Ok(vec![
        format!("^{base}$"),
        template_literal(alone)?,
        format!("^{base}(/.*)$"),
        format!("{trimmed}$1"),
    ])
}

/// The escaped prefix (empty for `/`) and the replacement without its trailing slash.
fn prefix_parts(prefix: &str, replacement: &str) -> Result<(String, String), String> {
    let base = if prefix == "/" {
        String::new()
    } else {
        regex::escape(prefix)
    };
    Ok((base, template_literal(replacement.trim_end_matches('/'))?))
}

enum PathRewrite {
    Full(String),
    /// The rule's one prefix and its replacement.
    Prefix(String, String),
}

fn path_rewrite(p: &PathModifier, rule: &HttpRouteRule) -> Result<PathRewrite, String> {
    match p.type_.as_str() {
        "ReplaceFullPath" => Ok(PathRewrite::Full(absolute(
            p.replace_full_path.as_deref().unwrap_or("/"),
        )?)),
        "ReplacePrefixMatch" => {
            let replacement = p.replace_prefix_match.clone().unwrap_or_default();
            if !replacement.is_empty() {
                absolute(&replacement)?;
            }
            Ok(PathRewrite::Prefix(rule_prefix(rule)?, replacement))
        }
        other => Err(format!("unknown path modifier {other:?}")),
    }
}

fn default_port(scheme: &str) -> Option<i32> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// RequestRedirect -> the `redirect` plugin. The scheme is the filter's or the
/// listener's (the request's when the route is on both HTTP and HTTPS listeners); the port
/// the filter's, else the scheme's well-known one when the filter changes the scheme, else
/// the listener's (left out when the route's listeners have several); a well-known port is
/// left out of `Location`.
fn redirect(r: &RequestRedirect, rule: &HttpRouteRule, at: &Placement) -> Result<Value, String> {
    let listener_scheme = match at.protocols.len() {
        1 => at
            .protocols
            .iter()
            .next()
            .map(|p| p.to_ascii_lowercase())
            .unwrap_or_default(),
        _ => "$scheme".into(),
    };
    let scheme = r.scheme.clone().unwrap_or(listener_scheme);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(s)) => default_port(s),
        (None, None) if at.ports.len() == 1 => at.ports.iter().next().copied(),
        (None, None) => None,
    };
    let port = match port {
        Some(p) if Some(p) != default_port(&scheme) => format!(":{p}"),
        _ => String::new(),
    };
    let host = match &r.hostname {
        Some(h) => template_literal(h)?,
        None => "$host".into(),
    };
    let origin = format!("{scheme}://{host}{port}");
    let code = r.status_code.unwrap_or(302);
    let path = match &r.path {
        None => {
            return Ok(json!({"uri": format!("{origin}$uri"), "ret_code": code,
                                 "append_query_string": true}))
        }
        Some(p) => path_rewrite(p, rule)?,
    };
    Ok(match path {
        PathRewrite::Full(path) => json!({"uri": format!("{origin}{path}"), "ret_code": code,
                                          "append_query_string": true}),
        // `redirect` takes one pair: the prefix, with or without more path after it.
        PathRewrite::Prefix(prefix, replacement) => {
            let (base, trimmed) = prefix_parts(&prefix, &replacement)?;
            // A replacement of `/` (or nothing) keeps a `/` before the rest.
            let (re, to) = if trimmed.is_empty() {
                (format!("^{base}/?(.*)$"), format!("{origin}/$1"))
            } else {
                (format!("^{base}(/.*)?$"), format!("{origin}{trimmed}$1"))
            };
            json!({"regex_uri": [re, to], "ret_code": code, "append_query_string": true})
        }
    })
}

/// A Gateway API duration (`1h`, `30s`, `500ms`, `1m30s`) in seconds.
pub(super) fn duration(s: &str) -> Result<f64, String> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(format!("{s:?} is not a duration"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return Err(format!("{s:?} is not a duration"));
        };
        total += n * unit;
        rest = &rest[len..];
    }
    Ok(total)
}
