//! APISIX `vars` expressions (lua-resty-expr): parsing, validation and evaluation.
//!
//! `[["arg_a","==","1"], ["http_x","~~","^v"]]` is an AND of comparisons;
//! `["OR", e1, e2]`, `["AND", …]`, `["!AND", …]`, `["!OR", …]` combine;
//! `[var, "!", op, value]` negates one comparison; `[var, value]` means `==`.
use ipnet::IpNet;
use regex::Regex;
use serde_json::Value;
use std::net::IpAddr;

/// A compiled expression tree.
#[derive(Debug, Clone)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Cmp),
}

/// One comparison `[var, (!), op, value]`.
#[derive(Debug, Clone)]
pub struct Cmp {
    pub var: String,
    pub negate: bool,
    pub op: Op,
}

#[derive(Debug, Clone)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    Regex(Regex),
    In(Vec<Value>),
    Has(Value),
    IpMatch(Vec<IpNet>),
}

/// Where an expression reads request variables from.
pub trait VarSource {
    /// The first value of a variable, if the request has it.
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;
    /// Every value (repeated headers or query args), for `has`.
    fn get_all(&self, name: &str) -> Vec<std::borrow::Cow<'_, str>> {
        self.get(name).into_iter().collect()
    }
}

const MAX_DEPTH: usize = 16;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Expr {
    /// Parses a route's `vars`. Errors name the position (`vars[1][2]`) and the problem.
    pub fn parse(v: &Value) -> Result<Expr, (String, String)> {
        let arr = v
            .as_array()
            .ok_or_else(|| (String::new(), "must be an array of expressions".to_string()))?;
        if arr.is_empty() {
            return Ok(Expr::And(Vec::new()));
        }
        match &arr[0] {
            Value::Array(_) => parse_rule(v, 0),
            Value::String(s) if logic_op(s).is_some() => parse_rule(v, 0),
            _ => Err((
                String::new(),
                "must be a list of expressions like [[\"arg_name\", \"==\", \"value\"]] or start with AND/OR/!AND/!OR".into(),
            )),
        }
    }

    /// Every variable the expression reads.
    pub fn var_names(&self) -> Vec<&str> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
            match e {
                Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| walk(e, out)),
                Expr::Not(e) => walk(e, out),
                Expr::Cmp(c) => {
                    if !out.contains(&c.var.as_str()) {
                        out.push(&c.var)
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    pub fn eval(&self, src: &dyn VarSource) -> bool {
        match self {
            Expr::And(es) => es.iter().all(|e| e.eval(src)),
            Expr::Or(es) => es.iter().any(|e| e.eval(src)),
            Expr::Not(e) => !e.eval(src),
            Expr::Cmp(c) => c.eval(src) != c.negate,
        }
    }
}

fn logic_op(s: &str) -> Option<&'static str> {
    match s.to_ascii_uppercase().as_str() {
        "AND" => Some("AND"),
        "OR" => Some("OR"),
        "!AND" => Some("!AND"),
        "!OR" => Some("!OR"),
        _ => None,
    }
}

fn at(i: usize, (path, msg): (String, String)) -> (String, String) {
    (format!("[{i}]{path}"), msg)
}

fn parse_rule(v: &Value, depth: usize) -> Result<Expr, (String, String)> {
    if depth > MAX_DEPTH {
        return Err((
            String::new(),
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let arr = v
        .as_array()
        .ok_or_else(|| (String::new(), "an expression must be an array".to_string()))?;
    if arr.is_empty() {
        return Err((String::new(), "an expression must not be empty".into()));
    }
    if arr[0].is_array() {
        let es = arr
            .iter()
            .enumerate()
            .map(|(i, e)| parse_rule(e, depth + 1).map_err(|e| at(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Expr::And(es));
    }
    if let Some(op) = arr[0].as_str().and_then(logic_op) {
        if arr.len() < 3 {
            return Err((
                String::new(),
                format!("{op} needs at least two expressions"),
            ));
        }
        let es = arr[1..]
            .iter()
            .enumerate()
            .map(|(i, e)| parse_rule(e, depth + 1).map_err(|e| at(i + 1, e)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(match op {
            "AND" => Expr::And(es),
            "OR" => Expr::Or(es),
            "!AND" => Expr::Not(Box::new(Expr::And(es))),
            _ => Expr::Not(Box::new(Expr::Or(es))),
        });
    }
    parse_cmp(arr).map(Expr::Cmp)
}

fn parse_cmp(arr: &[Value]) -> Result<Cmp, (String, String)> {
    let var = arr[0]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            (
                "[0]".to_string(),
                "the variable name must be a non-empty string".into(),
            )
        })?
        .to_string();
    let (negate, op, value, op_at) = match arr.len() {
        2 => (false, "==".to_string(), arr[1].clone(), 1),
        3 => (false, op_name(&arr[1], 1)?, arr[2].clone(), 1),
        4 => {
            if arr[1].as_str() != Some("!") {
                return Err((
                    "[1]".into(),
                    "a 4-element expression must have \"!\" second".into(),
                ));
            }
            (true, op_name(&arr[2], 2)?, arr[3].clone(), 2)
        }
        n => {
            return Err((
                String::new(),
                format!("an expression has 2 to 4 elements, got {n}"),
            ))
        }
    };
    let val_at = format!("[{}]", op_at + 1);
    let bad = |m: &str| (val_at.clone(), m.to_string());
    let num = |v: &Value| -> Result<f64, (String, String)> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| bad("must be a number")),
            Value::String(s) => s.trim().parse::<f64>().map_err(|_| bad("must be a number")),
            _ => Err(bad("must be a number")),
        }
    };
    let regex = |v: &Value, ci: bool| -> Result<Regex, (String, String)> {
        let s = v
            .as_str()
            .ok_or_else(|| bad("must be a regular expression string"))?;
        regex::RegexBuilder::new(s)
            .case_insensitive(ci)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| (val_at.clone(), format!("invalid regular expression: {e}")))
    };
    let op = match op.as_str() {
        "==" => Op::Eq(value),
        "~=" => Op::Ne(value),
        ">" => Op::Gt(num(&value)?),
        ">=" => Op::Ge(num(&value)?),
        "<" => Op::Lt(num(&value)?),
        "<=" => Op::Le(num(&value)?),
        "~~" => Op::Regex(regex(&value, false)?),
        "~*" => Op::Regex(regex(&value, true)?),
        "in" => Op::In(
            value
                .as_array()
                .ok_or_else(|| bad("\"in\" needs an array of values"))?
                .clone(),
        ),
        "has" => Op::Has(value),
        "ipmatch" => {
            let list = match &value {
                Value::Array(a) => a.clone(),
                Value::String(_) => vec![value.clone()],
                _ => return Err(bad("\"ipmatch\" needs an IP/CIDR or an array of them")),
            };
            let nets = list
                .iter()
                .map(|v| v.as_str().and_then(parse_ip_or_cidr))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("\"ipmatch\" values must be IP addresses or CIDRs"))?;
            Op::IpMatch(nets)
        }
        other => {
            return Err((
                format!("[{op_at}]"),
                format!("unknown operator {other:?}; expected one of ==, ~=, >, >=, <, <=, ~~, ~*, in, has, ipmatch"),
            ))
        }
    };
    Ok(Cmp { var, negate, op })
}

fn op_name(v: &Value, i: usize) -> Result<String, (String, String)> {
    v.as_str()
        .map(|s| s.to_ascii_lowercase())
        .ok_or_else(|| (format!("[{i}]"), "the operator must be a string".into()))
}

/// Parses `10.0.0.1` (as a /32) or `10.0.0.0/8`; IPv6 alike.
pub fn parse_ip_or_cidr(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net);
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// A JSON value as the string Lua would compare it with.
fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Lua's `==` between a request value (always a string) and the configured value:
/// a number on the right converts the left with `tonumber`.
fn lua_eq(left: Option<&str>, right: &Value) -> bool {
    match (left, right) {
        (None, Value::Null) => true,
        (None, _) => false,
        (Some(l), Value::Number(n)) => match (l.trim().parse::<f64>(), n.as_f64()) {
            (Ok(a), Some(b)) => a == b,
            _ => false,
        },
        (Some(l), Value::String(s)) => l == s,
        _ => false,
    }
}

impl Cmp {
    fn eval(&self, src: &dyn VarSource) -> bool {
        let left = src.get(&self.var);
        let l = left.as_deref();
        let num = || l.and_then(|s| s.trim().parse::<f64>().ok());
        match &self.op {
            Op::Eq(r) => lua_eq(l, r),
            Op::Ne(r) => !lua_eq(l, r),
            Op::Gt(r) => num().is_some_and(|x| x > *r),
            Op::Ge(r) => num().is_some_and(|x| x >= *r),
            Op::Lt(r) => num().is_some_and(|x| x < *r),
            Op::Le(r) => num().is_some_and(|x| x <= *r),
            Op::Regex(re) => l.is_some_and(|s| re.is_match(s)),
            Op::In(list) => l.is_some_and(|s| list.iter().any(|v| lua_eq(Some(s), v))),
            Op::Has(r) => {
                let want = value_str(r);
                want.is_some_and(|w| src.get_all(&self.var).iter().any(|v| v.as_ref() == w))
            }
            Op::IpMatch(nets) => l
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::borrow::Cow;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, Vec<&'static str>>);
    impl VarSource for Vars {
        fn get(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0
                .get(name)
                .and_then(|v| v.first())
                .map(|s| Cow::Borrowed(*s))
        }
        fn get_all(&self, name: &str) -> Vec<Cow<'_, str>> {
            self.0
                .get(name)
                .map(|v| v.iter().map(|s| Cow::Borrowed(*s)).collect())
                .unwrap_or_default()
        }
    }

    fn check(expr: Value, want: bool) {
        let vars = Vars(HashMap::from([
            ("arg_name", vec!["json"]),
            ("arg_n", vec!["10"]),
            ("http_x", vec!["Value-1"]),
            ("http_multi", vec!["a", "b"]),
            ("remote_addr", vec!["10.1.2.3"]),
            ("cookie_c", vec!["yes"]),
        ]));
        let e = Expr::parse(&expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        assert_eq!(e.eval(&vars), want, "{expr}");
    }

    #[test]
    fn evaluation_table() {
        let table = [
            (json!([]), true),
            (json!([["arg_name", "==", "json"]]), true),
            (json!([["arg_name", "json"]]), true),
            (json!([["arg_name", "==", "xml"]]), false),
            (json!([["arg_missing", "==", "x"]]), false),
            (json!([["arg_name", "~=", "xml"]]), true),
            (json!([["arg_missing", "~=", "x"]]), true),
            (json!([["arg_n", "==", 10]]), true),
            (json!([["arg_n", ">", 9]]), true),
            (json!([["arg_n", ">=", 10]]), true),
            (json!([["arg_n", "<", 10]]), false),
            (json!([["arg_n", "<=", "10"]]), true),
            (json!([["arg_name", ">", 1]]), false),
            (json!([["http_x", "~~", "^Value-\\d$"]]), true),
            (json!([["http_x", "~~", "^value"]]), false),
            (json!([["http_x", "~*", "^value"]]), true),
            (json!([["arg_missing", "~~", ".*"]]), false),
            (json!([["arg_name", "in", ["xml", "json"]]]), true),
            (json!([["arg_name", "in", ["xml"]]]), false),
            (json!([["http_multi", "has", "b"]]), true),
            (json!([["http_multi", "has", "c"]]), false),
            (json!([["arg_name", "!", "==", "json"]]), false),
            (json!([["arg_name", "!", "in", ["xml"]]]), true),
            (json!([["remote_addr", "ipmatch", ["10.0.0.0/8"]]]), true),
            (
                json!([["remote_addr", "ipmatch", ["192.168.0.0/16", "10.1.2.3"]]]),
                true,
            ),
            (json!([["remote_addr", "ipmatch", "192.168.0.0/16"]]), false),
            (
                json!([["arg_name", "==", "json"], ["cookie_c", "==", "no"]]),
                false,
            ),
            (
                json!(["OR", ["arg_name", "==", "xml"], ["cookie_c", "==", "yes"]]),
                true,
            ),
            (
                json!(["AND", ["arg_name", "==", "json"], ["cookie_c", "==", "yes"]]),
                true,
            ),
            (
                json!([
                    "!AND",
                    ["arg_name", "==", "json"],
                    ["cookie_c", "==", "yes"]
                ]),
                false,
            ),
            (
                json!(["!OR", ["arg_name", "==", "xml"], ["cookie_c", "==", "no"]]),
                true,
            ),
            (
                json!([
                    "OR",
                    ["AND", ["arg_n", ">", 5], ["arg_n", "<", 8]],
                    ["arg_name", "==", "json"]
                ]),
                true,
            ),
        ];
        for (expr, want) in table {
            check(expr, want);
        }
    }

    #[test]
    fn invalid_table() {
        let table = [
            (json!("x"), ""),
            (json!(["arg_a", "==", "1"]), ""),
            (json!([["arg_a", "=~", "1"]]), "[0][1]"),
            (json!([["arg_a", "~~", "("]]), "[0][2]"),
            (json!([["arg_a", ">", "x"]]), "[0][2]"),
            (json!([["arg_a", "in", "x"]]), "[0][2]"),
            (json!([["arg_a", "ipmatch", ["nope"]]]), "[0][2]"),
            (json!([["arg_a", "?", "==", "1"]]), "[0][1]"),
            (json!([["arg_a"]]), "[0]"),
            (json!([[]]), "[0]"),
            (json!(["OR", ["arg_a", "==", "1"]]), ""),
            (json!([[1, "==", "1"]]), "[0][0]"),
        ];
        for (expr, want_path) in table {
            let err = Expr::parse(&expr).expect_err(&expr.to_string());
            assert_eq!(err.0, want_path, "{expr}: {}", err.1);
        }
    }
}
