//! Request variables for `vars` expressions, named as nginx/APISIX name them
//! (`arg_x`, `http_x_y`, `cookie_x`, `uri`, `host`, `remote_addr`, …).
use crate::client_head::ClientHead;
use http::request::Parts;
use model::vars::VarSource;
use std::borrow::Cow;
use std::net::SocketAddr;

pub struct RequestVars<'a> {
    pub parts: &'a Parts,
    /// Normalised host (lower case, no port).
    pub host: &'a str,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub scheme: &'a str,
    /// The authenticated consumer's username (`consumer_name`).
    pub consumer: Option<&'a str>,
    /// The head as the client sent it, when `parts` has no header map yet: headers are
    /// read from it.
    pub raw: Option<&'a ClientHead>,
}

impl RequestVars<'_> {
    fn query_values(&self, name: &str) -> Vec<Cow<'_, str>> {
        let Some(q) = self.parts.uri.query() else {
            return Vec::new();
        };
        q.split('&')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then_some(Cow::Borrowed(v))
            })
            .collect()
    }

    /// The values of every header named `name`, in visible ASCII, from the map or from
    /// the head as sent.
    fn values(&self, name: &str) -> Vec<&str> {
        match self.raw {
            Some(raw) => raw.values(name).collect(),
            None => self
                .parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
        }
    }

    fn header_values(&self, var: &str) -> Vec<Cow<'_, str>> {
        let name = var.replace('_', "-");
        self.values(&name).into_iter().map(Cow::Borrowed).collect()
    }

    fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
        self.values("cookie")
            .into_iter()
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then_some(Cow::Borrowed(v))
            })
    }
}

impl VarSource for RequestVars<'_> {
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(arg) = name.strip_prefix("arg_") {
            return self.query_values(arg).into_iter().next();
        }
        if let Some(h) = name.strip_prefix("http_") {
            return self.header_values(h).into_iter().next();
        }
        if let Some(c) = name.strip_prefix("cookie_") {
            return self.cookie(c);
        }
        let owned = |s: String| Some(Cow::Owned(s));
        match name {
            "uri" => Some(Cow::Borrowed(self.parts.uri.path())),
            "request_uri" => self
                .parts
                .uri
                .path_and_query()
                .map(|p| Cow::Borrowed(p.as_str())),
            "args" | "query_string" => self.parts.uri.query().map(Cow::Borrowed),
            "host" | "server_name" => Some(Cow::Borrowed(self.host)),
            "request_method" => Some(Cow::Borrowed(self.parts.method.as_str())),
            "scheme" => Some(Cow::Borrowed(self.scheme)),
            "consumer_name" => self.consumer.map(Cow::Borrowed),
            "remote_addr" => owned(ip_string(self.remote.ip())),
            "remote_port" => owned(self.remote.port().to_string()),
            "server_addr" => owned(ip_string(self.local.ip())),
            "server_port" => owned(self.local.port().to_string()),
            "server_protocol" => owned(format!("{:?}", self.parts.version)),
            _ => None,
        }
    }

    fn get_all(&self, name: &str) -> Vec<Cow<'_, str>> {
        if let Some(arg) = name.strip_prefix("arg_") {
            return self.query_values(arg);
        }
        if let Some(h) = name.strip_prefix("http_") {
            return self.header_values(h);
        }
        self.get(name).into_iter().collect()
    }
}

/// One piece of a template of request variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    /// A variable's name (`$name`, `${name}`).
    Var(&'a str),
}

/// A template split into text and variables: `$name` takes letters, digits and `_`;
/// `${ name }` takes what is inside the braces, trimmed. A `$` that names nothing (`$$`,
/// `$-`, an unclosed `${`) is text.
pub fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    let mut text_from = 0usize;
    let base = template.as_ptr() as usize;
    let offset = |s: &str| s.as_ptr() as usize - base;
    while let Some(at) = rest.find('$') {
        let dollar = offset(rest) + at;
        let after = &rest[at + 1..];
        let (name, used) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (inner[..end].trim(), end + 2),
                None => ("", 0),
            },
            None => {
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..len], len)
            }
        };
        if name.is_empty() {
            // Stays part of the text.
            rest = after;
            continue;
        }
        if dollar > text_from {
            out.push(Piece::Text(&template[text_from..dollar]));
        }
        out.push(Piece::Var(name));
        rest = &after[used..];
        text_from = offset(rest);
    }
    if text_from < template.len() {
        out.push(Piece::Text(&template[text_from..]));
    }
    out
}

