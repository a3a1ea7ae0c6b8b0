//! The access log: one line per request, in nginx's `combined` format by default, a
//! template of `$variables`, or JSON. Lines are rendered and written by one thread of
//! their own: the request path only hands an [`Entry`] to a bounded channel, and when the
//! channel is full the entry is dropped and counted rather than the request made to wait.
use crate::request_vars::Piece;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What one request leaves for its log line; rendered off the request path.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub remote: Option<SocketAddr>,
    pub time: Option<SystemTime>,
    pub method: String,
    /// The target as the client sent it.
    pub request_uri: String,
    pub protocol: &'static str,
    pub host: String,
    pub status: u16,
    /// From the response's exact size, when known before its body is sent.
    pub body_bytes_sent: Option<u64>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    /// Seconds from the request head to the response head.
    pub request_time: f64,
    pub upstream_addr: Option<String>,
    pub upstream_status: Option<u16>,
    pub upstream_response_time: Option<f64>,
    pub route_id: Option<String>,
    pub consumer_name: Option<String>,
    pub request_id: Option<String>,
}

/// The variables a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    RemoteAddr,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Request,
    RequestMethod,
    RequestUri,
    ServerProtocol,
    Host,
    Status,
    BodyBytesSent,
    HttpReferer,
    HttpUserAgent,
    RequestTime,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    RouteId,
    ConsumerName,
    RequestId,
}

const VARS: &[(&str, Var)] = &[
    ("remote_addr", Var::RemoteAddr),
    ("remote_user", Var::RemoteUser),
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("request", Var::Request),
    ("request_method", Var::RequestMethod),
    ("request_uri", Var::RequestUri),
    ("server_protocol", Var::ServerProtocol),
    ("host", Var::Host),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("http_referer", Var::HttpReferer),
    ("http_user_agent", Var::HttpUserAgent),
    ("request_time", Var::RequestTime),
    ("upstream_addr", Var::UpstreamAddr),
    ("upstream_status", Var::UpstreamStatus),
    ("upstream_response_time", Var::UpstreamResponseTime),
    ("route_id", Var::RouteId),
    ("consumer_name", Var::ConsumerName),
    ("request_id", Var::RequestId),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, every variable by name.
    Json,
    Template(Vec<Part>),
}

/// nginx's `combined`.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status \
     $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

impl Format {
    /// `combined`, `json`, or a template of `$variables` (an unknown one is an error).
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "combined" => Format::parse(COMBINED),
            "json" => Ok(Format::Json),
            template => {
                let mut parts = Vec::new();
                for piece in crate::request_vars::pieces(template) {
                    match piece {
                        Piece::Text(t) => parts.push(Part::Text(t.to_string())),
                        Piece::Var(name) => {
                            let Some((_, var)) = VARS.iter().find(|(n, _)| *n == name) else {
                                let known: Vec<&str> = VARS.iter().map(|(n, _)| *n).collect();
                                return Err(format!(
                                    "unknown variable ${name} in the access log format (known: {})",
                                    known.join(", ")
                                ));
                            };
                            parts.push(Part::Var(*var));
                        }
                    }
                }
                Ok(Format::Template(parts))
            }
        }
    }
}

/// nginx prints `-` for an empty value.
/// `v`, or `-` when it is absent or empty (nginx's convention).
fn dash_or(out: &mut String, v: Option<&str>) {
    match v.filter(|s| !s.is_empty()) {
        Some(s) => out.push_str(s),
        None => out.push('-'),
    }
}

/// The last second's timestamps: every line within one second shares them.
#[derive(Default)]
pub struct Clock {
    second: Option<u64>,
    local: String,
    iso: String,
}

impl Clock {
    fn at(&mut self, t: SystemTime) -> (&str, &str) {
        let second = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second != Some(second) {
            self.second = Some(second);
            self.local = time_local(t);
            self.iso = iso8601(t);
        }
        (&self.local, &self.iso)
    }
}

