//! The `proxy-rewrite` plugin (rewrite phase): the upstream request's path, host, method
//! and headers. The query string the client sent is kept after a new path.
use super::{Answer, Phases, Req, Run};
use crate::request_vars::expand;
use http::{HeaderName, HeaderValue, StatusCode, Uri};

pub struct ProxyRewrite {
    conf: model::plugins::proxy_rewrite::ProxyRewrite,
    /// `add`, then `set` (APISIX's order), each with whether it appends; a value that
    /// names no variable is made once here, not for every request.
    headers: Vec<(HeaderName, bool, Value)>,
    host: Option<HeaderValue>,
}

enum Value {
    /// `None`: not a valid header value, so never set.
    Fixed(Option<HeaderValue>),
    Template(String),
}

impl ProxyRewrite {
    pub fn new(conf: model::plugins::proxy_rewrite::ProxyRewrite) -> ProxyRewrite {
        let ops = conf.add.iter().map(|op| (op, true));
        let headers = ops
            .chain(conf.set.iter().map(|op| (op, false)))
            .map(|((name, template), append)| {
                let value = if template.contains('$') {
                    Value::Template(template.clone())
                } else {
                    Value::Fixed(HeaderValue::from_str(template).ok())
                };
                (name.clone(), append, value)
            })
            .collect();
        let host = conf
            .host
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok());
        ProxyRewrite {
            conf,
            headers,
            host,
        }
    }
}

/// The new path and query for `path?query`, or `None` to keep the request's.
pub fn rewritten_uri(
    conf: &model::plugins::proxy_rewrite::ProxyRewrite,
    path: &str,
    query: Option<&str>,
    vars: &dyn model::vars::VarSource,
) -> Option<String> {
    let mut uri = if let Some(template) = &conf.uri {
        let uri = expand(template, vars);
        if conf.use_real_request_uri_unsafe {
            return Some(uri);
        }
        uri
    } else {
        let (re, template) = conf.regex_uri.iter().find(|(re, _)| re.is_match(path))?;
        re.replacen(path, 1, template.as_str()).into_owned()
    };
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        uri.push(if uri.contains('?') { '&' } else { '?' });
        uri.push_str(q);
    }
    Some(uri)
}

impl Phases for ProxyRewrite {
    fn rewrite(&self, req: &mut Req<'_>, run: &mut Run) -> Option<Answer> {
        let c = &self.conf;
        if c.uri.is_some() || !c.regex_uri.is_empty() {
            let new = rewritten_uri(c, req.parts.uri.path(), req.parts.uri.query(), &req.vars());
            if let Some(new) = new {
                match new.parse::<Uri>() {
                    Ok(uri) if uri.path().starts_with('/') => req.parts.uri = uri,
                    _ => {
                        tracing::warn!(uri = %new, "proxy-rewrite made an invalid URI");
                        return Some(Answer::message(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "failed to rewrite the uri",
                        ));
                    }
                }
            }
        }
        if c.host.is_some() {
            run.upstream_host = self.host.clone();
        }
        if let Some(m) = &c.method {
            req.parts.method = m.clone();
        }
        // APISIX's order: add, then set, then remove.
        for (name, append, value) in &self.headers {
            let value = match value {
                Value::Fixed(v) => v.clone(),
                Value::Template(t) => HeaderValue::from_str(&expand(t, &req.vars())).ok(),
            };
            let Some(value) = value else {
                continue;
            };
            if *append {
                req.parts.headers.append(name.clone(), value);
            } else {
                req.parts.headers.insert(name.clone(), value);
            }
        }
        for name in &c.remove {
            req.parts.headers.remove(name);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;

    struct V;
    impl model::vars::VarSource for V {
        fn get(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == "arg_id").then(|| "7".into())
        }
    }

    #[test]
    fn uris() {
        let conf = |v| model::plugins::proxy_rewrite::ProxyRewrite::parse(&v).unwrap();
        let fixed = conf(json!({"uri": "/test/home.html"}));
        let vars = conf(json!({"uri": "/user/$arg_id/x?y=1"}));
        let re = conf(
            json!({"regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1-$2-$3", "^/b/(.*)", "/c/$1"]}),
        );
        let unsafe_ = conf(json!({"uri": "/raw", "use_real_request_uri_unsafe": true}));
        for (c, path, query, want) in [
            (&fixed, "/a", None, Some("/test/home.html")),
            (&fixed, "/a", Some("q=1"), Some("/test/home.html?q=1")),
            (&vars, "/a", Some("id=7"), Some("/user/7/x?y=1&id=7")),
            (&re, "/iresty/a/b/c", None, Some("/a-b-c")),
            (&re, "/b/x/y", Some("z"), Some("/c/x/y?z")),
            (&re, "/nomatch", Some("z"), None),
            (&unsafe_, "/a", Some("q=1"), Some("/raw")),
        ] {
            assert_eq!(rewritten_uri(c, path, query, &V).as_deref(), want, "{path}");
        }
    }
}