/// A template with request variables (`$name`, `${name}`) replaced by their values, an
/// unset one by nothing, as APISIX resolves them in `vars_combinations` keys, `redirect`
/// and `proxy-rewrite` values. A `$` not followed by a name stays.
pub fn expand(template: &str, vars: &dyn VarSource) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(name) => {
                if let Some(v) = vars.get(name) {
                    out.push_str(&v);
                }
            }
        }
    }
    out
}

/// An address as text. IPv4, the common case of rate-limit keys, is written digit by
/// digit: `Display` goes through the formatting machinery, about ten times the work.
pub fn ip_string(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let (bytes, len) = ipv4_text(v4);
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

/// An IPv4 address as text, in a buffer of its own: its bytes and their length.
pub fn ipv4_text(v4: std::net::Ipv4Addr) -> ([u8; 15], usize) {
    let mut out = [0u8; 15];
    let mut len = 0;
    let mut push = |b: u8| {
        out[len] = b;
        len += 1;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        if octet >= 100 {
            push(b'0' + octet / 100);
        }
        if octet >= 10 {
            push(b'0' + octet / 10 % 10);
        }
        push(b'0' + octet % 10);
    }
    (out, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_strings_match_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.255",
            "1.22.3.44",
            "::1",
            "fe80::1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }

    #[test]
    fn variables_table() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/p/q?a=1&b=2&a=3&flag")
            .header("x-user-id", "42")
            .header("accept", "a")
            .header("accept", "b")
            .header("cookie", "sid=abc; theme=dark")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        let vars = RequestVars {
            parts: &parts,
            host: "example.com",
            remote: "10.1.1.1:5555".parse().unwrap(),
            local: "127.0.0.1:9080".parse().unwrap(),
            scheme: "http",
            consumer: Some("jack"),
            raw: None,
        };
        for (name, want) in [
            ("arg_a", Some("1")),
            ("arg_b", Some("2")),
            ("arg_flag", Some("")),
            ("arg_zz", None),
            ("http_x_user_id", Some("42")),
            ("http_accept", Some("a")),
            ("cookie_theme", Some("dark")),
            ("cookie_sid", Some("abc")),
            ("cookie_none", None),
            ("uri", Some("/p/q")),
            ("request_uri", Some("/p/q?a=1&b=2&a=3&flag")),
            ("args", Some("a=1&b=2&a=3&flag")),
            ("host", Some("example.com")),
            ("request_method", Some("POST")),
            ("remote_addr", Some("10.1.1.1")),
            ("remote_port", Some("5555")),
            ("server_port", Some("9080")),
            ("scheme", Some("http")),
            ("consumer_name", Some("jack")),
            ("unknown", None),
        ] {
            assert_eq!(vars.get(name).as_deref(), want, "{name}");
        }
        assert_eq!(vars.get_all("arg_a"), vec!["1", "3"]);
        assert_eq!(vars.get_all("http_accept"), vec!["a", "b"]);
    }

    #[test]
    fn template_pieces() {
        use Piece::{Text, Var};
        for (template, want) in [
            ("", vec![]),
            ("plain", vec![Text("plain")]),
            ("$a-${ b }c", vec![Var("a"), Text("-"), Var("b"), Text("c")]),
            ("x$$y", vec![Text("x$"), Var("y")]),
            ("${open", vec![Text("${open")]),
            ("é$é", vec![Text("é$é")]),
        ] {
            assert_eq!(pieces(template), want, "{template}");
        }
    }

    #[test]
    fn vars_combinations_templates() {
        struct V;
        impl VarSource for V {
            fn get(&self, name: &str) -> Option<Cow<'_, str>> {
                match name {
                    "remote_addr" => Some("10.0.0.1".into()),
                    "arg_user" => Some("bob".into()),
                    _ => None,
                }
            }
        }
        for (template, want) in [
            ("$remote_addr", "10.0.0.1"),
            ("$arg_user-$remote_addr", "bob-10.0.0.1"),
            ("u:$arg_user:$missing:", "u:bob::"),
            ("$", "$"),
            ("$$arg_user", "$bob"),
            ("plain", "plain"),
            ("", ""),
            ("${arg_user}x", "bobx"),
            ("${ arg_user }", "bob"),
            ("${missing}-", "-"),
            ("${unclosed", "${unclosed"),
        ] {
            assert_eq!(expand(template, &V), want, "{template}");
        }
    }
}