/// nginx's `$time_local`, in UTC: `07/Dec/2026:03:20:08 +0000`.
fn time_local(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
        .split_once(", ")
        .map(|(_, d)| {
            let f: Vec<&str> = d.split(' ').collect();
            match f.as_slice() {
                [day, mon, year, time, _] => format!("{day}/{mon}/{year}:{time} +0000"),
                _ => d.to_string(),
            }
        })
        .unwrap_or_default()
}

/// Writes `var`'s value of `e` to `out`, without a string of its own.
fn write_value(var: Var, e: &Entry, clock: &mut Clock, out: &mut String) {
    let secs = |out: &mut String, t: f64| {
        let _ = write!(out, "{t:.3}");
    };
    match var {
        Var::RemoteAddr => match e.remote {
            Some(r) => match r.ip() {
                std::net::IpAddr::V4(v4) => {
                    let (bytes, len) = crate::request_vars::ipv4_text(v4);
                    out.push_str(std::str::from_utf8(&bytes[..len]).unwrap_or("-"));
                }
                ip => {
                    let _ = write!(out, "{ip}");
                }
            },
            None => out.push('-'),
        },
        Var::RemoteUser => out.push('-'),
        Var::TimeLocal => match e.time {
            Some(t) => out.push_str(clock.at(t).0),
            None => out.push('-'),
        },
        Var::TimeIso8601 => match e.time {
            Some(t) => out.push_str(clock.at(t).1),
            None => out.push('-'),
        },
        Var::Request => {
            out.push_str(&e.method);
            out.push(' ');
            out.push_str(&e.request_uri);
            out.push(' ');
            out.push_str(e.protocol);
        }
        Var::RequestMethod => out.push_str(&e.method),
        Var::RequestUri => out.push_str(&e.request_uri),
        Var::ServerProtocol => out.push_str(e.protocol),
        Var::Host => dash_or(out, Some(&e.host)),
        Var::Status => {
            let _ = write!(out, "{}", e.status);
        }
        Var::BodyBytesSent => {
            let _ = write!(out, "{}", e.body_bytes_sent.unwrap_or(0));
        }
        Var::HttpReferer => dash_or(out, e.referer.as_deref()),
        Var::HttpUserAgent => dash_or(out, e.user_agent.as_deref()),
        Var::RequestTime => secs(out, e.request_time),
        Var::UpstreamAddr => dash_or(out, e.upstream_addr.as_deref()),
        Var::UpstreamStatus => match e.upstream_status {
            Some(s) => {
                let _ = write!(out, "{s}");
            }
            None => out.push('-'),
        },
        Var::UpstreamResponseTime => match e.upstream_response_time {
            Some(t) => secs(out, t),
            None => out.push('-'),
        },
        Var::RouteId => dash_or(out, e.route_id.as_deref()),
        Var::ConsumerName => dash_or(out, e.consumer_name.as_deref()),
        Var::RequestId => dash_or(out, e.request_id.as_deref()),
    }
}

fn iso8601(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = model::calendar::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One line, without its newline.
/// `e` as one line of `format` (without the newline).
pub fn render(format: &Format, e: &Entry) -> String {
    let mut line = String::with_capacity(160);
    render_into(format, e, &mut Clock::default(), &mut line);
    line
}

/// Appends `e`'s line to `line`; `clock` keeps the formatted second between lines.
pub fn render_into(format: &Format, e: &Entry, clock: &mut Clock, line: &mut String) {
    match format {
        Format::Template(parts) => {
            for p in parts {
                match p {
                    Part::Text(t) => line.push_str(t),
                    Part::Var(v) => write_value(*v, e, clock, line),
                }
            }
        }
        Format::Json => {
            let mut obj = serde_json::Map::new();
            let mut value = String::new();
            for (name, var) in VARS {
                value.clear();
                write_value(*var, e, clock, &mut value);
                obj.insert((*name).into(), serde_json::Value::String(value.clone()));
            }
            line.push_str(&serde_json::Value::Object(obj).to_string());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; reopened on SIGUSR1 (after logrotate moved it).
    File(PathBuf),
}

/// Entries waiting for the writer before new ones are dropped.
const QUEUE: usize = 16_384;

pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Starts the writer thread. Fails when the file cannot be opened.
    pub fn start(target: Target, format: Format) -> std::io::Result<Arc<AccessLog>> {
        let out = open(&target)?;
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, target, format, flag))?;
        Ok(Arc::new(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
            reopen,
        }))
    }

    /// Hands `entry` to the writer; never waits.
    pub fn log(&self, entry: Entry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(entry)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file before the next line (logrotate's `postrotate` sends SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

fn open(target: &Target) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    })
}

