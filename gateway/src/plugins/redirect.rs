//! The `redirect` plugin (rewrite phase): where a matched route sends the client instead
//! of proxying. [`location`] is pure, so every case is a table row.
use super::{Answer, Phases, Req, Run};
use crate::request_vars::expand as expand_vars;
use http::{HeaderValue, StatusCode};
use model::plugins::redirect::Target;
use model::vars::VarSource;

pub struct Redirect(pub model::plugins::redirect::Redirect);

impl Phases for Redirect {
    fn rewrite(&self, req: &mut Req<'_>, _run: &mut Run) -> Option<Answer> {
        let to = location(&self.0, &req.vars(), req.https_port)?;
        let status = StatusCode::from_u16(self.0.ret_code).unwrap_or(StatusCode::FOUND);
        let mut answer = Answer::message(status, &format!("redirecting to {to}"));
        if let Ok(v) = HeaderValue::from_str(&to) {
            answer.headers.insert(http::header::LOCATION, v);
        }
        Some(answer)
    }
}

/// The `Location` for this request, or `None` when the plugin does not apply (already
/// HTTPS for `http_to_https`, or a path `regex_uri` does not match).
pub fn location(
    r: &model::plugins::redirect::Redirect,
    vars: &dyn VarSource,
    https_port: u16,
) -> Option<String> {
    let get = |name: &str| vars.get(name).map(|v| v.into_owned()).unwrap_or_default();
    let mut to = match &r.target {
        Target::Https => {
            if get("scheme") == "https" {
                return None;
            }
            let port = match https_port {
                443 => String::new(),
                p => format!(":{p}"),
            };
            // The request URI carries the query already.
            return Some(format!(
                "https://{}{port}{}",
                bracket_v6(&get("host")),
                get("request_uri")
            ));
        }
        Target::Uri(template) => expand_vars(template, vars),
        Target::RegexUri(re, template) => {
            let uri = get("uri");
            let caps = re.captures(&uri)?;
            expand_groups_and_vars(template, &caps, vars)
        }
    };
    if r.append_query_string {
        if let Some(q) = vars.get("query_string").filter(|q| !q.is_empty()) {
            to.push(if to.contains('?') { '&' } else { '?' });
            to.push_str(&q);
        }
    }
    Some(to)
}

/// A `regex_uri` template: `$1`…, `${1}` are the regex's groups (as APISIX's
/// `ngx.re.sub`), `$$` is a `$`; `$name` is a request variable, our extension (so that
/// the Gateway API's redirects can keep the request's host): `ngx.re.sub` rejects such a
/// template, so it means nothing else in an APISIX configuration.
fn expand_groups_and_vars(
    template: &str,
    caps: &regex::Captures<'_>,
    vars: &dyn VarSource,
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", rest),
            }
        } else if rest.starts_with('$') {
            out.push('$');
            rest = &rest[1..];
            continue;
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if name.is_empty() {
            out.push('$');
            continue;
        }
        match name.parse::<usize>() {
            Ok(n) => out.push_str(caps.get(n).map_or("", |m| m.as_str())),
            Err(_) => out.push_str(&vars.get(name).unwrap_or_default()),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn bracket_v6(host: &str) -> String {
    // `host` keeps the brackets of `[::1]`; a bare v6 literal needs them in a URL.
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, &'static str>);

    impl VarSource for Vars {
        fn get(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0.get(name).map(|v| Cow::Borrowed(*v))
        }
    }

    #[test]
    fn table() {
        let http = Vars(HashMap::from([
            ("scheme", "http"),
            ("host", "foo.com"),
            ("uri", "/a/b"),
            ("request_uri", "/a/b?x=1"),
            ("query_string", "x=1"),
        ]));
        let https = Vars(HashMap::from([
            ("scheme", "https"),
            ("host", "foo.com"),
            ("uri", "/a/b"),
            ("request_uri", "/a/b"),
        ]));
        let v6 = Vars(HashMap::from([
            ("scheme", "http"),
            ("host", "[::1]"),
            ("request_uri", "/a"),
        ]));
        let cases: &[(serde_json::Value, &Vars, u16, Option<&str>)] = &[
            (
                json!({"http_to_https": true}),
                &http,
                443,
                Some("https://foo.com/a/b?x=1"),
            ),
            (
                json!({"http_to_https": true}),
                &http,
                9443,
                Some("https://foo.com:9443/a/b?x=1"),
            ),
            (json!({"http_to_https": true}), &https, 9443, None),
            (
                json!({"http_to_https": true}),
                &v6,
                443,
                Some("https://[::1]/a"),
            ),
            (json!({"uri": "/new$uri"}), &http, 443, Some("/new/a/b")),
            (
                json!({"uri": "/new", "append_query_string": true}),
                &http,
                443,
                Some("/new?x=1"),
            ),
            (
                json!({"uri": "/new?y=2", "append_query_string": true}),
                &http,
                443,
                Some("/new?y=2&x=1"),
            ),
            (
                json!({"uri": "/new", "append_query_string": true}),
                &https,
                443,
                Some("/new"),
            ),
            (
                json!({"regex_uri": ["^/a/(.*)", "/z/$1"]}),
                &http,
                443,
                Some("/z/b"),
            ),
            (
                json!({"regex_uri": ["^/(a)/(.*)", "$scheme://$host/${2}$1/$$/$"]}),
                &http,
                443,
                Some("http://foo.com/ba/$/$"),
            ),
            (
                json!({"regex_uri": ["^/a(/.*)?$", "/z$1$nope"]}),
                &http,
                443,
                Some("/z/b"),
            ),
            (
                json!({"regex_uri": ["^/q/(.*)", "/z/$1"]}),
                &http,
                443,
                None,
            ),
        ];
        for (conf, vars, port, want) in cases {
            let r = model::plugins::redirect::Redirect::parse(conf).unwrap();
            assert_eq!(location(&r, *vars, *port).as_deref(), *want, "{conf}");
        }
    }
}