fn write_lines(
    rx: Receiver<Entry>,
    out: Box<dyn Write + Send>,
    target: Target,
    format: Format,
    reopen: Arc<AtomicBool>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::with_capacity(256);
    let mut clock = Clock::default();
    loop {
        // Flushed whenever the queue runs dry, so a quiet gateway's lines are not held.
        let entry = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(&target) {
                Ok(f) => out = std::io::BufWriter::with_capacity(64 * 1024, f),
                Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
            }
        }
        // This entry and every one already queued, then one flush: a busy gateway's
        // lines go out in large writes, a quiet one's at once.
        let mut next = Some(entry);
        // At most this many at a time, so that a writer kept busy still looks at the
        // reopen flag (logrotate) between them.
        let mut budget = 1024;
        while let Some(e) = next.take() {
            line.clear();
            render_into(&format, &e, &mut clock, &mut line);
            line.push('\n');
            let _ = out.write_all(line.as_bytes());
            budget -= 1;
            next = if budget > 0 { rx.try_recv().ok() } else { None };
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            remote: Some("10.0.0.1:5000".parse().unwrap()),
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_613_608)),
            method: "GET".into(),
            request_uri: "/a?b=1".into(),
            protocol: "HTTP/1.1",
            host: "example.com".into(),
            status: 200,
            body_bytes_sent: Some(2),
            referer: None,
            user_agent: Some("curl/8".into()),
            request_time: 0.0123,
            upstream_addr: Some("127.0.0.1:8080".into()),
            upstream_status: Some(200),
            upstream_response_time: Some(0.01),
            route_id: Some("r1".into()),
            consumer_name: None,
            request_id: None,
        }
    }

    /// Every line of a burst is written: none is lost between the queue and the file.
    #[test]
    fn a_burst_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::start(
            Target::File(path.clone()),
            Format::parse("$request_uri").unwrap(),
        )
        .unwrap();
        const N: usize = 5000;
        for i in 0..N {
            log.log(Entry {
                request_uri: format!("/{i}"),
                ..entry()
            });
        }
        assert_eq!(log.dropped(), 0, "the queue holds a burst this size");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= N || std::time::Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(lines.len(), N);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line, &format!("/{i}"));
        }
    }

    #[test]
    fn formats() {
        let e = entry();
        assert_eq!(
            render(&Format::parse("combined").unwrap(), &e),
            "10.0.0.1 - - [07/Dec/2026:03:20:08 +0000] \"GET /a?b=1 HTTP/1.1\" 200 2 \"-\" \"curl/8\""
        );
        let t = Format::parse("$route_id ${upstream_addr} $upstream_status $request_time $consumer_name $time_iso8601").unwrap();
        assert_eq!(
            render(&t, &e),
            "r1 127.0.0.1:8080 200 0.012 - 2026-12-07T03:20:08+00:00"
        );
        let json: serde_json::Value = serde_json::from_str(&render(&Format::Json, &e)).unwrap();
        assert_eq!(json["status"], "200");
        assert_eq!(json["route_id"], "r1");
        assert_eq!(json["http_referer"], "-");
        assert!(Format::parse("$nope").unwrap_err().contains("$nope"));
        // An unclosed `${` is text, as in every other template.
        assert_eq!(
            Format::parse("${status").unwrap(),
            Format::Template(vec![Part::Text("${status".into())])
        );
        assert_eq!(
            Format::parse("a $$status b").unwrap(),
            Format::Template(vec![
                Part::Text("a $".into()),
                Part::Var(Var::Status),
                Part::Text(" b".into())
            ])
        );
    }
}
